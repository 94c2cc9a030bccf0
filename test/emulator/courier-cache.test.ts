/**
 * The courier's reply cache (kpclientd v0.0.99, found on the real network):
 * a default read whose box is written after the courier's 5 re-dispatches
 * stalls until the cache entry expires, while a fresh envelope finds the box
 * at once. The emulator reproduces it (on by default with --realistic; here
 * in 'fast' mode with a short TTL so the test takes under a second).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { ThinClient } from '../../src/client/client';
import { startEmulator, type Emulator } from '../../src/emulator';

describe('emulator: the courier reply cache stalls a default read of a box written late', function () {
  this.timeout(20_000);
  let emu: Emulator;
  let c: ThinClient;
  const logs: string[] = [];

  async function setUp(courierDedupTtlMs: number | undefined): Promise<void> {
    emu = await startEmulator({ listen: '127.0.0.1:0', latency: 'fast', courierDedupTtlMs, log: (l) => logs.push(l) });
    c = new ThinClient({ dial: emu.address });
    await c.connect();
  }

  afterEach(async () => {
    await c?.close();
    await emu?.stop({ graceful: false });
    logs.length = 0;
  });

  async function lateWrite(delayMs: number): Promise<{ readMs: number; freshMs: number }> {
    const kp = await c.newKeypair(randomBytes(32));
    const enc = await c.encryptRead(kp.readCap, kp.firstMessageIndex);
    const t0 = Date.now();
    const read = c.startResendingEncryptedMessage({ readCap: kp.readCap, messageBoxIndex: kp.firstMessageIndex, ...enc });
    await new Promise((r) => setTimeout(r, delayMs));
    const w = await c.encryptWrite('late', kp.writeCap, kp.firstMessageIndex);
    await c.startResendingEncryptedMessage({ writeCap: kp.writeCap, ...w });
    const tw = Date.now();
    // A fresh envelope (a new encrypt_read) is a new cache entry: it finds the box at once.
    const fresh = await c.encryptRead(kp.readCap, kp.firstMessageIndex);
    const got = await c.startResendingEncryptedMessageNoRetry({ readCap: kp.readCap, messageBoxIndex: kp.firstMessageIndex, ...fresh });
    assert.equal(got.plaintext?.toString(), 'late');
    const freshMs = Date.now() - tw;
    assert.equal((await read).plaintext?.toString(), 'late');
    return { readMs: Date.now() - t0, freshMs };
  }

  it('with a 1.5 s cache: the blocked read completes only when the entry expires, the fresh one at once', async () => {
    await setUp(1500);
    const { readMs, freshMs } = await lateWrite(300);
    assert.ok(readMs >= 1500, `the blocked read waited for the cache (${readMs} ms)`);
    assert.ok(freshMs < 1000, `the fresh read was quick (${freshMs} ms)`);
    assert.ok(logs.some((l) => /the courier answers from its cache/.test(l)), 'the emulator says why');
  });

  it("without the cache ('fast' default): the blocked read completes right after the write", async () => {
    await setUp(undefined);
    const { readMs } = await lateWrite(300);
    assert.ok(readMs < 1400, `no stall (${readMs} ms)`);
  });
});
