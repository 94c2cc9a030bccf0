/**
 * Issue #12: the obvious chain does the obvious thing, blocking nodes have a
 * finite default timeout and say what they wait for, configuration errors
 * are reported once, the runtime refuses what the editor refuses with the
 * same words, an unreachable daemon is named as such, and errors reach
 * Node-RED as readable sentences with the details in msg.error.
 */
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { ThinClient } from '../../src/client/client';
import type { Emulator } from '../../src/emulator';
import {
  DIST_NODES,
  daemonNode,
  delay,
  directClient,
  expectPort,
  getNode,
  helper,
  loadFlow,
  newEmulator,
  nextInput,
  opFlow,
  ourNodes,
  until,
  waitConnected,
  watchStatus,
} from './support';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const rawHelper = require('node-red-node-test-helper') as {
  _NodePrototype: Record<string, { getCalls(): { thisValue: unknown; args: unknown[] }[] }>;
};
// The table the compiled nodes use (same module instance as the nodes loaded from dist/).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const timeouts = require(path.join(DIST_NODES, 'lib', 'timeouts.js')) as { DEFAULT_TIMEOUT_SECONDS: Record<string, number> };
// eslint-disable-next-line @typescript-eslint/no-require-imports
const messages = require(path.join(DIST_NODES, 'lib', 'messages.js')) as { validationText(k: string, s?: Record<string, unknown>): string };

const ROOT = path.resolve(__dirname, '..', '..');

function callsOf(id: string, method: 'warn' | 'error' | 'log'): unknown[][] {
  const node = getNode(id);
  return rawHelper._NodePrototype[method]
    .getCalls()
    .filter((c) => c.thisValue === node)
    .map((c) => c.args);
}

describe('node pack: issue #12 (usability)', function () {
  this.timeout(60_000);
  let emu: Emulator;
  let direct: ThinClient;
  before(async () => {
    emu = await newEmulator();
    direct = await directClient(emu);
  });
  after(async () => {
    await direct?.close();
    await emu?.stop({ graceful: false });
  });
  afterEach(async () => {
    await helper.unload();
  });

  describe('1. the write -> read chain and waiting reads', () => {
    it('new keypair -> encrypt write -> resend -> encrypt read -> resend reads back what was written (nodes as the palette makes them)', async () => {
      // No "advance" property at all, as a hand-written flow; and the editor's default (false) on the second resend.
      await loadFlow(ourNodes(), [
        { id: 'tab', type: 'tab', label: 'chain' },
        daemonNode(emu),
        { id: 'kp', z: 'tab', type: 'katzenpost-new-keypair', daemon: 'daemon', seedFrom: 'random', timeout: '', wires: [['ew']] },
        { id: 'ew', z: 'tab', type: 'katzenpost-encrypt-write', daemon: 'daemon', timeout: '', wires: [['rw']] },
        { id: 'rw', z: 'tab', type: 'katzenpost-resend', daemon: 'daemon', variant: 'default', operation: 'auto', timeout: '', wires: [['er'], ['oc']] },
        { id: 'er', z: 'tab', type: 'katzenpost-encrypt-read', daemon: 'daemon', timeout: '', wires: [['rr']] },
        { id: 'rr', z: 'tab', type: 'katzenpost-resend', daemon: 'daemon', variant: 'default', operation: 'auto', advance: false, payloadAs: 'string', timeout: '', wires: [['read'], ['oc']] },
        { id: 'read', z: 'tab', type: 'helper' },
        { id: 'oc', z: 'tab', type: 'helper' },
      ]);
      const read = nextInput('read', 15_000);
      getNode('kp').receive({ payload: 'the obvious thing' });
      const m = await read;
      assert.equal(m.payload, 'the obvious thing');
      // Both resends kept the box they worked on; the next one is named beside it.
      assert.deepEqual(m.messageBoxIndex, m.firstMessageIndex);
      assert.deepEqual(m.nextMessageBoxIndex, await direct.nextMessageBoxIndex(m.firstMessageIndex));
    });

    it('every node that waits for the daemon has a finite default timeout, and a blank field uses it', async () => {
      const table = timeouts.DEFAULT_TIMEOUT_SECONDS;
      const waiting = ['katzenpost-send', 'katzenpost-blocking-send', 'katzenpost-resend', 'katzenpost-copy', 'katzenpost-tombstone', 'katzenpost-channel-send',
        'katzenpost-new-keypair', 'katzenpost-encrypt-write', 'katzenpost-encrypt-read', 'katzenpost-cancel', 'katzenpost-index', 'katzenpost-pki'];
      for (const t of waiting) assert.ok(Number.isFinite(table[t]) && table[t] > 0, `${t} has no finite default timeout`);
      assert.ok(table['katzenpost-resend'] >= 60, 'a real mixnet read takes 5-20 s, more while a box waits for its writer');
      assert.ok(table['katzenpost-copy'] >= 180, 'a copy command can take a few minutes');
      // The frame takes the table's value when the Timeout field is blank.
      const saved = table['katzenpost-resend'];
      table['katzenpost-resend'] = 0.4;
      try {
        const ch = await direct.newKeypair(Buffer.alloc(32, 7));
        const env = await direct.encryptRead(ch.readCap, ch.firstMessageIndex);
        await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', { timeout: '' }, 2));
        const started = Date.now();
        const m = await expectPort('catch', {
          envelope: { ...env, kind: 'read' },
          readCap: ch.readCap,
          messageBoxIndex: ch.firstMessageIndex,
        });
        assert.ok(Date.now() - started < 5000);
        assert.equal(m.error.code, 'TIMEOUT');
        assert.match(m.error.message, /katzenpost-resend: timed out after 400 ms \(node timeout\)/);
      } finally {
        table['katzenpost-resend'] = saved;
      }
    });

    it('every form shows its default timeout as the placeholder, the same way', () => {
      const table = timeouts.DEFAULT_TIMEOUT_SECONDS;
      const withField: string[] = [];
      for (const f of readdirSync(path.join(ROOT, 'nodes')).filter((n) => n.endsWith('.html'))) {
        const html = readFileSync(path.join(ROOT, 'nodes', f), 'utf8');
        const type = f.replace(/\.html$/, '');
        const input = /<input[^>]*id="node-input-timeout"[^>]*>/.exec(html);
        if (!input) continue;
        withField.push(type);
        assert.match(input[0], new RegExp(`placeholder="${table[type]}"`), `${type}: the timeout placeholder is not its default ${table[type]}`);
        assert.ok(!/data-i18n="\[placeholder\]/.test(input[0]), `${type}: the timeout placeholder is the number itself`);
        assert.match(html, new RegExp(`<span data-i18n="${type}\\.unit\\.seconds"></span>`), `${type}: "seconds" after the field`);
      }
      assert.deepEqual(withField.sort(), Object.keys(table).sort());
    });

    it('a read that waits says so in its status: the box as a hash prefix and the seconds, updated as it waits', async function () {
      this.timeout(30_000);
      const ch = await direct.newKeypair(Buffer.alloc(32, 9));
      const env = await direct.encryptRead(ch.readCap, ch.firstMessageIndex);
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', {}, 2));
      await waitConnected();
      const label = createHash('sha256').update(ch.firstMessageIndex).digest('hex').slice(0, 6);
      const watch = watchStatus('op');
      getNode('op').receive({ envelope: { ...env, kind: 'read' }, readCap: ch.readCap, messageBoxIndex: ch.firstMessageIndex });
      const first = await watch.waitFor((s) => /^waiting for box /.test(s.text ?? ''));
      assert.equal(first.fill, 'blue');
      assert.match(first.text!, new RegExp(`^waiting for box ${label}, [0-2] s$`));
      const later = await watch.waitFor((s) => /^waiting for box [0-9a-f]{6}, ([3-9]|\d\d) s$/.test(s.text ?? ''), 10_000);
      assert.match(later.text!, new RegExp(`^waiting for box ${label}, `));
      // Never the index or a cap, not even in part.
      for (const s of watch.history) {
        const text = String(s.text ?? '');
        for (const secret of [ch.firstMessageIndex, ch.readCap, ch.writeCap]) assert.ok(!text.includes(secret.toString('hex').slice(0, 8)));
      }
      const caught = nextInput('caught');
      getNode('op').receive({ cancel: true });
      await caught;
    });
  });

  describe('2. configuration errors are reported once', () => {
    let dir: string;
    before(() => {
      dir = mkdtempSync(path.join(tmpdir(), 'kp-issue12-'));
    });
    after(() => rmSync(dir, { recursive: true, force: true }));

    function channelFlow(channel: Record<string, unknown>): Record<string, unknown>[] {
      return [
        { id: 'f', type: 'tab', label: 'channel' },
        daemonNode(emu),
        { id: 'ch', type: 'katzenpost-channel', name: `c${Math.random().toString(36).slice(2, 8)}`, daemon: 'daemon', database: path.join(dir, 'c.db'), ...channel },
        { id: 'tx', z: 'f', type: 'katzenpost-channel-send', channel: 'ch', wires: [[]] },
        { id: 'rx', z: 'f', type: 'katzenpost-channel-receive', channel: 'ch', pollInterval: 0.02, maxPollInterval: 0.1, wires: [[], []] },
      ];
    }

    it('a channel without credentials: each node raises the error once and shows it, and the receiver does not retry it', async () => {
      await loadFlow(ourNodes(), channelFlow({ mode: 'owned' }), {});
      await watchStatus('rx').waitFor((s) => s.fill === 'red' && s.text === 'no credentials');
      // The old receiver raised it again at every retry (1 s, 2 s, 4 s, ...).
      await delay(4500);
      assert.equal(callsOf('rx', 'error').length, 1, `rx raised: ${JSON.stringify(callsOf('rx', 'error'))}`);
      assert.equal(callsOf('tx', 'error').length, 1);
      assert.match(String(callsOf('rx', 'error')[0][0]), /an owned channel needs a seed or a write cap/);
      assert.equal(watchStatus('rx').current()?.text, 'no credentials');
      // Something changes (an input): the send node raises it again, for that input.
      const again = new Promise<unknown[]>((r) => getNode('tx').once('call:error', (c: { args: unknown[] }) => r(c.args)));
      getNode('tx').receive({ payload: 'x' });
      assert.match(String((await again)[0]), /an owned channel needs a seed or a write cap/);
    });

    it('a bad read cap is reported once, in the words of the editor', async () => {
      await loadFlow(ourNodes(), channelFlow({ mode: 'imported' }), { ch: { readCap: '1234' } });
      await until(() => callsOf('rx', 'error').length > 0, 5000, 'the error');
      await delay(4000);
      assert.equal(callsOf('rx', 'error').length, 1);
      const expected = messages.validationText('expected', {
        what: messages.validationText('what.key', { size: 136, hex: 272, base64: 184 }),
        got: messages.validationText('got.characters', { count: 4 }),
      });
      assert.equal(callsOf('rx', 'error')[0][0], `katzenpost-channel credentials: read cap: ${expected}`);
      assert.equal(expected, 'expected 136 bytes as hex (272 characters) or base64 (184 characters), got 4 characters');
    });
  });

  describe('3. the runtime refuses what the editor refuses, in the same words', () => {
    it('a negative handshake timeout: every operation fails with the field and the rule, the status shows it', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-new-keypair', {}, 1, { handshakeTimeout: '-5' }));
      const m = await expectPort('catch', {});
      assert.equal(m.error.message, 'katzenpost-daemon handshake timeout: expected a number of seconds greater than 0, got "-5"');
      await watchStatus('op').waitFor((s) => s.fill === 'red');
    });

    it('a node timeout that is not a number of seconds is refused per message, naming the field', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-index', { mode: 'next', timeout: '-5' }));
      const m = await expectPort('catch', { messageBoxIndex: Buffer.alloc(104) });
      assert.equal(m.error.message, 'katzenpost-index timeout: expected a number of seconds, 0 or more (0 = no timeout), got "-5"');
    });

    it('a port out of range and a blank socket path are refused with the words of the editor', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-new-keypair', {}, 1, { port: 70000 }));
      let m = await expectPort('catch', {});
      assert.equal(m.error.message, 'katzenpost-daemon port: expected a port number from 1 to 65535, got "70000"');
      await helper.unload();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-new-keypair', {}, 1, { transport: 'unix', socketPath: ' ' }));
      m = await expectPort('catch', {});
      assert.equal(m.error.message, 'katzenpost-daemon socket: expected the path of a Unix socket (or @name), got nothing');
    });
  });

  describe('4. an unreachable daemon is named as such', () => {
    it('after the daemon process is gone: the error and the status name the address and the socket error', async function () {
      this.timeout(30_000);
      const own = await newEmulator();
      const address = own.address;
      await loadFlow(ourNodes(), opFlow(own, 'katzenpost-blocking-send', { service: 'echo', serviceType: 'str', timeout: '' }));
      await waitConnected();
      await own.stop({ graceful: false });
      const status = await watchStatus('op').waitFor((s) => /^ECONNREFUSED /.test(s.text ?? ''), 15_000);
      assert.equal(status.text, `ECONNREFUSED ${address}`);
      assert.equal(status.fill, 'red');
      const m = await expectPort('catch', { payload: 'ping' });
      assert.equal(m.error.code, 'DAEMON_DISCONNECTED');
      assert.match(m.error.message, new RegExp(`the daemon at ${address.replace(/\./g, '\\.')} is not reachable: connect ECONNREFUSED ${address.replace(/\./g, '\\.')}`));
      assert.doesNotMatch(m.error.message, /offline mode/);
    });

    it('a daemon that is up but off the mixnet still says so', async () => {
      const own = await newEmulator();
      try {
        await loadFlow(ourNodes(), opFlow(own, 'katzenpost-blocking-send', { service: 'echo', serviceType: 'str' }));
        await waitConnected();
        own.setOnline(false);
        await watchStatus('op').waitFor((s) => s.fill === 'yellow');
        const m = await expectPort('catch', { payload: 'ping' });
        assert.equal(m.error.code, 'OFFLINE');
        assert.match(m.error.message, /offline mode - daemon not connected to mixnet/);
      } finally {
        await helper.unload();
        await own.stop({ graceful: false });
      }
    });
  });

  describe('6. examples share one daemon config node', () => {
    it('every example carries a byte-identical daemon config node with the one fixed id (the editor keeps the first on import)', () => {
      const dir = path.join(ROOT, 'examples');
      const found: string[] = [];
      for (const group of readdirSync(dir)) {
        for (const f of readdirSync(path.join(dir, group)).filter((n) => n.endsWith('.json'))) {
          const flow = JSON.parse(readFileSync(path.join(dir, group, f), 'utf8')) as Record<string, unknown>[];
          const daemons = flow.filter((n) => n.type === 'katzenpost-daemon');
          assert.equal(daemons.length, 1, `${group}/${f}`);
          found.push(JSON.stringify(daemons[0]));
        }
      }
      assert.ok(found.length >= 10);
      assert.deepEqual([...new Set(found)], [found[0]], 'the daemon config nodes differ between examples');
      assert.equal((JSON.parse(found[0]) as { id: string }).id, '4b50000000000001');
      // The editor side: the import keeps an existing katzenpost-daemon of that id instead of raising a conflict.
      const html = readFileSync(path.join(ROOT, 'nodes', 'katzenpost-daemon.html'), 'utf8');
      assert.match(html, /RED\.view\.importNodes = wrapped/);
    });
  });

  describe('5. errors are sentences, with the details in msg.error', () => {
    it('a Catch node gets msg.error.message = the sentence (no class name), the code, the source and the details', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-encrypt-read', {}));
      const m = await expectPort('catch', { readCap: 'not a buffer', messageBoxIndex: Buffer.alloc(104) });
      assert.equal(m.error.message, 'msg.readCap: expected a Buffer of 136 bytes, got a string');
      assert.equal(m.error.code, 'INVALID_ARGUMENT');
      assert.deepEqual(m.error.source, { id: 'op', type: 'katzenpost-encrypt-read', name: undefined, count: 1 });
      assert.equal(m.error.cause.name, 'InvalidArgumentError');
      assert.equal(m.error.cause.argument, 'msg.readCap');
      assert.equal(m.error.cause.expected, 'a Buffer of 136 bytes');
      assert.ok(!('stack' in m.error));
    });

    it('without a Catch node the log (and so the debug sidebar) gets the sentence as text', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-encrypt-read', {}).filter((n) => n.type !== 'catch'));
      const op = getNode('op');
      const logged = new Promise<unknown[]>((r) => op.once('call:error', (c: { args: unknown[] }) => r(c.args)));
      op.receive({ readCap: Buffer.alloc(3), messageBoxIndex: Buffer.alloc(104) });
      const args = await logged;
      assert.equal(args[0], 'msg.readCap: expected a Buffer of 136 bytes, got 3 bytes');
      // The runtime's log entry (what the debug sidebar shows) is that text, not an Error object.
      await until(() => callsOf('op', 'error').length === 1, 2000, 'one error');
    });
  });
});
