/**
 * Persistent Pigeonhole channels: a durable outbound queue and an in-order
 * reader on top of the thin client, with every step recorded in SQLite so
 * that a crash or restart neither loses nor repeats a message.
 *
 * ## Writes (one worker per channel, strictly in queue order)
 * 1. `send()` inserts the payload into `outbound` (commit) and returns a
 *    promise that settles when the courier acknowledges it.
 * 2. The worker plans the head of the queue: encrypt_write of the framed
 *    message at the channel's write index (or, for a payload larger than a
 *    box, a fresh temporary keypair + create_courier_envelopes_from_payload),
 *    and records the result in `pending_writes` (commit) BEFORE dispatch.
 * 3. It dispatches start_resending_encrypted_message (copy: every temp
 *    element, each recorded before its dispatch and marked done after its
 *    ACK, then start_resending_copy_command).
 * 4. On acknowledgement, one transaction removes the queue entry and its
 *    pending state, advances the write index and logs the message in `sent`.
 * The worker ends when it finds the queue empty and marks itself stopped in
 * that same synchronous step, so every send() is either seen by the worker
 * or starts a new one.
 *
 * Crash windows (process killed at any instant):
 * - before (1) commits: the caller never got a promise that could settle; nothing queued.
 * - between (1) and (2): the message is queued; the next run plans and sends it.
 * - between encrypt and the (2) commit: nothing was dispatched; the next run
 *   re-plans (re-encrypting a box at the same index gives the same box content).
 * - during (3), or after the ACK but before (4) commits: the next run re-sends
 *   the SAME recorded envelope; a box that already holds byte-identical
 *   content answers success, so the box is written once. A copy command
 *   re-issued with the same temp cap returns the courier's cached verdict or
 *   re-runs with identical destination contents.
 * - after (4): done; the in-process promise is lost with the process, the
 *   message is in `sent`.
 * A daemon error reply to a recorded envelope (e.g. its replica epoch went
 * stale) clears it so the next attempt re-encrypts: still the same box
 * content. A failed copy command (the courier caches a failure for 30 min)
 * discards the temp stream and rebuilds the copy with a new temp keypair;
 * destination boxes already written hold identical bytes, so the retry
 * succeeds over them.
 *
 * ## Reads (one loop per channel)
 * 1. Unread entries of the `received` log are delivered first, in order.
 * 2. The next message is read from the read index: a fresh encrypt_read and a
 *    no-retry read per attempt, backing off while the box does not exist; a
 *    large message's continuation boxes are read the same way.
 * 3. Phase 1: one transaction inserts the message (or tombstone/malformed
 *    report) into `received`, unread, and advances the read index past it.
 * 4. The handler is called; when it returns (for a synchronous handler, in
 *    the same tick) phase 2 commits the read mark.
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
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import type Database from 'better-sqlite3';
import { blake2b256 } from '../client/crypto';
import {
  BoxIDNotFoundError,
  CopyCommandFailedError,
  InvalidArgumentError,
  KatzenpostError,
  StartResendingCancelledError,
  TombstoneError,
} from '../client/errors';
import { READ_CAP_LENGTH, SEED_LENGTH, WRITE_CAP_LENGTH, MESSAGE_BOX_INDEX_LENGTH } from '../wire';
import {
  ChannelBusyError,
  ChannelCapsMismatchError,
  ChannelClosedError,
  ChannelError,
  ChannelExistsError,
  ChannelNotFoundError,
  ChannelPositionError,
  ChannelReadOnlyError,
  TombstoneRangeError,
} from './errors';
import {
  MAX_MESSAGE_LENGTH,
  assembleLarge,
  encodeLarge,
  encodeSingle,
  needsCopy,
  parseFirstBox,
} from './framing';
import {
  openDatabase,
  type ChannelRow,
  type CopyElementRow,
  type OutboundRow,
  type PendingWriteRow,
  type ReceivedRow,
  type SentRow,
} from './db';
import type {
  ChannelActivity,
  ChannelCaps,
  ChannelClient,
  ChannelHandler,
  ChannelInfo,
  ChannelItem,
  ChannelProblem,
  ChannelProgress,
  ChannelResendParams,
  ChannelStoreLogger,
  ChannelStoreOptions,
  ReceivedEntry,
  SendResult,
  TombstoneResult,
} from './types';

/** The box counter (Idx64, little-endian in the first 8 bytes of a MessageBoxIndex), decimal. */
export function indexCounter(index: Uint8Array): string {
  return Buffer.from(index.buffer, index.byteOffset, 8).readBigUInt64LE(0).toString();
}

function counterValue(index: Uint8Array): bigint {
  return Buffer.from(index.buffer, index.byteOffset, 8).readBigUInt64LE(0);
}

function toBytes(value: unknown, argument: string): Buffer {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array) return Buffer.from(value);
  throw new InvalidArgumentError(argument, 'Buffer, Uint8Array or string', value === null ? 'null' : typeof value);
}

function checkBlob(value: unknown, length: number, argument: string): Buffer {
  if (!(value instanceof Uint8Array)) {
    throw new InvalidArgumentError(argument, `${length}-byte Buffer`, value === null ? 'null' : typeof value);
  }
  if (value.length !== length) throw new InvalidArgumentError(argument, `${length} bytes`, `${value.length} bytes`);
  return Buffer.from(value);
}

function checkName(name: unknown): string {
  if (typeof name !== 'string' || name.length === 0 || name.length > 200) {
    throw new InvalidArgumentError('name', 'a non-empty channel name of at most 200 characters');
  }
  return name;
}

function now(): number {
  return Date.now();
}

/** Resolves after ms, or at once when the signal aborts or `wake` is called. */
function pause(ms: number, signal?: AbortSignal): { promise: Promise<void>; wake: () => void } {
  let wake: () => void = () => {};
  const promise = new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
    wake = done;
  });
  return { promise, wake };
}

class Backoff {
  private current: number;
  constructor(
    private readonly initial: number,
    private readonly max: number,
  ) {
    this.current = initial;
  }
  /** The next delay, with up to 20% jitter so many channels do not poll in lockstep. */
  next(): number {
    const d = this.current;
    this.current = Math.min(this.current * 2, this.max);
    return Math.round(d * (0.8 + Math.random() * 0.4));
  }
  reset(): void {
    this.current = this.initial;
  }
}

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

/** An encrypt_write / encrypt_read / tombstone_range result, as the ARQ calls take it. */
interface ArqEnvelope {
  envelopeDescriptor: Uint8Array;
  messageCiphertext: Uint8Array;
  envelopeHash: Uint8Array;
}

/** The envelope columns of a pending_writes or pending_copy_elements row. */
type EnvelopeColumns = { descriptor: Buffer | null; ciphertext: Buffer | null; envelope_hash: Buffer | null };

/** The envelope recorded in a row (present once recorded). */
function recordedEnvelope(row: EnvelopeColumns): ArqEnvelope {
  return { envelopeDescriptor: row.descriptor!, messageCiphertext: row.ciphertext!, envelopeHash: row.envelope_hash! };
}

/** ARQ parameters of a write of `env` (made for `writeCap`). */
function writeParams(writeCap: Uint8Array, env: ArqEnvelope): ChannelResendParams {
  return {
    readCap: null,
    writeCap,
    messageBoxIndex: null,
    replyIndex: 0,
    envelopeDescriptor: env.envelopeDescriptor,
    messageCiphertext: env.messageCiphertext,
    envelopeHash: env.envelopeHash,
  };
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
  try {
    await client.startResendingEncryptedMessage(writeParams(writeCap, recordedEnvelope(row)), { signal });
  } catch (err) {
    if (isDaemonVerdict(err)) forget();
    throw err;
  }
}

/** ARQ parameters of a read of box `index` (the index `env` was encrypted for). */
function readParams(readCap: Uint8Array, index: Uint8Array, env: ArqEnvelope): ChannelResendParams {
  return {
    readCap,
    writeCap: null,
    messageBoxIndex: index,
    replyIndex: 0,
    envelopeDescriptor: env.envelopeDescriptor,
    messageCiphertext: env.messageCiphertext,
    envelopeHash: env.envelopeHash,
  };
}

interface Waiter<T> {
  resolve(v: T): void;
  reject(e: Error): void;
}

interface SenderState {
  /**
   * True while runSender() runs. Only kick() sets it and only runSender()
   * clears it, in the same synchronous step in which it found the queue empty
   * (or stopped), so a send() is either seen by that look at the queue or
   * finds the flag clear and starts a new worker.
   */
  running: boolean;
  /** Ends the worker's current wait early; null when it is not waiting. */
  wake: (() => void) | null;
  controller: AbortController;
  done: Promise<void> | null;
}

type ReadBox = { tombstone: false; plaintext: Buffer; next: Buffer } | { tombstone: true; next: Buffer };

type NextItem = {
  kind: ChannelItem['kind'];
  counter: string;
  boxes: number;
  payload: Buffer | null;
  reason: string | null;
  next: Buffer;
};

export interface ChannelStore {
  on(event: 'progress', listener: (p: ChannelProgress) => void): this;
  on(event: 'problem', listener: (p: ChannelProblem) => void): this;
  on(event: 'sent', listener: (r: SendResult) => void): this;
  on(event: 'queue', listener: (q: { channel: string; queued: number }) => void): this;
  once(event: 'progress', listener: (p: ChannelProgress) => void): this;
  once(event: 'problem', listener: (p: ChannelProblem) => void): this;
  once(event: 'sent', listener: (r: SendResult) => void): this;
  once(event: 'queue', listener: (q: { channel: string; queued: number }) => void): this;
  off(event: 'progress' | 'problem' | 'sent' | 'queue', listener: (...args: any[]) => void): this;
}

/**
 * A database of persistent channels bound to a thin client.
 *
 * ```ts
 * const store = new ChannelStore({ path: 'channels.db', client });
 * await store.createChannel('news');
 * const cap = store.shareReadCap('news');          // give this to readers
 * await store.send('news', 'hello');               // resolves once the courier ACKed it
 * // elsewhere:
 * readerStore.importChannel('news', cap);
 * for await (const item of readerStore.messages('news', { signal })) { ... }
 * ```
 */
export class ChannelStore extends EventEmitter {
  /** The database file. */
  readonly path: string;
  private readonly db: Database.Database;
  private defaultClient: ChannelClient | null;
  private readonly clients = new Map<string, ChannelClient | null>();
  private readonly senders = new Map<number, SenderState>();
  private readonly receivers = new Map<number, { controller: AbortController; done: Promise<void> }>();
  private readonly waiters = new Map<number, Waiter<any>>();
  /** The read in flight of each running receiver; moveReader() aborts it so the loop restarts at the new position. */
  private readonly readAttempts = new Map<number, AbortController>();
  private readonly pollInitialMs: number;
  private readonly pollMaxMs: number;
  private readonly retryInitialMs: number;
  private readonly retryMaxMs: number;
  private readonly retainPayloads: boolean;
  private readonly logger: ChannelStoreLogger | undefined;
  private closed = false;
  private closing = false;

  constructor(options: ChannelStoreOptions) {
    super();
    this.setMaxListeners(0);
    if (!options || typeof options.path !== 'string' || options.path === '') {
      throw new InvalidArgumentError('path', 'the path of the channel database file');
    }
    this.path = options.path;
    this.defaultClient = options.client ?? null;
    this.pollInitialMs = options.pollInitialMs ?? 500;
    this.pollMaxMs = options.pollMaxMs ?? 10_000;
    this.retryInitialMs = options.retryInitialMs ?? 1000;
    this.retryMaxMs = options.retryMaxMs ?? 30_000;
    this.retainPayloads = options.retainPayloads ?? false;
    this.logger = options.logger;
    this.db = openDatabase(options.path);
    // Queued work from an earlier run resumes as soon as a client is there.
    this.kickQueued();
  }

  // ------------------------------------------------------------ clients

  /**
   * Sets the thin client for one channel (by name, before or after it exists)
   * or, without a name, the default for all channels. Waiting work resumes.
   * Pass null to detach; work then waits for a client.
   */
  setClient(client: ChannelClient | null, name?: string): void {
    if (name === undefined) this.defaultClient = client;
    else if (client === null) this.clients.delete(name);
    else this.clients.set(name, client);
    this.kickQueued();
  }

  /** Starts or wakes the send worker of every channel with queued work. */
  private kickQueued(): void {
    for (const row of this.db.prepare('SELECT DISTINCT channel_id FROM outbound').all() as { channel_id: number }[]) {
      this.kick(row.channel_id);
    }
  }

  private clientFor(name: string): ChannelClient | null {
    return this.clients.get(name) ?? this.defaultClient;
  }

  private requireClient(name: string): ChannelClient {
    const client = this.clientFor(name);
    if (!client) throw new ChannelError('NO_CLIENT', `channel "${name}": no thin client attached to the channel store`);
    return client;
  }

  // -------------------------------------------------------------- rows

  private row(name: string): ChannelRow {
    this.assertOpen();
    const row = this.db.prepare('SELECT * FROM channels WHERE name = ?').get(name) as ChannelRow | undefined;
    if (!row) throw new ChannelNotFoundError(name);
    return row;
  }

  /** The row of a channel this store can write to. */
  private ownedRow(name: string): ChannelRow {
    const row = this.row(name);
    if (row.kind !== 'owned' || !row.write_cap) throw new ChannelReadOnlyError(name);
    return row;
  }

  private rowById(id: number): ChannelRow | undefined {
    return this.db.prepare('SELECT * FROM channels WHERE id = ?').get(id) as ChannelRow | undefined;
  }

  private info(row: ChannelRow): ChannelInfo {
    const queued = this.queuedCount(row.id);
    const unread = (
      this.db.prepare('SELECT COUNT(*) AS n FROM received WHERE channel_id = ? AND read_at IS NULL').get(row.id) as { n: number }
    ).n;
    return {
      name: row.name,
      kind: row.kind,
      id: row.read_cap_hash.toString('hex'),
      firstIndex: indexCounter(row.first_index),
      writeIndex: row.write_index ? indexCounter(row.write_index) : null,
      readIndex: indexCounter(row.read_index),
      queued,
      unread,
    };
  }

  private assertOpen(): void {
    if (this.closing) throw new ChannelClosedError('the channel store is closed');
  }

  // ------------------------------------------------------- channel admin

  /**
   * Creates an owned channel from a 32-byte seed (random when omitted) and
   * stores its caps. Needs the daemon (new_keypair). A channel created from
   * a given seed may have been written before, so its first free box is
   * looked up (no-retry reads) before the first write.
   */
  async createChannel(name: string, options: { seed?: Uint8Array } = {}): Promise<ChannelInfo> {
    checkName(name);
    this.assertOpen();
    const seed = options.seed === undefined ? randomBytes(SEED_LENGTH) : checkBlob(options.seed, SEED_LENGTH, 'seed');
    if (this.db.prepare('SELECT 1 FROM channels WHERE name = ?').get(name)) throw new ChannelExistsError(name);
    const kp = await this.requireClient(name).newKeypair(seed);
    this.assertOpen();
    const readCapHash = blake2b256(kp.readCap);
    if (this.db.prepare('SELECT 1 FROM channels WHERE read_cap_hash = ?').get(readCapHash)) {
      throw new ChannelExistsError(name);
    }
    this.db
      .prepare(
        `INSERT INTO channels (name, kind, read_cap, read_cap_hash, write_cap, seed_hash, first_index, write_index, needs_scan, read_index, created_at)
         VALUES (?, 'owned', ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        name,
        kp.readCap,
        readCapHash,
        kp.writeCap,
        blake2b256(seed),
        kp.firstMessageIndex,
        options.seed === undefined ? kp.firstMessageIndex : null,
        options.seed === undefined ? 0 : 1,
        kp.firstMessageIndex,
        now(),
      );
    return this.info(this.row(name));
  }

  /**
   * Imports a read-only channel from a shared 136-byte read cap. Needs no
   * daemon. Reading starts at the channel's first box.
   */
  importChannel(name: string, readCap: Uint8Array): ChannelInfo {
    checkName(name);
    this.assertOpen();
    const cap = checkBlob(readCap, READ_CAP_LENGTH, 'readCap');
    const hash = blake2b256(cap);
    if (this.db.prepare('SELECT 1 FROM channels WHERE name = ? OR read_cap_hash = ?').get(name, hash)) {
      throw new ChannelExistsError(name);
    }
    const first = cap.subarray(READ_CAP_LENGTH - MESSAGE_BOX_INDEX_LENGTH);
    this.db
      .prepare(
        `INSERT INTO channels (name, kind, read_cap, read_cap_hash, first_index, read_index, created_at)
         VALUES (?, 'imported', ?, ?, ?, ?, ?)`,
      )
      .run(name, cap, hash, first, first, now());
    return this.info(this.row(name));
  }

  /**
   * Opens a channel whose caps the caller keeps elsewhere (the Node-RED
   * config node keeps them in its credentials): the caps are the identity,
   * the database holds the positions.
   * - A row with this name and the same caps: used as it is.
   * - A row with this name and other caps: ChannelCapsMismatchError (the
   *   positions belong to another channel; rename or delete it).
   * - The same caps under another name: the row is renamed.
   * - Neither: a new row. An owned channel's first free box is looked up
   *   before its first write, since the caps may have been used before.
   * Supplying a write cap or seed for a row that was imported upgrades it to owned.
   * A seed needs the daemon (new_keypair) unless the row was created from the same seed.
   */
  async openChannel(name: string, caps: ChannelCaps): Promise<ChannelInfo> {
    checkName(name);
    this.assertOpen();
    let readCap: Buffer;
    let writeCap: Buffer | null = null;
    let seedHash: Buffer | null = null;
    if (caps.kind === 'imported') {
      readCap = checkBlob(caps.readCap, READ_CAP_LENGTH, 'readCap');
    } else if (caps.writeCap !== undefined) {
      writeCap = checkBlob(caps.writeCap, WRITE_CAP_LENGTH, 'writeCap');
      readCap = writeCap.subarray(WRITE_CAP_LENGTH - READ_CAP_LENGTH);
    } else {
      const seed = checkBlob(caps.seed, SEED_LENGTH, 'seed');
      seedHash = blake2b256(seed);
      const known = this.db.prepare('SELECT * FROM channels WHERE seed_hash = ?').get(seedHash) as ChannelRow | undefined;
      if (known?.write_cap) {
        writeCap = known.write_cap;
        readCap = known.read_cap;
      } else {
        const kp = await this.requireClient(name).newKeypair(seed);
        this.assertOpen();
        writeCap = kp.writeCap;
        readCap = kp.readCap;
      }
    }
    const hash = blake2b256(readCap);
    const first = readCap.subarray(READ_CAP_LENGTH - MESSAGE_BOX_INDEX_LENGTH);
    const tx = this.db.transaction(() => {
      const byName = this.db.prepare('SELECT * FROM channels WHERE name = ?').get(name) as ChannelRow | undefined;
      if (byName && !byName.read_cap_hash.equals(hash)) {
        throw new ChannelCapsMismatchError(name, `the database ${this.path} holds a different channel under this name`);
      }
      let row = byName ?? (this.db.prepare('SELECT * FROM channels WHERE read_cap_hash = ?').get(hash) as ChannelRow | undefined);
      if (row && row.name !== name) {
        this.logger?.info(`channel "${row.name}" renamed to "${name}" (same caps)`);
        this.db.prepare('UPDATE channels SET name = ? WHERE id = ?').run(name, row.id);
      }
      if (!row) {
        this.db
          .prepare(
            `INSERT INTO channels (name, kind, read_cap, read_cap_hash, write_cap, seed_hash, first_index, write_index, needs_scan, read_index, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)`,
          )
          .run(name, writeCap ? 'owned' : 'imported', readCap, hash, writeCap, seedHash, first, writeCap ? 1 : 0, first, now());
      } else if (writeCap && !row.write_cap) {
        this.db
          .prepare("UPDATE channels SET kind = 'owned', write_cap = ?, seed_hash = ?, needs_scan = 1 WHERE id = ?")
          .run(writeCap, seedHash, row.id);
      } else if (writeCap && seedHash && !row.seed_hash) {
        this.db.prepare('UPDATE channels SET seed_hash = ? WHERE id = ?').run(seedHash, row.id);
      }
      row = this.db.prepare('SELECT * FROM channels WHERE name = ?').get(name) as ChannelRow;
      return row;
    });
    const row = tx();
    if (this.db.prepare('SELECT 1 FROM outbound WHERE channel_id = ?').get(row.id)) this.kick(row.id);
    return this.info(row);
  }

  /** Every channel in the database. */
  list(): ChannelInfo[] {
    this.assertOpen();
    return (this.db.prepare('SELECT * FROM channels ORDER BY name').all() as ChannelRow[]).map((r) => this.info(r));
  }

  /** One channel's state, or null. */
  get(name: string): ChannelInfo | null {
    this.assertOpen();
    const row = this.db.prepare('SELECT * FROM channels WHERE name = ?').get(name) as ChannelRow | undefined;
    return row ? this.info(row) : null;
  }

  /** The channel's 136-byte read cap, to give to readers. A secret: whoever holds it can read the channel. */
  shareReadCap(name: string): Buffer {
    return Buffer.from(this.row(name).read_cap);
  }

  /**
   * Deletes the channel and everything recorded about it (queued messages
   * included: their promises reject). Boxes already written stay in the
   * mixnet; tombstone them first if they must go.
   */
  async delete(name: string): Promise<void> {
    const row = this.row(name);
    const sender = this.senders.get(row.id);
    sender?.controller.abort();
    const receiver = this.receivers.get(row.id);
    receiver?.controller.abort();
    await Promise.allSettled([sender?.done, receiver?.done]);
    const seqs = (this.db.prepare('SELECT seq FROM outbound WHERE channel_id = ?').all(row.id) as { seq: number }[]).map((r) => r.seq);
    this.db.prepare('DELETE FROM channels WHERE id = ?').run(row.id);
    this.senders.delete(row.id);
    for (const seq of seqs) this.settle(seq, new ChannelClosedError(`channel "${name}" was deleted before the message was written`));
  }

  /** Messages and tombstone requests of the channel not yet acknowledged. */
  queued(name: string): number {
    const row = this.row(name);
    return this.queuedCount(row.id);
  }

  private queuedCount(channelId: number): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM outbound WHERE channel_id = ?').get(channelId) as { n: number }).n;
  }

  // ------------------------------------------------- activity and reader

  /** Counts and times of what happened on the channel (read-only; no payload, no capability). */
  activity(name: string): ChannelActivity {
    const row = this.row(name);
    const sent = this.db.prepare('SELECT COUNT(*) AS n, MAX(sent_at) AS last FROM sent WHERE channel_id = ?').get(row.id) as {
      n: number;
      last: number | null;
    };
    const received = this.db
      .prepare(
        `SELECT COUNT(*) AS n, SUM(kind = 'message') AS messages, MAX(received_at) AS last, MAX(read_at) AS lastRead
         FROM received WHERE channel_id = ?`,
      )
      .get(row.id) as { n: number; messages: number | null; last: number | null; lastRead: number | null };
    const queued = this.db.prepare('SELECT MAX(queued_at) AS last FROM outbound WHERE channel_id = ?').get(row.id) as { last: number | null };
    const times = [row.created_at, sent.last, received.last, received.lastRead, queued.last].filter((t): t is number => typeof t === 'number');
    return {
      sent: sent.n,
      received: received.n,
      receivedMessages: received.messages ?? 0,
      createdAt: row.created_at,
      lastSentAt: sent.last,
      lastReceivedAt: received.last,
      lastQueuedAt: queued.last,
      lastActivityAt: Math.max(...times),
    };
  }

  /** The reader's log, newest first, at most `limit` entries (read-only; no payload). */
  receivedLog(name: string, limit = 100): ReceivedEntry[] {
    const row = this.row(name);
    const n = Number.isInteger(limit) && limit > 0 ? limit : 100;
    const rows = this.db
      .prepare('SELECT kind, counter, box_count, received_at, read_at FROM received WHERE channel_id = ? ORDER BY id DESC LIMIT ?')
      .all(row.id, n) as Pick<ReceivedRow, 'kind' | 'counter' | 'box_count' | 'received_at' | 'read_at'>[];
    return rows.map((r) => ({ kind: r.kind, index: r.counter, boxes: r.box_count, receivedAt: r.received_at, readAt: r.read_at }));
  }

  /**
   * Moves the channel's reader to box `index` (a decimal counter, at or after
   * the channel's first box): back, to read and deliver again what it read
   * from there on, or forward, to skip boxes (for instance one that will
   * never be written). Entries of the reader's log at or after `index` are
   * dropped, since they will be read again. A running receiver abandons the
   * read it is waiting for and goes on from the new position.
   *
   * The index of a box is derived from a known earlier one with the daemon
   * (next_message_box_index), one call per box: from the nearest of the
   * first box, the reader's position and (owned channels) the boxes this
   * store wrote. `maxSteps` (default 10 000) bounds the calls.
   * @throws ChannelPositionError, ChannelNotFoundError, ChannelError('NO_CLIENT')
   */
  async moveReader(
    name: string,
    index: string | number | bigint,
    options: { client?: ChannelClient; maxSteps?: number } = {},
  ): Promise<ChannelInfo> {
    const row = this.row(name);
    let target: bigint;
    try {
      target = BigInt(index);
    } catch {
      throw new InvalidArgumentError('index', 'a box index (decimal counter)', String(index));
    }
    const first = counterValue(row.first_index);
    if (target < first) {
      throw new ChannelPositionError(`channel "${name}": box ${target} is before the channel's first box ${first}`);
    }
    if (target >= 1n << 64n) throw new ChannelPositionError(`channel "${name}": box ${target} is beyond the 64-bit counter`);
    // The nearest known index at or before the target.
    let base = row.first_index;
    let baseCounter = first;
    const consider = (blob: Buffer): void => {
      const c = counterValue(blob);
      if (c <= target && c > baseCounter) {
        base = blob;
        baseCounter = c;
      }
    };
    consider(row.read_index);
    for (const s of this.db.prepare('SELECT first_index FROM sent WHERE channel_id = ?').all(row.id) as { first_index: Buffer }[]) {
      consider(s.first_index);
    }
    const steps = target - baseCounter;
    const maxSteps = BigInt(options.maxSteps ?? 10_000);
    if (steps > maxSteps) {
      throw new ChannelPositionError(
        `channel "${name}": box ${target} is ${steps} boxes past the nearest known box ${baseCounter}; at most ${maxSteps} can be derived`,
      );
    }
    let next = Buffer.from(base);
    if (steps > 0n) {
      const client = options.client ?? this.requireClient(name);
      if (typeof client.nextMessageBoxIndex !== 'function') {
        throw new ChannelError('NO_CLIENT', `channel "${name}": the thin client cannot derive box indexes (no nextMessageBoxIndex)`);
      }
      for (let i = 0n; i < steps; i++) {
        next = Buffer.from(await client.nextMessageBoxIndex(next));
        this.assertOpen();
      }
      if (counterValue(next) !== target) {
        throw new ChannelPositionError(`channel "${name}": the daemon derived box ${counterValue(next)} instead of ${target}`);
      }
    }
    const moved = this.db.transaction(() => {
      const current = this.rowById(row.id);
      if (!current) throw new ChannelNotFoundError(name);
      this.db.prepare('UPDATE channels SET read_index = ? WHERE id = ?').run(next, row.id);
      const drop = this.db.prepare('DELETE FROM received WHERE id = ?');
      for (const r of this.db.prepare('SELECT id, counter FROM received WHERE channel_id = ?').all(row.id) as { id: number; counter: string }[]) {
        if (BigInt(r.counter) >= target) drop.run(r.id);
      }
      return this.rowById(row.id)!;
    })();
    this.logger?.info(`channel "${moved.name}": reader moved from box ${indexCounter(row.read_index)} to box ${target}`);
    this.readAttempts.get(row.id)?.abort();
    return this.info(moved);
  }

  // ---------------------------------------------------------------- send

  /**
   * Queues a message (durably, in order) and resolves when the courier
   * acknowledged every box of it. Strings are sent as UTF-8. Payloads larger
   * than one box go through a copy command. While the daemon is away the
   * message waits in the queue; if the store closes first the promise rejects
   * with ChannelClosedError but the message stays queued and is sent after
   * the store is opened again.
   */
  send(name: string, payload: Uint8Array | string): Promise<SendResult> {
    try {
      const row = this.ownedRow(name);
      const bytes = toBytes(payload, 'payload');
      if (bytes.length > MAX_MESSAGE_LENGTH) {
        throw new InvalidArgumentError('payload', `at most ${MAX_MESSAGE_LENGTH} bytes`, `${bytes.length} bytes`);
      }
      const seq = Number(
        this.db
          .prepare("INSERT INTO outbound (channel_id, op, payload, queued_at) VALUES (?, 'message', ?, ?)")
          .run(row.id, bytes, now()).lastInsertRowid,
      );
      return this.queuedOutcome<SendResult>(row, seq);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Tombstones `count` consecutive messages this store sent, starting at the
   * message with index `index` (every box of a large message is included).
   * Queued behind earlier sends; resolves when every tombstone was
   * acknowledged. Only acknowledged messages can be tombstoned, so a later
   * write can never land on a tombstoned box.
   */
  tombstone(name: string, range: { index: string | number | bigint; count?: number }): Promise<TombstoneResult> {
    try {
      const row = this.ownedRow(name);
      const count = range.count ?? 1;
      if (!Number.isInteger(count) || count < 1) throw new InvalidArgumentError('count', 'a positive integer', String(count));
      let start: string;
      try {
        start = BigInt(range.index).toString();
      } catch {
        throw new InvalidArgumentError('index', 'a message index (decimal counter)', String(range.index));
      }
      const first = this.db.prepare('SELECT * FROM sent WHERE channel_id = ? AND counter = ?').get(row.id, start) as SentRow | undefined;
      if (!first) throw new TombstoneRangeError(`channel "${name}": no acknowledged message with index ${start}`);
      const rows = this.db
        .prepare('SELECT * FROM sent WHERE channel_id = ? AND id >= ? ORDER BY id LIMIT ?')
        .all(row.id, first.id, count) as SentRow[];
      if (rows.length < count) {
        throw new TombstoneRangeError(`channel "${name}": only ${rows.length} acknowledged messages from index ${start}`);
      }
      const boxes = rows.reduce((n, r) => n + r.box_count, 0);
      const seq = Number(
        this.db
          .prepare(
            `INSERT INTO outbound (channel_id, op, tomb_start, tomb_boxes, tomb_first_counter, tomb_messages, queued_at)
             VALUES (?, 'tombstone', ?, ?, ?, ?, ?)`,
          )
          .run(row.id, first.first_index, boxes, start, count, now()).lastInsertRowid,
      );
      return this.queuedOutcome<TombstoneResult>(row, seq);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** After an outbound row was inserted: reports it queued, wakes the worker, and waits for its outcome. */
  private queuedOutcome<T extends SendResult | TombstoneResult>(row: ChannelRow, seq: number): Promise<T> {
    const promise = new Promise<T>((resolve, reject) => this.waiters.set(seq, { resolve, reject }));
    this.progress({ stage: 'queued', channel: row.name, seq });
    this.emitQueue(row);
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

  private emitQueue(row: ChannelRow): void {
    this.emit('queue', { channel: row.name, queued: this.queuedCount(row.id) });
  }

  private progress(p: ChannelProgress): void {
    this.emit('progress', p);
  }

  private problem(channel: string, operation: ChannelProblem['operation'], error: Error, retryInMs: number): void {
    this.logger?.warn(`channel "${channel}": ${operation} failed (${error.message}); retrying in ${retryInMs} ms`);
    this.emit('problem', { channel, operation, error, retryInMs });
  }

  /** Starts the channel's send worker, or wakes it from a wait. */
  private kick(channelId: number): void {
    if (this.closing) return;
    let state = this.senders.get(channelId);
    if (!state) {
      state = { running: false, wake: null, controller: new AbortController(), done: null };
      this.senders.set(channelId, state);
    }
    if (state.running) {
      state.wake?.();
      return;
    }
    state.running = true;
    state.done = this.runSender(channelId, state).catch((err: Error) => {
      // Only a database failure gets here (daemon errors are retried inside).
      if (!this.closing) this.logger?.error(`channel send worker stopped: ${err.message}`);
    });
  }

  /**
   * The send worker: processes the queue head by head and returns when the
   * queue is empty. It clears `state.running` itself on the way out, with no
   * await between its last look at the queue and that; clearing it later
   * (e.g. in a .finally() of kick()) would leave microtask turns in which a
   * send() sees a worker that is already leaving, and stays queued.
   */
  private async runSender(channelId: number, state: SenderState): Promise<void> {
    try {
      const backoff = new Backoff(this.retryInitialMs, this.retryMaxMs);
      const signal = state.controller.signal;
      while (!this.closed && !signal.aborted) {
        const row = this.rowById(channelId);
        if (!row) return;
        const head = this.db
          .prepare('SELECT * FROM outbound WHERE channel_id = ? ORDER BY seq LIMIT 1')
          .get(channelId) as OutboundRow | undefined;
        if (!head) return;
        const client = this.clientFor(row.name);
        if (!client || !client.isDaemonConnected()) {
          // Nothing to do until a client is attached or the daemon is back; poll cheaply.
          await this.senderWait(state, Math.min(this.retryInitialMs, 1000), signal);
          continue;
        }
        try {
          if (head.op === 'message') await this.processMessage(row, head, client, signal);
          else await this.processTombstone(row, head, client, signal);
          backoff.reset();
        } catch (err) {
          if (this.closed || signal.aborted) return;
          const delay = backoff.next();
          this.problem(row.name, head.op === 'message' ? 'send' : 'tombstone', err as Error, delay);
          await this.senderWait(state, delay, signal);
        }
      }
    } finally {
      // Runs synchronously on every return or throw above.
      state.running = false;
      state.wake = null;
    }
  }

  /** Waits `ms` (less if kick() wakes the worker or the signal aborts). */
  private async senderWait(state: SenderState, ms: number, signal: AbortSignal): Promise<void> {
    const p = pause(ms, signal);
    state.wake = p.wake;
    await p.promise;
    state.wake = null;
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
      this.db.prepare('UPDATE channels SET write_index = ? WHERE id = ?').run(index, row.id);
    }
    this.db.prepare('UPDATE channels SET write_index = ?, needs_scan = 0 WHERE id = ?').run(index, row.id);
    this.logger?.info(`channel "${row.name}": next free box is ${indexCounter(index)}`);
    return index;
  }

  private async processMessage(row: ChannelRow, head: OutboundRow, client: ChannelClient, signal: AbortSignal): Promise<void> {
    const writeCap = row.write_cap!;
    let pending = this.pendingWrite(head.seq);
    if (!pending) {
      let writeIndex = row.write_index;
      if (row.needs_scan || !writeIndex) writeIndex = await this.scanWriteIndex(row, client, signal);
      const payload = head.payload!;
      const max = client.pigeonholeGeometry().MaxPlaintextPayloadLength;
      if (!needsCopy(payload.length, max)) {
        // The envelope is made in dispatchBox, recorded before it is sent.
        this.db
          .prepare(
            `INSERT INTO pending_writes (seq, mode, box_index, next_index, box_count, created_at)
             VALUES (?, 'box', ?, ?, 1, ?)`,
          )
          .run(head.seq, writeIndex, writeIndex, now());
      } else {
        const frame = encodeLarge(payload);
        const tempSeed = randomBytes(SEED_LENGTH);
        const temp = await client.newKeypair(tempSeed);
        const built = await client.createCourierEnvelopesFromPayload(frame, writeCap, writeIndex, true, true);
        const boxCount = Number(counterValue(built.nextDestIndex) - counterValue(writeIndex));
        this.db.transaction(() => {
          this.db
            .prepare(
              `INSERT INTO pending_writes (seq, mode, box_index, next_index, box_count, temp_seed, temp_write_cap, temp_first_index, created_at)
               VALUES (?, 'copy', ?, ?, ?, ?, ?, ?, ?)`,
            )
            .run(head.seq, writeIndex, built.nextDestIndex, boxCount, tempSeed, temp.writeCap, temp.firstMessageIndex, now());
          const insert = this.db.prepare('INSERT INTO pending_copy_elements (seq, element, data, temp_index) VALUES (?, ?, ?, ?)');
          built.envelopes.forEach((data, i) => insert.run(head.seq, i, data, i === 0 ? temp.firstMessageIndex : null));
        })();
        this.progress({ stage: 'pending-recorded', channel: row.name, seq: head.seq, mode: 'copy', index: indexCounter(writeIndex) });
      }
      pending = this.pendingWrite(head.seq)!;
    }

    if (pending.mode === 'box') {
      await this.dispatchBox(row, head, pending, client, signal);
    } else {
      await this.dispatchCopy(row, head, pending, client, signal);
    }
    pending = this.pendingWrite(head.seq)!;
    const index = indexCounter(pending.box_index);
    this.progress({ stage: 'write-acknowledged', channel: row.name, seq: head.seq, index });
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM outbound WHERE seq = ?').run(head.seq);
      this.db.prepare('UPDATE channels SET write_index = ? WHERE id = ?').run(pending!.next_index, row.id);
      this.db
        .prepare(
          `INSERT OR REPLACE INTO sent (channel_id, counter, first_index, box_count, payload_length, sent_at)
           VALUES (?, ?, ?, ?, ?, ?)`,
        )
        .run(row.id, index, pending!.box_index, pending!.box_count, head.payload!.length, now());
    })();
    const result: SendResult = { channel: row.name, index, boxes: pending.box_count, seq: head.seq };
    this.progress({ stage: 'sent', channel: row.name, seq: head.seq, index, boxes: pending.box_count });
    this.emitQueue(row);
    this.emit('sent', result);
    this.settle(head.seq, result);
  }

  private pendingWrite(seq: number): PendingWriteRow | undefined {
    return this.db.prepare('SELECT * FROM pending_writes WHERE seq = ?').get(seq) as PendingWriteRow | undefined;
  }

  /** Sends the recorded single-box envelope (making and recording it first if there is none). */
  private async dispatchBox(
    row: ChannelRow,
    head: OutboundRow,
    pending: PendingWriteRow,
    client: ChannelClient,
    signal: AbortSignal,
  ): Promise<void> {
    const writeCap = row.write_cap!;
    if (!pending.ciphertext) {
      const enc = await client.encryptWrite(encodeSingle(head.payload!), writeCap, pending.box_index);
      this.db
        .prepare('UPDATE pending_writes SET next_index = ?, ciphertext = ?, descriptor = ?, envelope_hash = ? WHERE seq = ?')
        .run(enc.nextMessageBoxIndex, enc.messageCiphertext, enc.envelopeDescriptor, enc.envelopeHash, head.seq);
      pending = this.pendingWrite(head.seq)!;
      this.progress({ stage: 'pending-recorded', channel: row.name, seq: head.seq, mode: 'box', index: indexCounter(pending.box_index) });
    }
    await sendRecorded(client, writeCap, pending, signal, () => {
      this.db.prepare('UPDATE pending_writes SET ciphertext = NULL, descriptor = NULL, envelope_hash = NULL WHERE seq = ?').run(head.seq);
    });
  }

  /** Writes every copy-stream element to the temp channel, then runs the copy command. */
  private async dispatchCopy(
    row: ChannelRow,
    head: OutboundRow,
    pending: PendingWriteRow,
    client: ChannelClient,
    signal: AbortSignal,
  ): Promise<void> {
    const tempCap = pending.temp_write_cap!;
    const elements = this.db
      .prepare('SELECT * FROM pending_copy_elements WHERE seq = ? ORDER BY element')
      .all(head.seq) as CopyElementRow[];
    let tempIndex: Buffer | null = null;
    for (const el of elements) {
      const at = el.temp_index ?? tempIndex;
      if (!el.done) {
        let env = el;
        if (!env.ciphertext) {
          const enc = await client.encryptWrite(el.data, tempCap, at!);
          this.db
            .prepare(
              `UPDATE pending_copy_elements SET temp_index = ?, next_temp_index = ?, ciphertext = ?, descriptor = ?, envelope_hash = ?
               WHERE seq = ? AND element = ?`,
            )
            .run(at, enc.nextMessageBoxIndex, enc.messageCiphertext, enc.envelopeDescriptor, enc.envelopeHash, head.seq, el.element);
          env = this.db
            .prepare('SELECT * FROM pending_copy_elements WHERE seq = ? AND element = ?')
            .get(head.seq, el.element) as CopyElementRow;
          this.progress({ stage: 'element-recorded', channel: row.name, seq: head.seq, element: el.element, elements: elements.length });
        }
        await sendRecorded(client, tempCap, env, signal, () => {
          this.db
            .prepare(
              'UPDATE pending_copy_elements SET ciphertext = NULL, descriptor = NULL, envelope_hash = NULL WHERE seq = ? AND element = ?',
            )
            .run(head.seq, el.element);
        });
        this.db.prepare('UPDATE pending_copy_elements SET done = 1 WHERE seq = ? AND element = ?').run(head.seq, el.element);
        this.progress({ stage: 'element-acked', channel: row.name, seq: head.seq, element: el.element, elements: elements.length });
        tempIndex = env.next_temp_index;
      } else {
        tempIndex = el.next_temp_index;
      }
      if (el.element + 1 < elements.length && tempIndex) {
        this.db
          .prepare('UPDATE pending_copy_elements SET temp_index = ? WHERE seq = ? AND element = ? AND temp_index IS NULL')
          .run(tempIndex, head.seq, el.element + 1);
      }
    }
    // Propagation gate (as the reference tests do): the courier gives up on a
    // temp box it cannot read after about a minute, so wait until the last
    // one is readable before starting the copy.
    const last = this.db
      .prepare('SELECT temp_index FROM pending_copy_elements WHERE seq = ? ORDER BY element DESC LIMIT 1')
      .get(head.seq) as { temp_index: Buffer };
    const tempReadCap = tempCap.subarray(WRITE_CAP_LENGTH - READ_CAP_LENGTH);
    const gate = await client.encryptRead(tempReadCap, last.temp_index);
    await client.startResendingEncryptedMessage(readParams(tempReadCap, last.temp_index, gate), { signal, timeoutMs: 120_000 });
    this.progress({ stage: 'copy-dispatch', channel: row.name, seq: head.seq });
    try {
      await client.startResendingCopyCommand(tempCap, { signal });
    } catch (err) {
      if (err instanceof CopyCommandFailedError) {
        // The courier caches this verdict for the temp cap: rebuild the copy
        // with a new temp channel on the next attempt.
        this.db.prepare('DELETE FROM pending_writes WHERE seq = ?').run(head.seq);
      }
      throw err;
    }
  }

  private async processTombstone(row: ChannelRow, head: OutboundRow, client: ChannelClient, signal: AbortSignal): Promise<void> {
    const writeCap = row.write_cap!;
    // Tombstones are deterministic (a signed empty payload), so they are
    // rebuilt on each attempt and only the count of acknowledged boxes is kept.
    const { envelopes } = await client.tombstoneRange(writeCap, head.tomb_start!, head.tomb_boxes!);
    for (let i = head.tomb_done; i < envelopes.length; i++) {
      const env = envelopes[i];
      await client.startResendingEncryptedMessage(writeParams(writeCap, env), { signal });
      this.db.prepare('UPDATE outbound SET tomb_done = ? WHERE seq = ?').run(i + 1, head.seq);
    }
    const index = head.tomb_first_counter!;
    this.db.transaction(() => {
      const first = this.db.prepare('SELECT id FROM sent WHERE channel_id = ? AND counter = ?').get(row.id, index) as { id: number } | undefined;
      if (first) {
        this.db
          .prepare(
            'UPDATE sent SET tombstoned = 1 WHERE id IN (SELECT id FROM sent WHERE channel_id = ? AND id >= ? ORDER BY id LIMIT ?)',
          )
          .run(row.id, first.id, head.tomb_messages);
      }
      this.db.prepare('DELETE FROM outbound WHERE seq = ?').run(head.seq);
    })();
    const result: TombstoneResult = { channel: row.name, index, messages: head.tomb_messages!, boxes: head.tomb_boxes! };
    this.progress({ stage: 'tombstoned', channel: row.name, seq: head.seq, index, boxes: head.tomb_boxes! });
    this.emitQueue(row);
    this.settle(head.seq, result);
  }

  // ------------------------------------------------------------- receive

  /**
   * Reads the channel in order and calls `handler` once per item (a message,
   * or a report of a tombstoned or malformed box), marking it read when the
   * handler returns or its promise resolves. Entries received earlier but not
   * yet marked read are delivered first. Resolves when `signal` aborts, the
   * store closes or the channel is deleted; rejects with the handler's error
   * if it throws (that item stays unread and is delivered first next time).
   * One receiver per channel at a time.
   */
  async receive(
    name: string,
    handler: ChannelHandler,
    options: { signal?: AbortSignal; pollInitialMs?: number; pollMaxMs?: number } = {},
  ): Promise<void> {
    if (typeof handler !== 'function') throw new InvalidArgumentError('handler', 'a function');
    const row = this.row(name);
    if (this.receivers.has(row.id)) throw new ChannelBusyError(name);
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.signal?.aborted) controller.abort();
    let finish!: () => void;
    const done = new Promise<void>((r) => (finish = r));
    this.receivers.set(row.id, { controller, done });
    try {
      await this.receiveLoop(row.id, handler, controller.signal, options.pollInitialMs ?? this.pollInitialMs, options.pollMaxMs ?? this.pollMaxMs);
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
      this.receivers.delete(row.id);
      finish();
    }
  }

  /**
   * The same reader as an async iterator. An item is marked read when the
   * consumer asks for the next one, or ends the loop (break/return; an
   * exception thrown in a for-await body also ends it through return(), so
   * use `receive()` when a failing consumer must see the item again).
   */
  messages(name: string, options: { signal?: AbortSignal; pollInitialMs?: number; pollMaxMs?: number } = {}): AsyncIterableIterator<ChannelItem> {
    const controller = new AbortController();
    const onAbort = () => controller.abort();
    options.signal?.addEventListener('abort', onAbort, { once: true });
    if (options.signal?.aborted) controller.abort();
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
    const loop = this.receive(
      name,
      (item) =>
        new Promise<void>((ack) => {
          items.push({ item, ack });
          deliver();
        }),
      { signal: controller.signal, pollInitialMs: options.pollInitialMs, pollMaxMs: options.pollMaxMs },
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
        options.signal?.removeEventListener('abort', onAbort);
        await loop.catch(() => {});
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }

  private async receiveLoop(
    channelId: number,
    handler: ChannelHandler,
    signal: AbortSignal,
    pollInitialMs: number,
    pollMaxMs: number,
  ): Promise<void> {
    while (!signal.aborted && !this.closed) {
      const row = this.rowById(channelId);
      if (!row) return;
      const unread = this.db
        .prepare('SELECT * FROM received WHERE channel_id = ? AND read_at IS NULL ORDER BY id')
        .all(channelId) as ReceivedRow[];
      for (const entry of unread) {
        if (signal.aborted || this.closed) return;
        await this.deliver(row, entry, handler);
      }
      if (signal.aborted || this.closed) return;
      // The position as it is now: moveReader() may have moved it while entries were delivered.
      const from = this.rowById(channelId);
      if (!from) return;
      // moveReader() aborts this attempt: what it read is discarded and the loop starts over at the new position.
      const attempt = new AbortController();
      const stop = () => attempt.abort();
      signal.addEventListener('abort', stop, { once: true });
      this.readAttempts.set(channelId, attempt);
      let item: NextItem | null;
      try {
        item = await this.readNext(from, attempt.signal, pollInitialMs, pollMaxMs);
      } finally {
        signal.removeEventListener('abort', stop);
        if (this.readAttempts.get(channelId) === attempt) this.readAttempts.delete(channelId);
      }
      if (signal.aborted || this.closed || !this.rowById(channelId)) return;
      if (attempt.signal.aborted) continue;
      if (!item) return;
      // Phase 1: log the item and move the read index past it, atomically.
      const entry = this.db.transaction(() => {
        const id = Number(
          this.db
            .prepare(
              `INSERT INTO received (channel_id, kind, counter, box_count, payload, payload_length, reason, received_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
            )
            .run(channelId, item.kind, item.counter, item.boxes, item.payload, item.payload?.length ?? null, item.reason, now())
            .lastInsertRowid,
        );
        this.db.prepare('UPDATE channels SET read_index = ? WHERE id = ?').run(item.next, channelId);
        return this.db.prepare('SELECT * FROM received WHERE id = ?').get(id) as ReceivedRow;
      })();
      this.progress({ stage: 'logged', channel: row.name, index: item.counter, kind: item.kind });
      await this.deliver(row, entry, handler);
    }
  }

  /** Hands one logged entry to the handler, then (phase 2) marks it read. */
  private async deliver(row: ChannelRow, entry: ReceivedRow, handler: ChannelHandler): Promise<void> {
    const item: ChannelItem =
      entry.kind === 'message'
        ? { kind: 'message', channel: row.name, index: entry.counter, payload: Buffer.from(entry.payload ?? Buffer.alloc(0)), boxes: entry.box_count }
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
    if (this.closed) return;
    this.progress({ stage: 'delivered', channel: row.name, index: entry.counter });
    this.db
      .prepare(`UPDATE received SET read_at = ?${this.retainPayloads ? '' : ', payload = NULL'} WHERE id = ?`)
      .run(now(), entry.id);
    this.progress({ stage: 'marked', channel: row.name, index: entry.counter });
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
    const boxes = [parsed.first];
    let have = parsed.first.length;
    let cursor = first.next;
    while (have < parsed.framedLength) {
      const box = await this.readBox(row, cursor, signal, pollInitialMs, pollMaxMs);
      if (!box) return null;
      if (box.tombstone) {
        // The tombstoned box is left for the next read, which reports it.
        return {
          kind: 'malformed',
          counter,
          boxes: boxes.length,
          payload: null,
          reason: `large message interrupted by a tombstone at box ${indexCounter(cursor)}`,
          next: cursor,
        };
      }
      boxes.push(box.plaintext);
      have += box.plaintext.length;
      cursor = box.next;
    }
    const assembled = assembleLarge(parsed, boxes);
    if (!assembled.ok) return { kind: 'malformed', counter, boxes: boxes.length, payload: null, reason: assembled.reason, next: cursor };
    return { kind: 'message', counter, boxes: boxes.length, payload: assembled.payload, reason: null, next: cursor };
  }

  /**
   * Reads one box, polling while it does not exist: a fresh encrypt_read and
   * a no-retry read per attempt (a cached courier reply could hide a later
   * tombstone), with exponential backoff. Null when stopped.
   */
  private async readBox(
    row: ChannelRow,
    index: Buffer,
    signal: AbortSignal,
    pollInitialMs: number,
    pollMaxMs: number,
  ): Promise<ReadBox | null> {
    const poll = new Backoff(pollInitialMs, pollMaxMs);
    const retry = new Backoff(this.retryInitialMs, this.retryMaxMs);
    const counter = indexCounter(index);
    while (!signal.aborted && !this.closed) {
      const client = this.clientFor(row.name);
      if (!client || !client.isDaemonConnected()) {
        await pause(Math.min(this.retryInitialMs, 1000), signal).promise;
        continue;
      }
      let next: Buffer | null = null;
      try {
        this.progress({ stage: 'reading', channel: row.name, index: counter });
        const enc = await client.encryptRead(row.read_cap, index);
        next = enc.nextMessageBoxIndex;
        const reply = await client.startResendingEncryptedMessageNoRetry(readParams(row.read_cap, index, enc), { signal });
        const plaintext = reply.plaintext ?? Buffer.alloc(0);
        // A channel message is never empty (it has a header); an empty box reads as deleted.
        if (plaintext.length === 0) {
          this.progress({ stage: 'box-read', channel: row.name, index: counter, outcome: 'tombstone' });
          return { tombstone: true, next };
        }
        this.progress({ stage: 'box-read', channel: row.name, index: counter, outcome: 'data' });
        return { tombstone: false, plaintext: Buffer.from(plaintext), next };
      } catch (err) {
        if (signal.aborted || this.closed) return null;
        if (err instanceof TombstoneError && next) {
          this.progress({ stage: 'box-read', channel: row.name, index: counter, outcome: 'tombstone' });
          return { tombstone: true, next };
        }
        if (err instanceof BoxIDNotFoundError) {
          retry.reset();
          await pause(poll.next(), signal).promise;
          continue;
        }
        const delay = retry.next();
        this.problem(row.name, 'receive', err as Error, delay);
        await pause(delay, signal).promise;
      }
    }
    return null;
  }

  // ---------------------------------------------------------------- close

  /**
   * Stops every worker and receiver (in-flight daemon calls are cancelled;
   * their recorded state resumes on the next open) and closes the database.
   * Promises of messages not yet acknowledged reject with ChannelClosedError;
   * the messages stay queued.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const work: Promise<void>[] = [];
    for (const s of this.senders.values()) {
      s.controller.abort();
      if (s.done) work.push(s.done);
    }
    for (const r of this.receivers.values()) {
      r.controller.abort();
      work.push(r.done);
    }
    // Receivers and senders notice the abort at their next await; a client
    // that ignores the signal must not keep the store open forever.
    await Promise.race([Promise.allSettled(work), new Promise((r) => setTimeout(r, 5000).unref())]);
    this.closed = true;
    for (const seq of [...this.waiters.keys()]) {
      this.settle(
        seq,
        new ChannelClosedError('the channel store closed before the write was acknowledged; it stays queued and resumes when the store is opened again'),
      );
    }
    this.db.close();
  }

  /** True once close() was called and finished. */
  get isClosed(): boolean {
    return this.closed;
  }
}
