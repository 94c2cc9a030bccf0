/**
 * The channel database file: its schema, the row types of its tables, and
 * opening it with the durability settings (WAL journal, synchronous=FULL, so
 * a committed transaction survives a crash of the process and of the
 * machine) and a bounded page cache. The statements run on it are in db.ts.
 *
 * Message payloads (up to 10 MiB) are stored in chunks of
 * {@link PAYLOAD_CHUNK_LENGTH} bytes, never as one value: SQLite copies a
 * value whole to bind, store or read it, so a 10 MB blob would cost several
 * times its size in memory, while a chunk costs at most its own.
 *
 * The file holds capabilities in the clear (a write cap is the channel's
 * signing key), so it is created with mode 0600 and must be treated like
 * Node-RED's credentials file.
 */
import Database from 'better-sqlite3';
import { closeSync, chmodSync, openSync } from 'node:fs';
import { blake2b256 } from '../client/crypto';

export const SCHEMA_VERSION = 3;

/**
 * Bytes per payload chunk: chunk n of a payload holds its bytes from
 * n * PAYLOAD_CHUNK_LENGTH on. Part of the file format (changing it needs a migration).
 */
export const PAYLOAD_CHUNK_LENGTH = 64 * 1024;

/**
 * The page cache of a connection, in KiB: SQLite's own default. better-sqlite3
 * raises it to 16 MB, which writing or reading a 10 MB message fills and keeps.
 */
const PAGE_CACHE_KIB = 2000;

/** Version 1: the channels and their durable work. */
const SCHEMA = `
-- One row per channel. Caps are stored because resuming a pending write or a
-- read needs them while the caller may be gone; the hashes identify the
-- channel when a caller supplies caps again.
CREATE TABLE IF NOT EXISTS channels (
  id             INTEGER PRIMARY KEY,
  name           TEXT NOT NULL UNIQUE,
  kind           TEXT NOT NULL CHECK (kind IN ('owned', 'imported')),
  read_cap       BLOB NOT NULL,
  read_cap_hash  BLOB NOT NULL UNIQUE,
  write_cap      BLOB,
  seed_hash      BLOB,                       -- owned from a seed: lets a caller re-open by seed without the daemon
  first_index    BLOB NOT NULL,
  write_index    BLOB,                       -- owned: next box to write (NULL while needs_scan)
  needs_scan     INTEGER NOT NULL DEFAULT 0, -- owned, adopted: find the first free box before writing
  read_index     BLOB NOT NULL,              -- next box to read
  created_at     INTEGER NOT NULL
);
-- Durable outbound queue, processed strictly in seq order per channel.
CREATE TABLE IF NOT EXISTS outbound (
  seq                INTEGER PRIMARY KEY AUTOINCREMENT,
  channel_id         INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
  op                 TEXT NOT NULL CHECK (op IN ('message', 'tombstone')),
  payload            BLOB,      -- message: the unframed payload
  tomb_start         BLOB,      -- tombstone: index of the first box
  tomb_boxes         INTEGER,   -- tombstone: number of boxes
  tomb_first_counter TEXT,      -- tombstone: index of the first message (decimal)
  tomb_messages      INTEGER,   -- tombstone: number of messages
  tomb_done          INTEGER NOT NULL DEFAULT 0, -- tombstone: boxes acknowledged so far
  queued_at          INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbound_by_channel ON outbound (channel_id, seq);
-- The write in flight for the head of a channel's queue: the exact envelope
-- (box mode) or the copy-stream state (copy mode), recorded before dispatch.
CREATE TABLE IF NOT EXISTS pending_writes (
  seq              INTEGER PRIMARY KEY REFERENCES outbound(seq) ON DELETE CASCADE,
  mode             TEXT NOT NULL CHECK (mode IN ('box', 'copy')),
  box_index        BLOB NOT NULL,   -- first destination box
  next_index       BLOB NOT NULL,   -- write index once acknowledged
  box_count        INTEGER NOT NULL,
  ciphertext       BLOB,            -- box mode
  descriptor       BLOB,
  envelope_hash    BLOB,
  temp_seed        BLOB,            -- copy mode: the temporary channel
  temp_write_cap   BLOB,
  temp_first_index BLOB,
  created_at       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_copy_elements (
  seq             INTEGER NOT NULL REFERENCES pending_writes(seq) ON DELETE CASCADE,
  element         INTEGER NOT NULL,
  data            BLOB NOT NULL,   -- copy-stream element as the daemon built it
  temp_index      BLOB,            -- temp box it goes to (known once the previous element is encrypted)
  next_temp_index BLOB,
  ciphertext      BLOB,            -- exact envelope, recorded before dispatch
  descriptor      BLOB,
  envelope_hash   BLOB,
  done            INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (seq, element)
);
-- Messages this store wrote and the courier acknowledged (for tombstones by message index).
CREATE TABLE IF NOT EXISTS sent (
  id             INTEGER PRIMARY KEY AUTOINCREMENT,
  channel_id     INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
  counter        TEXT NOT NULL,
  first_index    BLOB NOT NULL,
  box_count      INTEGER NOT NULL,
  payload_length INTEGER NOT NULL,
  sent_at        INTEGER NOT NULL,
  tombstoned     INTEGER NOT NULL DEFAULT 0,
  UNIQUE (channel_id, counter)
);
-- What the reader took from the channel, in order, with read marks.
CREATE TABLE IF NOT EXISTS received (
  id             INTEGER PRIMARY KEY AUTOINCREMENT,
  channel_id     INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
  kind           TEXT NOT NULL CHECK (kind IN ('message', 'tombstone', 'malformed')),
  counter        TEXT NOT NULL,
  box_count      INTEGER NOT NULL,
  payload        BLOB,
  payload_length INTEGER,
  reason         TEXT,
  received_at    INTEGER NOT NULL,
  read_at        INTEGER,
  UNIQUE (channel_id, counter)
);
CREATE INDEX IF NOT EXISTS received_unread ON received (channel_id, id) WHERE read_at IS NULL;
`;

/**
 * Changes after version 1, each bringing the file to `version`; a file runs
 * those above its own version, in order, each in one transaction with the
 * version bump: `sql`, then `run` (what SQL alone cannot do), then `after`.
 */
const MIGRATIONS: readonly { version: number; sql: string; run?: (db: Database.Database) => void; after?: string }[] = [
  {
    version: 2,
    sql: `
-- The progress of a Contact Voucher introduction (introduction.ts), one row
-- per channel name, saved after every step so that a restart resumes it. Not
-- tied to a channels row: the inviting side's channels exist only once it is
-- done. Every BLOB is a capability, a key or the voucher: as secret as the
-- caps of the channels table.
CREATE TABLE IF NOT EXISTS introductions (
  name               TEXT PRIMARY KEY,
  role               TEXT NOT NULL CHECK (role IN ('invite', 'join')),
  step               TEXT NOT NULL CHECK (step IN ('minted', 'published', 'started', 'inducted', 'done')),
  voucher            BLOB NOT NULL,
  write_cap          BLOB NOT NULL,   -- our outgoing channel (invite: re-seeded once done)
  read_cap           BLOB NOT NULL,
  display_name       TEXT,
  voucher_payload    BLOB,
  voucher_write_cap  BLOB,
  voucher_read_cap   BLOB,
  voucher_secret_key BLOB,
  reply_index        BLOB,
  sealed_reply       BLOB,
  peer_read_cap      BLOB,            -- once done: the other side's channel, to receive from
  peer_name          TEXT,
  created_at         INTEGER NOT NULL,
  updated_at         INTEGER NOT NULL
);
`,
  },
  {
    version: 3,
    sql: `
-- Payloads move into chunks (PAYLOAD_CHUNK_LENGTH bytes each), so that a
-- large message is stored, sent and received piece by piece.
ALTER TABLE outbound ADD COLUMN payload_length INTEGER;  -- message: its bytes, in outbound_chunks
ALTER TABLE outbound ADD COLUMN payload_hash BLOB;       -- message: BLAKE2b-256 of the payload (a large message's header)
CREATE TABLE outbound_chunks (
  seq    INTEGER NOT NULL REFERENCES outbound(seq) ON DELETE CASCADE,
  chunk  INTEGER NOT NULL,
  data   BLOB NOT NULL,
  PRIMARY KEY (seq, chunk)
);
CREATE TABLE received_chunks (
  received_id INTEGER NOT NULL REFERENCES received(id) ON DELETE CASCADE,
  chunk       INTEGER NOT NULL,
  data        BLOB NOT NULL,
  PRIMARY KEY (received_id, chunk)
);
-- A copy stream is built, recorded and sent window by window, each element
-- kept only until it is acknowledged. A copy planned by version 2 is dropped
-- and planned again with a new temporary channel: its destination boxes get
-- the same contents, so boxes it may already have written are written over
-- with identical bytes.
DELETE FROM pending_writes WHERE mode = 'copy';
DROP TABLE pending_copy_elements;
CREATE TABLE pending_copy_elements (
  seq             INTEGER NOT NULL REFERENCES pending_writes(seq) ON DELETE CASCADE,
  element         INTEGER NOT NULL,
  data            BLOB NOT NULL,   -- copy-stream element as the daemon built it (to encrypt again if its envelope is refused)
  temp_index      BLOB NOT NULL,   -- temp box it goes to
  ciphertext      BLOB,            -- exact envelope, recorded before dispatch; NULL after the daemon refused it
  descriptor      BLOB,
  envelope_hash   BLOB,
  PRIMARY KEY (seq, element)
);
-- In copy mode, next_index and box_count say where the boxes built so far
-- end and how many they are (the message's, once the last window is recorded).
ALTER TABLE pending_writes ADD COLUMN copy_built INTEGER NOT NULL DEFAULT 0;     -- framed bytes made into recorded elements
ALTER TABLE pending_writes ADD COLUMN copy_elements INTEGER NOT NULL DEFAULT 0;  -- elements recorded (the next one's number)
ALTER TABLE pending_writes ADD COLUMN copy_temp_index BLOB;       -- temp box of the next element
ALTER TABLE pending_writes ADD COLUMN copy_last_temp_index BLOB;  -- temp box of the last element recorded
`,
    run: moveBlobsToChunks,
    after: `
ALTER TABLE outbound DROP COLUMN payload;
ALTER TABLE received DROP COLUMN payload;
`,
  },
];

/** Version 3: each version-2 payload (outbound.payload, received.payload) into chunks, one row at a time. */
function moveBlobsToChunks(db: Database.Database): void {
  const queued = db.prepare<[], { seq: number }>("SELECT seq FROM outbound WHERE op = 'message'").all();
  const queuedPayload = db.prepare<[number], { payload: Buffer | null }>('SELECT payload FROM outbound WHERE seq = ?');
  const describeQueued = db.prepare<[number, Buffer, number]>('UPDATE outbound SET payload_length = ?, payload_hash = ? WHERE seq = ?');
  const insertQueuedChunk = db.prepare<[number, number, Buffer]>('INSERT INTO outbound_chunks (seq, chunk, data) VALUES (?, ?, ?)');
  for (const { seq } of queued) {
    const payload = queuedPayload.get(seq)?.payload ?? Buffer.alloc(0);
    describeQueued.run(payload.length, blake2b256(payload), seq);
    forEachChunk(payload, (chunk, data) => insertQueuedChunk.run(seq, chunk, data));
  }
  const received = db.prepare<[], { id: number }>('SELECT id FROM received WHERE payload IS NOT NULL').all();
  const receivedPayload = db.prepare<[number], { payload: Buffer }>('SELECT payload FROM received WHERE id = ?');
  const insertReceivedChunk = db.prepare<[number, number, Buffer]>('INSERT INTO received_chunks (received_id, chunk, data) VALUES (?, ?, ?)');
  for (const { id } of received) {
    forEachChunk(receivedPayload.get(id)!.payload, (chunk, data) => insertReceivedChunk.run(id, chunk, data));
  }
}

/** Calls `fn` with each chunk of `payload` in order (views into it, not copies). */
export function forEachChunk(payload: Buffer, fn: (chunk: number, data: Buffer) => void): void {
  for (let chunk = 0, offset = 0; offset < payload.length; chunk++, offset += PAYLOAD_CHUNK_LENGTH) {
    fn(chunk, payload.subarray(offset, offset + PAYLOAD_CHUNK_LENGTH));
  }
}

export interface IntroductionRow {
  name: string;
  role: 'invite' | 'join';
  step: 'minted' | 'published' | 'started' | 'inducted' | 'done';
  voucher: Buffer;
  write_cap: Buffer;
  read_cap: Buffer;
  display_name: string | null;
  voucher_payload: Buffer | null;
  voucher_write_cap: Buffer | null;
  voucher_read_cap: Buffer | null;
  voucher_secret_key: Buffer | null;
  reply_index: Buffer | null;
  sealed_reply: Buffer | null;
  peer_read_cap: Buffer | null;
  peer_name: string | null;
  created_at: number;
  updated_at: number;
}

export interface ChannelRow {
  id: number;
  name: string;
  kind: 'owned' | 'imported';
  read_cap: Buffer;
  read_cap_hash: Buffer;
  write_cap: Buffer | null;
  seed_hash: Buffer | null;
  first_index: Buffer;
  write_index: Buffer | null;
  needs_scan: number;
  read_index: Buffer;
  created_at: number;
}

export interface OutboundRow {
  seq: number;
  channel_id: number;
  op: 'message' | 'tombstone';
  payload_length: number | null;
  payload_hash: Buffer | null;
  tomb_start: Buffer | null;
  tomb_boxes: number | null;
  tomb_first_counter: string | null;
  tomb_messages: number | null;
  tomb_done: number;
  queued_at: number;
}

export interface PendingWriteRow {
  seq: number;
  mode: 'box' | 'copy';
  box_index: Buffer;
  next_index: Buffer;
  box_count: number;
  ciphertext: Buffer | null;
  descriptor: Buffer | null;
  envelope_hash: Buffer | null;
  temp_seed: Buffer | null;
  temp_write_cap: Buffer | null;
  temp_first_index: Buffer | null;
  created_at: number;
  copy_built: number;
  copy_elements: number;
  copy_temp_index: Buffer | null;
  copy_last_temp_index: Buffer | null;
}

export interface CopyElementRow {
  seq: number;
  element: number;
  data: Buffer;
  temp_index: Buffer;
  ciphertext: Buffer | null;
  descriptor: Buffer | null;
  envelope_hash: Buffer | null;
}

export interface SentRow {
  id: number;
  channel_id: number;
  counter: string;
  first_index: Buffer;
  box_count: number;
  payload_length: number;
  sent_at: number;
  tombstoned: number;
}

export interface ReceivedRow {
  id: number;
  channel_id: number;
  kind: 'message' | 'tombstone' | 'malformed';
  counter: string;
  box_count: number;
  payload_length: number | null;
  reason: string | null;
  received_at: number;
  read_at: number | null;
}

/** Opens (creating if needed) the channel database with the durability settings above. */
export function openDatabase(path: string): Database.Database {
  if (path !== ':memory:') {
    // Create the file owner-only before SQLite does (it would use the umask).
    closeSync(openSync(path, 'a', 0o600));
    try {
      chmodSync(path, 0o600);
    } catch {
      // A file we cannot chmod (not ours) still opens; its mode is the owner's business.
    }
  }
  const db = new Database(path);
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    db.pragma(`cache_size = -${PAGE_CACHE_KIB}`);
    // Another process writing the same channels would break the single-writer
    // rule; wait briefly for a lock, then fail rather than interleave.
    db.pragma('busy_timeout = 5000');
    const version = db.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) {
      throw new Error(`channel database ${path} has schema version ${version}, newer than this library (${SCHEMA_VERSION})`);
    }
    db.exec(SCHEMA);
    if (version < 1) db.pragma('user_version = 1');
    for (const m of MIGRATIONS) {
      if (version >= m.version) continue;
      db.transaction(() => {
        db.exec(m.sql);
        m.run?.(db);
        if (m.after) db.exec(m.after);
        db.pragma(`user_version = ${m.version}`);
      })();
    }
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}
