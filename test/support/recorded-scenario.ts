/**
 * One fixed sequence of thin-client calls covering the handshake, a PKI
 * document, one reply of every kind, the expected-outcome error codes, a
 * copy, cancels and legacy echo, run through the recording proxy. Recorded
 * against the real kpclientd it makes the fixtures
 * (test/mixnet/record-fixtures.ts); run against the emulator it gives the
 * frames that test/emulator/real-daemon.test.ts holds to those fixtures.
 */
import { randomBytes } from 'node:crypto';
import { ThinClient, isExpectedOutcome } from '../../src';
import { startRecordingProxy, type RecordedFrame } from '../mixnet/recorder';

export interface RecordedScenario {
  frames: RecordedFrame[];
  /** One line per call that was meant to fail: its error class, daemon code and whether it is an expected outcome. */
  errors: string[];
  timingsMs: Record<string, number[]>;
}

/** A promise that never rejects unhandled: it resolves to the value, or rejects only when awaited. */
function settle<T>(p: Promise<T>): () => Promise<T> {
  const outcome = p.then((value) => ({ value }), (error: unknown) => ({ error }));
  return async () => {
    const o = await outcome;
    if ('error' in o) throw o.error;
    return o.value;
  };
}

async function timed<T>(label: string, timings: Record<string, number[]>, f: () => Promise<T>): Promise<T> {
  const t = Date.now();
  try {
    return await f();
  } finally {
    (timings[label] ??= []).push(Date.now() - t);
  }
}

export async function runRecordedScenario(target: string, options: { settleMs?: number } = {}): Promise<RecordedScenario> {
  const [host, port] = target.split(':');
  const settleMs = options.settleMs ?? 2000;
  const proxy = await startRecordingProxy({ host, port: Number(port) });
  const c = new ThinClient({ dial: proxy.address, handshakeTimeoutMs: 40_000 });
  const timings: Record<string, number[]> = {};
  const errors: string[] = [];
  const expect = async (label: string, f: () => Promise<unknown>) => {
    try {
      await f();
      errors.push(`${label}: no error`);
    } catch (err) {
      errors.push(`${label}: ${(err as Error).name} code=${(err as { errorCode?: number }).errorCode} expected=${isExpectedOutcome(err)}`);
    }
  };
  await c.connect();
  await c.getPkiDocumentRaw(0);

  const alice = await c.newKeypair(randomBytes(32));
  const next = await c.nextMessageBoxIndex(alice.firstMessageIndex);
  await c.getMessageBoxIndexCounter(alice.firstMessageIndex);

  // Write then read box 1.
  const w = await c.encryptWrite('hello from the recorder', alice.writeCap, alice.firstMessageIndex);
  await timed('write', timings, () => c.startResendingEncryptedMessage({ writeCap: alice.writeCap, ...w }));
  const r = await c.encryptRead(alice.readCap, alice.firstMessageIndex);
  const got = await timed('read', timings, () => c.startResendingEncryptedMessage({ readCap: alice.readCap, messageBoxIndex: alice.firstMessageIndex, ...r }));
  if (got.plaintext?.toString() !== 'hello from the recorder') errors.push(`read back ${JSON.stringify(got.plaintext?.toString())}`);

  // A second write to the same box with return-box-exists: 10 (BoxAlreadyExists).
  const w2 = await c.encryptWrite('something else', alice.writeCap, alice.firstMessageIndex);
  await expect('return_box_exists on a written box', () => timed('write (box exists)', timings, () => c.startResendingEncryptedMessageReturnBoxExists({ writeCap: alice.writeCap, ...w2 })));
  // No-retry read of an unwritten box: BoxIDNotFound.
  const r2 = await c.encryptRead(alice.readCap, next);
  await expect('no-retry read of an unwritten box', () => timed('read (no retry, missing)', timings, () => c.startResendingEncryptedMessageNoRetry({ readCap: alice.readCap, messageBoxIndex: next, ...r2 })));

  // A blocking read cancelled from outside: 24.
  const r3 = await c.encryptRead(alice.readCap, next);
  const blocked = settle(c.startResendingEncryptedMessage({ readCap: alice.readCap, messageBoxIndex: next, ...r3 }));
  await new Promise((res) => setTimeout(res, settleMs));
  await c.cancelResendingEncryptedMessage(r3.envelopeHash);
  await expect('cancelled blocking read', blocked);

  // Tombstone box 1, then read it: Tombstone.
  const tomb = await c.tombstoneRange(alice.writeCap, alice.firstMessageIndex, 1);
  for (const env of tomb.envelopes) await timed('tombstone', timings, () => c.startResendingEncryptedMessage({ writeCap: alice.writeCap, ...env }));
  const r4 = await c.encryptRead(alice.readCap, alice.firstMessageIndex);
  await expect('read of a tombstoned box', () => c.startResendingEncryptedMessageNoRetry({ readCap: alice.readCap, messageBoxIndex: alice.firstMessageIndex, ...r4 }));

  // A copy of a payload bigger than a box into a fresh channel.
  const dest = await c.newKeypair(randomBytes(32));
  const temp = await c.newKeypair(randomBytes(32));
  const big = randomBytes(3000);
  const stream = await c.createCourierEnvelopesFromPayload(big, dest.writeCap, dest.firstMessageIndex, true, true);
  let t = temp.firstMessageIndex;
  for (const el of stream.envelopes) {
    const e = await c.encryptWrite(el, temp.writeCap, t);
    await timed('write', timings, () => c.startResendingEncryptedMessage({ writeCap: temp.writeCap, ...e }));
    t = await c.nextMessageBoxIndex(t);
  }
  await timed('copy', timings, () => c.startResendingCopyCommand(temp.writeCap));
  await c.createCourierEnvelopesFromMultiPayload([{ payload: randomBytes(100), writeCap: dest.writeCap, startIndex: dest.firstMessageIndex }], true, true);
  await c.createCourierEnvelopesFromTombstoneRange(dest.writeCap, dest.firstMessageIndex, 2, true, true);
  // A copy command cancelled while it waits for a temp stream that is never written.
  const never = await c.newKeypair(randomBytes(32));
  const copying = settle(c.startResendingCopyCommand(never.writeCap));
  await new Promise((res) => setTimeout(res, settleMs));
  await c.cancelResendingCopyCommand(ThinClient.writeCapHash(never.writeCap));
  await expect('cancelled copy command', copying);

  // Legacy echo.
  const echo = c.getService('echo');
  for (let i = 0; i < 3; i++) {
    await timed('echo', timings, () => c.blockingSendMessage(`ping ${i}`, echo.destinationIdHash, echo.recipientQueueId, { timeoutMs: 120_000 }));
  }

  await c.close();
  await proxy.close();
  return { frames: proxy.frames, errors, timingsMs: timings };
}
