// The store's read-only accessors (activity, receivedLog) and moveReader,
// which the editor's Katzenpost sidebar uses, against the emulator.
import assert from 'node:assert/strict';
import { ChannelStore, type ChannelClient } from '../../src/channels';
import { Harness, TEST_TIMEOUT_MS, collect, texts } from './helpers';

describe('channels: activity, the reader log and moving the reader', function () {
  this.timeout(TEST_TIMEOUT_MS);
  const h = new Harness();
  beforeEach(async () => {
    await h.start();
  });
  afterEach(() => h.cleanup());

  it('counts what happened and when, and lists the reader log without payloads', async () => {
    const client = await h.client();
    const store = h.store(client);
    const created = Date.now();
    const info = await store.createChannel('news');
    const fresh = store.activity('news');
    assert.deepEqual(
      { ...fresh, createdAt: 0, lastActivityAt: 0 },
      { sent: 0, received: 0, receivedMessages: 0, createdAt: 0, lastSentAt: null, lastReceivedAt: null, lastQueuedAt: null, lastActivityAt: 0 },
    );
    assert.ok(fresh.createdAt >= created - 1 && fresh.lastActivityAt === fresh.createdAt);
    for (const m of ['a', 'b']) await store.send('news', m);
    const reader = h.store(client);
    reader.importChannel('feed', store.shareReadCap('news'));
    assert.deepEqual(texts(await collect(reader, 'feed', 2)), ['a', 'b']);

    const w = store.activity('news');
    assert.equal(w.sent, 2);
    assert.equal(w.received, 0);
    assert.ok(w.lastSentAt !== null && w.lastSentAt >= fresh.createdAt);
    const r = reader.activity('feed');
    assert.equal(r.sent, 0);
    assert.equal(r.received, 2);
    assert.equal(r.receivedMessages, 2);
    assert.ok(r.lastReceivedAt !== null && r.lastActivityAt >= r.lastReceivedAt);
    const log = reader.receivedLog('feed');
    const first = BigInt(info.firstIndex);
    assert.deepEqual(
      log.map((e) => [e.kind, e.index, e.boxes, e.readAt !== null]),
      [
        ['message', (first + 1n).toString(), 1, true],
        ['message', first.toString(), 1, true],
      ],
    );
    assert.equal(reader.receivedLog('feed', 1).length, 1);
    assert.ok(!JSON.stringify(log).includes('payload'));
    assert.throws(() => reader.activity('nope'), { code: 'CHANNEL_NOT_FOUND' });
  });

  it('moves a running reader back (entries delivered again) and ahead (boxes skipped)', async () => {
    const client = await h.client();
    const store = h.store(client);
    const info = await store.createChannel('news');
    const first = BigInt(info.firstIndex);
    for (const m of ['a', 'b', 'c']) await store.send('news', m);
    const reader = h.store(client);
    reader.importChannel('feed', store.shareReadCap('news'));
    const got: string[] = [];
    const controller = new AbortController();
    const running = reader.receive('feed', (item) => void got.push(item.kind === 'message' ? item.payload.toString() : `<${item.kind}>`), {
      signal: controller.signal,
    });
    try {
      await waitFor(() => got.length === 3, 'three messages');
      // The reader now waits for box first+3; move it back to the second box.
      const moved = await reader.moveReader('feed', first + 1n);
      assert.equal(moved.readIndex, (first + 1n).toString());
      await waitFor(() => got.length === 5, 'b and c again');
      assert.deepEqual(got, ['a', 'b', 'c', 'b', 'c']);
      assert.equal(reader.activity('feed').received, 3, 'the log holds each entry once');
      // Skip box first+3: the message written there is never delivered.
      await reader.moveReader('feed', (first + 4n).toString());
      await store.send('news', 'd (skipped)');
      await store.send('news', 'e');
      await waitFor(() => got.length === 6, 'e');
      assert.equal(got[5], 'e');
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(got.length, 6);
      // Back to the very start, derived from the first box (an imported channel knows no later index but its reader's).
      await reader.moveReader('feed', first);
      await waitFor(() => got.length === 11, 'everything again');
      assert.deepEqual(got.slice(6), ['a', 'b', 'c', 'd (skipped)', 'e']);
    } finally {
      controller.abort();
      await running;
    }
  });

  it('refuses positions it cannot reach, naming the channel and the box', async () => {
    const client = await h.client();
    const store = h.store(client);
    const info = await store.createChannel('news');
    const first = BigInt(info.firstIndex);
    await assert.rejects(store.moveReader('news', first - 1n), {
      code: 'READER_POSITION',
      message: `channel "news": box ${first - 1n} is before the channel's first box ${first}`,
    });
    await assert.rejects(store.moveReader('news', first + 50n, { maxSteps: 10 }), {
      code: 'READER_POSITION',
      message: `channel "news": box ${first + 50n} is 50 boxes past the nearest known box ${first}; at most 10 can be derived`,
    });
    await assert.rejects(store.moveReader('news', 'ten'), { code: 'INVALID_ARGUMENT' });
    await assert.rejects(store.moveReader('nope', first), { code: 'CHANNEL_NOT_FOUND' });
    // A client without next_message_box_index cannot derive indexes; moving to a known box needs none.
    const limited = { ...(client as unknown as Record<string, unknown>), nextMessageBoxIndex: undefined } as unknown as ChannelClient;
    await assert.rejects(store.moveReader('news', first + 2n, { client: limited }), { code: 'NO_CLIENT', message: /cannot derive box indexes/ });
    const detached = h.store(null, {}, store.path + '-other');
    detached.importChannel('feed', store.shareReadCap('news'));
    await assert.rejects(detached.moveReader('feed', first + 1n), { code: 'NO_CLIENT' });
    assert.equal((await detached.moveReader('feed', first)).readIndex, first.toString());
    assert.ok(detached instanceof ChannelStore);
  });
});

function waitFor(pred: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (pred()) resolve();
      else if (Date.now() - start > timeoutMs) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(tick, 10);
    };
    tick();
  });
}
