/**
 * The daemon's local Pigeonhole requests (PROTOCOL.md §3.4-§3.6, §3.11,
 * §3.12, §3.14-§3.16): pure functions from a decoded request body to the
 * reply body, every field in §4 order, null where Go sends nil.
 */
import { MAX_COPY_PAYLOAD_LENGTH, SEED_LENGTH, u64 } from '../wire';
import {
  decodeStreamBuffer,
  deriveKeypair,
  encodeStreamBuffer,
  envelopeHashOf,
  envelopeRecord,
  indexCounter,
  nextIndex,
  packElements,
  sealBox,
  boxIdOf,
  type BoxGeometry,
  type EncryptedEnvelope,
  type EnvelopeCrypto,
  type StreamState,
} from './pigeonhole';
import type { RequestBody } from './requests';

export const ErrorCode = {
  Success: 0,
  InvalidRequest: 3,
  InternalError: 4,
  ServiceUnavailable: 10,
} as const;

/** Upper bound on max_count so that one request cannot make the emulator build millions of envelopes. */
export const MAX_TOMBSTONE_RANGE = 65_536;

export interface LocalContext {
  g: BoxGeometry;
  crypto: EnvelopeCrypto;
  /** Replica epoch and replica count of the current PKI document, for envelope descriptors. */
  replica: { epoch: number; replicaCount: number };
}

type Body = Record<string, unknown>;

// ------------------------------------------------------------------ keypair and indexes
export function newKeypair(b: RequestBody): Body {
  const seed: Buffer | null = b.seed;
  // Exactly 32: kpclientd rejects a shorter seed, and its ChaCha20 seeding a longer one (measured on v0.0.99: 40 bytes give 3).
  if (!b.query_id || !seed || seed.length !== SEED_LENGTH) {
    return { query_id: b.query_id, write_cap: null, read_cap: null, first_message_index: null, error_code: ErrorCode.InvalidRequest };
  }
  const kp = deriveKeypair(seed);
  return { query_id: b.query_id, write_cap: kp.writeCap, read_cap: kp.readCap, first_message_index: kp.firstIndex, error_code: 0 };
}

export function nextMessageBoxIndex(b: RequestBody): Body {
  if (!b.query_id || !b.message_box_index) return { query_id: b.query_id, next_message_box_index: null, error_code: ErrorCode.InvalidRequest };
  return { query_id: b.query_id, next_message_box_index: nextIndex(b.message_box_index), error_code: 0 };
}

export function messageBoxIndexCounter(b: RequestBody): Body {
  if (!b.query_id || !b.message_box_index) return { query_id: b.query_id, counter: 0, error_code: ErrorCode.InvalidRequest };
  return { query_id: b.query_id, counter: u64(indexCounter(b.message_box_index)), error_code: 0 };
}

// ------------------------------------------------------------------ encrypt
function encryptFailure(b: RequestBody, code: number): Body {
  return { query_id: b.query_id, message_ciphertext: null, envelope_descriptor: null, envelope_hash: null, next_message_box_index: null, error_code: code };
}

function encryptReply(b: RequestBody, env: EncryptedEnvelope): Body {
  return {
    query_id: b.query_id,
    message_ciphertext: env.messageCiphertext,
    envelope_descriptor: env.envelopeDescriptor,
    envelope_hash: envelopeHashOf(env.messageCiphertext),
    next_message_box_index: nextIndex(b.message_box_index),
    error_code: 0,
  };
}

export function encryptRead(ctx: LocalContext, b: RequestBody): Body {
  if (!b.query_id || !b.read_cap || !b.message_box_index) return encryptFailure(b, ErrorCode.InvalidRequest);
  const boxId = boxIdOf(b.read_cap.subarray(0, 32), b.message_box_index);
  const env = ctx.crypto.seal('read', boxId, null, ctx.replica);
  return encryptReply(b, env);
}

/** A courier envelope writing `plaintext` (empty = tombstone) into one box. */
export function writeEnvelope(ctx: LocalContext, writeCap: Buffer, idx: Buffer, plaintext: Buffer) {
  const { boxId, box } = sealBox(ctx.g, writeCap, idx, plaintext);
  return ctx.crypto.seal(box.tombstone ? 'tombstone' : 'write', boxId, box, ctx.replica);
}

export function encryptWrite(ctx: LocalContext, b: RequestBody): Body {
  const pt: Buffer | null = b.plaintext;
  if (!b.query_id || !b.write_cap || !b.message_box_index || pt === null || pt.length > ctx.g.maxPlaintext) {
    return encryptFailure(b, ErrorCode.InvalidRequest);
  }
  const env = writeEnvelope(ctx, b.write_cap, b.message_box_index, pt);
  return encryptReply(b, env);
}

// ------------------------------------------------------------------ without a PKI document
/** Local requests that need the PKI document (replica keys, for the envelopes): error 4 while the daemon has none. */
export const NEEDS_PKI_DOCUMENT: ReadonlySet<string> = new Set([
  'encrypt_read',
  'encrypt_write',
  'create_courier_envelopes_from_payload',
  'create_courier_envelopes_from_multi_payload',
  'create_courier_envelopes_from_tombstone_range',
]);

/** The reply to one of NEEDS_PKI_DOCUMENT while the daemon has no document. */
export function noPkiDocumentReply(kind: string, b: RequestBody): Body {
  const code = ErrorCode.InternalError;
  switch (kind) {
    case 'encrypt_read':
    case 'encrypt_write':
      return encryptFailure(b, code);
    case 'create_courier_envelopes_from_payload':
      return { query_id: b.query_id, envelopes: null, next_dest_index: null, error_code: code };
    case 'create_courier_envelopes_from_multi_payload':
      return { query_id: b.query_id, envelopes: null, buffer: null, next_dest_indices: null, error_code: code };
    default:
      return { query_id: b.query_id, envelopes: null, buffer: null, next_dest_index: null, error_code: code };
  }
}

// ------------------------------------------------------------------ copy streams
/** Records for one destination: the payload cut into copyChunk pieces, one envelope per consecutive box. */
function destinationRecords(ctx: LocalContext, payload: Buffer, writeCap: Buffer, start: Buffer): { records: Buffer[]; next: Buffer } {
  const records: Buffer[] = [];
  let idx = start;
  for (let off = 0; off < payload.length; off += ctx.g.copyChunk) {
    const chunk = payload.subarray(off, Math.min(payload.length, off + ctx.g.copyChunk));
    records.push(envelopeRecord(writeEnvelope(ctx, writeCap, idx, chunk).messageCiphertext));
    idx = nextIndex(idx);
  }
  return { records, next: idx };
}

export function envelopesFromPayload(ctx: LocalContext, b: RequestBody): Body {
  const payload: Buffer = b.payload ?? Buffer.alloc(0);
  if (!b.query_id || !b.dest_write_cap || !b.dest_start_index || payload.length > MAX_COPY_PAYLOAD_LENGTH) {
    return { query_id: b.query_id, envelopes: null, next_dest_index: null, error_code: ErrorCode.InvalidRequest };
  }
  const { records, next } = destinationRecords(ctx, payload, b.dest_write_cap, b.dest_start_index);
  // Stateless: every call flushes completely; only an is_last call sets the final flag.
  const { elements } = packElements(ctx.g, { startPending: b.is_start, residual: Buffer.alloc(0) }, Buffer.concat(records), {
    isLast: b.is_last,
    flushAll: true,
    continued: !b.is_start,
  });
  return { query_id: b.query_id, envelopes: elements.length ? elements : null, next_dest_index: next, error_code: 0 };
}

function continuedStream(b: RequestBody): StreamState | null {
  return decodeStreamBuffer(b.buffer, b.is_start);
}

/**
 * Packs one call's records into a continued stream (multi-payload and
 * tombstone range): the reply's envelopes, and the buffer that carries the
 * rest to the next call (none after the last).
 */
function packContinued(ctx: LocalContext, b: RequestBody, state: StreamState, records: Buffer[]) {
  const packed = packElements(ctx.g, state, Buffer.concat(records), {
    isLast: b.is_last,
    flushAll: false,
    continued: !b.is_start || (b.buffer?.length ?? 0) > 0,
  });
  return {
    envelopes: packed.elements.length ? packed.elements : null,
    buffer: b.is_last ? null : encodeStreamBuffer(packed.state),
  };
}

export function envelopesFromMultiPayload(ctx: LocalContext, b: RequestBody): Body {
  const fail = { query_id: b.query_id, envelopes: null, buffer: null, next_dest_indices: null, error_code: ErrorCode.InvalidRequest };
  const dests: { payload: Buffer | null; write_cap: Buffer | null; start_index: Buffer | null }[] | null = b.destinations;
  if (!b.query_id || !dests || dests.length === 0) return fail;
  for (const d of dests) {
    if (!d.write_cap || !d.start_index || (d.payload?.length ?? 0) > MAX_COPY_PAYLOAD_LENGTH) return fail;
  }
  const state = continuedStream(b);
  if (!state) return fail;
  const records: Buffer[] = [];
  const nexts: Buffer[] = [];
  for (const d of dests) {
    const r = destinationRecords(ctx, d.payload ?? Buffer.alloc(0), d.write_cap!, d.start_index!);
    records.push(...r.records);
    nexts.push(r.next);
  }
  return { query_id: b.query_id, ...packContinued(ctx, b, state, records), next_dest_indices: nexts, error_code: 0 };
}

export function envelopesFromTombstoneRange(ctx: LocalContext, b: RequestBody): Body {
  const fail = { query_id: b.query_id, envelopes: null, buffer: null, next_dest_index: null, error_code: ErrorCode.InvalidRequest };
  const count = typeof b.max_count === 'number' ? b.max_count : Number.MAX_SAFE_INTEGER;
  if (!b.query_id || !b.dest_write_cap || !b.dest_start_index || count > MAX_TOMBSTONE_RANGE) return fail;
  if (count === 0) return { query_id: b.query_id, envelopes: null, buffer: null, next_dest_index: b.dest_start_index, error_code: 0 };
  const state = continuedStream(b);
  if (!state) return fail;
  const records: Buffer[] = [];
  let idx: Buffer = b.dest_start_index;
  for (let i = 0; i < count; i++) {
    records.push(envelopeRecord(writeEnvelope(ctx, b.dest_write_cap, idx, Buffer.alloc(0)).messageCiphertext));
    idx = nextIndex(idx);
  }
  return { query_id: b.query_id, ...packContinued(ctx, b, state, records), next_dest_index: idx, error_code: 0 };
}
