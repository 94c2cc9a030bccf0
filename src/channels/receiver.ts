/**
 * The receive side of the persistent channels: one loop per channel that
 * reads the channel in order from its read index (polling a box until it
 * exists, reassembling large messages), logs what it read, hands it to the
 * consumer and marks it read, every step recorded in SQLite.
 *
 * ## Reads
 * 1. Unread entries of the `received` log are delivered first, in order.
 * 2. The next message is read from the read index: a fresh encrypt_read and a
 *    no-retry read per attempt, backing off while the box does not exist; a
 *    large message's continuation boxes are read the same way, up to
 *    READ_AHEAD_BOXES at once while reads are slow (SLOW_READ_MS): the
 *    encrypt_reads are chained in box order (each names the box after it)
 *    and each box's mixnet read starts as soon as its encrypt_read is done,
 *    so the round trips overlap. Results are taken in box order and copied
 *    into one Buffer of the payload's length, so the message is in memory
 *    once plus at most the window's boxes. The window is bounded to bound
 *    that memory, the thin client's garbage per request in flight, and the
 *    load a reader puts on the couriers (every box of the window polls on
 *    its own while it does not exist yet).
 * 3. Phase 1: one transaction inserts the message (its payload in chunks) or
 *    tombstone/malformed report into `received`, unread, and advances the
 *    read index past it.
 * 4. The handler is called (with the payload read in step 2, or read back
 *    from the log for an entry of an earlier run); when it returns (for a
 *    synchronous handler, in the same tick) phase 2 commits the read mark and
 *    drops the stored payload.
 *
 * Crash windows:
 * - during (2) or before (3) commits: nothing recorded; the next run reads the
 *   same boxes again (boxes are immutable).
 * - between (3) and (4): the entry is in the log, unread; delivered on the next run.
 * - during the handler: it did not return, so the entry is delivered again
 *   (at-least-once to a handler that was interrupted).
 * - after the handler returned and before the phase 2 commit: the only window
 *   in which a completed delivery is repeated. For a synchronous handler it
 *   is the duration of one SQLite commit with no event-loop turn in between.
 *   No system can close it without the consumer's side effect joining the
 *   same transaction; every item carries its stable `index` so a consumer can
 *   de-duplicate.
 */
import { setMaxListeners } from 'node:events';
import { BoxIDNotFoundError, TombstoneError } from '../client/errors';
import { Backoff } from '../util/backoff';
import { pause } from '../util/deadline';
import { indexCounter, readParams } from './boxes';
import type { ChannelContext } from './context';
import type { ChannelRow, NewReceived, ReceivedRow } from './db';
import { ChannelBusyError } from './errors';
import { LargeMessageAssembler, parseFirstBox, type FirstBox } from './framing';
import type { ChannelEncryptResult, ChannelHandler, ChannelItem } from './types';

/** Options of one receive loop. */
export interface ReceiveOptions {
  signal?: AbortSignal;
  pollInitialMs?: number;
  pollMaxMs?: number;
}

type ReadBox = { tombstone: false; plaintext: Buffer; next: Buffer } | { tombstone: true; next: Buffer };

/** Continuation boxes of a large message read at once while reads are slow (see "Reads" above). */
export const READ_AHEAD_BOXES = 16;

/**
 * A continuation read that takes longer than this is a mixnet round trip (a
 * second or more) or a box not written yet, and the next boxes are read
 * READ_AHEAD_BOXES at once. Faster reads (a daemon or emulator that answers
 * at once) go one box at a time: overlapping them saves little, and the
 * requests in flight make enough garbage outlive collections to double V8's
 * young generation (measured: 16 MB more RSS for a 10 MB message).
 */
export const SLOW_READ_MS = 200;

/** An item read from the channel, and the read index after it. */
type NextItem = NewReceived & { next: Buffer };

/**
 * A box read started ahead of its turn: its outcome and how long it took,
 * once settled. `settled` never rejects, so an abandoned read is no
 * unhandled rejection.
 */
interface AheadRead {
  outcome?: { box: ReadBox | null } | { error: unknown };
  tookMs: number;
  settled: Promise<void>;
}

function aheadRead(read: Promise<ReadBox | null>): AheadRead {
  const started = performance.now();
  const r: AheadRead = { tookMs: 0, settled: Promise.resolve() };
  const settle = (outcome: NonNullable<AheadRead['outcome']>): void => {
    r.outcome = outcome;
    r.tookMs = performance.now() - started;
  };
  r.settled = read.then(
    (box) => settle({ box }),
    (error: unknown) => settle({ error }),
  );
  return r;
}

/**
 * Waits for `settled` or for `ms`, whichever comes first; true when `ms` did.
 * (No AbortSignal: a read settles promptly once aborted, and one listener per
 * box would be garbage for nothing.)
 */
async function outlasts(settled: Promise<void>, ms: number): Promise<boolean> {
  const wait = pause(ms);
  let inTime = false;
  void settled.then(() => {
    inTime = true;
    wait.wake();
  });
  await wait.promise;
  return !inTime;
}

/** Aborts `controller` when `signal` aborts (now or later); returns the function that stops following it. */
function follow(signal: AbortSignal | undefined, controller: AbortController): () => void {
  if (!signal) return () => {};
  const onAbort = (): void => controller.abort();
  signal.addEventListener('abort', onAbort, { once: true });
  if (signal.aborted) controller.abort();
  return () => signal.removeEventListener('abort', onAbort);
}

/** The receive loops of one store. */
export class Receiver {
  private readonly loops = new Map<number, { controller: AbortController; done: Promise<void> }>();
  /** The read in flight of each running loop; restartRead() aborts it so the loop starts over at the new position. */
  private readonly readAttempts = new Map<number, AbortController>();

  constructor(private readonly ctx: ChannelContext) {}

  /**
   * Runs the channel's receive loop until `options.signal` aborts, the store
   * closes or the channel is deleted (see ChannelStore.receive).
   * @throws ChannelBusyError when the channel already has one
   */
  async receive(row: ChannelRow, handler: ChannelHandler, options: ReceiveOptions): Promise<void> {
    if (this.loops.has(row.id)) throw new ChannelBusyError(row.name);
    const controller = new AbortController();
    const unfollow = follow(options.signal, controller);
    let finish!: () => void;
    const done = new Promise<void>((r) => (finish = r));
    this.loops.set(row.id, { controller, done });
    try {
      await this.loop(
        row.id,
        handler,
        controller.signal,
        options.pollInitialMs ?? this.ctx.pollInitialMs,
        options.pollMaxMs ?? this.ctx.pollMaxMs,
      );
    } finally {
      unfollow();
      this.loops.delete(row.id);
      finish();
    }
  }

  /** The reader moved: the loop abandons the read it waits for and goes on from the new position. */
  restartRead(channelId: number): void {
    this.readAttempts.get(channelId)?.abort();
  }

  /** Stops the channel's loop (before the channel is deleted); resolves when it ended. */
  stop(channelId: number): Promise<void> | undefined {
    const loop = this.loops.get(channelId);
    loop?.controller.abort();
    return loop?.done;
  }

  /** Stops every loop (the store closes); returns them. */
  stopAll(): Promise<void>[] {
    const loops: Promise<void>[] = [];
    for (const r of this.loops.values()) {
      r.controller.abort();
      loops.push(r.done);
    }
    return loops;
  }

  private async loop(channelId: number, handler: ChannelHandler, signal: AbortSignal, pollInitialMs: number, pollMaxMs: number): Promise<void> {
    const { db } = this.ctx;
    const stopped = () => signal.aborted || this.ctx.isClosed();
    while (!stopped()) {
      const row = db.channelById(channelId);
      if (!row) return;
      for (const entry of db.unread(channelId)) {
        if (stopped()) return;
        await this.deliver(row, entry, handler);
      }
      if (stopped()) return;
      // The position as it is now: moveReader() may have moved it while entries were delivered.
      const from = db.channelById(channelId);
      if (!from) return;
      // restartRead() aborts this attempt: what it read is discarded and the loop starts over at the new position.
      const attempt = new AbortController();
      const unfollow = follow(signal, attempt);
      this.readAttempts.set(channelId, attempt);
      let item: NextItem | null;
      try {
        item = await this.readNext(from, attempt.signal, pollInitialMs, pollMaxMs);
      } finally {
        unfollow();
        if (this.readAttempts.get(channelId) === attempt) this.readAttempts.delete(channelId);
      }
      if (stopped() || !db.channelById(channelId)) return;
      if (attempt.signal.aborted) continue;
      if (!item) return;
      // Phase 1: log the item and move the read index past it, atomically.
      const entry = db.logReceived(channelId, item, item.next);
      this.ctx.progress({ stage: 'logged', channel: row.name, index: item.counter, kind: item.kind });
      await this.deliver(row, entry, handler, item.payload);
    }
  }

  /**
   * Hands one logged entry to the handler, then (phase 2) marks it read.
   * `payload` is the message as just read; without it, it is read from the log.
   */
  private async deliver(row: ChannelRow, entry: ReceivedRow, handler: ChannelHandler, payload: Buffer | null = null): Promise<void> {
    const item: ChannelItem =
      entry.kind === 'message'
        ? {
            kind: 'message',
            channel: row.name,
            index: entry.counter,
            payload: payload ?? this.ctx.db.receivedPayload(entry.id, entry.payload_length ?? 0),
            boxes: entry.box_count,
          }
        : {
            kind: entry.kind,
            channel: row.name,
            index: entry.counter,
            boxes: entry.box_count,
            ...(entry.reason ? { reason: entry.reason } : {}),
          };
    const result = handler(item);
    // A synchronous handler is followed by the commit in the same tick.
    if (result && typeof (result as Promise<void>).then === 'function') await result;
    if (this.ctx.isClosed()) return;
    this.ctx.progress({ stage: 'delivered', channel: row.name, index: entry.counter });
    this.ctx.db.markRead(entry.id, this.ctx.retainPayloads);
    this.ctx.progress({ stage: 'marked', channel: row.name, index: entry.counter });
  }

  /** Reads the next message (all its boxes) or skipped box from the read index; null when stopped. */
  private async readNext(row: ChannelRow, signal: AbortSignal, pollInitialMs: number, pollMaxMs: number): Promise<NextItem | null> {
    const start = row.read_index;
    const counter = indexCounter(start);
    const first = await this.readBox(row, start, signal, pollInitialMs, pollMaxMs);
    if (!first) return null;
    if (first.tombstone) return { kind: 'tombstone', counter, boxes: 1, payload: null, reason: null, next: first.next };
    const parsed = parseFirstBox(first.plaintext);
    if (parsed.kind === 'single') return { kind: 'message', counter, boxes: 1, payload: parsed.payload, reason: null, next: first.next };
    if (parsed.kind === 'malformed') return { kind: 'malformed', counter, boxes: 1, payload: null, reason: parsed.reason, next: first.next };
    return this.readLarge(row, counter, parsed, first.next, signal, pollInitialMs, pollMaxMs);
  }

  /**
   * Reads the continuation boxes of a large message from `cursor` (the box
   * after its first) with up to READ_AHEAD_BOXES reads in flight while reads
   * are slow, and takes them in box order. Whatever ends the message early
   * (a tombstone, too many bytes, a stop) abandons the reads still in flight
   * and waits for them to end, so nothing of this message is still read once
   * it returns.
   */
  private async readLarge(
    row: ChannelRow,
    counter: string,
    header: Extract<FirstBox, { kind: 'large' }>,
    cursor: Buffer,
    signal: AbortSignal,
    pollInitialMs: number,
    pollMaxMs: number,
  ): Promise<NextItem | null> {
    const assembler = new LargeMessageAssembler(header);
    // Every box of a copy stream but the last is as full as the first, so
    // this tells how many boxes the assembler still needs.
    const boxLength = header.first.length;
    const readAhead = new AbortController();
    // Every read of the window listens to this signal (a poll's pause, the client's call).
    setMaxListeners(2 * READ_AHEAD_BOXES, readAhead.signal);
    const unfollow = follow(signal, readAhead);
    /** Reads started and not yet taken, in box order. */
    const inFlight: AheadRead[] = [];
    /** The box to start reading next; null until the last read started tells it (its encrypt_read failed). */
    let launchAt: Buffer | null = cursor;
    /** Whether reads take long enough to be worth overlapping (SLOW_READ_MS). */
    let readsAreSlow = false;
    let boxes = 1;
    try {
      while (assembler.missing > 0) {
        const head = inFlight[0];
        // Take a box as soon as it is in: one held longer survives garbage
        // collections, and enough of them grow V8's young generation (RSS).
        if (head?.outcome) {
          inFlight.shift();
          readsAreSlow = head.tookMs > SLOW_READ_MS;
          if ('error' in head.outcome) throw head.outcome.error;
          const box = head.outcome.box;
          if (!box) return null;
          if (box.tombstone) {
            // The tombstoned box is left for the next read, which reports it.
            const reason = `large message interrupted by a tombstone at box ${indexCounter(cursor)}`;
            return { kind: 'malformed', counter, boxes, payload: null, reason, next: cursor };
          }
          boxes++;
          cursor = box.next;
          if (!launchAt && inFlight.length === 0) launchAt = box.next;
          const overflow = assembler.add(box.plaintext);
          if (overflow) return { kind: 'malformed', counter, boxes, payload: null, reason: overflow, next: cursor };
          continue;
        }
        const windowSize = Math.min(readsAreSlow ? READ_AHEAD_BOXES : 1, Math.ceil(assembler.missing / boxLength));
        if (launchAt && inFlight.length < windowSize && !readAhead.signal.aborted) {
          const index = launchAt;
          const envelope = await this.encryptReadAhead(row, index);
          if (readAhead.signal.aborted) return null;
          launchAt = envelope?.nextMessageBoxIndex ?? null;
          inFlight.push(aheadRead(this.readBox(row, index, readAhead.signal, pollInitialMs, pollMaxMs, envelope)));
          continue;
        }
        // The window is full (or the next index is not known yet): wait for
        // the oldest read, and open the window if it keeps us waiting.
        if (!head) throw new Error('internal: a large message read with no box to read or wait for');
        if (readsAreSlow) await head.settled;
        else readsAreSlow = await outlasts(head.settled, SLOW_READ_MS);
      }
      const assembled = assembler.finish();
      if (!assembled.ok) return { kind: 'malformed', counter, boxes, payload: null, reason: assembled.reason, next: cursor };
      return { kind: 'message', counter, boxes, payload: assembled.payload, reason: null, next: cursor };
    } finally {
      readAhead.abort();
      unfollow();
      await Promise.all(inFlight.map((r) => r.settled));
    }
  }

  /**
   * The encrypt_read of a box about to be read ahead, or null when there is
   * no daemon or it fails: readBox then makes its own and reports the failure.
   */
  private async encryptReadAhead(row: ChannelRow, index: Buffer): Promise<ChannelEncryptResult | null> {
    const client = this.ctx.clientFor(row.name);
    if (!client || !client.isDaemonConnected()) return null;
    try {
      return await client.encryptRead(row.read_cap, index);
    } catch {
      return null;
    }
  }

  /**
   * Reads one box, polling while it does not exist: a fresh encrypt_read and
   * a no-retry read per attempt (a cached courier reply could hide a later
   * tombstone), with exponential backoff. `envelope` is the first attempt's
   * encrypt_read when it was made ahead. The plaintext is the client's
   * (callers copy what they keep). Null when stopped.
   */
  private async readBox(
    row: ChannelRow,
    index: Buffer,
    signal: AbortSignal,
    pollInitialMs: number,
    pollMaxMs: number,
    envelope: ChannelEncryptResult | null = null,
  ): Promise<ReadBox | null> {
    const { retryInitialMs, retryMaxMs } = this.ctx;
    const poll = new Backoff(pollInitialMs, pollMaxMs);
    const retry = new Backoff(retryInitialMs, retryMaxMs);
    const counter = indexCounter(index);
    while (!signal.aborted && !this.ctx.isClosed()) {
      const client = this.ctx.clientFor(row.name);
      if (!client || !client.isDaemonConnected()) {
        envelope = null; // made for a daemon that may be gone
        await pause(Math.min(retryInitialMs, 1000), signal).promise;
        continue;
      }
      let next: Buffer | null = null;
      try {
        this.ctx.progress({ stage: 'reading', channel: row.name, index: counter });
        const enc = envelope ?? (await client.encryptRead(row.read_cap, index));
        envelope = null;
        next = enc.nextMessageBoxIndex;
        const reply = await client.startResendingEncryptedMessageNoRetry(readParams(row.read_cap, index, enc), { signal });
        const plaintext = reply.plaintext ?? Buffer.alloc(0);
        // A channel message is never empty (it has a header); an empty box reads as deleted.
        if (plaintext.length === 0) {
          this.ctx.progress({ stage: 'box-read', channel: row.name, index: counter, outcome: 'tombstone' });
          return { tombstone: true, next };
        }
        this.ctx.progress({ stage: 'box-read', channel: row.name, index: counter, outcome: 'data' });
        return { tombstone: false, plaintext, next };
      } catch (err) {
        if (signal.aborted || this.ctx.isClosed()) return null;
        if (err instanceof TombstoneError && next) {
          this.ctx.progress({ stage: 'box-read', channel: row.name, index: counter, outcome: 'tombstone' });
          return { tombstone: true, next };
        }
        if (err instanceof BoxIDNotFoundError) {
          retry.reset();
          await pause(poll.next(), signal).promise;
          continue;
        }
        const delay = retry.next();
        this.ctx.problem(row.name, 'receive', err as Error, delay);
        await pause(delay, signal).promise;
      }
    }
    return null;
  }
}

/**
 * Turns a receive loop into an async iterator (ChannelStore.messages): an
 * item is marked read when the consumer asks for the next one or ends the
 * loop. `receive` starts the loop with the handler and the signal it must stop on.
 */
export function iterate(
  receive: (handler: ChannelHandler, signal: AbortSignal) => Promise<void>,
  signal: AbortSignal | undefined,
): AsyncIterableIterator<ChannelItem> {
  const controller = new AbortController();
  const unfollow = follow(signal, controller);
  const items: { item: ChannelItem; ack: () => void }[] = [];
  let current: { ack: () => void } | null = null;
  let consumer: { resolve(r: IteratorResult<ChannelItem>): void; reject(e: unknown): void } | null = null;
  let ended: { error?: unknown } | null = null;

  const deliver = () => {
    if (!consumer) return;
    const c = consumer;
    if (items.length > 0) {
      consumer = null;
      const next = items.shift()!;
      current = { ack: next.ack };
      c.resolve({ value: next.item, done: false });
    } else if (ended) {
      consumer = null;
      if (ended.error !== undefined) c.reject(ended.error);
      else c.resolve({ value: undefined, done: true });
    }
  };
  const loop = receive(
    (item) =>
      new Promise<void>((ack) => {
        items.push({ item, ack });
        deliver();
      }),
    controller.signal,
  );
  loop.then(
    () => {
      ended = {};
      deliver();
    },
    (error) => {
      ended = { error };
      deliver();
    },
  );
  const releaseCurrent = () => {
    const c = current;
    current = null;
    c?.ack();
  };
  const iterator: AsyncIterableIterator<ChannelItem> = {
    next: () => {
      releaseCurrent();
      return new Promise<IteratorResult<ChannelItem>>((resolve, reject) => {
        consumer = { resolve, reject };
        deliver();
      });
    },
    return: async () => {
      releaseCurrent();
      controller.abort();
      unfollow();
      await loop.catch(() => {});
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}
