import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { statSync } from 'node:fs';
import {
  ChannelStore,
  LARGE_HEADER_LENGTH,
  type ChannelClient,
  type ChannelItem,
  type ChannelProgress,
  type SendResult,
} from '../../src/channels';
import { copyBoxLength } from '../../src/channels/framing';
import { ThinClient } from '../../src/client/client';
import { KatzenpostError } from '../../src/client/errors';
import { Harness, TEST_TIMEOUT_MS, collect, texts } from './helpers';

// The store codes against a structural subset of ThinClient; a real client must fit it.
const _fits: (c: ThinClient) => ChannelClient = (c) => c;
void _fits;

describe('channels: store against the emulator', function () {
  this.timeout(TEST_TIMEOUT_MS);
  const h = new Harness();
  beforeEach(async () => {
    await h.start();
  });
  afterEach(() => h.cleanup());

  it('creates, lists, shares and imports channels without exposing caps in their descriptions', async () => {
    const client = await h.client();
    const store = h.store(client);
    const info = await store.createChannel('news');
    assert.equal(info.kind, 'owned');
    assert.equal(info.writeIndex, info.firstIndex);
    assert.equal(info.readIndex, info.firstIndex);
    assert.notEqual(info.firstIndex, '0');
    const cap = store.shareReadCap('news');
    assert.equal(cap.length, 136);
    const reader = h.store(null);
    const imported = reader.importChannel('feed', cap);
    assert.equal(imported.kind, 'imported');
    assert.equal(imported.id, info.id);
    assert.equal(imported.firstIndex, info.firstIndex);
    assert.equal(imported.writeIndex, null);
    assert.deepEqual(
      reader.list().map((c) => c.name),
      ['feed'],
    );
    const described = JSON.stringify(store.list());
    assert.ok(!described.includes(cap.toString('hex')), 'list() must not contain the read cap');
    await assert.rejects(reader.send('feed', 'x'), { code: 'CHANNEL_READ_ONLY' });
    await assert.rejects(store.createChannel('news'), { code: 'CHANNEL_EXISTS' });
    assert.throws(() => reader.importChannel('other', cap), { code: 'CHANNEL_EXISTS' });
    assert.throws(() => reader.importChannel('bad', Buffer.alloc(10)), { code: 'INVALID_ARGUMENT' });
    await assert.rejects(store.send('missing', 'x'), { code: 'CHANNEL_NOT_FOUND' });
    await assert.rejects(store.send('news', 42 as unknown as string), { code: 'INVALID_ARGUMENT' });
    await reader.delete('feed');
    assert.deepEqual(reader.list(), []);
  });

  it('keeps the database file private (0600) and in WAL mode', async () => {
    const dir = h.tempDir();
    const path = join(dir, 'c.db');
    const store = h.store(null, {}, path);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const db = new Database(path, { readonly: true });
    try {
      assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    } finally {
      db.close();
    }
    assert.equal(store.list().length, 0);
  });

  it('drops a payload from the reader log once it was delivered, unless told to retain payloads', async () => {
    const client = await h.client();
    const payload = randomBytes(70_000); // two chunks
    for (const retainPayloads of [false, true]) {
      const path = join(h.tempDir(), 'c.db');
      const store = h.store(client, { retainPayloads }, path);
      await store.createChannel('c');
      await store.send('c', payload);
      const [item] = await collect(store, 'c', 1);
      assert.ok(item.kind === 'message' && item.payload.equals(payload));
      await store.close();
      const db = new Database(path, { readonly: true });
      try {
        const chunks = db.prepare('SELECT data FROM received_chunks ORDER BY chunk').all() as { data: Buffer }[];
        if (retainPayloads) assert.ok(Buffer.concat(chunks.map((c) => c.data)).equals(payload), 'retained, in chunks');
        else assert.equal(chunks.length, 0);
        assert.equal((db.prepare('SELECT COUNT(*) AS n FROM outbound_chunks').get() as { n: number }).n, 0, 'the sent payload is gone');
        assert.equal((db.prepare('SELECT COUNT(*) AS n FROM pending_copy_elements').get() as { n: number }).n, 0);
      } finally {
        db.close();
      }
    }
  });

  it('sends and receives in order across two clients with separate databases', async () => {
    const writer = h.store(await h.client());
    const reader = h.store(await h.client());
    await writer.createChannel('chat');
    reader.importChannel('chat', writer.shareReadCap('chat'));
    const sent = Array.from({ length: 8 }, (_, i) => `message ${i + 1}`);
    // Start the reader first: it waits for boxes that do not exist yet.
    const received = collect(reader, 'chat', sent.length);
    const results = await Promise.all(sent.map((m) => writer.send('chat', m)));
    const items = await received;
    assert.deepEqual(texts(items), sent);
    assert.deepEqual(
      items.map((i) => i.index),
      results.map((r) => r.index),
    );
    // Indexes are consecutive box counters starting at the channel's first box.
    const first = BigInt(writer.get('chat')!.firstIndex);
    assert.deepEqual(
      results.map((r) => BigInt(r.index) - first),
      sent.map((_, i) => BigInt(i)),
    );
    assert.equal(items[0].channel, 'chat');
    assert.equal(writer.get('chat')!.queued, 0);
    assert.equal(BigInt(reader.get('chat')!.readIndex), first + 8n);
    assert.equal(reader.get('chat')!.unread, 0);
  });

  it('receives through the async iterator, marking an item read when the next one is asked for', async () => {
    const writer = h.store(await h.client());
    await writer.createChannel('it');
    for (const m of ['a', 'b', 'c']) await writer.send('it', m);
    const got: string[] = [];
    for await (const item of writer.messages('it')) {
      got.push(item.kind === 'message' ? item.payload.toString() : item.kind);
      if (got.length === 2) break;
    }
    assert.deepEqual(got, ['a', 'b']);
    const rest = await collect(writer, 'it', 1);
    assert.deepEqual(texts(rest), ['c']);
  });

  it('sends a 10 KB payload through a copy command and reassembles it between small messages', async () => {
    const writer = h.store(await h.client());
    const reader = h.store(await h.client());
    await writer.createChannel('big');
    reader.importChannel('big', writer.shareReadCap('big'));
    const large = randomBytes(10 * 1024);
    const progress: ChannelProgress[] = [];
    writer.on('progress', (p) => progress.push(p));
    const r1 = await writer.send('big', 'before');
    const r2 = await writer.send('big', large);
    const r3 = await writer.send('big', 'after');
    assert.equal(r1.boxes, 1);
    assert.ok(r2.boxes >= 7, `10 KB should span at least 7 boxes, got ${r2.boxes}`);
    assert.equal(BigInt(r3.index), BigInt(r2.index) + BigInt(r2.boxes));
    assert.ok(progress.some((p) => p.stage === 'pending-recorded' && p.mode === 'copy'));
    assert.ok(progress.some((p) => p.stage === 'copy-dispatch'));
    const items = await collect(reader, 'big', 3);
    assert.equal(items[1].kind, 'message');
    assert.ok(items[1].kind === 'message' && items[1].payload.equals(large));
    assert.equal(items[1].boxes, r2.boxes);
    assert.equal(items[1].index, r2.index);
    assert.deepEqual([texts(items)[0], texts(items)[2]], ['before', 'after']);
  });

  it('sends a payload of several copy windows window by window, into the boxes one copy call would fill', async () => {
    const client = await h.client();
    // Watch the copy-stream calls the store makes.
    const builds: { length: number; isStart: boolean; isLast: boolean }[] = [];
    const watched = new Proxy(client, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target);
        if (prop !== 'createCourierEnvelopesFromPayload') return typeof value === 'function' ? value.bind(target) : value;
        return (payload: Uint8Array, cap: Uint8Array, index: Uint8Array, isStart: boolean, isLast: boolean) => {
          builds.push({ length: payload.length, isStart, isLast });
          return target.createCourierEnvelopesFromPayload(payload, cap, index, isStart, isLast);
        };
      },
    });
    const writer = h.store(watched);
    await writer.createChannel('long');
    const payload = randomBytes(200_000);
    const recorded: number[] = [];
    writer.on('progress', (p) => {
      if (p.stage === 'element-recorded') recorded.push(p.element);
    });
    const sent = await writer.send('long', payload);
    const boxLength = copyBoxLength(client.pigeonholeGeometry().MaxPlaintextPayloadLength);
    const framed = LARGE_HEADER_LENGTH + payload.length;
    assert.equal(sent.boxes, Math.ceil(framed / boxLength), 'full boxes, as from one call');
    assert.ok(builds.length >= 4, `${builds.length} windows`);
    assert.deepEqual(
      builds.map((b) => [b.isStart, b.isLast]),
      builds.map((_, i) => [i === 0, i === builds.length - 1]),
    );
    assert.ok(builds.slice(0, -1).every((b) => b.length % boxLength === 0), 'every window but the last is a whole number of boxes');
    assert.equal(builds.reduce((n, b) => n + b.length, 0), framed);
    assert.deepEqual(recorded, Array.from({ length: recorded.length }, (_, i) => i), 'elements numbered on across windows');
    const [item] = await collect(writer, 'long', 1);
    assert.ok(item.kind === 'message' && item.payload.equals(payload));
    assert.equal(item.boxes, sent.boxes);
  });

  it('encrypts a copy element anew when the daemon refuses its envelope, and the message arrives intact', async () => {
    const client = await h.client();
    let writes = 0;
    let refused: string | null = null;
    const encryptedAt: string[] = [];
    const flaky = new Proxy(client, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target);
        if (prop === 'encryptWrite') {
          return (plaintext: Uint8Array, cap: Uint8Array, index: Uint8Array) => {
            encryptedAt.push(Buffer.from(index).toString('hex'));
            return target.encryptWrite(plaintext, cap, index);
          };
        }
        if (prop === 'startResendingEncryptedMessage') {
          return (params: Parameters<ThinClient['startResendingEncryptedMessage']>[0], opts?: { signal?: AbortSignal }) => {
            // The fifth write (all go to the temporary channel: one message, a copy), refused as a replica would a stale epoch.
            if (params.writeCap && ++writes === 5) {
              refused = Buffer.from(params.envelopeHash).toString('hex');
              return Promise.reject(new KatzenpostError('REPLICA_EPOCH', 'envelope for a stale replica epoch', 13));
            }
            return target.startResendingEncryptedMessage(params, opts);
          };
        }
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const writer = h.store(flaky);
    await writer.createChannel('refused');
    const problems: string[] = [];
    writer.on('problem', (p) => problems.push(p.error.message));
    const payload = randomBytes(20_000);
    const sent = await writer.send('refused', payload);
    assert.ok(refused, 'an element was refused');
    assert.deepEqual(problems, ['envelope for a stale replica epoch']);
    const twice = encryptedAt.filter((at, i) => encryptedAt.indexOf(at) !== i);
    assert.equal(twice.length, 1, 'the refused element, and only it, encrypted again for its temp box');
    const [item] = await collect(writer, 'refused', 1);
    assert.ok(item.kind === 'message' && item.payload.equals(payload));
    assert.equal(item.boxes, sent.boxes);
  });

  it('sends a payload of exactly one box directly and one byte more through a copy', async () => {
    const client = await h.client();
    const writer = h.store(client);
    await writer.createChannel('edge');
    const max = client.pigeonholeGeometry().MaxPlaintextPayloadLength;
    const fits = randomBytes(max - 4);
    const over = randomBytes(max - 3);
    assert.equal((await writer.send('edge', fits)).boxes, 1);
    assert.equal((await writer.send('edge', over)).boxes, 2);
    assert.equal((await writer.send('edge', Buffer.alloc(0))).boxes, 1);
    const items = await collect(writer, 'edge', 3);
    assert.ok(items[0].kind === 'message' && items[0].payload.equals(fits));
    assert.ok(items[1].kind === 'message' && items[1].payload.equals(over));
    assert.ok(items[2].kind === 'message' && items[2].payload.length === 0);
  });

  it('skips tombstoned messages and reports them, one report per box', async () => {
    const writer = h.store(await h.client());
    const reader = h.store(await h.client());
    await writer.createChannel('t');
    reader.importChannel('t', writer.shareReadCap('t'));
    const r = [await writer.send('t', 'keep 1'), await writer.send('t', 'drop 2'), await writer.send('t', randomBytes(3000))];
    await writer.send('t', 'keep 4');
    const result = await writer.tombstone('t', { index: r[1].index, count: 2 });
    assert.deepEqual(result, { channel: 't', index: r[1].index, messages: 2, boxes: 1 + r[2].boxes });
    const items = await collect(reader, 't', 3 + r[2].boxes);
    assert.deepEqual(
      items.map((i) => i.kind),
      ['message', 'tombstone', ...Array(r[2].boxes).fill('tombstone'), 'message'],
    );
    assert.deepEqual([texts(items)[0], texts(items).at(-1)], ['keep 1', 'keep 4']);
    assert.equal(items[1].index, r[1].index);
    assert.equal(items[2].index, r[2].index);
    // Only acknowledged messages of this store can be tombstoned.
    await assert.rejects(writer.tombstone('t', { index: '1' }), { code: 'TOMBSTONE_RANGE' });
    await assert.rejects(writer.tombstone('t', { index: r[0].index, count: 99 }), { code: 'TOMBSTONE_RANGE' });
    await assert.rejects(reader.tombstone('t', { index: r[0].index }), { code: 'CHANNEL_READ_ONLY' });
  });

  it('imports a read cap and reads history written before the import', async () => {
    const writer = h.store(await h.client());
    await writer.createChannel('history');
    for (const m of ['one', 'two', 'three']) await writer.send('history', m);
    const reader = h.store(await h.client());
    const info = reader.importChannel('mirror', writer.shareReadCap('history'));
    assert.equal(info.readIndex, info.firstIndex);
    assert.deepEqual(texts(await collect(reader, 'mirror', 3)), ['one', 'two', 'three']);
    // The read position is durable: a second receiver continues after "three".
    const more = collect(reader, 'mirror', 1);
    await writer.send('history', 'four');
    assert.deepEqual(texts(await more), ['four']);
  });

  it('queues durably while no daemon is attached and sends in order once one is', async () => {
    const dir = h.tempDir();
    const path = join(dir, 'q.db');
    const client = await h.client();
    const first = new ChannelStore({ path, client, retryInitialMs: 50 });
    await first.createChannel('q');
    first.setClient(null);
    const early = ['q1', 'q2', 'q3'].map((m) => first.send('q', m));
    assert.equal(first.queued('q'), 3);
    await first.close();
    for (const p of early) await assert.rejects(p, { code: 'CHANNEL_CLOSED' });
    // A new process (a new store on the same file) picks the queue up.
    const second = h.store(null, {}, path);
    assert.equal(second.queued('q'), 3);
    const acked: SendResult[] = [];
    second.on('sent', (r) => acked.push(r));
    const later = second.send('q', 'q4');
    second.setClient(client);
    const r4 = await later;
    assert.equal(acked.length, 4);
    assert.deepEqual(
      acked.map((a) => a.seq),
      [...acked.map((a) => a.seq)].sort((a, b) => a - b),
    );
    assert.equal(r4.seq, acked[3].seq);
    assert.deepEqual(texts(await collect(second, 'q', 4)), ['q1', 'q2', 'q3', 'q4']);
  });

  it('delivers every message exactly once across a daemon restart in the middle of sending', async () => {
    const writer = h.store(await h.client());
    const reader = h.store(await h.client());
    await writer.createChannel('r');
    reader.importChannel('r', writer.shareReadCap('r'));
    const items: ChannelItem[] = [];
    const controller = new AbortController();
    const reading = reader.receive('r', (i) => void items.push(i), { signal: controller.signal });
    const sent = Array.from({ length: 12 }, (_, i) => (i === 6 ? randomBytes(4000).toString('hex') : `m${i}`));
    let restarted: Promise<void> | null = null;
    writer.on('progress', (p) => {
      if (!restarted && p.stage === 'pending-recorded' && p.seq >= 4) restarted = h.emulator.restart();
    });
    const results = await Promise.all(sent.map((m) => writer.send('r', m)));
    assert.ok(restarted, 'the daemon restarted during the sends');
    await restarted;
    const deadline = Date.now() + 20_000;
    while (items.length < sent.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    // Give a duplicate, if any, the chance to show up before checking.
    await new Promise((r) => setTimeout(r, 200));
    controller.abort();
    await reading;
    assert.deepEqual(texts(items), sent);
    assert.deepEqual(
      items.map((i) => i.index),
      results.map((r) => r.index),
    );
  });

  it('refuses to reuse a database row for different caps, and adopts an owned channel without overwriting', async () => {
    const client = await h.client();
    const seed = randomBytes(32);
    const a = h.store(client);
    await a.openChannel('shared', { kind: 'owned', seed });
    await a.send('shared', 'from A 1');
    await a.send('shared', 'from A 2');
    await assert.rejects(a.openChannel('shared', { kind: 'owned', seed: randomBytes(32) }), { code: 'CHANNEL_CAPS_MISMATCH' });
    // Reopening with the same seed is fine, and works without a daemon call.
    a.setClient(null);
    const again = await a.openChannel('shared', { kind: 'owned', seed });
    assert.equal(BigInt(again.writeIndex!), BigInt(again.firstIndex) + 2n);
    a.setClient(client);
    // A fresh database with the same seed (e.g. a flow moved to another machine)
    // first finds the next free box, so nothing is overwritten.
    const b = h.store(client);
    const opened = await b.openChannel('moved', { kind: 'owned', seed });
    assert.equal(opened.writeIndex, null);
    const r = await b.send('moved', 'from B');
    assert.equal(BigInt(r.index), BigInt(opened.firstIndex) + 2n);
    // The same caps under another name in the same database: the row is renamed.
    const renamed = await b.openChannel('renamed', { kind: 'owned', seed });
    assert.equal(renamed.name, 'renamed');
    assert.equal(b.get('moved'), null);
    assert.deepEqual(texts(await collect(a, 'shared', 3)), ['from A 1', 'from A 2', 'from B']);
  });

  it('reports boxes that are not channel messages as malformed and goes on', async () => {
    const client = await h.client();
    const store = h.store(client);
    const kp = await client.newKeypair(randomBytes(32));
    // A foreign writer puts raw bytes in box 0; the store writes after it.
    const enc = await client.encryptWrite(Buffer.from('not framed'), kp.writeCap, kp.firstMessageIndex);
    await client.startResendingEncryptedMessage({
      writeCap: kp.writeCap,
      envelopeDescriptor: enc.envelopeDescriptor,
      messageCiphertext: enc.messageCiphertext,
      envelopeHash: enc.envelopeHash,
    });
    await store.openChannel('mixed', { kind: 'owned', writeCap: kp.writeCap });
    await store.send('mixed', 'framed');
    const items = await collect(store, 'mixed', 2);
    assert.equal(items[0].kind, 'malformed');
    assert.equal(items[0].kind === 'malformed' && typeof items[0].reason, 'string');
    assert.deepEqual(texts(items).slice(1), ['framed']);
  });

  it('stops a receiver on abort, refuses a second receiver, and closes with a waiting reader', async () => {
    const store = h.store(await h.client());
    await store.createChannel('idle');
    const controller = new AbortController();
    const running = store.receive('idle', () => {}, { signal: controller.signal });
    await assert.rejects(store.receive('idle', () => {}), { code: 'CHANNEL_BUSY' });
    controller.abort();
    await running;
    const again = store.receive('idle', () => {});
    const started = Date.now();
    await store.close();
    await again;
    assert.ok(Date.now() - started < 3000, 'close() returns promptly with a receiver polling');
    assert.throws(() => store.list(), { code: 'CHANNEL_CLOSED' });
  });

  it('redelivers an item whose handler threw, before anything newer', async () => {
    const store = h.store(await h.client());
    await store.createChannel('retry');
    await store.send('retry', 'first');
    await store.send('retry', 'second');
    await assert.rejects(
      store.receive('retry', () => {
        throw new Error('consumer failed');
      }),
      /consumer failed/,
    );
    assert.equal(store.get('retry')!.unread, 1);
    assert.deepEqual(texts(await collect(store, 'retry', 2)), ['first', 'second']);
  });
});
