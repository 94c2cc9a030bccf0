/**
 * Persistent channels (src/channels, ChannelStore) on the REAL mixnet
 * (npm run test:mixnet): an owner and a reader, each with its own ThinClient
 * to the real kpclientd and its own SQLite database, and the same through the
 * Node-RED channel send / channel receive nodes with two daemon config nodes.
 *
 * The owner queues every message at once (the store writes them one after
 * the other, each after the courier's ACK of the previous one); the reader
 * polls the channel from its first box. Timings per message are printed for
 * the report: when the owner's write was acknowledged and when the reader had
 * the message, both measured from the moment the messages were queued.
 */
import * as assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { ChannelStore, type ChannelItem, type ChannelMessage, type ChannelProblem, type SendResult } from '../../src/channels';
import type { ThinClient } from '../../src';
import { DIST_NODES, collect as collectNode, expectSilence, getNode, helper, hostPort, loadFlow, statusHistory } from '../nodes/support';
import { connectReal, daemonAddress } from './support';

// The helper singleton, for the settings the typed wrapper leaves out.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const rawHelper = require('node-red-node-test-helper') as { settings(s: Record<string, unknown>): Record<string, unknown> };

const MESSAGES = 20;
/** Position of the message larger than a box (it goes through a copy command). */
const LARGE_AT = 9;
const LARGE_SIZE = 5000;

/**
 * Deadline of the requests kpclientd answers without the mixnet (encrypt
 * read/write, copy-stream envelopes). Each is CTIDH1024 work in the daemon:
 * on this shared 2-core host they took 20-46 s while other suites ran, above
 * the 30 s request timeout of a daemon config node and near connectReal()'s
 * 60 s. A request that times out is retried by the store (a 'problem'), so a
 * short deadline only slows the test down, but one that is always shorter
 * than the daemon's work would stall the channel.
 */
const LOCAL_TIMEOUT_MS = 180_000;

const short = (b: Buffer): string => createHash('sha256').update(b).digest('hex').slice(0, 12);
const s = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

describe('real mixnet: a persistent channel between two clients', function () {
  // 20 writes of ~5-15 s each in sequence, a copy command that can take a minute or two, and lost packets.
  this.timeout(30 * 60 * 1000);
  let dir: string;
  const cleanups: (() => Promise<unknown> | unknown)[] = [];

  before(async () => {
    // Fails (never skips) when no network is running.
    daemonAddress();
    // ... or its daemon does not answer (at once, rather than after every test's deadline).
    await (await connectReal()).close();
  });
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'kp-mixnet-channel-'));
  });
  afterEach(async () => {
    for (const fn of cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch {
        // cleanup goes on
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  async function client(): Promise<ThinClient> {
    const c = await connectReal({ requestTimeoutMs: LOCAL_TIMEOUT_MS });
    cleanups.push(() => c.close());
    return c;
  }

  function store(c: ThinClient | null, file: string): ChannelStore {
    const st = new ChannelStore({ path: path.join(dir, file), client: c });
    cleanups.push(() => st.close());
    return st;
  }

  it(`the owner queues ${MESSAGES} messages at once (one of ${LARGE_SIZE} bytes), the reader gets all of them in order, once, byte-exact @ci`, async () => {
    const ownerClient = await client();
    const readerClient = await client();
    const owner = store(ownerClient, 'owner.db');
    const reader = store(readerClient, 'reader.db');
    const problems: string[] = [];
    const onProblem = (who: string) => (p: ChannelProblem) => problems.push(`${who} ${p.operation}: ${p.error.message}`);
    owner.on('problem', onProblem('owner'));
    reader.on('problem', onProblem('reader'));

    // Every read attempt of the reader (a fresh encrypt_read and a no-retry read), timed.
    const attempts: { box: string; started: number; ms?: number; found?: boolean }[] = [];
    let current: (typeof attempts)[number] | null = null;
    reader.on('progress', (p) => {
      if (p.stage === 'reading') {
        if (current && current.ms === undefined) current.found = false;
        current = { box: p.index, started: Date.now() };
        attempts.push(current);
      } else if (p.stage === 'box-read' && current) {
        current.ms = Date.now() - current.started;
        current.found = true;
      }
    });

    const name = `real-${randomBytes(4).toString('hex')}`;
    const info = await owner.createChannel(name);
    reader.importChannel(name, owner.shareReadCap(name));
    assert.equal(reader.get(name)!.id, info.id);

    // Sizes: an empty message, the largest single box of this network's geometry, one copy, random others.
    const maxSingle = ownerClient.pigeonholeGeometry().MaxPlaintextPayloadLength - 4;
    const payloads = Array.from({ length: MESSAGES }, (_, i) => {
      if (i === 0) return Buffer.alloc(0);
      if (i === 5) return randomBytes(maxSingle);
      if (i === LARGE_AT) return randomBytes(LARGE_SIZE);
      return randomBytes(1 + Math.floor(Math.random() * 1200));
    });

    // The reader starts first: it polls boxes that do not exist yet.
    const t0 = Date.now();
    const items: { item: ChannelItem; at: number }[] = [];
    const controller = new AbortController();
    const deadline = setTimeout(() => controller.abort(), 25 * 60 * 1000);
    const receiving = reader.receive(
      name,
      (item) => {
        items.push({ item, at: Date.now() - t0 });
        if (items.length >= MESSAGES) controller.abort();
      },
      { signal: controller.signal },
    );

    const acks: { result: SendResult; at: number }[] = [];
    const sends = payloads.map((p, i) =>
      owner.send(name, p).then((result) => {
        acks[i] = { result, at: Date.now() - t0 };
        return result;
      }),
    );
    const queuedAtOnce = owner.get(name)!.queued;
    let results: SendResult[];
    try {
      results = await Promise.all(sends);
      await receiving;
    } finally {
      clearTimeout(deadline);
      controller.abort();
    }
    const total = Date.now() - t0;

    // The timing log for the report.
    console.log(`      channel ${name}: ${MESSAGES} messages queued at once (${queuedAtOnce} queued), all received after ${s(total)}`);
    console.log('      #   bytes  boxes  acked   (write)  received  (ack->read)');
    for (let i = 0; i < MESSAGES; i++) {
      const a = acks[i];
      const r = items[i];
      const write = a.at - (i === 0 ? 0 : acks[i - 1].at);
      console.log(
        `      ${String(i + 1).padStart(2)} ${String(payloads[i].length).padStart(6)} ${String(a.result.boxes).padStart(6)} ${s(a.at).padStart(8)} ${s(write).padStart(8)} ${(r ? s(r.at) : '-').padStart(9)} ${(r ? s(r.at - a.at) : '-').padStart(9)}`,
      );
    }
    // A poll that found nothing ended when the next attempt started, after the store's backoff pause.
    const found = attempts.filter((x) => x.found).map((x) => x.ms!);
    const stats = (v: number[]) => (v.length ? `min ${s(Math.min(...v))}, median ${s([...v].sort((x, y) => x - y)[Math.floor(v.length / 2)])}, max ${s(Math.max(...v))}` : '-');
    console.log(`      reader: ${attempts.length} read attempts for ${found.length} boxes; a successful read took ${stats(found)}`);
    const writes = acks.map((a, i) => a.at - (i === 0 ? 0 : acks[i - 1].at)).filter((_, i) => i !== LARGE_AT);
    console.log(`      owner: a one-box write (queue head to ACK) took ${stats(writes)}; the ${LARGE_SIZE}-byte copy ${s(acks[LARGE_AT].at - acks[LARGE_AT - 1].at)}`);
    if (problems.length) console.log(`      problems retried through:\n        ${problems.join('\n        ')}`);

    assert.equal(queuedAtOnce, MESSAGES, 'every message was queued before the first was acknowledged');
    assert.equal(items.length, MESSAGES, `received ${items.length} of ${MESSAGES} before the deadline`);
    // In order, byte-exact, each under the index its ACK reported.
    for (let i = 0; i < MESSAGES; i++) {
      const it = items[i].item;
      assert.equal(it.kind, 'message', `item ${i} is a ${it.kind}`);
      const m = it as ChannelMessage;
      assert.equal(m.index, results[i].index, `item ${i}: index`);
      assert.ok(m.payload.equals(payloads[i]), `item ${i}: ${m.payload.length} bytes ${short(m.payload)}, sent ${payloads[i].length} bytes ${short(payloads[i])}`);
      assert.equal(m.boxes, results[i].boxes, `item ${i}: boxes`);
      assert.equal(m.channel, name);
    }
    // The large one went through a copy command: 5040 framed bytes in boxes of MaxPlaintextPayloadLength - 4.
    assert.equal(results[LARGE_AT].boxes, Math.ceil((LARGE_SIZE + 40) / maxSingle));
    for (let i = 0; i < MESSAGES; i++) if (i !== LARGE_AT) assert.equal(results[i].boxes, 1, `message ${i} took one box`);
    // Acknowledged in queue order, on consecutive boxes.
    const first = BigInt(info.firstIndex);
    let expected = first;
    for (let i = 0; i < MESSAGES; i++) {
      assert.equal(BigInt(results[i].index), expected, `message ${i} starts at box ${expected - first}`);
      expected += BigInt(results[i].boxes);
      if (i > 0) assert.ok(acks[i].at >= acks[i - 1].at, `message ${i} acknowledged before message ${i - 1}`);
    }
    const end = expected;
    assert.equal(owner.get(name)!.queued, 0);
    assert.equal(BigInt(owner.get(name)!.writeIndex!), end);
    assert.equal(BigInt(reader.get(name)!.readIndex), end);
    assert.equal(reader.get(name)!.unread, 0);

    // Exactly once, also across a restart: a new store on the reader's database finds nothing more
    // (one real read of the next, unwritten box and its poll).
    await reader.close();
    const again = store(readerClient, 'reader.db');
    const extra: ChannelItem[] = [];
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(), 30_000);
    let reads = 0;
    again.on('progress', (p) => {
      if (p.stage === 'reading') reads++;
    });
    await again.receive(name, (item) => void extra.push(item), { signal: stop.signal });
    clearTimeout(timer);
    assert.deepEqual(extra, [], 'nothing is delivered twice after a restart');
    assert.ok(reads >= 1, 'the restarted reader polled the next box');
    assert.equal(BigInt(again.get(name)!.readIndex), end);
  });

  it('through the Node-RED channel send and channel receive nodes (two daemon config nodes, two databases): 3 messages', async () => {
    const { host, port } = hostPort(daemonAddress());
    rawHelper.settings({ userDir: dir });
    cleanups.push(() => rawHelper.settings({}));
    // The owner's seed, and the read cap the reader imports (as the editor's form shows it).
    const seed = randomBytes(32);
    const readCap = (await (await client()).newKeypair(seed)).readCap;
    // (A name equal to a node id would read as a reference to that config node.)
    const daemon = (id: string) => ({ id, type: 'katzenpost-daemon', name: `kpclientd ${id}`, transport: 'tcp', host, port, handshakeTimeout: 10, requestTimeout: LOCAL_TIMEOUT_MS / 1000 });
    const flow = [
      { id: 'f1', type: 'tab', label: 'writer' },
      { id: 'f2', type: 'tab', label: 'reader' },
      daemon('d1'),
      daemon('d2'),
      { id: 'cw', type: 'katzenpost-channel', name: 'out', daemon: 'd1', mode: 'owned', database: path.join(dir, 'writer.db') },
      { id: 'cr', type: 'katzenpost-channel', name: 'in', daemon: 'd2', mode: 'imported', database: path.join(dir, 'reader.db') },
      { id: 'tx', z: 'f1', type: 'katzenpost-channel-send', channel: 'cw', wires: [['acks']] },
      { id: 'acks', z: 'f1', type: 'helper' },
      // The node's defaults: poll after 1 s, backing off to 10 s.
      { id: 'rx', z: 'f2', type: 'katzenpost-channel-receive', channel: 'cr', pollInterval: 1, maxPollInterval: 10, wires: [['got'], ['skipped']] },
      { id: 'got', z: 'f2', type: 'helper' },
      { id: 'skipped', z: 'f2', type: 'helper' },
    ];
    const modules = ['katzenpost-daemon', 'katzenpost-channel', 'katzenpost-channel-send', 'katzenpost-channel-receive'].map((t) =>
      require(path.join(DIST_NODES, `${t}.js`)),
    );
    cleanups.push(() => helper.unload());
    await loadFlow(modules, flow, { cw: { seed: seed.toString('hex') }, cr: { readCap: readCap.toString('base64') } });

    const errors: string[] = [];
    for (const id of ['tx', 'rx']) getNode(id).on('call:error', (c: { args: unknown[] }) => errors.push(`${id}: ${String((c.args[0] as Error)?.message ?? c.args[0])}`));
    const payloads: (string | Buffer)[] = ['first', randomBytes(700), 'third \u{1F426}'];
    const t0 = Date.now();
    const acks = collectNode('acks', 3, 10 * 60 * 1000);
    const got = collectNode('got', 3, 12 * 60 * 1000);
    // If one fails, the other's later rejection must not land on another test.
    got.catch(() => undefined);
    payloads.forEach((p, i) => getNode('tx').receive({ payload: p, topic: `m${i}` }));
    const a = await acks;
    console.log(`      acknowledged after ${s(Date.now() - t0)}`);
    const g = await got;
    console.log(`      received after ${s(Date.now() - t0)}`);
    assert.deepEqual(errors, []);
    assert.deepEqual(
      a.map((m) => m.topic),
      ['m0', 'm1', 'm2'],
    );
    for (let i = 0; i < 3; i++) {
      assert.ok(Buffer.isBuffer(g[i].payload));
      assert.ok(g[i].payload.equals(Buffer.isBuffer(payloads[i]) ? payloads[i] : Buffer.from(payloads[i] as string)), `payload ${i}`);
      assert.equal(g[i].index, a[i].index);
      assert.equal(g[i].channel, 'in');
      assert.equal(a[i].channel, 'out');
    }
    assert.equal(BigInt(a[1].index), BigInt(a[0].index) + 1n);
    assert.equal(BigInt(a[2].index), BigInt(a[1].index) + 1n);
    // Queued without waiting: the send node showed the queue while the first write travelled.
    const texts = statusHistory('tx').map((st) => st.text ?? '');
    assert.ok(texts.some((t) => /^[23] queued$/.test(t)), `send node statuses: ${JSON.stringify(texts)}`);
    // Each once: nothing more within a few more polls, and nothing skipped.
    await expectSilence('got', 15_000);
    await expectSilence('skipped', 1);
  });
});
