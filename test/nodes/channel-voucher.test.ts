/**
 * Channel config nodes of kinds "invite" and "join" (issue #14, part 3) in
 * Node-RED (node-red-node-test-helper, compiled dist/nodes) against the
 * emulator speaking the current protocol over a real socket: the voucher
 * handed from the inviting side to the joining side through the admin
 * endpoint, both sides sending and receiving, a restart of the joining side
 * in the middle resuming from the channel database, a pinned daemon giving one
 * clear configuration error, the voucher checked at runtime, and the voucher
 * never in a status, a log line, the exported flow or the credentials the
 * editor gets.
 */
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as vm from 'node:vm';
import { webcrypto } from 'node:crypto';
import jsQR from 'jsqr';
import type { Emulator } from '../../src/emulator';
import { ChannelStore, parseVoucher } from '../../src/channels';
import { DIST_NODES, collect, coreNodes, daemonNode, delay, getNode, helper, hostPort, newEmulator, nextInput, until, watchStatus, type TestNode } from './support';

// The same helper singleton as support.ts, for the parts its typing leaves out.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const rawHelper = require('node-red-node-test-helper') as {
  settings(s: Record<string, unknown>): Record<string, unknown>;
  request(): { get(url: string): Promise<{ status: number; body: any; headers: Record<string, string> }> };
  _NodePrototype: Record<string, { getCalls(): { thisValue: unknown; args: unknown[] }[] }>;
  _logSpy: { getCalls(): { args: unknown[] }[] };
  _redNodes: {
    getFlows(): { flows: unknown[] };
    getCredentials(id: string): Record<string, unknown> | undefined;
    getCredentialDefinition(type: string): Record<string, { type: string }>;
  };
};

const CHANNEL_TYPES = ['katzenpost-daemon', 'katzenpost-channel', 'katzenpost-channel-send', 'katzenpost-channel-receive'];

function channelModules(): unknown[] {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return CHANNEL_TYPES.map((t) => require(path.join(DIST_NODES, `${t}.js`)));
}

type FlowNode = Record<string, any>;
type Progress = { role: string; step: string; done: boolean; error: Error | null };
interface ChannelNode extends TestNode {
  introduction(): Progress | null;
  onIntroduction(listener: (p: Progress) => void): () => void;
}

/** Arguments of every call of a spied Node method on node `id` since the flow was loaded. */
function callsOf(id: string, method: 'warn' | 'error' | 'log'): unknown[][] {
  const node = getNode(id);
  return rawHelper._NodePrototype[method]
    .getCalls()
    .filter((c) => c.thisValue === node)
    .map((c) => c.args);
}

function textOf(arg: unknown): string {
  return String((arg as Error | null)?.message ?? arg);
}

/** Every way the voucher could be written: hex, grouped, capitals, base64. */
function spellings(voucherText: string): string[] {
  const hex = voucherText.replace(/-/g, '');
  const bytes = Buffer.from(hex, 'hex');
  return [hex, voucherText, hex.toUpperCase(), voucherText.toUpperCase(), bytes.toString('base64'), hex.slice(0, 16), hex.slice(-16)];
}

/** Decodes the QR code of an SVG data URL as qrcode-generator draws it (one square subpath per dark module). */
function decodeSvgQr(dataUrl: string): string | null {
  const prefix = 'data:image/svg+xml;base64,';
  assert.ok(dataUrl.startsWith(prefix), 'an SVG data URL');
  const svg = Buffer.from(dataUrl.slice(prefix.length), 'base64').toString('utf8');
  const width = Number(/width="(\d+)px"/.exec(svg)![1]);
  const cells = [...svg.matchAll(/M(\d+),(\d+)l(\d+),0/g)].map((m) => [Number(m[1]), Number(m[2]), Number(m[3])]);
  assert.ok(cells.length > 100, 'the SVG draws modules');
  const cell = cells[0][2];
  const margin = Math.min(...cells.map((c) => c[0]));
  const size = Math.round((width - 2 * margin) / cell);
  const dark = new Set(cells.map(([x, y]) => `${(y - margin) / cell},${(x - margin) / cell}`));
  const scale = 4;
  const n = (size + 8) * scale;
  const rgba = new Uint8ClampedArray(n * n * 4).fill(255);
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) {
      if (dark.has(`${Math.floor(y / scale) - 4},${Math.floor(x / scale) - 4}`)) {
        const i = (y * n + x) * 4;
        rgba[i] = rgba[i + 1] = rgba[i + 2] = 0;
      }
    }
  }
  return jsQR(rgba, n, n)?.data ?? null;
}

describe('channel nodes: introducing two parties with a voucher (kinds invite and join)', function () {
  this.timeout(60_000);
  let emu: Emulator;
  let dir: string;
  let seeds: { alice: string; bob: string };

  before(async () => {
    emu = await newEmulator({ latency: 'instant', protocol: 'current' });
  });
  after(async () => {
    await emu?.stop({ graceful: false });
  });
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'kp-channel-voucher-'));
    rawHelper.settings({ userDir: dir });
    seeds = { alice: randomBytes(32).toString('hex'), bob: randomBytes(32).toString('hex') };
  });
  afterEach(async () => {
    await helper.unload();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Alice invites (tab fa), Bob joins (tab fb); each has its own database, a send node and a receive node. */
  function flows(e: Emulator = emu): { alice: FlowNode[]; bob: FlowNode[]; daemon: FlowNode } {
    const side = (who: 'alice' | 'bob', mode: 'invite' | 'join', extra: FlowNode = {}): FlowNode[] => {
      const s = who[0];
      return [
        { id: `f${s}`, type: 'tab', label: who },
        { id: `c${s}`, type: 'katzenpost-channel', name: who, daemon: 'daemon', mode, database: `${who}.db`, ...extra },
        { id: `tx${s}`, z: `f${s}`, type: 'katzenpost-channel-send', channel: `c${s}`, wires: [[`acks${s}`]] },
        { id: `acks${s}`, z: `f${s}`, type: 'helper' },
        { id: `rx${s}`, z: `f${s}`, type: 'katzenpost-channel-receive', channel: `c${s}`, pollInterval: 0.02, maxPollInterval: 0.1, wires: [[`got${s}`], [`skipped${s}`]] },
        { id: `got${s}`, z: `f${s}`, type: 'helper' },
        { id: `skipped${s}`, z: `f${s}`, type: 'helper' },
      ];
    };
    return { alice: side('alice', 'invite', { displayName: 'Alice' }), bob: side('bob', 'join'), daemon: daemonNode(e) };
  }

  function load(nodes: FlowNode[], credentials: Record<string, unknown>): Promise<void> {
    return helper.load([...channelModules(), ...coreNodes()], nodes, credentials);
  }

  /** The voucher as the editor's "show voucher" button gets it. */
  async function showVoucher(id = 'ca'): Promise<{ voucher: string; qr: string }> {
    const res = await rawHelper.request().get(`/katzenpost-channel/${id}/voucher`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.headers['cache-control'], 'no-store');
    assert.equal(res.body.channel, 'alice');
    return res.body;
  }

  function waitIntroduced(id: string, timeoutMs = 20_000): Promise<void> {
    const node = getNode(id) as ChannelNode;
    return until(() => node.introduction()?.done === true, timeoutMs, `${id} to be introduced (at ${JSON.stringify(node.introduction())})`);
  }

  it('invite shows a voucher (text and QR code), join takes it in, and both sides send and receive', async () => {
    const f = flows();
    await load([f.daemon, ...f.alice], { ca: { seed: seeds.alice } });
    const status = watchStatus('rxa');
    const { voucher, qr } = await showVoucher();
    assert.match(voucher, /^([0-9a-f]{8}-){7}[0-9a-f]{8}$/);
    assert.equal(decodeSvgQr(qr), voucher.toUpperCase(), 'the QR code holds the voucher');
    await status.waitFor((s) => s.text === 'awaiting other side' && s.fill === 'yellow');
    await watchStatus('txa').waitFor((s) => s.text === 'awaiting other side');
    // The inviting side cannot send before it is introduced: an input waits its timeout, then says why.
    const error = new Promise<{ args: unknown[] }>((resolve) => getNode('txa').once('call:error', resolve));
    getNode('txa').receive({ payload: 'too early', timeout: 300 });
    assert.match(
      textOf((await error).args[0]),
      /^katzenpost-channel-send: channel "alice" not open after 300 ms \(msg\.timeout\): the introduction is not complete yet \(awaiting other side\); the message was not queued$/,
    );
    // Other endpoints: the read cap of an invitation that is not introduced yet, a join channel's voucher.
    const readCap = await rawHelper.request().get('/katzenpost-channel/ca/read-cap');
    assert.equal(readCap.status, 503);
    assert.match(readCap.body.error, /not introduced yet/);

    // Bob pastes the voucher (with spaces instead of dashes, in capitals) and deploys: both tabs run.
    await helper.unload();
    const typed = voucher.toUpperCase().replace(/-/g, ' ');
    await load([f.daemon, ...f.alice, ...f.bob], { ca: { seed: seeds.alice }, cb: { seed: seeds.bob, voucher: typed } });
    const notVoucher = await rawHelper.request().get('/katzenpost-channel/cb/voucher');
    assert.equal(notVoucher.status, 409);
    assert.match(notVoucher.body.error, /only a channel of kind invite has a voucher/);
    // Bob's outgoing channel works at once: this is read by Alice once she is introduced.
    const bobAck = nextInput('acksb', 20_000);
    getNode('txb').receive({ payload: 'hello Alice' });
    assert.equal(typeof (await bobAck).index, 'string');
    const fromBob = await nextInput('gota', 30_000);
    assert.equal(fromBob.payload.toString(), 'hello Alice');
    assert.equal(fromBob.channel, 'alice/incoming');
    await waitIntroduced('ca');
    await waitIntroduced('cb');
    const fromAlice = collect('gotb', 2, 20_000);
    getNode('txa').receive({ payload: 'hello Bob' });
    getNode('txa').receive({ payload: Buffer.from('and again') });
    assert.deepEqual(
      (await fromAlice).map((m) => [m.payload.toString(), m.channel]),
      [
        ['hello Bob', 'bob/incoming'],
        ['and again', 'bob/incoming'],
      ],
    );
    // Once used, the voucher is not shown any more.
    const used = await rawHelper.request().get('/katzenpost-channel/ca/voucher');
    assert.equal(used.status, 409);
    assert.match(used.body.error, /the voucher was used/);
    const aliceReadCap = await rawHelper.request().get('/katzenpost-channel/ca/read-cap');
    assert.equal(aliceReadCap.status, 200);

    // The voucher is nowhere but in the voucher endpoint's answer (and Bob's credentials store).
    const secret = spellings(voucher);
    const inspect = (where: string, value: unknown): void => {
      const text = JSON.stringify(value, (_k, v) => (Buffer.isBuffer(v) ? v.toString('hex') : v));
      for (const s of secret) assert.ok(!text.toLowerCase().includes(s.toLowerCase()), `${where} contains the voucher`);
    };
    for (const id of ['ca', 'cb', 'txa', 'txb', 'rxa', 'rxb']) {
      inspect(`${id}: status`, rawHelper._NodePrototype.status.getCalls().filter((c) => c.thisValue === getNode(id)).map((c) => c.args));
      for (const m of ['log', 'warn', 'error'] as const) inspect(`${id}: node.${m}`, callsOf(id, m));
    }
    inspect('the runtime log', rawHelper._logSpy.getCalls().map((c) => c.args));
    // What the editor gets: the flow (export) and each node's credentials (passwords only as has_*).
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const api = require(require.resolve('@node-red/runtime/lib/api/flows', { paths: [path.dirname(require.resolve('node-red'))] })) as {
      init(r: unknown): void;
      getFlows(o: unknown): Promise<unknown>;
      getNodeCredentials(o: { type: string; id: string }): Promise<Record<string, unknown>>;
    };
    const nodes = rawHelper._redNodes;
    api.init({ nodes, flows: { getFlows: () => nodes.getFlows() }, log: { audit: () => {} } });
    inspect('the exported flow', await api.getFlows({}));
    const cbCredentials = await api.getNodeCredentials({ type: 'katzenpost-channel', id: 'cb' });
    assert.equal(cbCredentials.has_voucher, true);
    assert.equal(cbCredentials.has_seed, true);
    inspect("the join node's credentials as the editor gets them", cbCredentials);
    inspect("the invite node's credentials as the editor gets them", await api.getNodeCredentials({ type: 'katzenpost-channel', id: 'ca' }));
  });

  it('a restart of the joining side in the middle resumes from the channel database', async () => {
    const f = flows();
    await load([f.daemon, ...f.alice], { ca: { seed: seeds.alice } });
    const { voucher } = await showVoucher();
    // Alice published the invitation (box 0 of the voucher stream) and waits for the answer.
    await until(() => (getNode('ca') as ChannelNode).introduction()?.step === 'published', 10_000, 'the invitation to be published');
    await helper.unload();

    // Bob alone: stop him right after he saved the answer, before it is written to the voucher stream.
    await load([f.daemon, ...f.bob], { cb: { seed: seeds.bob, voucher } });
    const cb = getNode('cb') as ChannelNode;
    const inducted = new Promise<void>((resolve) => {
      cb.onIntroduction((p) => {
        if (p.step !== 'inducted') return;
        emu.stallReplies(1500);
        resolve();
      });
    });
    await watchStatus('rxb').waitFor((s) => s.fill === 'yellow' && ['reading invitation', 'sending answer'].includes(s.text ?? ''));
    await inducted;
    await helper.unload();
    const bobDb = new ChannelStore({ path: path.join(dir, 'bob.db') });
    try {
      const saved = bobDb.introduction('bob');
      assert.equal(saved?.role, 'join');
      assert.equal(saved?.step, 'inducted', 'stopped after the answer was saved, before it was written');
      assert.ok(saved?.sealedReply && saved.sealedReply.length > 0);
      assert.equal(bobDb.get('bob/incoming'), null, 'not introduced yet');
    } finally {
      await bobDb.close();
    }
    await delay(1600);

    // Both sides again: Bob writes the saved answer, Alice reads it, and they talk.
    await load([f.daemon, ...f.alice, ...f.bob], { ca: { seed: seeds.alice }, cb: { seed: seeds.bob, voucher } });
    await waitIntroduced('cb');
    await waitIntroduced('ca');
    const toBob = nextInput('gotb', 20_000);
    const toAlice = nextInput('gota', 20_000);
    getNode('txa').receive({ payload: 'after the restart' });
    getNode('txb').receive({ payload: 'welcome back' });
    assert.equal((await toBob).payload.toString(), 'after the restart');
    assert.equal((await toAlice).payload.toString(), 'welcome back');
  });

  it('a pinned daemon gives one clear configuration error, and nothing is retried', async () => {
    const pinned = await newEmulator({ latency: 'instant', protocol: 'pinned' });
    try {
      const f = flows(pinned);
      const fakeVoucher = randomBytes(32).toString('hex');
      await load([f.daemon, ...f.alice, ...f.bob], { ca: { seed: seeds.alice }, cb: { seed: seeds.bob, voucher: fakeVoucher } });
      for (const id of ['txa', 'rxa', 'txb', 'rxb']) {
        await watchStatus(id).waitFor((s) => s.fill === 'red' && s.text === 'voucher unsupported', 15_000);
      }
      await until(() => ['txa', 'rxa', 'txb', 'rxb'].every((id) => callsOf(id, 'error').length > 0), 5000, 'node.error on every user node');
      await delay(1500);
      for (const id of ['txa', 'rxa', 'txb', 'rxb']) {
        const errors = callsOf(id, 'error').map((a) => textOf(a[0]));
        assert.equal(errors.length, 1, `${id}: one error, got ${JSON.stringify(errors)}`);
        assert.match(errors[0], /^katzenpost-channel "(alice|bob)": vouchers need kpclientd v0\.0\.99 or later, and the daemon at .* speaks the pinned thin-client protocol/);
      }
      for (const id of ['ca', 'cb']) {
        assert.deepEqual(callsOf(id, 'error'), [], `${id} raises nothing itself`);
        assert.equal((getNode(id) as ChannelNode).introduction()?.error?.message.includes('vouchers need kpclientd v0.0.99 or later'), true);
      }
      const res = await rawHelper.request().get('/katzenpost-channel/ca/voucher');
      assert.equal(res.status, 409);
      assert.match(res.body.error, /vouchers need kpclientd v0\.0\.99 or later/);
      assert.ok(!JSON.stringify(res.body).includes(fakeVoucher));
    } finally {
      await helper.unload();
      await pinned.stop({ graceful: false });
    }
  });

  it('a malformed or missing voucher is refused at runtime naming the field, and a missing seed says to save the node', async () => {
    const f = flows();
    await load([f.daemon, ...f.bob, ...f.alice], { cb: { seed: seeds.bob, voucher: 'abcd-1234' }, ca: {} });
    await watchStatus('rxb').waitFor((s) => s.fill === 'red');
    await until(() => callsOf('rxb', 'error').length > 0 && callsOf('rxa', 'error').length > 0, 5000, 'the errors');
    assert.equal(
      textOf(callsOf('rxb', 'error')[0][0]),
      'katzenpost-channel "bob" credentials: voucher: expected 32 bytes as 64 hex digits (dashes and spaces allowed), got 8 hex digits',
    );
    assert.match(textOf(callsOf('rxa', 'error')[0][0]), /katzenpost-channel "alice": a channel of kind invite needs the seed of its outgoing channel/);
    await watchStatus('rxb').waitFor((s) => s.text === 'invalid argument');
    // The voucher typed in is not repeated anywhere.
    for (const id of ['cb', 'txb', 'rxb']) assert.ok(!JSON.stringify(callsOf(id, 'error')).includes('abcd-1234'));
    // No voucher at all: the status and the error say what to do.
    await helper.unload();
    await load([f.daemon, ...f.bob], { cb: { seed: seeds.bob } });
    await watchStatus('txb').waitFor((s) => s.fill === 'red' && s.text === 'no voucher');
    await until(() => callsOf('txb', 'error').length > 0, 5000, 'the error');
    assert.match(textOf(callsOf('txb', 'error')[0][0]), /katzenpost-channel "bob": a channel of kind join needs the voucher the other side shows; paste it into the Voucher field/);
  });

  it('the shipped example pair: two flows introduced by a voucher, then talking both ways', async () => {
    const file = path.resolve(__dirname, '..', '..', 'examples', 'Channels', '02 - Two flows introduced by a voucher.json');
    const example = JSON.parse(readFileSync(file, 'utf8')) as FlowNode[];
    const { host, port } = hostPort(emu.address);
    const tabs = [...new Set(example.map((n) => n.z).filter(Boolean))].map((id) => ({ id, type: 'tab', label: 'example' }));
    const prepare = (credentials: Record<string, unknown>) => ({
      flow: [
        ...tabs,
        ...example.map((n) => {
          if (n.type === 'katzenpost-daemon') return { ...n, host, port };
          if (n.type === 'debug') return { id: n.id, z: n.z, type: 'helper', name: n.name, wires: [] };
          if (n.type === 'katzenpost-channel-receive') return { ...n, pollInterval: 0.02, maxPollInterval: 0.1 };
          return n;
        }),
      ],
      credentials,
    });
    const channels = example.filter((n) => n.type === 'katzenpost-channel');
    const invite = channels.find((n) => n.mode === 'invite')!;
    const join = channels.find((n) => n.mode === 'join')!;
    assert.ok(invite && join, 'one channel of each kind');
    assert.notEqual(invite.database, join.database, 'the two sides keep separate databases');
    for (const n of example) assert.ok(!('credentials' in n), 'the shipped example carries no secret');
    const modules = [...channelModules(), ...coreNodes('inject', 'function', 'comment')];
    // As a user would: deploy (the editor generates the seeds), show the voucher, paste it into the join node, deploy again.
    const first = prepare({ [invite.id]: { seed: seeds.alice }, [join.id]: { seed: seeds.bob } });
    await helper.load(modules, first.flow, first.credentials);
    const res = await rawHelper.request().get(`/katzenpost-channel/${invite.id}/voucher`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    await helper.unload();
    const second = prepare({ [invite.id]: { seed: seeds.alice }, [join.id]: { seed: seeds.bob, voucher: res.body.voucher } });
    await helper.load(modules, second.flow, second.credentials);
    const id = (name: string) => example.find((n) => n.name === name)!.id as string;
    const toJoiner = nextInput(id(`${join.name} received`), 30_000);
    const toInviter = nextInput(id(`${invite.name} received`), 30_000);
    await waitIntroduced(invite.id, 30_000);
    for (const n of example) if (n.type === 'inject') getNode(n.id).receive({});
    assert.match((await toJoiner).payload, /^hello from /);
    assert.match((await toInviter).payload, /^hello from /);
  });
  describe('the editor form (nodes/katzenpost-channel.html), kinds invite and join', () => {
    const ROOT = path.resolve(__dirname, '..', '..');
    const catalogue = JSON.parse(readFileSync(path.join(ROOT, 'locales', 'en-US', 'katzenpost-channel.json'), 'utf8'));
    /** Node-RED's translation of a key of the channel catalogue, with __name__ values. */
    const translate = (key: string, subs: Record<string, unknown> = {}): string => {
      let v: any = catalogue;
      for (const part of key.split('.')) v = v?.[part];
      return String(v ?? key).replace(/__(\w+)__/g, (_m, n: string) => String(subs[n]));
    };
    /** Runs the form's script with stand-ins for jQuery (a map of field values) and the shared validators. */
    function editorDefinition(): { def: any; fields: Map<string, string> } {
      const html = readFileSync(path.join(ROOT, 'nodes', 'katzenpost-channel.html'), 'utf8');
      const script = /<script type="text\/javascript">([\s\S]*?)<\/script>/.exec(html)![1];
      const fields = new Map<string, string>();
      let def: any = null;
      const $ = (selector: string) => ({
        length: fields.has(selector) ? 1 : 0,
        val(v?: string) {
          if (v === undefined) return fields.get(selector) ?? '';
          fields.set(selector, v);
          return this;
        },
      });
      const KatzenpostValidators = { formValue: (node: any, id: string, prop: string) => fields.get(`#${id}`) ?? node[prop] };
      vm.runInNewContext(script, {
        RED: { nodes: { registerType: (_type: string, d: unknown) => (def = d), getType: () => ({ _: translate }) }, validators: {} },
        $,
        KatzenpostValidators,
        window: { crypto: webcrypto },
      });
      return { def, fields };
    }

    it('saving an invite or join channel without a seed generates one; a write cap does not stand in for it there', () => {
      const { def, fields } = editorDefinition();
      for (const mode of ['invite', 'join']) {
        fields.set('#node-config-input-mode', mode);
        fields.set('#node-config-input-seed', '');
        fields.set('#node-config-input-writeCap', 'ab'.repeat(168));
        def.oneditsave.call({});
        assert.match(fields.get('#node-config-input-seed')!, /^[0-9a-f]{64}$/, mode);
        fields.set('#node-config-input-seed', '__PWRD__');
        def.oneditsave.call({});
        assert.equal(fields.get('#node-config-input-seed'), '__PWRD__', `${mode}: a stored seed is kept`);
      }
      assert.equal(def.defaults.displayName.value, '');
      assert.equal(def.credentials.voucher.type, 'password', 'the voucher is a password credential: never exported');
      assert.equal(def.label.call({ name: 'alice', mode: 'invite' }), 'alice (invite)');
    });

    it('the voucher field accepts 64 hex digits with dashes, spaces and capitals, and refuses anything else in the runtime words', () => {
      const { def } = editorDefinition();
      const check = (v: unknown, mode = 'join') => def.credentials.voucher.validate.call({ _: translate, mode }, v, {});
      const good = randomBytes(32).toString('hex');
      for (const v of [good, good.toUpperCase(), good.match(/.{8}/g)!.join('-'), good.match(/.{4}/g)!.join(' '), '', '__PWRD__', undefined]) {
        assert.equal(check(v), true, String(v));
      }
      for (const bad of ['abcd', good.slice(2), 'zz'.repeat(32), `${good}00`]) {
        const runtime = (() => {
          try {
            parseVoucher(bad);
          } catch (e) {
            return (e as Error).message.replace(/^voucher: /, '');
          }
          return 'accepted';
        })();
        assert.equal(check(bad), `Voucher: ${runtime}`);
        assert.equal(check(bad, 'owned'), true, 'other kinds ignore the field');
      }
    });
  });
});
