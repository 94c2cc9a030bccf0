/**
 * The send side of the persistent channels: the durable outbound queue and
 * the one worker per channel that writes it to the mixnet, strictly in queue
 * order, single boxes and copy commands (payloads bigger than a box) alike,
 * every step recorded before it is dispatched.
 *
 * ## Writes
 * 1. `send()` inserts the payload into `outbound` (in chunks, with its length
 *    and hash; one commit) and returns a promise that settles when the
 *    courier acknowledges it.
 * 2. The worker plans the head of the queue and records the plan in
 *    `pending_writes` (commit) BEFORE dispatch: one box at the channel's
 *    write index, or, for a payload larger than a box, a copy through a
 *    fresh temporary channel (new_keypair).
 * 3. One box: its envelope (encrypt_write of the framed message) is recorded,
 *    then dispatched with start_resending_encrypted_message. A copy: the
 *    stream is written window by window, then start_resending_copy_command
 *    runs. A window of COPY_BOXES_PER_WINDOW destination boxes is built by one
 *    create_courier_envelopes_from_payload call from the payload's chunks,
 *    its elements are encrypted for consecutive temp boxes and recorded with
 *    their envelopes in one transaction (with how far the stream is built
 *    and which elements of the previous window were acknowledged), then
 *    written. Memory stays a few windows, whatever the payload's size.
 * 4. On acknowledgement, one transaction removes the queue entry and its
 *    pending state, advances the write index and logs the message in `sent`.
 *
 * Crash windows (process killed at any instant):
 * - before (1) commits: the caller never got a promise that could settle; nothing queued.
 * - between (1) and (2): the message is queued; the next run plans and sends it.
 * - between encrypt and the (2) commit: nothing was dispatched; the next run
 *   re-plans (re-encrypting a box at the same index gives the same box content).
 * - during (3), or after the ACK but before (4) commits: the next run re-sends
 *   the SAME recorded envelope; a box that already holds byte-identical
 *   content answers success, so the box is written once. A copy resumes from
 *   its record: the recorded elements not known to be acknowledged (at most
 *   the last window's) are re-sent with their recorded envelopes, then the
 *   stream is built on from where the record says it ends. A window built or
 *   encrypted but not recorded had nothing dispatched; it is built again
 *   (other courier envelopes, the same destination box contents). A copy
 *   command re-issued with the same temp cap returns the courier's cached
 *   verdict or re-runs with identical destination contents.
 * - after (4): done; the in-process promise is lost with the process, the
 *   message is in `sent`.
 * A daemon error reply to a recorded envelope (e.g. its replica epoch went
 * stale) clears it so the next attempt re-encrypts: still the same box
 * content. A failed copy command (the courier caches a failure for 30 min)
 * discards the temp stream and rebuilds the copy with a new temp keypair;
 * destination boxes already written hold identical bytes, so the retry
 * succeeds over them.
 *
 * ## Why a queued message is never left without a worker
 * Each channel has one {@link ChannelWorker} with a `running` flag, and
 * `send()` commits its row and then calls `kick()` in the same synchronous
 * step. `kick()` starts the worker's loop when `running` is false and only
 * wakes it otherwise. The loop has a single way on and a single way out:
 * `next()`, which looks at the queue and, when it finds nothing to do (queue
 * empty, store stopped, channel gone), or the look itself throws (a
 * database error), or an error escaped the last attempt (which retries
 * everything the write pipeline throws), clears `running` before it returns,
 * with no await in between. JavaScript runs that step to completion, so a `send()` happens either before it (the look
 * sees the new row) or after it (`kick()` finds `running` false and starts a
 * new loop). `running` is therefore true only while a loop exists that will
 * look at the queue again; a wait inside the loop is cut short by `kick()`.
 */
import { randomBytes } from 'node:crypto';
import {
  BoxIDNotFoundError,
  CopyCommandFailedError,
  KatzenpostError,
  StartResendingCancelledError,
  TombstoneError,
} from '../client/errors';
import { blake2b256 } from '../client/crypto';
import { Backoff } from '../util/backoff';
import { pause } from '../util/deadline';
import { READ_CAP_LENGTH, SEED_LENGTH, WRITE_CAP_LENGTH } from '../wire';
import { counterValue, indexCounter, readParams, writeParams } from './boxes';
import type { ChannelContext } from './context';
import type { ChannelRow, CopyWindow, OutboundRow, PendingWriteRow, RecordedEnvelope } from './db';
import { ChannelClosedError, TombstoneRangeError } from './errors';
import { LARGE_HEADER_LENGTH, copyBoxLength, encodeSingle, largeHeader, needsCopy } from './framing';
import type { ChannelClient, SendResult, TombstoneResult } from './types';

/** True for errors the daemon reported about an envelope (as opposed to transport or cancellation). */
function isDaemonVerdict(err: unknown): boolean {
  return (
    err instanceof KatzenpostError &&
    typeof err.errorCode === 'number' &&
    !(err instanceof StartResendingCancelledError) &&
    err.code !== 'TIMEOUT' &&
    err.code !== 'DAEMON_DISCONNECTED'
  );
}

/**
 * Destination boxes per window of a copy stream: their elements (about 1.3
 * per box) are built by one create_courier_envelopes_from_payload call, then
 * encrypted, recorded in one transaction (one disk sync per window) and
 * written. Two windows are in memory (this one and the next, built ahead),
 * whatever the payload's size.
 *
 * A window's elements are written COPY_WRITES_IN_FLIGHT at a time (on a
 * mixnet each write is a round trip of seconds). More in flight, or the
 * next window encrypted while this one is written, gains little on a local
 * daemon (its own work sets the pace) and grows V8's young generation with
 * the requests' garbage: a 10 MB send measured 2.4-2.5x the payload in peak
 * RSS with 4 in flight, 3.7-3.9x with 8 or 16 or with windows overlapped.
 */
const COPY_BOXES_PER_WINDOW = 32;

/** Copy-stream elements written at once (each to its own temp box, so their order does not matter). */
export const COPY_WRITES_IN_FLIGHT = 4;

/**
 * Runs `write` for every item, at most `limit` at a time, and returns once
 * all have settled. The first failure stops new starts and is rethrown when
 * the started ones have settled, so none is still running afterwards.
 */
async function writeBounded<T>(items: readonly T[], limit: number, write: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { error: unknown } | null = null;
  const lane = async (): Promise<void> => {
    while (failure === null && next < items.length) {
      const item = items[next++];
      try {
        await write(item);
      } catch (error) {
        failure ??= { error };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  if (failure) throw (failure as { error: unknown }).error;
}

/** The envelope columns of a pending_writes or pending_copy_elements row (all set once recorded). */
type EnvelopeColumns = { descriptor: Buffer | null; ciphertext: Buffer | null; envelope_hash: Buffer | null };

/** An envelope just made, in the shape of its recorded columns. */
function envelopeColumns(env: RecordedEnvelope): EnvelopeColumns {
  return { ciphertext: env.messageCiphertext, descriptor: env.envelopeDescriptor, envelope_hash: env.envelopeHash };
}

/**
 * Sends the write envelope recorded in `row`. When the daemon refuses it
 * (e.g. a stale replica epoch) `forget` clears the record, so the next
 * attempt makes a fresh one: same cap, index and plaintext give the same box.
 */
async function sendRecorded(
  client: ChannelClient,
  writeCap: Uint8Array,
  row: EnvelopeColumns,
  signal: AbortSignal,
  forget: () => void,
): Promise<void> {
  const env = { envelopeDescriptor: row.descriptor!, messageCiphertext: row.ciphertext!, envelopeHash: row.envelope_hash! };
  try {
    await client.startResendingEncryptedMessage(writeParams(writeCap, env), { signal });
  } catch (err) {
    if (isDaemonVerdict(err)) forget();
    throw err;
  }
}

interface Waiter {
  resolve(v: SendResult | TombstoneResult): void;
  reject(e: Error): void;
}

/** What the worker works on next: the head of its channel's queue. */
interface Job {
  row: ChannelRow;
  head: OutboundRow;
}

/** The send worker of one channel (see "Why a queued message is never left without a worker" above). */
class ChannelWorker {
  /** True from kick() starting a loop until that loop's next() finds nothing to do. Only those two touch it. */
  private running = false;
  /** Ends the loop's current wait early; null when it is not waiting. */
  private wake: (() => void) | null = null;
  /** Aborted to stop the worker for good (channel deleted, store closed). */
  readonly controller = new AbortController();
  /** The latest loop; settles when it ends. */
  done: Promise<void> | null = null;

  constructor(
    private readonly sender: Sender,
    private readonly ctx: ChannelContext,
    private readonly channelId: number,
  ) {}

  /** Starts the loop if it is not running, or wakes it from a wait. */
  kick(): void {
    if (this.running) {
      this.wake?.();
      return;
    }
    this.running = true;
    this.done = this.loop().catch((err: Error) => {
      // Only a failure outside the write pipeline gets here, e.g. a database error looking at the queue (pipeline errors are retried inside).
      if (!this.sender.isStopped) this.ctx.logger?.error(`channel send worker stopped: ${err.message}`);
    });
  }

  /** Works through the queue until next() says there is nothing left; every pass goes through next(). */
  private async loop(): Promise<void> {
    const backoff = new Backoff(this.ctx.retryInitialMs, this.ctx.retryMaxMs);
    let failure: { error: unknown } | null = null;
    for (let job = this.next(failure); job; job = this.next(failure)) {
      try {
        await this.attempt(job, backoff);
      } catch (error) {
        failure = { error };
      }
    }
    if (failure) throw failure.error;
  }

  /**
   * The loop's only way on and only way out: the job to work on, or null
   * after clearing `running` in the same synchronous step (also when the look
   * at the queue throws, or an attempt failed unexpectedly).
   */
  private next(failure: { error: unknown } | null): Job | null {
    let job: Job | null = null;
    try {
      if (!failure) job = this.lookup();
    } finally {
      if (!job) {
        this.running = false;
        this.wake = null;
      }
    }
    return job;
  }

  private lookup(): Job | null {
    if (this.ctx.isClosed() || this.controller.signal.aborted) return null;
    const row = this.ctx.db.channelById(this.channelId);
    if (!row) return null;
    const head = this.ctx.db.queueHead(this.channelId);
    return head ? { row, head } : null;
  }

  /** One try at the head of the queue; daemon failures are reported and waited out here. */
  private async attempt({ row, head }: Job, backoff: Backoff): Promise<void> {
    const signal = this.controller.signal;
    const client = this.ctx.clientFor(row.name);
    if (!client || !client.isDaemonConnected()) {
      // Nothing to do until a client is attached or the daemon is back; poll cheaply.
      await this.wait(Math.min(this.ctx.retryInitialMs, 1000));
      return;
    }
    try {
      if (head.op === 'message') await this.sender.writeMessage(row, head, client, signal);
      else await this.sender.writeTombstones(row, head, client, signal);
      backoff.reset();
    } catch (err) {
      if (this.ctx.isClosed() || signal.aborted) return;
      const delay = backoff.next();
      this.ctx.problem(row.name, head.op === 'message' ? 'send' : 'tombstone', err as Error, delay);
      await this.wait(delay);
    }
  }

  /** Waits `ms` (less if kick() wakes the worker or it is stopped). */
  private async wait(ms: number): Promise<void> {
    const p = pause(ms, this.controller.signal);
    this.wake = p.wake;
    await p.promise;
    this.wake = null;
  }
}

/** The outbound queues of one store: their workers, the promises waiting on them, and the write pipeline. */
export class Sender {
  private readonly workers = new Map<number, ChannelWorker>();
  private readonly waiters = new Map<number, Waiter>();
  private stopped = false;

  constructor(private readonly ctx: ChannelContext) {}

  /** True once stopAll() was called (the store is closing). */
  get isStopped(): boolean {
    return this.stopped;
  }

  /**
   * Queues a message (validated by the caller; stored before this returns,
   * so `payload` may be the caller's own bytes) and resolves when it was
   * acknowledged. Its hash, which a large message's header carries, is taken
   * now, while the whole payload is in memory.
   */
  queueMessage(row: ChannelRow, payload: Buffer): Promise<SendResult> {
    return this.outcome<SendResult>(row, this.ctx.db.queueMessage(row.id, payload, blake2b256(payload)));
  }

  /**
   * Queues the tombstoning of `count` acknowledged messages from the one with
   * index `start`, every box of each.
   * @throws TombstoneRangeError when they were not all sent and acknowledged
   */
  queueTombstone(row: ChannelRow, start: string, count: number): Promise<TombstoneResult> {
    const db = this.ctx.db;
    const first = db.sentByCounter(row.id, start);
    if (!first) throw new TombstoneRangeError(`channel "${row.name}": no acknowledged message with index ${start}`);
    const rows = db.sentFrom(row.id, first.id, count);
    if (rows.length < count) {
      throw new TombstoneRangeError(`channel "${row.name}": only ${rows.length} acknowledged messages from index ${start}`);
    }
    const boxes = rows.reduce((n, r) => n + r.box_count, 0);
    const seq = db.queueTombstone(row.id, { start: first.first_index, boxes, firstCounter: start, messages: count });
    return this.outcome<TombstoneResult>(row, seq);
  }

  /** After an outbound row was inserted: reports it queued, wakes the worker, and waits for its outcome. */
  private outcome<T extends SendResult | TombstoneResult>(row: ChannelRow, seq: number): Promise<T> {
    const promise = new Promise<T>((resolve, reject) => this.waiters.set(seq, { resolve: resolve as Waiter['resolve'], reject }));
    this.ctx.progress({ stage: 'queued', channel: row.name, seq });
    this.ctx.queueChanged(row);
    this.kick(row.id);
    return promise;
  }

  private settle(seq: number, outcome: Error | SendResult | TombstoneResult): void {
    const waiter = this.waiters.get(seq);
    if (!waiter) return;
    this.waiters.delete(seq);
    if (outcome instanceof Error) waiter.reject(outcome);
    else waiter.resolve(outcome);
  }

  /** Starts the channel's send worker, or wakes it from a wait. */
  kick(channelId: number): void {
    if (this.stopped) return;
    let worker = this.workers.get(channelId);
    if (!worker) {
      worker = new ChannelWorker(this, this.ctx, channelId);
      this.workers.set(channelId, worker);
    }
    worker.kick();
  }

  /** Starts or wakes the send worker of every channel with queued work. */
  kickQueued(): void {
    for (const channelId of this.ctx.db.channelsWithQueue()) this.kick(channelId);
  }

  /** Stops the channel's worker for good (before the channel is deleted); resolves when its loop ended. */
  stop(channelId: number): Promise<void> | undefined {
    const worker = this.workers.get(channelId);
    worker?.controller.abort();
    return worker?.done ?? undefined;
  }

  /** After the channel was deleted: drops its worker and rejects the promises of its queued entries. */
  forget(channelId: number, seqs: readonly number[], error: () => Error): void {
    this.workers.delete(channelId);
    for (const seq of seqs) this.settle(seq, error());
  }

  /** Stops every worker (the store closes); returns their loops. No worker starts after this. */
  stopAll(): Promise<void>[] {
    this.stopped = true;
    const loops: Promise<void>[] = [];
    for (const w of this.workers.values()) {
      w.controller.abort();
      if (w.done) loops.push(w.done);
    }
    return loops;
  }

  /** Rejects every promise still waiting for an acknowledgement (the entries stay queued). */
  rejectAll(error: () => Error): void {
    for (const seq of [...this.waiters.keys()]) this.settle(seq, error());
  }

  // ------------------------------------------------------------ pipeline

  /** Writes a queued message (steps 2-4 above), resuming whatever was recorded. */
  async writeMessage(row: ChannelRow, head: OutboundRow, client: ChannelClient, signal: AbortSignal): Promise<void> {
    const db = this.ctx.db;
    let pending = db.pendingWrite(head.seq);
    if (!pending) {
      let writeIndex = row.write_index;
      if (row.needs_scan || !writeIndex) writeIndex = await this.scanWriteIndex(row, client, signal);
      const max = client.pigeonholeGeometry().MaxPlaintextPayloadLength;
      if (!needsCopy(head.payload_length!, max)) {
        // The envelope is made in dispatchBox, recorded before it is sent.
        db.insertPendingBox(head.seq, writeIndex);
      } else {
        // The stream's elements are made window by window in dispatchCopy.
        const tempSeed = randomBytes(SEED_LENGTH);
        const temp = await client.newKeypair(tempSeed);
        db.insertPendingCopy(head.seq, { boxIndex: writeIndex, tempSeed, tempWriteCap: temp.writeCap, tempFirstIndex: temp.firstMessageIndex });
        this.ctx.progress({ stage: 'pending-recorded', channel: row.name, seq: head.seq, mode: 'copy', index: indexCounter(writeIndex) });
      }
      pending = db.pendingWrite(head.seq)!;
    }

    if (pending.mode === 'box') {
      await this.dispatchBox(row, head, pending, client, signal);
    } else {
      await this.dispatchCopy(row, head, pending, client, signal);
    }
    pending = db.pendingWrite(head.seq)!;
    const index = indexCounter(pending.box_index);
    this.ctx.progress({ stage: 'write-acknowledged', channel: row.name, seq: head.seq, index });
    db.completeWrite(head.seq, row.id, {
      counter: index,
      firstIndex: pending.box_index,
      nextIndex: pending.next_index,
      boxCount: pending.box_count,
      payloadLength: head.payload_length!,
    });
    const result: SendResult = { channel: row.name, index, boxes: pending.box_count, seq: head.seq };
    this.ctx.progress({ stage: 'sent', channel: row.name, seq: head.seq, index, boxes: pending.box_count });
    this.ctx.queueChanged(row);
    this.ctx.sent(result);
    this.settle(head.seq, result);
  }

  /** Finds the first box of an adopted owned channel that does not exist yet. */
  private async scanWriteIndex(row: ChannelRow, client: ChannelClient, signal: AbortSignal): Promise<Buffer> {
    let index = row.write_index ?? row.first_index;
    for (;;) {
      if (signal.aborted) throw new ChannelClosedError('scan aborted');
      const enc = await client.encryptRead(row.read_cap, index);
      try {
        await client.startResendingEncryptedMessageNoRetry(readParams(row.read_cap, index, enc), { signal });
      } catch (err) {
        if (err instanceof BoxIDNotFoundError) break;
        if (!(err instanceof TombstoneError)) throw err;
      }
      index = enc.nextMessageBoxIndex;
      // Record progress so a long scan interrupted by a crash resumes where it was.
      this.ctx.db.setWriteIndex(row.id, index);
    }
    this.ctx.db.setScannedWriteIndex(row.id, index);
    this.ctx.logger?.info(`channel "${row.name}": next free box is ${indexCounter(index)}`);
    return index;
  }

  /** Sends the recorded single-box envelope (making and recording it first if there is none). */
  private async dispatchBox(
    row: ChannelRow,
    head: OutboundRow,
    pending: PendingWriteRow,
    client: ChannelClient,
    signal: AbortSignal,
  ): Promise<void> {
    const db = this.ctx.db;
    const writeCap = row.write_cap!;
    if (!pending.ciphertext) {
      const payload = db.queuedPayload(head.seq, 0, head.payload_length!);
      const enc = await client.encryptWrite(encodeSingle(payload), writeCap, pending.box_index);
      db.setPendingEnvelope(head.seq, enc);
      pending = db.pendingWrite(head.seq)!;
      this.ctx.progress({ stage: 'pending-recorded', channel: row.name, seq: head.seq, mode: 'box', index: indexCounter(pending.box_index) });
    }
    await sendRecorded(client, writeCap, pending, signal, () => db.clearPendingEnvelope(head.seq));
  }

  /**
   * Writes the copy stream to the temp channel (first the elements an earlier
   * attempt recorded and did not see acknowledged, then the rest, window by
   * window), then runs the copy command.
   */
  private async dispatchCopy(
    row: ChannelRow,
    head: OutboundRow,
    pending: PendingWriteRow,
    client: ChannelClient,
    signal: AbortSignal,
  ): Promise<void> {
    const db = this.ctx.db;
    const seq = head.seq;
    const tempCap = pending.temp_write_cap!;
    await this.resendRecordedElements(row, seq, tempCap, client, signal);
    await this.streamElements(row, head, db.pendingWrite(seq)!, client, signal);
    // Propagation gate (as the reference tests do): the courier gives up on a
    // temp box it cannot read after about a minute, so wait until the last
    // one is readable before starting the copy.
    const last = db.pendingWrite(seq)!.copy_last_temp_index!;
    const tempReadCap = tempCap.subarray(WRITE_CAP_LENGTH - READ_CAP_LENGTH);
    const gate = await client.encryptRead(tempReadCap, last);
    await client.startResendingEncryptedMessage(readParams(tempReadCap, last, gate), { signal, timeoutMs: 120_000 });
    this.ctx.progress({ stage: 'copy-dispatch', channel: row.name, seq });
    try {
      await client.startResendingCopyCommand(tempCap, { signal });
    } catch (err) {
      if (err instanceof CopyCommandFailedError) {
        // The courier caches this verdict for the temp cap: rebuild the copy
        // with a new temp channel on the next attempt.
        db.deletePendingWrite(seq);
      }
      throw err;
    }
  }

  /**
   * Builds, encrypts, records and writes the copy stream from where the
   * record says it is built to, one window of COPY_BOXES_PER_WINDOW boxes at
   * a time. Each window is built by its own call (the first marked start, the
   * last marked last) at the destination box the previous one ended at, and
   * recorded in one transaction before any of it is written; that transaction
   * also records which elements of the previous window were acknowledged.
   * The next window is built while this one is encrypted (a chain: each
   * envelope names the temp box after it) and written, COPY_WRITES_IN_FLIGHT
   * elements at a time.
   */
  private async streamElements(
    row: ChannelRow,
    head: OutboundRow,
    pending: PendingWriteRow,
    client: ChannelClient,
    signal: AbortSignal,
  ): Promise<void> {
    const db = this.ctx.db;
    const seq = head.seq;
    const writeCap = row.write_cap!;
    const tempCap = pending.temp_write_cap!;
    const framedLength = LARGE_HEADER_LENGTH + head.payload_length!;
    const header = largeHeader(head.payload_length!, head.payload_hash!);
    const windowBytes = COPY_BOXES_PER_WINDOW * copyBoxLength(client.pigeonholeGeometry().MaxPlaintextPayloadLength);
    /** The elements of the framed bytes from `from` (one window's worth, or the rest), landing from destination box `at`. */
    const build = (from: number, at: Buffer) => {
      const to = Math.min(framedLength, from + windowBytes);
      const frame = this.framedBytes(seq, header, from, to);
      const built = client.createCourierEnvelopesFromPayload(frame, writeCap, at, from === 0, to === framedLength).then((r) => ({ to, ...r }));
      // A window built ahead is dropped when the attempt fails first; its failure is then nobody's to report.
      built.catch(() => {});
      return built;
    };
    let element = pending.copy_elements;
    let tempIndex = pending.copy_temp_index!;
    let building = pending.copy_built < framedLength ? build(pending.copy_built, pending.next_index) : null;
    // Written but not yet recorded as acknowledged: recorded with the next window, or when this ends.
    let acked: number[] = [];
    try {
      while (building) {
        const built = await building;
        building = built.to < framedLength ? build(built.to, built.nextDestIndex) : null;
        const elements: CopyWindow['elements'] = [];
        for (const data of built.envelopes) {
          const env = await client.encryptWrite(data, tempCap, tempIndex);
          elements.push({ element: element++, data, tempIndex, env });
          tempIndex = env.nextMessageBoxIndex;
        }
        const boxCount = Number(counterValue(built.nextDestIndex) - counterValue(pending.box_index));
        db.recordCopyWindow(seq, { elements, built: built.to, nextIndex: built.nextDestIndex, boxCount, nextTempIndex: tempIndex }, acked);
        this.reportAcknowledged(row, seq, acked, element);
        acked = [];
        for (const e of elements) this.ctx.progress({ stage: 'element-recorded', channel: row.name, seq, element: e.element, elements: element });
        await writeBounded(elements, COPY_WRITES_IN_FLIGHT, async (e) => {
          await sendRecorded(client, tempCap, envelopeColumns(e.env), signal, () => db.clearElementEnvelope(seq, e.element));
          acked.push(e.element);
        });
      }
    } finally {
      this.acknowledgeElements(row, seq, acked, element);
    }
  }

  /**
   * Writes again, page by page, the elements an earlier attempt recorded and
   * did not see acknowledged (encrypting anew those whose envelope the daemon
   * refused), COPY_WRITES_IN_FLIGHT at a time and started in element order,
   * as streamElements writes them: after a crash mid-window that can be a
   * whole window, each a round trip of seconds on a mixnet.
   */
  private async resendRecordedElements(row: ChannelRow, seq: number, tempCap: Buffer, client: ChannelClient, signal: AbortSignal): Promise<void> {
    const db = this.ctx.db;
    const elements = db.pendingWrite(seq)!.copy_elements;
    for (let from = 0; ; ) {
      const rows = db.copyElementsFrom(seq, from, 2 * COPY_BOXES_PER_WINDOW);
      if (rows.length === 0) return;
      const acked: number[] = [];
      try {
        await writeBounded(rows, COPY_WRITES_IN_FLIGHT, async (r) => {
          let recorded: EnvelopeColumns = r;
          if (!r.ciphertext) {
            const env = await client.encryptWrite(r.data, tempCap, r.temp_index);
            db.setElementEnvelope(seq, r.element, env);
            recorded = envelopeColumns(env);
          }
          await sendRecorded(client, tempCap, recorded, signal, () => db.clearElementEnvelope(seq, r.element));
          acked.push(r.element);
        });
      } finally {
        this.acknowledgeElements(row, seq, acked, elements);
      }
      from = rows[rows.length - 1].element + 1;
    }
  }

  /** Records elements as acknowledged (their rows go, in one transaction) and reports them. */
  private acknowledgeElements(row: ChannelRow, seq: number, acked: number[], elements: number): void {
    if (acked.length === 0 || this.ctx.isClosed()) return;
    this.ctx.db.deleteElements(seq, acked);
    this.reportAcknowledged(row, seq, acked, elements);
  }

  private reportAcknowledged(row: ChannelRow, seq: number, acked: number[], elements: number): void {
    for (const element of acked) this.ctx.progress({ stage: 'element-acked', channel: row.name, seq, element, elements });
  }

  /** Framed bytes [from, to) of a queued large message: its header, then its payload as stored in chunks. */
  private framedBytes(seq: number, header: Buffer, from: number, to: number): Buffer {
    const payloadFrom = Math.max(0, from - LARGE_HEADER_LENGTH);
    const payload = this.ctx.db.queuedPayload(seq, payloadFrom, to - LARGE_HEADER_LENGTH - payloadFrom);
    return from < LARGE_HEADER_LENGTH ? Buffer.concat([header.subarray(from), payload]) : payload;
  }

  /** Writes the tombstones of a queued tombstone request, resuming after the boxes already acknowledged. */
  async writeTombstones(row: ChannelRow, head: OutboundRow, client: ChannelClient, signal: AbortSignal): Promise<void> {
    const writeCap = row.write_cap!;
    // Tombstones are deterministic (a signed empty payload), so they are
    // rebuilt on each attempt and only the count of acknowledged boxes is kept.
    const { envelopes } = await client.tombstoneRange(writeCap, head.tomb_start!, head.tomb_boxes!);
    for (let i = head.tomb_done; i < envelopes.length; i++) {
      await client.startResendingEncryptedMessage(writeParams(writeCap, envelopes[i]), { signal });
      this.ctx.db.setTombstonesDone(head.seq, i + 1);
    }
    const index = head.tomb_first_counter!;
    this.ctx.db.completeTombstone(head.seq, row.id, index, head.tomb_messages!);
    const result: TombstoneResult = { channel: row.name, index, messages: head.tomb_messages!, boxes: head.tomb_boxes! };
    this.ctx.progress({ stage: 'tombstoned', channel: row.name, seq: head.seq, index, boxes: head.tomb_boxes! });
    this.ctx.queueChanged(row);
    this.settle(head.seq, result);
  }
}
