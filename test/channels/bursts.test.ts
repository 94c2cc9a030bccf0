// Sends in bursts: a caller awaits a batch of sends, then sends the next
// batch at once. The next batch lands just as the send worker finds the queue
// empty; it must start (or keep) a worker every time, never wait for a later
// send to wake one. The emulator runs in a process of its own.
import assert from 'node:assert/strict';
import type { ChannelItem, SendResult } from '../../src/channels';
import { Harness, texts } from './helpers';

const BATCH = 5;
const RUN_MS = 5_000;
/** A batch that has not settled by then is stuck (a healthy one takes milliseconds). */
const BATCH_STALL_MS = 5_000;

describe('channels: bursts of sends', function () {
  this.timeout(60_000);
  const h = new Harness();
  beforeEach(async () => {
    await h.startProcess();
  });
  afterEach(() => h.cleanup());

  it(`acknowledges and delivers every message, in order and exactly once, when batches of ${BATCH} are awaited back to back for ${RUN_MS / 1000} s`, async () => {
    const writer = h.store(await h.client());
    const reader = h.store(await h.client());
    await writer.createChannel('bursts');
    reader.importChannel('bursts', writer.shareReadCap('bursts'));

    const received: ChannelItem[] = [];
    let onReceived = () => {};
    const stopReader = new AbortController();
    const reading = reader.receive(
      'bursts',
      (item) => {
        received.push(item);
        onReceived();
      },
      { signal: stopReader.signal },
    );

    const sent: string[] = [];
    const acks: SendResult[] = [];
    const figures = () =>
      `${sent.length} sent, ${acks.length} acknowledged, ${received.length} received, ${writer.queued('bursts')} still queued`;
    const started = Date.now();
    for (let batch = 0; Date.now() - started < RUN_MS; batch++) {
      const payloads = Array.from({ length: BATCH }, (_, i) => `batch ${batch} message ${i}`);
      sent.push(...payloads);
      let timer: NodeJS.Timeout | undefined;
      const stalled = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`batch ${batch} not acknowledged within ${BATCH_STALL_MS} ms: ${figures()}`)), BATCH_STALL_MS);
      });
      try {
        acks.push(...(await Promise.race([Promise.all(payloads.map((p) => writer.send('bursts', p))), stalled])));
      } finally {
        clearTimeout(timer);
      }
    }
    assert.ok(sent.length >= 2 * BATCH, `at least two batches should fit in ${RUN_MS} ms: ${figures()}`);

    // Every acknowledged message reaches the reader (it polls every 10-50 ms).
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the reader fell behind for 20 s: ${figures()}`)), 20_000);
      onReceived = () => {
        if (received.length < sent.length) return;
        clearTimeout(timer);
        resolve();
      };
      onReceived();
    }).finally(() => stopReader.abort());
    await reading;

    assert.equal(acks.length, sent.length, figures());
    assert.deepEqual(texts(received), sent, `in order, exactly once: ${figures()}`);
    assert.deepEqual(
      received.map((i) => i.index),
      acks.map((a) => a.index),
    );
    // Nothing was written past the last acknowledged message, so nothing more can be read.
    assert.equal(writer.queued('bursts'), 0);
    assert.equal(reader.get('bursts')!.readIndex, writer.get('bursts')!.writeIndex);
    assert.equal(reader.get('bursts')!.unread, 0);
  });
});
