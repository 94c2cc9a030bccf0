/**
 * Persistent Pigeonhole channels, the public façade: {@link ChannelStore}
 * administers the channels of one SQLite database (create, import, open,
 * list, share, delete, inspect, move the reader) and hands sending to the
 * sender and reading to the receiver, with every step recorded so that a
 * crash or restart neither loses nor repeats a message.
 *
 * - sender.ts: the durable outbound queue and its one worker per channel
 *   (the order of the write steps and their crash windows);
 * - receiver.ts: the in-order reader (the order of the read steps and their
 *   crash windows);
 * - db.ts: every SQL statement; schema.ts: the tables.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { blake2b256 } from '../client/crypto';
import { InvalidArgumentError } from '../client/errors';
import { pause } from '../util/deadline';
import { READ_CAP_LENGTH, SEED_LENGTH, WRITE_CAP_LENGTH, MESSAGE_BOX_INDEX_LENGTH } from '../wire';
import { counterValue, indexCounter } from './boxes';
import type { ChannelContext } from './context';
import { ChannelDb, type ChannelRow } from './db';
import {
  ChannelCapsMismatchError,
  ChannelClosedError,
  ChannelError,
  ChannelExistsError,
  ChannelNotFoundError,
  ChannelPositionError,
  ChannelReadOnlyError,
} from './errors';
import { MAX_MESSAGE_LENGTH } from './framing';
import type { IntroductionState } from './introduction';
import { Receiver, iterate } from './receiver';
import { Sender } from './sender';
import type {
  ChannelActivity,
  ChannelCaps,
  ChannelClient,
  ChannelHandler,
  ChannelInfo,
  ChannelItem,
  ChannelProblem,
  ChannelProgress,
  ChannelStoreLogger,
  ChannelStoreOptions,
  ReceivedEntry,
  SendResult,
  TombstoneResult,
} from './types';

export { indexCounter } from './boxes';

/** The bytes of a payload argument: a view of a caller's Uint8Array (not a copy; it is stored before send() returns). */
function toBytes(value: unknown, argument: string): Buffer {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
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
  private readonly db: ChannelDb;
  private defaultClient: ChannelClient | null;
  private readonly clients = new Map<string, ChannelClient | null>();
  private readonly sender: Sender;
  private readonly receiver: Receiver;
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
    this.logger = options.logger;
    this.db = new ChannelDb(options.path);
    const context: ChannelContext = {
      db: this.db,
      logger: this.logger,
      pollInitialMs: options.pollInitialMs ?? 500,
      pollMaxMs: options.pollMaxMs ?? 10_000,
      retryInitialMs: options.retryInitialMs ?? 1000,
      retryMaxMs: options.retryMaxMs ?? 30_000,
      retainPayloads: options.retainPayloads ?? false,
      isClosed: () => this.closed,
      clientFor: (name) => this.clientFor(name),
      progress: (p) => {
        this.emit('progress', p);
      },
      problem: (channel, operation, error, retryInMs) => {
        this.logger?.warn(`channel "${channel}": ${operation} failed (${error.message}); retrying in ${retryInMs} ms`);
        this.emit('problem', { channel, operation, error, retryInMs });
      },
      sent: (result) => {
        this.emit('sent', result);
      },
      queueChanged: (row) => {
        this.emit('queue', { channel: row.name, queued: this.db.queuedCount(row.id) });
      },
    };
    this.sender = new Sender(context);
    this.receiver = new Receiver(context);
    // Queued work from an earlier run resumes as soon as a client is there.
    this.sender.kickQueued();
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
    this.sender.kickQueued();
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
    const row = this.db.channelByName(name);
    if (!row) throw new ChannelNotFoundError(name);
    return row;
  }

  /** The row of a channel this store can write to. */
  private ownedRow(name: string): ChannelRow {
    const row = this.row(name);
    if (row.kind !== 'owned' || !row.write_cap) throw new ChannelReadOnlyError(name);
    return row;
  }

  private info(row: ChannelRow): ChannelInfo {
    const queued = this.db.queuedCount(row.id);
    const unread = this.db.unreadCount(row.id);
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
    if (this.db.channelByName(name)) throw new ChannelExistsError(name);
    const kp = await this.requireClient(name).newKeypair(seed);
    this.assertOpen();
    const readCapHash = blake2b256(kp.readCap);
    if (this.db.channelByReadCapHash(readCapHash)) throw new ChannelExistsError(name);
    this.db.insertChannel({
      name,
      kind: 'owned',
      readCap: kp.readCap,
      readCapHash,
      writeCap: kp.writeCap,
      seedHash: blake2b256(seed),
      firstIndex: kp.firstMessageIndex,
      writeIndex: options.seed === undefined ? kp.firstMessageIndex : null,
      needsScan: options.seed !== undefined,
      readIndex: kp.firstMessageIndex,
    });
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
    if (this.db.channelByName(name) || this.db.channelByReadCapHash(hash)) throw new ChannelExistsError(name);
    const first = cap.subarray(READ_CAP_LENGTH - MESSAGE_BOX_INDEX_LENGTH);
    this.db.insertChannel({
      name,
      kind: 'imported',
      readCap: cap,
      readCapHash: hash,
      writeCap: null,
      seedHash: null,
      firstIndex: first,
      writeIndex: null,
      needsScan: false,
      readIndex: first,
    });
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
      const known = this.db.channelBySeedHash(seedHash);
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
    const row = this.db.transaction(() => {
      const byName = this.db.channelByName(name);
      if (byName && !byName.read_cap_hash.equals(hash)) {
        throw new ChannelCapsMismatchError(name, `the database ${this.path} holds a different channel under this name`);
      }
      const existing = byName ?? this.db.channelByReadCapHash(hash);
      if (existing && existing.name !== name) {
        this.logger?.info(`channel "${existing.name}" renamed to "${name}" (same caps)`);
        this.db.renameChannel(existing.id, name);
      }
      if (!existing) {
        this.db.insertChannel({
          name,
          kind: writeCap ? 'owned' : 'imported',
          readCap,
          readCapHash: hash,
          writeCap,
          seedHash,
          firstIndex: first,
          writeIndex: null,
          needsScan: writeCap !== null,
          readIndex: first,
        });
      } else if (writeCap && !existing.write_cap) {
        this.db.makeOwned(existing.id, writeCap, seedHash);
      } else if (writeCap && seedHash && !existing.seed_hash) {
        this.db.setSeedHash(existing.id, seedHash);
      }
      return this.db.channelByName(name)!;
    });
    if (this.db.queuedCount(row.id) > 0) this.sender.kick(row.id);
    return this.info(row);
  }

  /** Every channel in the database. */
  list(): ChannelInfo[] {
    this.assertOpen();
    return this.db.channels().map((r) => this.info(r));
  }

  /** One channel's state, or null. */
  get(name: string): ChannelInfo | null {
    this.assertOpen();
    const row = this.db.channelByName(name);
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
    await Promise.allSettled([this.sender.stop(row.id), this.receiver.stop(row.id)]);
    const seqs = this.db.queuedSeqs(row.id);
    this.db.deleteChannel(row.id);
    this.sender.forget(row.id, seqs, () => new ChannelClosedError(`channel "${name}" was deleted before the message was written`));
  }

  /** Messages and tombstone requests of the channel not yet acknowledged. */
  queued(name: string): number {
    const row = this.row(name);
    return this.db.queuedCount(row.id);
  }

  // ------------------------------------------------- activity and reader

  /** Counts and times of what happened on the channel (read-only; no payload, no capability). */
  activity(name: string): ChannelActivity {
    const row = this.row(name);
    const sent = this.db.sentStats(row.id);
    const received = this.db.receivedStats(row.id);
    const lastQueuedAt = this.db.lastQueuedAt(row.id);
    const times = [row.created_at, sent.last, received.last, received.lastRead, lastQueuedAt].filter((t): t is number => typeof t === 'number');
    return {
      sent: sent.n,
      received: received.n,
      receivedMessages: received.messages ?? 0,
      createdAt: row.created_at,
      lastSentAt: sent.last,
      lastReceivedAt: received.last,
      lastQueuedAt,
      lastActivityAt: Math.max(...times),
    };
  }

  /** The reader's log, newest first, at most `limit` entries (read-only; no payload). */
  receivedLog(name: string, limit = 100): ReceivedEntry[] {
    const row = this.row(name);
    const n = Number.isInteger(limit) && limit > 0 ? limit : 100;
    return this.db
      .receivedLog(row.id, n)
      .map((r) => ({ kind: r.kind, index: r.counter, boxes: r.box_count, receivedAt: r.received_at, readAt: r.read_at }));
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
    for (const known of [row.read_index, ...this.db.sentFirstIndexes(row.id)]) {
      const c = counterValue(known);
      if (c <= target && c > baseCounter) {
        base = known;
        baseCounter = c;
      }
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
    const moved = this.db.moveReader(row.id, next, target);
    if (!moved) throw new ChannelNotFoundError(name);
    this.logger?.info(`channel "${moved.name}": reader moved from box ${indexCounter(row.read_index)} to box ${target}`);
    this.receiver.restartRead(row.id);
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
      return this.sender.queueMessage(row, bytes);
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
      return this.sender.queueTombstone(row, start, count);
    } catch (err) {
      return Promise.reject(err);
    }
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
    await this.receiver.receive(this.row(name), handler, options);
  }

  /**
   * The same reader as an async iterator. An item is marked read when the
   * consumer asks for the next one, or ends the loop (break/return; an
   * exception thrown in a for-await body also ends it through return(), so
   * use `receive()` when a failing consumer must see the item again).
   */
  messages(name: string, options: { signal?: AbortSignal; pollInitialMs?: number; pollMaxMs?: number } = {}): AsyncIterableIterator<ChannelItem> {
    return iterate(
      (handler, signal) => this.receive(name, handler, { signal, pollInitialMs: options.pollInitialMs, pollMaxMs: options.pollMaxMs }),
      options.signal,
    );
  }

  // -------------------------------------------------------- introductions

  /** Saves how far the Contact Voucher introduction of channel `name` got (introduction.ts). Secrets inside: kept like caps, never logged. */
  saveIntroduction(name: string, state: IntroductionState): void {
    checkName(name);
    this.assertOpen();
    this.db.saveIntroduction(name, state);
  }

  /** The saved introduction of channel `name`, to resume it; null when there is none. */
  introduction(name: string): IntroductionState | null {
    this.assertOpen();
    return this.db.introduction(name) ?? null;
  }

  /** Forgets the introduction of channel `name` (the channels it led to stay). */
  deleteIntroduction(name: string): void {
    this.assertOpen();
    this.db.deleteIntroduction(name);
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
    const work = [...this.sender.stopAll(), ...this.receiver.stopAll()];
    // Receivers and senders notice the abort at their next await; a client
    // that ignores the signal must not keep the store open forever.
    const grace = pause(5000);
    await Promise.race([Promise.allSettled(work), grace.promise]);
    grace.wake();
    this.closed = true;
    this.sender.rejectAll(
      () => new ChannelClosedError('the channel store closed before the write was acknowledged; it stays queued and resumes when the store is opened again'),
    );
    this.db.close();
  }

  /** True once close() was called and finished. */
  get isClosed(): boolean {
    return this.closed;
  }
}
