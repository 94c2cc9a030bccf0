/**
 * The channel nodes in Node-RED (node-red-node-test-helper, compiled
 * dist/nodes) against a real emulator: two flows talking through a channel,
 * tombstone reports, the read-cap admin endpoint, bad input, queueing while
 * the daemon is away with exactly-once delivery across a redeploy, a caps
 * mismatch, missing credentials, bounded waits for a channel that cannot open,
 * the editor's seed generation, and the shipped example flow.
 */
import * as assert from 'node:assert/strict';
import { randomBytes, webcrypto } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import * as vm from 'node:vm';
import * as sinon from 'sinon';
import { ThinClient } from '../../src/client/client';
import type { Emulator } from '../../src/emulator';
import { ChannelStore } from '../../src/channels';
import {
  DIST_NODES,
  collect,
  coreNodes,
  daemonNode,
  deadAddress,
  delay,
  expectSilence,
  getNode,
  helper,
  hostPort,
  newEmulator,
  nextInput,
  until,
  watchStatus,
  type TestNode,
} from './support';

// The same helper singleton as support.ts, for the parts its typing leaves out.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const rawHelper = require('node-red-node-test-helper') as {
  settings(s: Record<string, unknown>): Record<string, unknown>;
  request(): { get(url: string): Promise<{ status: number; body: any; headers: Record<string, string> }> };
  _NodePrototype: Record<string, { getCalls(): { thisValue: unknown; args: unknown[] }[] }>;
};

/** Arguments of every call of a spied Node method (warn, error, ...) on node `id` since the flow was loaded. */
function callsOf(id: string, method: 'warn' | 'error' | 'log'): unknown[][] {
  const node = getNode(id);
  return rawHelper._NodePrototype[method]
    .getCalls()
    .filter((c) => c.thisValue === node)
    .map((c) => c.args);
}

/** The message text of a node.error / node.warn argument. */
function textOf(arg: unknown): string {
  return String((arg as Error | null)?.message ?? arg);
}

/**
 * Records how a node completes its input messages (done() or done(err)),
 * through the runtime's Node.prototype._complete that done calls.
 */
function recordCompletions(node: TestNode): { error: Error | undefined }[] {
  const seen: { error: Error | undefined }[] = [];
  const original = node._complete as (msg: unknown, err?: Error) => void;
  node._complete = function (this: unknown, msg: unknown, err?: Error) {
    seen.push({ error: err });
    try {
      original.call(this, msg, err);
    } catch {
      // the flow is being stopped
    }
  };
  return seen;
}

const CHANNEL_TYPES = ['katzenpost-daemon', 'katzenpost-channel', 'katzenpost-channel-send', 'katzenpost-channel-receive'];

function channelModules(): unknown[] {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return CHANNEL_TYPES.map((t) => require(path.join(DIST_NODES, `${t}.js`)));
}

type FlowNode = Record<string, any>;

describe('channel nodes: persistent channels in Node-RED', function () {
  this.timeout(30_000);
  let emu: Emulator;
  let dir: string;
  let seed: Buffer;
  let readCap: Buffer;

  before(async () => {
    emu = await newEmulator({ latency: 'instant' });
  });
  after(async () => {
    await emu?.stop({ graceful: false });
  });
  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'kp-channel-nodes-'));
    rawHelper.settings({ userDir: dir });
    seed = randomBytes(32);
    const client = new ThinClient({ dial: emu.address });
    await client.connect();
    try {
      readCap = (await client.newKeypair(seed)).readCap;
    } finally {
      await client.close();
    }
  });
  afterEach(async () => {
    await helper.unload();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Writer on tab f1 (owned, its own database), reader on tab f2 (imported, another database). */
  function twoFlows(): { flow: FlowNode[]; credentials: Record<string, unknown> } {
    const flow: FlowNode[] = [
      { id: 'f1', type: 'tab', label: 'writer' },
      { id: 'f2', type: 'tab', label: 'reader' },
      daemonNode(emu),
      { id: 'cw', type: 'katzenpost-channel', name: 'alpha', daemon: 'daemon', mode: 'owned', database: path.join(dir, 'writer.db') },
      { id: 'cr', type: 'katzenpost-channel', name: 'alpha-in', daemon: 'daemon', mode: 'imported', database: 'reader.db' },
      { id: 'tx', z: 'f1', type: 'katzenpost-channel-send', channel: 'cw', wires: [['acks']] },
      { id: 'acks', z: 'f1', type: 'helper' },
      { id: 'rx', z: 'f2', type: 'katzenpost-channel-receive', channel: 'cr', pollInterval: 0.02, maxPollInterval: 0.1, wires: [['got'], ['skipped']] },
      { id: 'got', z: 'f2', type: 'helper' },
      { id: 'skipped', z: 'f2', type: 'helper' },
    ];
    return { flow, credentials: { cw: { seed: seed.toString('hex') }, cr: { readCap: readCap.toString('base64') } } };
  }

  it('two flows talk through a channel: in order, with matching indexes, large payloads reassembled', async () => {
    const { flow, credentials } = twoFlows();
    await helper.load(channelModules(), flow, credentials);
    const large = randomBytes(5000);
    const payloads: (string | Buffer)[] = ['one', Buffer.from('two'), large, 'four'];
    const acks = collect('acks', payloads.length);
    const got = collect('got', payloads.length);
    const tx = getNode('tx');
    const inputs = payloads.map((p, i) => ({ payload: p, topic: `t${i}` }));
    for (const m of inputs) tx.receive(m);
    const a = await acks;
    const g = await got;
    assert.deepEqual(
      a.map((m) => m.topic),
      ['t0', 't1', 't2', 't3'],
    );
    assert.equal(a[0].payload, 'one', 'the input payload passes through unchanged');
    assert.equal(a[2].boxes > 1, true, 'the large payload went through a copy command');
    for (let i = 0; i < payloads.length; i++) {
      assert.ok(Buffer.isBuffer(g[i].payload));
      assert.ok(g[i].payload.equals(Buffer.from(payloads[i] as string)), `payload ${i}`);
      assert.equal(g[i].index, a[i].index);
      assert.equal(g[i].channel, 'alpha-in');
      assert.equal(a[i].channel, 'alpha');
    }
    assert.ok(BigInt(a[3].index) > BigInt(a[0].index));
    await expectSilence('got', 200);
  });

  it('reports tombstoned messages on the second output and goes on', async () => {
    const { flow, credentials } = twoFlows();
    await helper.load(channelModules(), flow, credentials);
    const tx = getNode('tx');
    const acks = collect('acks', 3);
    for (const p of ['keep', 'delete me', 'keep too']) tx.receive({ payload: p });
    const a = await acks;
    const store = (await (getNode('cw') as unknown as { open(): Promise<ChannelStore> }).open()) as ChannelStore;
    await store.tombstone('alpha', { index: a[1].index });
    const got = collect('got', 2);
    const skipped = nextInput('skipped');
    const s = await skipped;
    assert.equal(s.kind, 'tombstone');
    assert.equal(s.index, a[1].index);
    assert.deepEqual(s.payload, { kind: 'tombstone', index: a[1].index, boxes: 1 });
    assert.deepEqual(
      (await got).map((m) => m.payload.toString()),
      ['keep', 'keep too'],
    );
  });

  it('serves the read cap to the editor through the admin endpoint, and nothing for an unknown node', async () => {
    const { flow, credentials } = twoFlows();
    await helper.load(channelModules(), flow, credentials);
    const timers = sinon.spy(global, 'setTimeout');
    let owned;
    try {
      owned = await rawHelper.request().get('/katzenpost-channel/cw/read-cap');
    } finally {
      timers.restore();
    }
    // The endpoint's 15 s limit is cleared once the answer is there.
    const limit = timers.getCalls().filter((c) => c.args[1] === 15_000);
    assert.equal(limit.length, 1);
    assert.equal((limit[0].returnValue as unknown as { _destroyed: boolean })._destroyed, true, 'the 15 s timer was not cleared');
    assert.equal(owned.status, 200);
    assert.equal(owned.body.readCap, readCap.toString('hex'));
    assert.equal(owned.body.channel, 'alpha');
    assert.equal(owned.headers['cache-control'], 'no-store');
    const imported = await rawHelper.request().get('/katzenpost-channel/cr/read-cap');
    assert.equal(imported.body.readCap, readCap.toString('hex'));
    const missing = await rawHelper.request().get('/katzenpost-channel/nope/read-cap');
    assert.equal(missing.status, 404);
    assert.ok(!JSON.stringify(missing.body).includes(readCap.toString('hex')));
    // The endpoint is declared with the katzenpost-channel.read permission.
    const source = readFileSync(path.join(DIST_NODES, 'katzenpost-channel.js'), 'utf8');
    assert.match(source, /needsPermission\(READ_PERMISSION\)/);
    assert.match(source, /READ_PERMISSION = 'katzenpost-channel\.read'/);
  });

  it('fails a payload of the wrong type with done(err), naming msg.payload, and keeps working', async () => {
    const { flow, credentials } = twoFlows();
    await helper.load(channelModules(), flow, credentials);
    const tx = getNode('tx');
    const error = new Promise<{ args: unknown[] }>((resolve) => tx.once('call:error', resolve));
    tx.receive({ payload: 42 });
    const call = await error;
    assert.match(String((call.args[0] as Error).message ?? call.args[0]), /msg\.payload/);
    const ack = nextInput('acks');
    tx.receive({ payload: 'fine' });
    assert.equal(typeof (await ack).index, 'string');
    assert.equal((await nextInput('got')).payload.toString(), 'fine');
  });

  it('queues while the daemon does not answer, shows the count, and delivers each message once after a redeploy', async () => {
    const { flow, credentials } = twoFlows();
    const writerOnly = flow.filter((n) => !['f2', 'cr', 'rx', 'got', 'skipped'].includes(n.id));
    await helper.load(channelModules(), writerOnly, credentials);
    const status = watchStatus('tx');
    // Open the channel (and let its first-box lookup finish) before the daemon goes quiet.
    const first = nextInput('acks');
    getNode('tx').receive({ payload: 'before' });
    await first;
    emu.stallReplies(2500);
    for (const p of ['q1', 'q2', 'q3']) getNode('tx').receive({ payload: p });
    const s = await status.waitFor((x) => x.text === '3 queued');
    assert.equal(s.fill, 'blue');
    // Redeploy while the three wait (one of them in flight): they stay queued in the database.
    await helper.unload();
    await delay(2600);
    await helper.load(channelModules(), flow, credentials);
    const got = await collect('got', 4, 15_000);
    assert.deepEqual(
      got.map((m) => m.payload.toString()),
      ['before', 'q1', 'q2', 'q3'],
    );
    await expectSilence('got', 300);
  });

  it('refuses to run a channel whose name the database holds with other caps', async () => {
    const { flow, credentials } = twoFlows();
    await helper.load(channelModules(), flow, credentials);
    const ack = nextInput('acks');
    getNode('tx').receive({ payload: 'x' });
    await ack;
    await helper.unload();
    const other = { ...credentials, cw: { seed: randomBytes(32).toString('hex') } };
    const writerOnly = flow.filter((n) => !['f2', 'cr', 'rx', 'got', 'skipped'].includes(n.id));
    await helper.load(channelModules(), writerOnly, other);
    const tx = getNode('tx');
    const error = new Promise<{ args: unknown[] }>((resolve) => tx.once('call:error', resolve));
    tx.receive({ payload: 'y' });
    const call = await error;
    // Reported as its sentence (what the debug sidebar shows); a Catch node would get the code in msg.error.code.
    assert.equal(typeof call.args[0], 'string');
    assert.match(textOf(call.args[0]), /^channel "alpha": /);
  });

  /** The writer of twoFlows with a receiver of the same (owned) channel, for the credential tests. */
  function ownedOnly(): FlowNode[] {
    const { flow } = twoFlows();
    return [
      ...flow.filter((n) => !['f2', 'cr', 'rx', 'got', 'skipped'].includes(n.id)),
      { id: 'rx', z: 'f1', type: 'katzenpost-channel-receive', channel: 'cw', pollInterval: 0.02, maxPollInterval: 0.1, wires: [['got'], ['skipped']] },
      { id: 'got', z: 'f1', type: 'helper' },
      { id: 'skipped', z: 'f1', type: 'helper' },
    ];
  }

  it('an owned channel with empty credentials and no database row refuses to run, telling the user to open and save it', async () => {
    await helper.load(channelModules(), ownedOnly(), {});
    const tx = getNode('tx');
    // Both user nodes show it on their status and in the debug sidebar.
    await watchStatus('tx').waitFor((st) => st.fill === 'red' && st.text === 'no credentials');
    await watchStatus('rx').waitFor((st) => st.fill === 'red' && st.text === 'no credentials');
    await until(() => callsOf('tx', 'error').length > 0 && callsOf('rx', 'error').length > 0, 5000, 'node.error on tx and rx');
    for (const id of ['tx', 'rx']) {
      const err = callsOf(id, 'error')[0][0];
      assert.equal(typeof err, 'string', 'reported as its sentence, readable in the debug sidebar');
      assert.match(textOf(err), /katzenpost-channel "alpha": an owned channel needs a seed or a write cap in its credentials/);
      assert.match(textOf(err), /Open the channel node in the editor and save it/);
    }
    // An input fails with the same error (done(err), so a Catch node gets it) and nothing is queued.
    const error = new Promise<{ args: unknown[] }>((resolve) => tx.once('call:error', resolve));
    tx.receive({ payload: 'not sent' });
    assert.match(textOf((await error).args[0]), /an owned channel needs a seed or a write cap/);
    const cap = await rawHelper.request().get('/katzenpost-channel/cw/read-cap');
    assert.equal(cap.status, 503);
    assert.match(cap.body.error, /needs a seed or a write cap/);
    // No channel was invented: the database has no row of that name.
    const store = (getNode('cw') as unknown as { dbPath: string }).dbPath;
    await helper.unload();
    if (existsSync(store)) {
      const s = new ChannelStore({ path: store });
      try {
        assert.equal(s.get('alpha'), null);
      } finally {
        await s.close();
      }
    }
  });

  it('an owned channel with empty credentials whose name the database holds keeps working, with one warning', async () => {
    const { credentials } = twoFlows();
    await helper.load(channelModules(), ownedOnly(), { cw: credentials.cw });
    const first = nextInput('got');
    getNode('tx').receive({ payload: 'with a seed' });
    assert.equal((await first).payload.toString(), 'with a seed');
    await helper.unload();
    // Redeployed without credentials (as earlier versions allowed): the row of its name is used.
    await helper.load(channelModules(), ownedOnly(), {});
    const got = collect('got', 2);
    getNode('tx').receive({ payload: 'without' });
    getNode('tx').receive({ payload: 'still without' });
    assert.deepEqual(
      (await got).map((m) => m.payload.toString()),
      ['without', 'still without'],
    );
    const warnings = callsOf('cw', 'warn').map((a) => textOf(a[0]));
    assert.equal(warnings.length, 1, `one warning, got ${JSON.stringify(warnings)}`);
    assert.match(warnings[0], /katzenpost-channel "alpha": the credentials are empty; using the caps the channel database .* holds under this name/);
    assert.ok(!warnings[0].includes(seed.toString('hex')));
    assert.deepEqual(callsOf('tx', 'error'), []);
  });

  describe('a channel that cannot open (new seed, daemon unreachable)', () => {
    let dead: string;
    before(async () => {
      dead = await deadAddress();
    });

    function unreachableFlow(sendProps: Record<string, unknown> = {}): FlowNode[] {
      const { flow } = twoFlows();
      return flow
        .filter((n) => !['f2', 'cr', 'rx', 'got', 'skipped'].includes(n.id))
        .map((n) => (n.id === 'daemon' ? daemonNode({ address: dead }, { handshakeTimeout: 1 }) : n.id === 'tx' ? { ...n, ...sendProps } : n));
    }

    it('an input waits at most msg.timeout, then fails naming the channel and the daemon', async () => {
      const { credentials } = twoFlows();
      await helper.load(channelModules(), unreachableFlow(), { cw: credentials.cw });
      const tx = getNode('tx');
      const error = new Promise<{ args: unknown[] }>((resolve) => tx.once('call:error', resolve));
      const started = Date.now();
      tx.receive({ payload: 'x', timeout: 300 });
      const err = (await error).args[0];
      assert.ok(Date.now() - started < 5000);
      assert.equal(
        err,
        `katzenpost-channel-send: channel "alpha" not open after 300 ms (msg.timeout): daemon at ${dead} not reachable; the message was not queued`,
      );
    });

    it("without msg.timeout the node's timeout (seconds) applies", async () => {
      const { credentials } = twoFlows();
      await helper.load(channelModules(), unreachableFlow({ timeout: '0.2' }), { cw: credentials.cw });
      const tx = getNode('tx');
      const error = new Promise<{ args: unknown[] }>((resolve) => tx.once('call:error', resolve));
      tx.receive({ payload: 'x' });
      assert.match(textOf((await error).args[0]), /channel "alpha" not open after 200 ms \(node timeout\): daemon at .* not reachable/);
    });

    it('closing the node completes a waiting input cleanly (done() without an error) and says it was not queued', async () => {
      const { credentials } = twoFlows();
      await helper.load(channelModules(), unreachableFlow(), { cw: credentials.cw });
      const tx = getNode('tx');
      const completions = recordCompletions(tx);
      tx.receive({ payload: 'x', timeout: 0 });
      await delay(300);
      assert.deepEqual(completions, [], 'still waiting before the close');
      // unload() removes the helper's spies before it stops the flow: watch this node's own methods instead.
      const said: string[] = [];
      const errors: string[] = [];
      tx.warn = (m: unknown) => said.push(textOf(m));
      tx.error = (m: unknown) => errors.push(textOf(m));
      await helper.unload();
      await delay(200);
      assert.deepEqual(completions, [{ error: undefined }]);
      assert.deepEqual(said, ['katzenpost-channel-send: closed while 1 message(s) waited for the channel to open; they were not queued and are not sent']);
      assert.deepEqual(errors, []);
    });
  });

  describe('the editor form (nodes/katzenpost-channel.html)', () => {
    /** Runs the form's script with a stand-in for jQuery over a map of field values; returns the node definition. */
    function editorDefinition(): { def: any; fields: Map<string, string> } {
      const html = readFileSync(path.resolve(__dirname, '..', '..', 'nodes', 'katzenpost-channel.html'), 'utf8');
      const script = /<script type="text\/javascript">([\s\S]*?)<\/script>/.exec(html)![1];
      const fields = new Map<string, string>();
      let def: any = null;
      const $ = (selector: string) => ({
        val(v?: string) {
          if (v === undefined) return fields.get(selector) ?? '';
          fields.set(selector, v);
          return this;
        },
      });
      vm.runInNewContext(script, {
        RED: { nodes: { registerType: (_type: string, d: unknown) => (def = d) }, validators: {} },
        $,
        window: { crypto: webcrypto },
      });
      assert.ok(def, 'the script registers the type');
      return { def, fields };
    }

    it('saving an owned channel with neither seed nor write cap fills the seed with 32 random bytes (hex)', () => {
      const { def, fields } = editorDefinition();
      fields.set('#node-config-input-mode', 'owned');
      def.oneditsave.call({});
      const seed1 = fields.get('#node-config-input-seed')!;
      assert.match(seed1, /^[0-9a-f]{64}$/);
      fields.set('#node-config-input-seed', '');
      def.oneditsave.call({});
      const seed2 = fields.get('#node-config-input-seed')!;
      assert.match(seed2, /^[0-9a-f]{64}$/);
      assert.notEqual(seed1, seed2);
    });

    it('keeps a stored or typed seed, a write cap, and leaves imported channels alone', () => {
      const { def, fields } = editorDefinition();
      fields.set('#node-config-input-mode', 'owned');
      fields.set('#node-config-input-seed', '__PWRD__');
      def.oneditsave.call({});
      assert.equal(fields.get('#node-config-input-seed'), '__PWRD__');
      fields.set('#node-config-input-seed', '');
      fields.set('#node-config-input-writeCap', 'ab'.repeat(168));
      def.oneditsave.call({});
      assert.equal(fields.get('#node-config-input-seed'), '');
      fields.set('#node-config-input-writeCap', '');
      fields.set('#node-config-input-mode', 'imported');
      def.oneditsave.call({});
      assert.equal(fields.get('#node-config-input-seed'), '');
    });
  });

  it('runs the shipped example flow: two flows talking through a channel', async () => {
    const file = path.resolve(__dirname, '..', '..', 'examples', 'Channels', '01 - Two flows talking through a channel.json');
    const example = JSON.parse(readFileSync(file, 'utf8')) as FlowNode[];
    const { host, port } = hostPort(emu.address);
    const tabs = [...new Set(example.map((n) => n.z).filter(Boolean))].map((id) => ({ id, type: 'tab', label: 'example' }));
    const flow = [
      ...tabs,
      ...example.map((n) => {
        if (n.type === 'katzenpost-daemon') return { ...n, host, port };
        if (n.type === 'debug') return { id: n.id, z: n.z, type: 'helper', name: n.name, wires: [] };
        // Poll fast in the test; the example polls every second.
        if (n.type === 'katzenpost-channel-receive') return { ...n, pollInterval: 0.02, maxPollInterval: 0.1 };
        return n;
      }),
    ];
    // The example's channel node has no credentials (a user's editor generates the seed when the node is saved):
    // the test supplies one, as saving the form would.
    const channelNode = example.find((n) => n.type === 'katzenpost-channel')!;
    assert.equal(channelNode.mode, 'owned');
    assert.ok(!('credentials' in channelNode), 'the shipped example carries no secret');
    await helper.load([...channelModules(), ...coreNodes('inject', 'function', 'comment')], flow, {
      [channelNode.id]: { seed: randomBytes(32).toString('hex') },
    });
    const id = (name: string) => example.find((n) => n.name === name)!.id as string;
    const acks = collect(id('acknowledged'), 2);
    const received = collect(id('received'), 2);
    const inject = example.find((n) => n.type === 'inject')!.id as string;
    getNode(inject).receive({});
    getNode(inject).receive({});
    const a = await acks;
    const r = await received;
    assert.deepEqual(
      r.map((m) => m.payload),
      ['hello channel', 'hello channel'],
    );
    assert.deepEqual(
      r.map((m) => m.index),
      a.map((m) => m.index),
    );
    assert.equal(BigInt(a[1].index), BigInt(a[0].index) + 1n);
    // The channel was created on deploy in the default database under the user directory.
    assert.ok(readFileSync(path.join(dir, 'katzenpost-channels.db')).length > 0);
  });
});
