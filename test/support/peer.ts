/**
 * Shared by the emulator scenarios (test/emulator/scenarios.test.ts) and the
 * real-network suite (test/mixnet): a connected client with the call
 * sequences of PIGEONHOLE.md §1, plus rejectsWith and waitFor.
 *
 * The methods the emulator scenarios use keep their sequential behaviour;
 * the options and helpers that only the real network needs (concurrent
 * writes, polling with fresh reads, deadlines) are opt-in.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { BoxIDNotFoundError, type KeypairResult, type ThinClient, type ThinClientEvent } from '../../src';

export type Variant = 'default' | 'boxExists' | 'noRetry';

/** What one read attempt gave: a plaintext or an error. */
export type ReadOutcome = { plaintext: Buffer; error?: undefined } | { plaintext?: undefined; error: Error };

export interface CopyOptions {
  courierIdentityHash?: Buffer;
  courierQueueId?: Buffer;
  temp?: KeypairResult;
  /** Write the temp boxes concurrently (they are independent boxes); default one after the other. */
  concurrent?: boolean;
  /** Before the copy command, a default read of the last temp box (PIGEONHOLE §1.8 step 4). */
  gate?: boolean;
}

export interface PollOptions {
  /** Pause between attempts. Default 2 s. */
  intervalMs?: number;
  /** Give up (and fail) after this long. Default 3 min. */
  timeoutMs?: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A connected client plus the call sequences of PIGEONHOLE.md §1. */
export class Peer {
  constructor(readonly c: ThinClient) {}

  channel(seed: Buffer = randomBytes(32)): Promise<KeypairResult> {
    return this.c.newKeypair(seed);
  }

  next(idx: Buffer): Promise<Buffer> {
    return this.c.nextMessageBoxIndex(idx);
  }

  counter(idx: Buffer): Promise<bigint> {
    return this.c.getMessageBoxIndexCounter(idx);
  }

  /** §1.3: encrypt_write then start_resending (write). */
  async write(writeCap: Buffer, idx: Buffer, data: Buffer | string, variant: Variant = 'default') {
    const enc = await this.c.encryptWrite(data, writeCap, idx);
    const p = { writeCap, envelopeDescriptor: enc.envelopeDescriptor, messageCiphertext: enc.messageCiphertext, envelopeHash: enc.envelopeHash };
    return variant === 'boxExists' ? this.c.startResendingEncryptedMessageReturnBoxExists(p) : this.c.startResendingEncryptedMessage(p);
  }

  /** §1.4 / §1.5: a fresh encrypt_read then start_resending (read). */
  async read(readCap: Buffer, idx: Buffer, variant: Variant = 'noRetry', opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<Buffer> {
    const enc = await this.c.encryptRead(readCap, idx);
    const p = { readCap, messageBoxIndex: idx, replyIndex: 0, envelopeDescriptor: enc.envelopeDescriptor, messageCiphertext: enc.messageCiphertext, envelopeHash: enc.envelopeHash };
    const r = variant === 'noRetry' ? await this.c.startResendingEncryptedMessageNoRetry(p, opts) : await this.c.startResendingEncryptedMessage(p, opts);
    assert.ok(r.plaintext, 'a read returns a plaintext');
    assert.equal(r.courierIdentityHash?.length, 32);
    return r.plaintext;
  }

  /** Read consecutive boxes from `start` (one after the other, or all at once with `concurrent`). */
  async readMany(readCap: Buffer, start: Buffer, n: number, opts: { variant?: Variant; concurrent?: boolean; timeoutMs?: number } = {}): Promise<Buffer[]> {
    const variant = opts.variant ?? 'noRetry';
    if (opts.concurrent) {
      const idxs = await this.indexes(start, n);
      return Promise.all(idxs.map((i) => this.read(readCap, i, variant, { timeoutMs: opts.timeoutMs })));
    }
    const out: Buffer[] = [];
    let idx = start;
    for (let i = 0; i < n; i++) {
      out.push(await this.read(readCap, idx, variant, { timeoutMs: opts.timeoutMs }));
      idx = await this.next(idx);
    }
    return out;
  }

  /**
   * Write `items` to consecutive boxes from `start`; resolves to the index
   * after the last one. `concurrent` sends every write at once.
   */
  async writeMany(writeCap: Buffer, start: Buffer, items: (Buffer | string)[], opts: { concurrent?: boolean } = {}): Promise<Buffer> {
    const idxs = await this.indexes(start, items.length + 1);
    if (opts.concurrent) {
      await Promise.all(items.map((el, i) => this.write(writeCap, idxs[i], el)));
    } else {
      for (let i = 0; i < items.length; i++) await this.write(writeCap, idxs[i], items[i]);
    }
    return idxs[items.length];
  }

  /** §1.8 steps 3-5: write the elements to a fresh temp channel from its first index, then copy. */
  async copy(elements: Buffer[], opts: CopyOptions = {}): Promise<KeypairResult> {
    const temp = opts.temp ?? (await this.channel());
    if (opts.concurrent || opts.gate) {
      await this.writeMany(temp.writeCap, temp.firstMessageIndex, elements, { concurrent: opts.concurrent });
      if (opts.gate) {
        const last = await this.indexAt(temp.firstMessageIndex, elements.length - 1);
        assert.deepEqual(await this.read(temp.readCap, last, 'default'), elements[elements.length - 1], 'the gate read returns the last element');
      }
    } else {
      let t = temp.firstMessageIndex;
      for (const el of elements) {
        await this.write(temp.writeCap, t, el);
        t = await this.next(t);
      }
    }
    await this.c.startResendingCopyCommand(temp.writeCap, { courierIdentityHash: opts.courierIdentityHash, courierQueueId: opts.courierQueueId });
    return temp;
  }

  /** The n-th index after `start`. */
  async indexAt(start: Buffer, n: number): Promise<Buffer> {
    let idx = start;
    for (let i = 0; i < n; i++) idx = await this.next(idx);
    return idx;
  }

  /** `n` consecutive indexes from `start` (start first). */
  async indexes(start: Buffer, n: number): Promise<Buffer[]> {
    const out: Buffer[] = [];
    let idx = start;
    for (let i = 0; i < n; i++) {
      out.push(idx);
      if (i < n - 1) idx = await this.next(idx);
    }
    return out;
  }

  /** One NoRetry read attempt with a fresh encrypt_read, as an outcome instead of a throw. */
  async tryRead(readCap: Buffer, idx: Buffer, variant: Variant = 'noRetry', opts: { timeoutMs?: number } = {}): Promise<ReadOutcome> {
    try {
      return { plaintext: await this.read(readCap, idx, variant, opts) };
    } catch (e) {
      return { error: e as Error };
    }
  }

  /**
   * Poll a box (§1.5: a fresh encrypt_read and a NoRetry read per attempt)
   * until `accept` takes the outcome; allows for another client's write or
   * tombstone still propagating. BoxIDNotFound is retried by default.
   * @throws an assertion error naming the last outcome after `timeoutMs`
   */
  async poll(readCap: Buffer, idx: Buffer, accept: (o: ReadOutcome) => boolean = (o) => o.plaintext !== undefined, opts: PollOptions = {}): Promise<ReadOutcome> {
    const deadline = Date.now() + (opts.timeoutMs ?? 180_000);
    let last: ReadOutcome | null = null;
    let attempts = 0;
    let unexpected = 0;
    while (Date.now() < deadline) {
      attempts++;
      last = await this.tryRead(readCap, idx, 'noRetry', { timeoutMs: Math.max(1000, deadline - Date.now()) });
      if (accept(last)) return last;
      // Anything but "not there yet" that the caller does not accept gets a second look, not an endless loop.
      if (last.error && !(last.error instanceof BoxIDNotFoundError) && ++unexpected >= 3) break;
      await sleep(opts.intervalMs ?? 2000);
    }
    const what = last ? (last.plaintext ? `plaintext of ${last.plaintext.length} bytes` : `${last.error?.constructor.name}: ${last.error?.message}`) : 'nothing';
    assert.fail(`polling the box gave no accepted outcome after ${attempts} attempts; last: ${what}`);
  }
}

export async function rejectsWith<T extends Error>(p: Promise<unknown>, cls: new (...a: any[]) => T, check?: (e: T) => void): Promise<T> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    check?.(e as T);
    return e as T;
  }
  assert.fail(`expected ${cls.name}, but the call succeeded`);
}

export function waitFor(c: ThinClient, pred: (e: ThinClientEvent) => boolean, timeoutMs = 3000): Promise<ThinClientEvent> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      c.off('event', on);
      reject(new Error('timed out waiting for a client event'));
    }, timeoutMs);
    const on = (e: ThinClientEvent) => {
      if (!pred(e)) return;
      clearTimeout(t);
      c.off('event', on);
      resolve(e);
    };
    c.on('event', on);
  });
}
