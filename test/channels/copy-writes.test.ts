// The sender writes a copy stream's elements COPY_WRITES_IN_FLIGHT at a time
// (each to its own temp box), a failed write lets the others of its window
// settle before the attempt ends, and the retry writes the elements left
// unacknowledged COPY_WRITES_IN_FLIGHT at a time too: through the real
// protocol, over a socket, against the emulator.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { ChannelResendParams } from '../../src/channels';
import { COPY_WRITES_IN_FLIGHT } from '../../src/channels/sender';
import type { ThinClient } from '../../src/client/client';
import { Harness, TEST_TIMEOUT_MS, collect } from './helpers';

/**
 * A client whose ARQ writes (startResendingEncryptedMessage with a write cap:
 * the copy stream's elements, the single boxes) are counted, each held back
 * `delayMs` first; `failWrite` is the 1-based number of a write that fails
 * (without reaching the daemon), 0 for none.
 */
function watchWrites(client: ThinClient, delayMs: number, failWrite = 0) {
  const stats = { writes: 0, inFlight: 0, maxInFlight: 0, inFlightWhenFailed: -1, startedAfterFailure: 0, failedAt: 0, writesOfRetry: 0, maxInFlightOfRetry: 0 };
  const watched = new Proxy(client, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target);
      if (prop !== 'startResendingEncryptedMessage') return typeof value === 'function' ? value.bind(target) : value;
      return async (params: ChannelResendParams, opts?: { signal?: AbortSignal }) => {
        if (!params.writeCap) return target.startResendingEncryptedMessage(params, opts);
        const n = ++stats.writes;
        if (stats.failedAt > 0 && stats.inFlightWhenFailed > 0) stats.startedAfterFailure++;
        stats.inFlight++;
        stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
        if (stats.inFlightWhenFailed === 0) {
          stats.writesOfRetry++;
          stats.maxInFlightOfRetry = Math.max(stats.maxInFlightOfRetry, stats.inFlight);
        }
        try {
          await new Promise((r) => setTimeout(r, delayMs));
          if (n === failWrite) {
            stats.failedAt = n;
            stats.inFlightWhenFailed = stats.inFlight - 1;
            throw new Error('write failed (injected)');
          }
          return await target.startResendingEncryptedMessage(params, opts);
        } finally {
          stats.inFlight--;
          // The others of the failed window have settled: later writes belong to the next attempt.
          if (stats.failedAt > 0 && stats.inFlight === 0) stats.inFlightWhenFailed = 0;
        }
      };
    },
  });
  return { client: watched, stats };
}

describe('channels: writing a copy stream', function () {
  this.timeout(TEST_TIMEOUT_MS);
  const h = new Harness();
  afterEach(() => h.cleanup());

  /** A writer on a client watched by watchWrites and a reader share channel `name`; `bytes` random bytes are sent, and this resolves once they are. */
  async function sendWatched(name: string, bytes: number, delayMs: number, failWrite = 0, writerOptions: Parameters<Harness['store']>[1] = {}) {
    await h.start();
    const { client, stats } = watchWrites(await h.client(), delayMs, failWrite);
    const writer = h.store(client, writerOptions);
    const reader = h.store(await h.client());
    await writer.createChannel(name);
    reader.importChannel(name, writer.shareReadCap(name));
    const payload = randomBytes(bytes);
    await writer.send(name, payload);
    return { stats, writer, payload, received: async () => (await collect(reader, name, 1))[0] };
  }

  it(`writes the elements of a 100 KB message more than one and at most ${COPY_WRITES_IN_FLIGHT} at a time; the reader gets it intact`, async () => {
    const { stats, payload, received } = await sendWatched('big', 100_000, 5);
    assert.ok(stats.maxInFlight > 1, `writes overlap (at most ${stats.maxInFlight} in flight)`);
    assert.ok(stats.maxInFlight <= COPY_WRITES_IN_FLIGHT, `${stats.maxInFlight} writes in flight, over ${COPY_WRITES_IN_FLIGHT}`);
    assert.equal(stats.inFlight, 0);
    const item = await received();
    assert.ok(item.kind === 'message' && item.payload.equals(payload), 'the payload arrives intact');
  });

  it('a failed element write: the rest of its window settles before the retry, and the message arrives once, intact', async () => {
    // The 10th write fails while others of its window are in flight.
    // Writes slower than the retry's backoff: a retry that did not wait would overlap them.
    const { stats, writer, payload, received } = await sendWatched('retried', 100_000, 150, 10, { retryInitialMs: 1, retryMaxMs: 5 });
    assert.equal(stats.failedAt, 10, 'the injected failure happened');
    assert.equal(stats.startedAfterFailure, 0, 'no write started while the failed window was still settling');
    const item = await received();
    assert.ok(item.kind === 'message' && item.payload.equals(payload), 'the payload arrives intact');
    assert.equal(writer.get('retried')!.queued, 0);
  });

  it(`the retry writes again the elements left unacknowledged more than one and at most ${COPY_WRITES_IN_FLIGHT} at a time`, async () => {
    // 30 KB is one window of the copy stream: it is recorded whole before its
    // first write, so every write of the retry is a recorded element written again.
    const { stats, writer, payload, received } = await sendWatched('resumed', 30_000, 20, 6, { retryInitialMs: 1, retryMaxMs: 5 });
    assert.equal(stats.failedAt, 6, 'the injected failure happened');
    assert.ok(stats.writesOfRetry > COPY_WRITES_IN_FLIGHT, `the retry wrote ${stats.writesOfRetry} elements`);
    assert.ok(stats.maxInFlightOfRetry > 1, `the retry's writes overlap (at most ${stats.maxInFlightOfRetry} in flight)`);
    assert.ok(stats.maxInFlightOfRetry <= COPY_WRITES_IN_FLIGHT, `${stats.maxInFlightOfRetry} writes of the retry in flight, over ${COPY_WRITES_IN_FLIGHT}`);
    const item = await received();
    assert.ok(item.kind === 'message' && item.payload.equals(payload), 'the payload arrives intact');
    assert.equal(writer.get('resumed')!.queued, 0);
  });
});
