/**
 * The courier's patience with a temp stream that is not written yet
 * (PIGEONHOLE.md §2.6, processing step 3): the real courier keeps retrying a
 * temp box it cannot read for about a minute and a half before it fails the
 * copy. A faster latency mode shortens round trips, not that patience, so in
 * every mode a copy command may start before its temp stream is written.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ThinClient } from '../../src';
import { COURIER_PATIENCE_MS, LATENCY_MODES, startEmulator, type Emulator } from '../../src/emulator';
import { createTiming } from '../../src/emulator/timing';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function until(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

describe('copy command: the courier waits for a temp stream written late', function () {
  let emu: Emulator | null = null;
  let client: ThinClient | null = null;

  afterEach(async () => {
    await client?.close();
    client = null;
    await emu?.stop({ graceful: false });
    emu = null;
  });

  it('keeps the real courier budget (about 91 s) whatever the latency mode', () => {
    assert.equal(COURIER_PATIENCE_MS, 91_000);
    // The retry cadence differs by mode (the faster modes look more often); none of them gives up by itself.
    for (const mode of LATENCY_MODES) {
      const t = createTiming(mode);
      for (let a = 0; a < 1000; a++) assert.ok(t.copyReadRetryDelay(a) > 0 && t.copyReadRetryDelay(a) <= 10_000, `${mode}: retry ${a}`);
    }
  });

  for (const latency of LATENCY_MODES) {
    it(`${latency}: the copy starts first, the temp stream is written 2 s later, and the copy succeeds`, async function () {
      // Realistic mode: ≈3 s until the courier looks, 2 s, ≈3 s of temp writes, the courier's 0.5-8 s back-off,
      // 5 s copy polls and a ≈5 s read: about 25 s, rarely more than 45.
      this.timeout(latency === 'realistic' ? 120_000 : 20_000);
      const log: string[] = [];
      emu = await startEmulator({ listen: '127.0.0.1:0', latency, log: (l) => log.push(l) });
      client = new ThinClient({ dial: emu.address });
      await client.connect();
      const c = client;

      const dest = await c.newKeypair(randomBytes(32));
      const temp = await c.newKeypair(randomBytes(32));
      const payload = randomBytes(1000); // one destination box, two temp-stream elements
      const { envelopes } = await c.createCourierEnvelopesFromPayload(payload, dest.writeCap, dest.firstMessageIndex, true, true);
      assert.ok(envelopes.length >= 2, `${envelopes.length} temp-stream elements`);

      let copyDone = 0;
      const copy = c.startResendingCopyCommand(temp.writeCap).then(() => {
        copyDone = Date.now();
      });
      copy.catch(() => {}); // awaited below; no unhandled rejection meanwhile
      // The courier has looked for the first temp box and found nothing: from here on it is waiting.
      await until(() => log.some((l) => l.includes('temp box 1 not readable yet')), 30_000, 'the courier to miss the first temp box');
      const missedAt = Date.now();
      await sleep(2000);
      assert.equal(copyDone, 0, 'the copy is still waiting for its temp stream 2 s after the courier first missed it');

      // Now write the temp stream, from its first index (the boxes are independent: all at once).
      const indexes = [temp.firstMessageIndex];
      for (let i = 1; i < envelopes.length; i++) indexes.push(await c.nextMessageBoxIndex(indexes[i - 1]));
      await Promise.all(
        envelopes.map(async (el, i) => {
          const w = await c.encryptWrite(el, temp.writeCap, indexes[i]);
          await c.startResendingEncryptedMessage({
            writeCap: temp.writeCap,
            envelopeDescriptor: w.envelopeDescriptor,
            messageCiphertext: w.messageCiphertext,
            envelopeHash: w.envelopeHash,
          });
        }),
      );
      await copy;
      assert.ok(copyDone - missedAt >= 2000, `the copy finished ${copyDone - missedAt} ms after the first miss`);
      assert.ok(!log.some((l) => /still unreadable after/.test(l)), 'the courier never gave up');

      const r = await c.encryptRead(dest.readCap, dest.firstMessageIndex);
      const got = await c.startResendingEncryptedMessage({
        readCap: dest.readCap,
        messageBoxIndex: dest.firstMessageIndex,
        replyIndex: 0,
        envelopeDescriptor: r.envelopeDescriptor,
        messageCiphertext: r.messageCiphertext,
        envelopeHash: r.envelopeHash,
      });
      assert.deepEqual(got.plaintext, payload);
    });
  }

  it('an explicitly shortened patience still fails the copy with replica code 1 at the missing element', async () => {
    emu = await startEmulator({ listen: '127.0.0.1:0', latency: 'fast', courierPatienceMs: 500 });
    client = new ThinClient({ dial: emu.address });
    await client.connect();
    const temp = await client.newKeypair(randomBytes(32));
    const t0 = Date.now();
    await assert.rejects(client.startResendingCopyCommand(temp.writeCap), (e: any) => {
      assert.equal(e.name, 'CopyCommandFailedError');
      assert.equal(e.replicaErrorCode, 1);
      assert.equal(e.failedEnvelopeIndex, 1);
      return true;
    });
    const took = Date.now() - t0;
    assert.ok(took >= 500 && took < 5000, `gave up after ${took} ms`);
  });
});
