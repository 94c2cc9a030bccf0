/**
 * The channel nodes in Node-RED (node-red-node-test-helper, compiled
 * dist/nodes) against a real emulator: two flows talking through a channel,
 * tombstone reports, the read-cap admin endpoint, bad input, queueing while
 * the daemon is away with exactly-once delivery across a redeploy, a caps
 * mismatch, and the shipped example flow.
 */
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { ThinClient } from '../../src/client/client';
import type { Emulator } from '../../src/emulator';
import type { ChannelStore } from '../../src/channels';
import {
  DIST_NODES,
  collect,
  coreNodes,
  daemonNode,
  delay,
  expectSilence,
  getNode,
  helper,
  hostPort,
  newEmulator,
  nextInput,
  watchStatus,
} from './support';

// The same helper singleton as support.ts, for the parts its typing leaves out.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const rawHelper = require('node-red-node-test-helper') as {
  settings(s: Record<string, unknown>): Record<string, unknown>;
  request(): { get(url: string): Promise<{ status: number; body: any; headers: Record<string, string> }> };
};

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
    const owned = await rawHelper.request().get('/katzenpost-channel/cw/read-cap');
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
    assert.equal((call.args[0] as { code?: string }).code, 'CHANNEL_CAPS_MISMATCH');
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
    await helper.load([...channelModules(), ...coreNodes('inject', 'function', 'comment')], flow);
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
