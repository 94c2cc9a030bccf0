/**
 * Every node of the pack loads in Node-RED against a real emulator, shows the
 * connection on its status, and ships consistent editor, help and message
 * catalogue files.
 */
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Emulator } from '../../src/emulator';
import {
  DIST_NODES,
  OUR_CONFIG_TYPES,
  OUR_TYPES,
  daemonNode,
  delay,
  expectPort,
  getNode,
  helper,
  isConnected,
  loadFlow,
  newEmulator,
  opFlow,
  ourNodes,
  until,
  watchStatus,
} from './support';

const ROOT = path.resolve(__dirname, '..', '..');

/** The config node a node refers to, per property, from its editor defaults: e.g. { channel: 'katzenpost-channel' }. */
function configReferences(type: string): Record<string, string> {
  const html = readFileSync(path.join(ROOT, 'nodes', `${type}.html`), 'utf8');
  const refs: Record<string, string> = {};
  for (const m of html.matchAll(/(\w+): \{ value: '', type: '(katzenpost-[a-z-]+)', required: true \}/g)) refs[m[1]] = m[2];
  return refs;
}

describe('node pack: loading', function () {
  let emu: Emulator;
  before(async () => {
    emu = await newEmulator();
  });
  after(async () => {
    await emu?.stop({ graceful: false });
  });
  afterEach(async () => {
    await helper.unload();
  });

  it('every node type of package.json loads against the emulator and shows "connected"', async () => {
    assert.ok(OUR_TYPES.includes('katzenpost-daemon') && OUR_CONFIG_TYPES.includes('katzenpost-daemon'));
    const palette = OUR_TYPES.filter((t) => !OUR_CONFIG_TYPES.includes(t));
    const dir = mkdtempSync(path.join(tmpdir(), 'kp-load-'));
    // One config node of each config type (id "cfg-<type>"), configured as a flow author would.
    const cfgId = (t: string) => `cfg-${t}`;
    const configs: Record<string, Record<string, unknown>> = {
      'katzenpost-daemon': daemonNode(emu),
      'katzenpost-channel': { type: 'katzenpost-channel', name: 'load', mode: 'owned', database: path.join(dir, 'load.db') },
    };
    const refsTo = (t: string) => Object.fromEntries(Object.entries(configReferences(t)).map(([prop, ref]) => [prop, cfgId(ref)]));
    const flow: Record<string, unknown>[] = [{ id: 'tab', type: 'tab' }];
    for (const t of OUR_CONFIG_TYPES) {
      assert.ok(configs[t], `${t}: a config node type the load test does not know how to configure`);
      flow.push({ ...configs[t], id: cfgId(t), ...refsTo(t) });
    }
    for (const t of palette) {
      const refs = refsTo(t);
      assert.ok(Object.keys(refs).length > 0, `${t} refers to no config node`);
      flow.push({ id: t, z: 'tab', type: t, ...refs, wires: [[], []] });
    }
    try {
      // An owned channel is made from a seed, which is a credential.
      await loadFlow(ourNodes(), flow, { [cfgId('katzenpost-channel')]: { seed: randomBytes(32).toString('hex') } });
      for (const t of OUR_TYPES) assert.ok(helper.getNode(OUR_CONFIG_TYPES.includes(t) ? cfgId(t) : t), `${t} did not start`);
      const watchers = palette.map((t) => watchStatus(t));
      await Promise.all(watchers.map((w, i) => w.waitFor(isConnected).catch((e) => assert.fail(`${palette[i]}: ${(e as Error).message}`))));
      // One connection for all the users, channel nodes included.
      assert.equal(emu.connectionCount(), 1);
    } finally {
      await helper.unload();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the connection opens with the first user and closes with the last', async () => {
    const before = emu.connectionCount();
    await loadFlow(ourNodes(), [{ id: 'tab', type: 'tab' }, daemonNode(emu), { id: 'idx', z: 'tab', type: 'katzenpost-index', daemon: 'daemon', wires: [[]] }]);
    await until(() => emu.connectionCount() === before + 1, 5000, 'the connection');
    const conn = (getNode('daemon') as unknown as { connection: { userCount(): number; getState(): string } }).connection;
    await until(() => conn.getState() === 'connected', 5000, 'connected');
    assert.equal(conn.userCount(), 1);
    await helper.unload();
    assert.equal(conn.getState(), 'closed');
    await until(() => emu.connectionCount() === before, 5000, 'the emulator to see the connection closed');
  });

  it('a config node without users does not connect', async () => {
    const before = emu.connectionCount();
    await loadFlow(ourNodes(), [daemonNode(emu)]);
    await delay(200);
    assert.equal(emu.connectionCount(), before);
  });

  it('a node without a daemon selected shows "no daemon" and reports it to Catch', async () => {
    await loadFlow(ourNodes(), [
      { id: 'tab', type: 'tab' },
      { id: 'idx', z: 'tab', type: 'katzenpost-index', daemon: '', wires: [[]] },
      { id: 'c', z: 'tab', type: 'catch', scope: null, uncaught: false, wires: [['h']] },
      { id: 'h', z: 'tab', type: 'helper' },
    ]);
    const got = new Promise<Record<string, any>>((resolve) => getNode('h').on('input', resolve));
    getNode('idx').receive({ messageBoxIndex: Buffer.alloc(104) });
    const m = await got;
    assert.match(m.error.message, /katzenpost-index: no katzenpost-daemon config node is selected/);
  });

  describe('transports', () => {
    it('reaches the daemon over a Unix socket', async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'kp-node-'));
      const sock = await newEmulator({ listen: path.join(dir, 'kpclientd.sock') });
      try {
        await loadFlow(ourNodes(), [
          ...opFlow(sock, 'katzenpost-new-keypair').map((n) =>
            n.id === 'daemon' ? { ...n, transport: 'unix', socketPath: sock.address, host: '', port: '' } : n,
          ),
        ]);
        const m = await expectPort(1, {}, { outputs: 1 });
        assert.equal(m.writeCap.length, 168);
      } finally {
        await helper.unload();
        await sock.stop({ graceful: false });
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('reaches the daemon named in a thinclient.toml', async () => {
      const dir = mkdtempSync(path.join(tmpdir(), 'kp-node-'));
      const file = path.join(dir, 'thinclient.toml');
      writeFileSync(file, `[Dial]\n  [Dial.Tcp]\n    Address = "${emu.address}"\n    Network = "tcp"\n`);
      try {
        await loadFlow(ourNodes(), [
          ...opFlow(emu, 'katzenpost-new-keypair').map((n) => (n.id === 'daemon' ? { ...n, transport: 'config', configFile: file } : n)),
        ]);
        const m = await expectPort(1, {}, { outputs: 1 });
        assert.equal(m.readCap.length, 136);
        const conn = (getNode('daemon') as unknown as { connection: { address: string } }).connection;
        assert.equal(conn.address, `${emu.address} (${file})`);
      } finally {
        await helper.unload();
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });

  describe('editor, help and catalogue files', () => {
    for (const type of OUR_TYPES) {
      it(`${type}: html, help and messages agree`, () => {
        const html = readFileSync(path.join(ROOT, 'nodes', `${type}.html`), 'utf8');
        const help = readFileSync(path.join(ROOT, 'locales', 'en-US', `${type}.html`), 'utf8');
        const catalogue = JSON.parse(readFileSync(path.join(ROOT, 'locales', 'en-US', `${type}.json`), 'utf8'));
        // The flow library parses, not runs, the editor file.
        assert.match(html, new RegExp(`<script type="text/javascript">\\s*RED\\.nodes\\.registerType\\('${type}', \\{`));
        assert.match(html, new RegExp(`<script type="text/html" data-template-name="${type}">`));
        assert.match(help, new RegExp(`<script type="text/html" data-help-name="${type}">`));
        if (!OUR_CONFIG_TYPES.includes(type)) {
          assert.match(html, /category: 'katzenpost'/);
          // A palette node reaches the daemon through exactly one required config node: the daemon or a channel.
          const refs = Object.values(configReferences(type));
          assert.equal(refs.length, 1, `${type}: config references ${refs}`);
          assert.ok(['katzenpost-daemon', 'katzenpost-channel'].includes(refs[0]), `${type}: refers to ${refs[0]}`);
          assert.match(help, /<dl class="message-properties">/);
          const icon = /icon: '([^']+)'/.exec(html)?.[1];
          assert.ok(icon && existsSync(path.join(ROOT, 'icons', icon)), `${type}: icon ${icon} missing`);
          const svg = readFileSync(path.join(ROOT, 'icons', icon), 'utf8');
          assert.match(svg, /viewBox="0 0 40 60"/);
          assert.doesNotMatch(svg, /fill="#(?!fff)[0-9a-f]{3,6}"/i, `${type}: icon must be white on transparent`);
        } else {
          assert.match(html, /category: 'config'/);
          if (type === 'katzenpost-daemon') assert.match(html, /node-config-input-host/);
          else assert.deepEqual(configReferences(type), { daemon: 'katzenpost-daemon' }, `${type}: a config node that needs the daemon`);
        }
        // Every key the template and the script use is in the catalogue.
        const keys = new Set<string>();
        for (const m of html.matchAll(/data-i18n="(?:\[[a-z]+\])?([^"]+)"/g)) keys.add(m[1]);
        for (const m of html.matchAll(/this\._\('([^']+)'\s*[,)]/g)) keys.add(m[1]);
        for (const key of keys) {
          if (key.startsWith('node-red:')) continue;
          const value = key.split('.').reduce<any>((o, k) => (o === undefined ? undefined : o[k]), catalogue);
          assert.equal(typeof value, 'string', `${type}: catalogue lacks "${key}"`);
        }
        // Credentials are password fields declared in the editor (never in defaults).
        const inputPrefix = OUR_CONFIG_TYPES.includes(type) ? 'node-config-input-' : 'node-input-';
        for (const m of html.matchAll(/(\w+): \{ type: 'password' \}/g)) {
          assert.match(html, new RegExp(`<input type="password" id="${inputPrefix}${m[1]}"`));
          assert.doesNotMatch(html.split('credentials:')[0], new RegExp(`\\b${m[1]}: \\{ value`), `${type}: ${m[1]} must not be in defaults`);
        }
        // The build copies everything next to the compiled node.
        assert.ok(existsSync(path.join(DIST_NODES, `${type}.html`)), `dist/nodes/${type}.html missing`);
        assert.ok(existsSync(path.join(DIST_NODES, 'locales', 'en-US', `${type}.json`)));
      });
    }

    it('the editor scripts run: labels, palette labels and output labels work, and every form field is a property', () => {
      for (const type of OUR_TYPES) {
        const html = readFileSync(path.join(ROOT, 'nodes', `${type}.html`), 'utf8');
        // Every script block, in order, as the editor runs them.
        const script = [...html.matchAll(/<script type="text\/javascript">([\s\S]*?)<\/script>/g)].map((m) => m[1]).join(';\n');
        const defs: Record<string, any> = {};
        const always = (): (() => boolean) => () => true;
        const RED = {
          // node(id): the editor's lookup of a config node; none is selected in these checks.
          nodes: { registerType: (t: string, d: unknown) => (defs[t] = d), node: () => null },
          validators: { number: always, typedInput: always, regex: always },
          _: (k: string) => k,
        };
        // The editor's globals the scripts touch when they are defined (not when a form opens): RED, jQuery, window.
        new Function('RED', '$', 'window', script)(RED, () => ({ on: () => undefined, val: () => '', toggle: () => undefined, typedInput: () => undefined }), {});
        const def = defs[type];
        assert.ok(def, `${type}: registerType was not called with the literal type`);
        const translate = (k: string): string => k;
        const node: Record<string, unknown> = { _: translate };
        for (const [k, v] of Object.entries(def.defaults as Record<string, { value: unknown }>)) node[k] = v.value;
        if (typeof def.paletteLabel === 'function') assert.equal(typeof def.paletteLabel.call({ _: translate }), 'string');
        assert.ok(String(def.label.call(node)).length > 0, `${type}: empty label`);
        if (typeof def.outputLabels === 'function') {
          for (let i = 0; i < (def.outputs ?? 0); i++) assert.equal(typeof def.outputLabels.call(node, i), 'string');
        }
        const prefix = OUR_CONFIG_TYPES.includes(type) ? 'node-config-input-' : 'node-input-';
        for (const m of html.matchAll(new RegExp(`id="${prefix}(\\w+)"`, 'g'))) {
          const field = m[1];
          assert.ok(field in def.defaults || (def.credentials && field in def.credentials), `${type}: form field ${field} is neither a default nor a credential`);
        }
        for (const field of Object.keys(def.defaults)) {
          if (field === 'name' || field === 'daemon' || html.includes(`id="${prefix}${field}"`)) continue;
          assert.fail(`${type}: property ${field} has no form field`);
        }
      }
    });

    it('shared status texts are short', () => {
      const daemon = JSON.parse(readFileSync(path.join(ROOT, 'locales', 'en-US', 'katzenpost-daemon.json'), 'utf8'));
      for (const [k, v] of Object.entries(daemon['katzenpost-daemon'].status as Record<string, string>)) {
        if (!v.includes('__')) {
          assert.ok(v.length < 20, `status ${k} "${v}" is 20 characters or more`);
          continue;
        }
        // A progress text with values ("waiting for box 3fa2c1, 12 s", issue #12): short once filled in, even after minutes.
        const filled = v.replace('__box__', 'abcdef').replace('__seconds__', '300');
        assert.ok(!filled.includes('__'), `status ${k} "${v}" has an unknown placeholder`);
        assert.ok(filled.length <= 30, `status ${k} "${filled}" is longer than 30 characters`);
      }
    });
  });
});
