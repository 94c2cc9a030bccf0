// The receiver reads a large message's continuation boxes with up to
// READ_AHEAD_BOXES reads in flight once reads are slow (SLOW_READ_MS), one at
// a time while they are answered at once, and takes them in box order:
// through the real protocol, over a socket, against the emulator.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { encodeLarge, type ChannelItem, type ChannelProgress, type ChannelResendParams } from '../../src/channels';
import { indexCounter, writeParams } from '../../src/channels/boxes';
import { copyBoxLength } from '../../src/channels/framing';
import { READ_AHEAD_BOXES, SLOW_READ_MS } from '../../src/channels/receiver';
import type { ThinClient } from '../../src/client/client';
import { Harness, TEST_TIMEOUT_MS, collect } from './helpers';

/**
 * A client whose no-retry reads (the receiver's reads) are counted: how many
 * at once, and per box. `delayMs` holds each read back first, as a mixnet
 * round trip would.
 */
function watchReads(client: ThinClient, delayMs = 0) {
  const stats = { inFlight: 0, maxInFlight: 0, overlapping: 0, readsPerBox: new Map<string, number>() };
  const watched = new Proxy(client, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (prop !== 'startResendingEncryptedMessageNoRetry') return typeof value === 'function' ? value.bind(target) : value;
      return (params: ChannelResendParams, opts?: { signal?: AbortSignal }) => {
        const box = indexCounter(params.messageBoxIndex!);
        stats.readsPerBox.set(box, (stats.readsPerBox.get(box) ?? 0) + 1);
        if (stats.inFlight > 0) stats.overlapping++;
        stats.inFlight++;
        stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
        const delay = new Promise((r) => setTimeout(r, delayMs));
        return delay.then(() => target.startResendingEncryptedMessageNoRetry(params, opts)).finally(() => stats.inFlight--);
      };
    },
  });
  return { client: watched, stats };
}

/** One box of a message written by hand: its index and its write, encrypted ahead so boxes can be written in any order. */
interface PreparedBox {
  index: Buffer;
  counter: string;
  write(): Promise<unknown>;
}

/**
 * Encrypts `payload` framed as a large message, cut into the boxes a copy
 * stream would fill, from `start` on. `tombstoneAt` replaces that box (0 = the
 * first) with a tombstone (an empty write).
 */
async function prepareLarge(client: ThinClient, writeCap: Buffer, start: Buffer, payload: Buffer, tombstoneAt = -1): Promise<PreparedBox[]> {
  const framed = encodeLarge(payload);
  const boxLength = copyBoxLength(client.pigeonholeGeometry().MaxPlaintextPayloadLength);
  const boxes: PreparedBox[] = [];
  let index = start;
  for (let at = 0, n = 0; at < framed.length; at += boxLength, n++) {
    const plaintext = n === tombstoneAt ? Buffer.alloc(0) : framed.subarray(at, at + boxLength);
    const env = await client.encryptWrite(plaintext, writeCap, index);
    const params = writeParams(writeCap, env);
    boxes.push({ index, counter: indexCounter(index), write: () => client.startResendingEncryptedMessage(params) });
    index = env.nextMessageBoxIndex;
  }
  return boxes;
}

async function waitFor(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * A 60 KB message of which only the first 5 boxes are written yet, and a
 * store (over a watched client) that has imported its channel as `name`.
 */
async function partlyWritten(h: Harness, name: string) {
  const { client, stats } = watchReads(await h.client());
  const kp = await client.newKeypair(randomBytes(32));
  const payload = randomBytes(60_000);
  const boxes = await prepareLarge(client, kp.writeCap, kp.firstMessageIndex, payload);
  const early = 5;
  for (const box of boxes.slice(0, early)) await box.write();
  const reader = h.store(client);
  reader.importChannel(name, kp.readCap);
  return { stats, payload, boxes, early, reader };
}

describe('channels: reading a large message ahead', function () {
  this.timeout(TEST_TIMEOUT_MS);
  const h = new Harness();
  afterEach(() => h.cleanup());

  it(`delivers a 200 KB message intact with more than one and at most ${READ_AHEAD_BOXES} reads in flight when reads are slow, none past its last box`, async () => {
    await h.start();
    const writer = h.store(await h.client());
    const { client, stats } = watchReads(await h.client(), SLOW_READ_MS + 30);
    const reader = h.store(client);
    const info = await writer.createChannel('big');
    reader.importChannel('big', writer.shareReadCap('big'));
    const payload = randomBytes(200_000);
    const sent = await writer.send('big', payload);
    const boxRead: string[] = [];
    reader.on('progress', (p: ChannelProgress) => {
      if (p.stage === 'box-read') boxRead.push(p.index);
    });
    const [item] = await collect(reader, 'big', 1);
    assert.ok(item.kind === 'message' && item.payload.equals(payload), 'the payload arrives intact');
    assert.equal(item.boxes, sent.boxes);
    assert.ok(stats.maxInFlight > 1, `reads overlap (at most ${stats.maxInFlight} in flight)`);
    assert.ok(stats.maxInFlight <= READ_AHEAD_BOXES, `${stats.maxInFlight} reads in flight, over ${READ_AHEAD_BOXES}`);
    assert.equal(stats.inFlight, 0);
    const first = BigInt(info.firstIndex);
    const counters = Array.from({ length: sent.boxes }, (_, i) => (first + BigInt(i)).toString());
    assert.deepEqual([...stats.readsPerBox.keys()].sort(), [...counters].sort(), 'every box read, and no box after the message');
    assert.deepEqual([...boxRead].sort(), [...counters].sort(), "one 'box-read' per box");
  });

  it('reads one box at a time from a daemon that answers at once', async () => {
    await h.start();
    const writer = h.store(await h.client());
    const { client, stats } = watchReads(await h.client());
    const reader = h.store(client);
    await writer.createChannel('local');
    reader.importChannel('local', writer.shareReadCap('local'));
    const payload = randomBytes(200_000);
    const sent = await writer.send('local', payload);
    const [item] = await collect(reader, 'local', 1);
    assert.ok(item.kind === 'message' && item.payload.equals(payload));
    // Reads ahead only after a read slower than SLOW_READ_MS (a stalled machine may cause one or two).
    assert.ok(stats.overlapping < sent.boxes / 4, `${stats.overlapping} of ${sent.boxes} reads started while another was in flight`);
  });

  it('polls continuation boxes written after the receiver started and delivers them in order', async () => {
    await h.start();
    const { stats, payload, boxes, early, reader } = await partlyWritten(h, 'late');
    const received = collect(reader, 'late', 1);
    // The reader waits for the first missing box and reads ahead of it.
    const missing = boxes[early].counter;
    const ahead = boxes[early + 2].counter;
    await waitFor(() => (stats.readsPerBox.get(missing) ?? 0) >= 2 && (stats.readsPerBox.get(ahead) ?? 0) >= 1, 'polls of the missing boxes');
    assert.ok(stats.maxInFlight <= READ_AHEAD_BOXES);
    // Written last box first, so later boxes exist before earlier ones.
    for (const box of boxes.slice(early).reverse()) await box.write();
    const [item] = await received;
    assert.ok(item.kind === 'message' && item.payload.equals(payload), 'the payload arrives intact, in box order');
    assert.equal(item.boxes, boxes.length);
    assert.equal(item.index, boxes[0].counter);
    assert.equal(reader.get('late')!.readIndex, (BigInt(boxes[0].counter) + BigInt(boxes.length)).toString());
  });

  it('reports a large message interrupted by a tombstone as malformed, then the tombstone and the box after it', async () => {
    await h.start();
    const client = await h.client();
    const kp = await client.newKeypair(randomBytes(32));
    // Continuation boxes start with 0x07: never a message header.
    const tombstoneAt = 5;
    const boxes = await prepareLarge(client, kp.writeCap, kp.firstMessageIndex, Buffer.alloc(60_000, 7), tombstoneAt);
    assert.ok(boxes.length > tombstoneAt + READ_AHEAD_BOXES, 'reads are started past the tombstone');
    for (const box of boxes) await box.write();
    const reader = h.store(client);
    reader.importChannel('cut', kp.readCap);
    const items: ChannelItem[] = await collect(reader, 'cut', 3);
    assert.deepEqual(
      items.map((i) => ({ kind: i.kind, index: i.index, boxes: i.boxes, reason: i.kind === 'malformed' ? i.reason : undefined })),
      [
        {
          kind: 'malformed',
          index: boxes[0].counter,
          boxes: tombstoneAt,
          reason: `large message interrupted by a tombstone at box ${boxes[tombstoneAt].counter}`,
        },
        { kind: 'tombstone', index: boxes[tombstoneAt].counter, boxes: 1, reason: undefined },
        { kind: 'malformed', index: boxes[tombstoneAt + 1].counter, boxes: 1, reason: 'box does not start with a channel message header' },
      ],
    );
  });

  it('stops in the middle of a message with reads in flight, none left running or rejected, and delivers it once on the next receive', async () => {
    await h.start();
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      const { stats, payload, boxes, early, reader } = await partlyWritten(h, 'stop');
      const got: ChannelItem[] = [];
      const controller = new AbortController();
      const running = reader.receive('stop', (item) => void got.push(item), { signal: controller.signal });
      await waitFor(() => (stats.readsPerBox.get(boxes[early].counter) ?? 0) >= 2 && stats.inFlight > 1, 'several reads in flight');
      controller.abort();
      await running;
      assert.equal(stats.inFlight, 0, 'no read of the message is left running');
      assert.deepEqual(got, []);
      const info = reader.get('stop')!;
      assert.equal(info.readIndex, boxes[0].counter, 'nothing recorded');
      assert.equal(info.unread, 0);

      for (const box of boxes.slice(early)) await box.write();
      const [item] = await collect(reader, 'stop', 1);
      assert.ok(item.kind === 'message' && item.payload.equals(payload));
      assert.equal(item.index, boxes[0].counter);
      // Nothing more: the message is not delivered a second time.
      const more: ChannelItem[] = [];
      const quiet = new AbortController();
      const timer = setTimeout(() => quiet.abort(), 300);
      await reader.receive('stop', (i) => void more.push(i), { signal: quiet.signal });
      clearTimeout(timer);
      assert.deepEqual(more, []);
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(unhandled, []);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
