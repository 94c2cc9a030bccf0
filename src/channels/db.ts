/**
 * Every SQL statement the persistent channels run, as the typed methods of
 * {@link ChannelDb}, prepared once per database (as the Rust reference keeps
 * all its SQL in persistent/db.rs). A state change that matters for
 * exactly-once delivery is one statement or one transaction here; sender.ts
 * and receiver.ts say in which order they happen. The schema is in schema.ts.
 */
import type Database from 'better-sqlite3';
import type { IntroductionState } from './introduction';
import {
  PAYLOAD_CHUNK_LENGTH,
  forEachChunk,
  openDatabase,
  type ChannelRow,
  type CopyElementRow,
  type IntroductionRow,
  type OutboundRow,
  type PendingWriteRow,
  type ReceivedRow,
  type SentRow,
} from './schema';

export { SCHEMA_VERSION, openDatabase } from './schema';
export type { ChannelRow, CopyElementRow, IntroductionRow, OutboundRow, PendingWriteRow, ReceivedRow, SentRow } from './schema';

/** A channel row to insert (the columns a new channel starts with). */
export interface NewChannel {
  name: string;
  kind: 'owned' | 'imported';
  readCap: Buffer;
  readCapHash: Buffer;
  writeCap: Buffer | null;
  seedHash: Buffer | null;
  firstIndex: Buffer;
  /** Owned: the next box to write; null while it must first be looked up. */
  writeIndex: Buffer | null;
  needsScan: boolean;
  readIndex: Buffer;
}

/** The copy-stream plan of a large message: where it lands and the temporary channel it goes through. */
export interface CopyPlan {
  boxIndex: Buffer;
  tempSeed: Buffer;
  tempWriteCap: Buffer;
  tempFirstIndex: Buffer;
}

/** One window of a copy stream, as it is recorded before dispatch. */
export interface CopyWindow {
  /** Its elements, each with the temp box it goes to and its envelope. */
  elements: { element: number; data: Buffer; tempIndex: Buffer; env: RecordedEnvelope }[];
  /** Framed bytes made into elements once this window is recorded. */
  built: number;
  /** The destination box after the boxes built so far, and how many boxes that is. */
  nextIndex: Buffer;
  boxCount: number;
  /** The temp box of the element after this window. */
  nextTempIndex: Buffer;
}

/** An encrypted envelope as it is recorded before dispatch. */
export interface RecordedEnvelope {
  messageCiphertext: Buffer;
  envelopeDescriptor: Buffer;
  envelopeHash: Buffer;
}

/** An entry of the reader's log, as the receiver inserts it. */
export interface NewReceived {
  kind: ReceivedRow['kind'];
  counter: string;
  boxes: number;
  payload: Buffer | null;
  reason: string | null;
}

export type ReceivedLogRow = Pick<ReceivedRow, 'kind' | 'counter' | 'box_count' | 'received_at' | 'read_at'>;

/**
 * `length` bytes from `offset` on of a payload stored in chunks.
 * `piece(chunk, from, length)` reads bytes of one chunk (SQL substr, so only
 * those bytes become a Buffer; `from` counts from 1); a range within one
 * chunk is that piece itself, a longer one is copied into one new Buffer.
 */
function readChunks(piece: (chunk: number, from: number, length: number) => Buffer | undefined, offset: number, length: number): Buffer {
  const pieces: Buffer[] = [];
  for (let at = offset, end = offset + length; at < end; ) {
    const chunk = Math.floor(at / PAYLOAD_CHUNK_LENGTH);
    const skip = at - chunk * PAYLOAD_CHUNK_LENGTH;
    const want = Math.min(end - at, PAYLOAD_CHUNK_LENGTH - skip);
    const data = piece(chunk, skip + 1, want);
    if (!data || data.length !== want) throw new Error(`stored payload lacks bytes ${at} to ${at + want} (chunk ${chunk})`);
    pieces.push(data);
    at += want;
  }
  return pieces.length === 1 ? pieces[0] : Buffer.concat(pieces, length);
}

/** Every statement, prepared once when the database is opened. */
function prepareStatements(db: Database.Database) {
  return {
    // channels
    channelByName: db.prepare<[string], ChannelRow>('SELECT * FROM channels WHERE name = ?'),
    channelById: db.prepare<[number], ChannelRow>('SELECT * FROM channels WHERE id = ?'),
    channelByReadCapHash: db.prepare<[Buffer], ChannelRow>('SELECT * FROM channels WHERE read_cap_hash = ?'),
    channelBySeedHash: db.prepare<[Buffer], ChannelRow>('SELECT * FROM channels WHERE seed_hash = ?'),
    channels: db.prepare<[], ChannelRow>('SELECT * FROM channels ORDER BY name'),
    insertChannel: db.prepare<Omit<NewChannel, 'needsScan'> & { needsScan: number; createdAt: number }>(
      `INSERT INTO channels (name, kind, read_cap, read_cap_hash, write_cap, seed_hash, first_index, write_index, needs_scan, read_index, created_at)
       VALUES (@name, @kind, @readCap, @readCapHash, @writeCap, @seedHash, @firstIndex, @writeIndex, @needsScan, @readIndex, @createdAt)`,
    ),
    renameChannel: db.prepare<[string, number]>('UPDATE channels SET name = ? WHERE id = ?'),
    makeOwned: db.prepare<[Buffer, Buffer | null, number]>(
      "UPDATE channels SET kind = 'owned', write_cap = ?, seed_hash = ?, needs_scan = 1 WHERE id = ?",
    ),
    setSeedHash: db.prepare<[Buffer, number]>('UPDATE channels SET seed_hash = ? WHERE id = ?'),
    setReadIndex: db.prepare<[Buffer, number]>('UPDATE channels SET read_index = ? WHERE id = ?'),
    setWriteIndex: db.prepare<[Buffer, number]>('UPDATE channels SET write_index = ? WHERE id = ?'),
    setScannedWriteIndex: db.prepare<[Buffer, number]>('UPDATE channels SET write_index = ?, needs_scan = 0 WHERE id = ?'),
    deleteChannel: db.prepare<[number]>('DELETE FROM channels WHERE id = ?'),
    // outbound
    channelsWithQueue: db.prepare<[], { channel_id: number }>('SELECT DISTINCT channel_id FROM outbound'),
    queuedSeqs: db.prepare<[number], { seq: number }>('SELECT seq FROM outbound WHERE channel_id = ?'),
    queuedCount: db.prepare<[number], { n: number }>('SELECT COUNT(*) AS n FROM outbound WHERE channel_id = ?'),
    lastQueuedAt: db.prepare<[number], { last: number | null }>('SELECT MAX(queued_at) AS last FROM outbound WHERE channel_id = ?'),
    queueMessage: db.prepare<[number, number, Buffer, number]>(
      "INSERT INTO outbound (channel_id, op, payload_length, payload_hash, queued_at) VALUES (?, 'message', ?, ?, ?)",
    ),
    insertOutboundChunk: db.prepare<[number, number, Buffer]>('INSERT INTO outbound_chunks (seq, chunk, data) VALUES (?, ?, ?)'),
    outboundPiece: db.prepare<[number, number, number, number], { data: Buffer }>(
      'SELECT substr(data, ?, ?) AS data FROM outbound_chunks WHERE seq = ? AND chunk = ?',
    ),
    queueTombstone: db.prepare<[number, Buffer, number, string, number, number]>(
      `INSERT INTO outbound (channel_id, op, tomb_start, tomb_boxes, tomb_first_counter, tomb_messages, queued_at)
       VALUES (?, 'tombstone', ?, ?, ?, ?, ?)`,
    ),
    queueHead: db.prepare<[number], OutboundRow>('SELECT * FROM outbound WHERE channel_id = ? ORDER BY seq LIMIT 1'),
    setTombstonesDone: db.prepare<[number, number]>('UPDATE outbound SET tomb_done = ? WHERE seq = ?'),
    dequeue: db.prepare<[number]>('DELETE FROM outbound WHERE seq = ?'),
    // pending_writes and pending_copy_elements
    pendingWrite: db.prepare<[number], PendingWriteRow>('SELECT * FROM pending_writes WHERE seq = ?'),
    insertPendingBox: db.prepare<[number, Buffer, Buffer, number]>(
      `INSERT INTO pending_writes (seq, mode, box_index, next_index, box_count, created_at)
       VALUES (?, 'box', ?, ?, 1, ?)`,
    ),
    insertPendingCopy: db.prepare<[number, Buffer, Buffer, Buffer, Buffer, Buffer, Buffer, number]>(
      `INSERT INTO pending_writes (seq, mode, box_index, next_index, box_count, temp_seed, temp_write_cap, temp_first_index, copy_temp_index, created_at)
       VALUES (?, 'copy', ?, ?, 0, ?, ?, ?, ?, ?)`,
    ),
    advanceCopy: db.prepare<[Buffer, number, number, number, Buffer, Buffer, number]>(
      `UPDATE pending_writes SET next_index = ?, box_count = ?, copy_built = ?, copy_elements = ?, copy_temp_index = ?, copy_last_temp_index = ?
       WHERE seq = ?`,
    ),
    setPendingEnvelope: db.prepare<[Buffer, Buffer, Buffer, Buffer, number]>(
      'UPDATE pending_writes SET next_index = ?, ciphertext = ?, descriptor = ?, envelope_hash = ? WHERE seq = ?',
    ),
    clearPendingEnvelope: db.prepare<[number]>(
      'UPDATE pending_writes SET ciphertext = NULL, descriptor = NULL, envelope_hash = NULL WHERE seq = ?',
    ),
    deletePendingWrite: db.prepare<[number]>('DELETE FROM pending_writes WHERE seq = ?'),
    insertCopyElement: db.prepare<[number, number, Buffer, Buffer, Buffer, Buffer, Buffer]>(
      `INSERT INTO pending_copy_elements (seq, element, data, temp_index, ciphertext, descriptor, envelope_hash)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ),
    copyElementsFrom: db.prepare<[number, number, number], CopyElementRow>(
      'SELECT * FROM pending_copy_elements WHERE seq = ? AND element >= ? ORDER BY element LIMIT ?',
    ),
    setElementEnvelope: db.prepare<[Buffer, Buffer, Buffer, number, number]>(
      'UPDATE pending_copy_elements SET ciphertext = ?, descriptor = ?, envelope_hash = ? WHERE seq = ? AND element = ?',
    ),
    clearElementEnvelope: db.prepare<[number, number]>(
      'UPDATE pending_copy_elements SET ciphertext = NULL, descriptor = NULL, envelope_hash = NULL WHERE seq = ? AND element = ?',
    ),
    deleteElement: db.prepare<[number, number]>('DELETE FROM pending_copy_elements WHERE seq = ? AND element = ?'),
    // sent
    sentStats: db.prepare<[number], { n: number; last: number | null }>(
      'SELECT COUNT(*) AS n, MAX(sent_at) AS last FROM sent WHERE channel_id = ?',
    ),
    sentFirstIndexes: db.prepare<[number], { first_index: Buffer }>('SELECT first_index FROM sent WHERE channel_id = ?'),
    sentByCounter: db.prepare<[number, string], SentRow>('SELECT * FROM sent WHERE channel_id = ? AND counter = ?'),
    sentFrom: db.prepare<[number, number, number], SentRow>('SELECT * FROM sent WHERE channel_id = ? AND id >= ? ORDER BY id LIMIT ?'),
    insertSent: db.prepare<[number, string, Buffer, number, number, number]>(
      `INSERT OR REPLACE INTO sent (channel_id, counter, first_index, box_count, payload_length, sent_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
    ),
    markTombstoned: db.prepare<[number, number, number]>(
      'UPDATE sent SET tombstoned = 1 WHERE id IN (SELECT id FROM sent WHERE channel_id = ? AND id >= ? ORDER BY id LIMIT ?)',
    ),
    // received
    unreadCount: db.prepare<[number], { n: number }>('SELECT COUNT(*) AS n FROM received WHERE channel_id = ? AND read_at IS NULL'),
    receivedStats: db.prepare<[number], { n: number; messages: number | null; last: number | null; lastRead: number | null }>(
      `SELECT COUNT(*) AS n, SUM(kind = 'message') AS messages, MAX(received_at) AS last, MAX(read_at) AS lastRead
       FROM received WHERE channel_id = ?`,
    ),
    receivedLog: db.prepare<[number, number], ReceivedLogRow>(
      'SELECT kind, counter, box_count, received_at, read_at FROM received WHERE channel_id = ? ORDER BY id DESC LIMIT ?',
    ),
    receivedCounters: db.prepare<[number], { id: number; counter: string }>('SELECT id, counter FROM received WHERE channel_id = ?'),
    deleteReceived: db.prepare<[number]>('DELETE FROM received WHERE id = ?'),
    unread: db.prepare<[number], ReceivedRow>('SELECT * FROM received WHERE channel_id = ? AND read_at IS NULL ORDER BY id'),
    insertReceived: db.prepare<[number, string, string, number, number | null, string | null, number]>(
      `INSERT INTO received (channel_id, kind, counter, box_count, payload_length, reason, received_at)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    ),
    insertReceivedChunk: db.prepare<[number, number, Buffer]>('INSERT INTO received_chunks (received_id, chunk, data) VALUES (?, ?, ?)'),
    receivedPiece: db.prepare<[number, number, number, number], { data: Buffer }>(
      'SELECT substr(data, ?, ?) AS data FROM received_chunks WHERE received_id = ? AND chunk = ?',
    ),
    deleteReceivedChunks: db.prepare<[number]>('DELETE FROM received_chunks WHERE received_id = ?'),
    receivedById: db.prepare<[number], ReceivedRow>('SELECT * FROM received WHERE id = ?'),
    markRead: db.prepare<[number, number]>('UPDATE received SET read_at = ? WHERE id = ?'),
    // introductions
    introduction: db.prepare<[string], IntroductionRow>('SELECT * FROM introductions WHERE name = ?'),
    saveIntroduction: db.prepare<Omit<IntroductionRow, 'created_at' | 'updated_at'> & { now: number }>(
      `INSERT INTO introductions (name, role, step, voucher, write_cap, read_cap, display_name, voucher_payload, voucher_write_cap,
         voucher_read_cap, voucher_secret_key, reply_index, sealed_reply, peer_read_cap, peer_name, created_at, updated_at)
       VALUES (@name, @role, @step, @voucher, @write_cap, @read_cap, @display_name, @voucher_payload, @voucher_write_cap,
         @voucher_read_cap, @voucher_secret_key, @reply_index, @sealed_reply, @peer_read_cap, @peer_name, @now, @now)
       ON CONFLICT (name) DO UPDATE SET role = excluded.role, step = excluded.step, voucher = excluded.voucher,
         write_cap = excluded.write_cap, read_cap = excluded.read_cap, display_name = excluded.display_name,
         voucher_payload = excluded.voucher_payload, voucher_write_cap = excluded.voucher_write_cap,
         voucher_read_cap = excluded.voucher_read_cap, voucher_secret_key = excluded.voucher_secret_key,
         reply_index = excluded.reply_index, sealed_reply = excluded.sealed_reply, peer_read_cap = excluded.peer_read_cap,
         peer_name = excluded.peer_name, updated_at = excluded.updated_at`,
    ),
    deleteIntroduction: db.prepare<[string]>('DELETE FROM introductions WHERE name = ?'),
  };
}

/**
 * One open channel database: each method is one statement (or, where the
 * name says it is a step of the protocol, one transaction) with typed rows.
 * Times are stamped here, in milliseconds since the epoch.
 */
export class ChannelDb {
  private readonly db: Database.Database;
  private readonly q: ReturnType<typeof prepareStatements>;

  constructor(path: string) {
    this.db = openDatabase(path);
    try {
      this.q = prepareStatements(this.db);
    } catch (err) {
      this.db.close();
      throw err;
    }
  }

  /** Runs `fn` as one transaction (rolled back if it throws). */
  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  close(): void {
    this.db.close();
  }

  // ------------------------------------------------------------ channels

  channelByName(name: string): ChannelRow | undefined {
    return this.q.channelByName.get(name);
  }

  channelById(id: number): ChannelRow | undefined {
    return this.q.channelById.get(id);
  }

  channelByReadCapHash(hash: Buffer): ChannelRow | undefined {
    return this.q.channelByReadCapHash.get(hash);
  }

  channelBySeedHash(hash: Buffer): ChannelRow | undefined {
    return this.q.channelBySeedHash.get(hash);
  }

  /** Every channel, by name. */
  channels(): ChannelRow[] {
    return this.q.channels.all();
  }

  insertChannel(c: NewChannel): void {
    this.q.insertChannel.run({ ...c, needsScan: c.needsScan ? 1 : 0, createdAt: Date.now() });
  }

  renameChannel(id: number, name: string): void {
    this.q.renameChannel.run(name, id);
  }

  /** An imported channel gets its write cap: it becomes owned, and its first free box must be looked up. */
  makeOwned(id: number, writeCap: Buffer, seedHash: Buffer | null): void {
    this.q.makeOwned.run(writeCap, seedHash, id);
  }

  setSeedHash(id: number, seedHash: Buffer): void {
    this.q.setSeedHash.run(seedHash, id);
  }

  setWriteIndex(id: number, index: Buffer): void {
    this.q.setWriteIndex.run(index, id);
  }

  /** The end of a look-up of the first free box: writes go there from now on. */
  setScannedWriteIndex(id: number, index: Buffer): void {
    this.q.setScannedWriteIndex.run(index, id);
  }

  /** Deletes a channel; everything recorded about it goes with it (ON DELETE CASCADE). */
  deleteChannel(id: number): void {
    this.q.deleteChannel.run(id);
  }

  // ------------------------------------------------------------ outbound

  /** Ids of the channels that have queued work. */
  channelsWithQueue(): number[] {
    return this.q.channelsWithQueue.all().map((r) => r.channel_id);
  }

  queuedSeqs(channelId: number): number[] {
    return this.q.queuedSeqs.all(channelId).map((r) => r.seq);
  }

  queuedCount(channelId: number): number {
    return this.q.queuedCount.get(channelId)!.n;
  }

  lastQueuedAt(channelId: number): number | null {
    return this.q.lastQueuedAt.get(channelId)!.last;
  }

  /**
   * Queues a message, in one transaction: its length, its hash and its
   * chunks. Returns its sequence number.
   */
  queueMessage(channelId: number, payload: Buffer, hash: Buffer): number {
    return this.transaction(() => {
      const seq = Number(this.q.queueMessage.run(channelId, payload.length, hash, Date.now()).lastInsertRowid);
      forEachChunk(payload, (chunk, data) => this.q.insertOutboundChunk.run(seq, chunk, data));
      return seq;
    });
  }

  /** `length` bytes of a queued message's payload from `offset` on, read chunk by chunk. */
  queuedPayload(seq: number, offset: number, length: number): Buffer {
    return readChunks((chunk, from, n) => this.q.outboundPiece.get(from, n, seq, chunk)?.data, offset, length);
  }

  /** Queues a tombstone request; returns its sequence number. */
  queueTombstone(channelId: number, t: { start: Buffer; boxes: number; firstCounter: string; messages: number }): number {
    return Number(this.q.queueTombstone.run(channelId, t.start, t.boxes, t.firstCounter, t.messages, Date.now()).lastInsertRowid);
  }

  /** The oldest queued entry of the channel. */
  queueHead(channelId: number): OutboundRow | undefined {
    return this.q.queueHead.get(channelId);
  }

  setTombstonesDone(seq: number, done: number): void {
    this.q.setTombstonesDone.run(done, seq);
  }

  // ------------------------------------------------------ pending writes

  pendingWrite(seq: number): PendingWriteRow | undefined {
    return this.q.pendingWrite.get(seq);
  }

  /** Plans a single-box write at `index` (its envelope is recorded later, before dispatch). */
  insertPendingBox(seq: number, index: Buffer): void {
    this.q.insertPendingBox.run(seq, index, index, Date.now());
  }

  /** Records the envelope of a single-box write (before it is dispatched). */
  setPendingEnvelope(seq: number, env: RecordedEnvelope & { nextMessageBoxIndex: Buffer }): void {
    this.q.setPendingEnvelope.run(env.nextMessageBoxIndex, env.messageCiphertext, env.envelopeDescriptor, env.envelopeHash, seq);
  }

  /** Forgets the recorded envelope of a single-box write (the daemon refused it; the next attempt makes a new one). */
  clearPendingEnvelope(seq: number): void {
    this.q.clearPendingEnvelope.run(seq);
  }

  /** Drops a write's plan (and its copy elements). */
  deletePendingWrite(seq: number): void {
    this.q.deletePendingWrite.run(seq);
  }

  /**
   * Plans a copy: its first destination box and temporary channel, nothing
   * built yet. Its elements are recorded window by window (recordCopyWindow).
   */
  insertPendingCopy(seq: number, plan: CopyPlan): void {
    this.q.insertPendingCopy.run(seq, plan.boxIndex, plan.boxIndex, plan.tempSeed, plan.tempWriteCap, plan.tempFirstIndex, plan.tempFirstIndex, Date.now());
  }

  /**
   * Records one window of a copy stream, in one transaction (one sync to
   * disk): its elements with their envelopes, how far the stream is built,
   * and the acknowledgement of `acked` elements of earlier windows (their
   * rows go).
   */
  recordCopyWindow(seq: number, window: CopyWindow, acked: readonly number[]): void {
    this.transaction(() => {
      for (const e of window.elements) {
        this.q.insertCopyElement.run(seq, e.element, e.data, e.tempIndex, e.env.messageCiphertext, e.env.envelopeDescriptor, e.env.envelopeHash);
      }
      const last = window.elements[window.elements.length - 1];
      const pending = this.q.pendingWrite.get(seq)!;
      this.q.advanceCopy.run(
        window.nextIndex,
        window.boxCount,
        window.built,
        pending.copy_elements + window.elements.length,
        window.nextTempIndex,
        last ? last.tempIndex : pending.copy_last_temp_index!,
        seq,
      );
      for (const element of acked) this.q.deleteElement.run(seq, element);
    });
  }

  /** Up to `limit` recorded, unacknowledged elements from `from` on, in order. */
  copyElementsFrom(seq: number, from: number, limit: number): CopyElementRow[] {
    return this.q.copyElementsFrom.all(seq, from, limit);
  }

  /** Records a new envelope for an element whose envelope the daemon refused (before it is dispatched). */
  setElementEnvelope(seq: number, element: number, env: RecordedEnvelope): void {
    this.q.setElementEnvelope.run(env.messageCiphertext, env.envelopeDescriptor, env.envelopeHash, seq, element);
  }

  /** Forgets the envelope of an element (the daemon refused it; the next attempt makes a new one). */
  clearElementEnvelope(seq: number, element: number): void {
    this.q.clearElementEnvelope.run(seq, element);
  }

  /** Acknowledged elements: their rows go, in one transaction. */
  deleteElements(seq: number, elements: readonly number[]): void {
    if (elements.length === 0) return;
    this.transaction(() => {
      for (const element of elements) this.q.deleteElement.run(seq, element);
    });
  }

  // ---------------------------------------------------------------- sent

  sentStats(channelId: number): { n: number; last: number | null } {
    return this.q.sentStats.get(channelId)!;
  }

  /** The first box of every message this store sent on the channel. */
  sentFirstIndexes(channelId: number): Buffer[] {
    return this.q.sentFirstIndexes.all(channelId).map((r) => r.first_index);
  }

  sentByCounter(channelId: number, counter: string): SentRow | undefined {
    return this.q.sentByCounter.get(channelId, counter);
  }

  /** Up to `limit` sent messages, in order, from the one with id `fromId`. */
  sentFrom(channelId: number, fromId: number, limit: number): SentRow[] {
    return this.q.sentFrom.all(channelId, fromId, limit);
  }

  /**
   * The end of an acknowledged write, in one transaction: the queue entry
   * and its plan go, the write index moves past the message, and the message
   * is logged in `sent`.
   */
  completeWrite(
    seq: number,
    channelId: number,
    write: { counter: string; firstIndex: Buffer; nextIndex: Buffer; boxCount: number; payloadLength: number },
  ): void {
    return this.transaction(() => {
      this.q.dequeue.run(seq);
      this.q.setWriteIndex.run(write.nextIndex, channelId);
      this.q.insertSent.run(channelId, write.counter, write.firstIndex, write.boxCount, write.payloadLength, Date.now());
    });
  }

  /** The end of an acknowledged tombstone request, in one transaction: its messages are marked tombstoned and the queue entry goes. */
  completeTombstone(seq: number, channelId: number, firstCounter: string, messages: number): void {
    return this.transaction(() => {
      const first = this.q.sentByCounter.get(channelId, firstCounter);
      if (first) this.q.markTombstoned.run(channelId, first.id, messages);
      this.q.dequeue.run(seq);
    });
  }

  // ------------------------------------------------------------ received

  unreadCount(channelId: number): number {
    return this.q.unreadCount.get(channelId)!.n;
  }

  receivedStats(channelId: number): { n: number; messages: number | null; last: number | null; lastRead: number | null } {
    return this.q.receivedStats.get(channelId)!;
  }

  /** The reader's log, newest first, without payloads. */
  receivedLog(channelId: number, limit: number): ReceivedLogRow[] {
    return this.q.receivedLog.all(channelId, limit);
  }

  /** Entries logged but not yet handed to a consumer, oldest first. */
  unread(channelId: number): ReceivedRow[] {
    return this.q.unread.all(channelId);
  }

  /**
   * Phase 1 of a read, in one transaction: logs the item (unread) with its
   * payload's chunks and moves the read index past it. Returns the logged entry.
   */
  logReceived(channelId: number, item: NewReceived, next: Buffer): ReceivedRow {
    return this.transaction(() => {
      const id = Number(
        this.q.insertReceived.run(channelId, item.kind, item.counter, item.boxes, item.payload?.length ?? null, item.reason, Date.now())
          .lastInsertRowid,
      );
      if (item.payload) forEachChunk(item.payload, (chunk, data) => this.q.insertReceivedChunk.run(id, chunk, data));
      this.q.setReadIndex.run(next, channelId);
      return this.q.receivedById.get(id)!;
    });
  }

  /** The payload of a logged message, read chunk by chunk into one Buffer. */
  receivedPayload(id: number, length: number): Buffer {
    return readChunks((chunk, from, n) => this.q.receivedPiece.get(from, n, id, chunk)?.data, 0, length);
  }

  /** Phase 2 of a read: marks the entry read, dropping its payload unless `retainPayload` (one transaction). */
  markRead(id: number, retainPayload: boolean): void {
    this.transaction(() => {
      this.q.markRead.run(Date.now(), id);
      if (!retainPayload) this.q.deleteReceivedChunks.run(id);
    });
  }

  /**
   * Moves the reader to box `index` (counter `counter`) in one transaction,
   * dropping the log entries at or after it. Returns the updated channel, or
   * undefined (and changes nothing) when the channel is gone.
   */
  moveReader(channelId: number, index: Buffer, counter: bigint): ChannelRow | undefined {
    return this.transaction(() => {
      if (!this.q.channelById.get(channelId)) return undefined;
      this.q.setReadIndex.run(index, channelId);
      for (const r of this.q.receivedCounters.all(channelId)) {
        if (BigInt(r.counter) >= counter) this.q.deleteReceived.run(r.id);
      }
      return this.q.channelById.get(channelId);
    });
  }

  // ------------------------------------------------------- introductions

  /** The saved progress of the introduction of channel `name`, as introduction.ts works with it. */
  introduction(name: string): IntroductionState | undefined {
    const r = this.q.introduction.get(name);
    if (!r) return undefined;
    const state: IntroductionState = { role: r.role, step: r.step, voucher: r.voucher, writeCap: r.write_cap, readCap: r.read_cap };
    const optional: [keyof IntroductionState, Buffer | string | null][] = [
      ['displayName', r.display_name],
      ['voucherPayload', r.voucher_payload],
      ['voucherWriteCap', r.voucher_write_cap],
      ['voucherReadCap', r.voucher_read_cap],
      ['voucherSecretKey', r.voucher_secret_key],
      ['replyIndex', r.reply_index],
      ['sealedReply', r.sealed_reply],
      ['peerReadCap', r.peer_read_cap],
      ['peerName', r.peer_name],
    ];
    for (const [key, value] of optional) if (value !== null) (state as unknown as Record<string, unknown>)[key] = value;
    return state;
  }

  /** Inserts or replaces the introduction of channel `name` (one statement). */
  saveIntroduction(name: string, s: IntroductionState): void {
    const blob = (b: Uint8Array | undefined): Buffer | null => (b === undefined || b === null ? null : Buffer.from(b));
    this.q.saveIntroduction.run({
      name,
      role: s.role,
      step: s.step,
      voucher: Buffer.from(s.voucher),
      write_cap: Buffer.from(s.writeCap),
      read_cap: Buffer.from(s.readCap),
      display_name: s.displayName ?? null,
      voucher_payload: blob(s.voucherPayload),
      voucher_write_cap: blob(s.voucherWriteCap),
      voucher_read_cap: blob(s.voucherReadCap),
      voucher_secret_key: blob(s.voucherSecretKey),
      reply_index: blob(s.replyIndex),
      sealed_reply: blob(s.sealedReply),
      peer_read_cap: blob(s.peerReadCap),
      peer_name: s.peerName ?? null,
      now: Date.now(),
    });
  }

  deleteIntroduction(name: string): void {
    this.q.deleteIntroduction.run(name);
  }
}
