/**
 * Request decoding with the daemon's strictness (PROTOCOL.md §1.3): unknown
 * keys ignored, keys matched case-insensitively as a fallback, 16/32-byte
 * identifiers truncated or zero-padded, but capability blobs strict and
 * wrong types fatal. A RequestDecodeError means "close this connection".
 */
import {
  decodeEnvelope,
  EmptyEnvelopeError,
  MESSAGE_BOX_INDEX_LENGTH,
  READ_CAP_LENGTH,
  WRITE_CAP_LENGTH,
  type RequestKind,
} from '../wire';

export class RequestDecodeError extends Error {
  override name = 'RequestDecodeError';
}

/**
 * No known non-null member: a kind this protocol level does not know, or an
 * all-null envelope. Fatal to a pinned daemon (§3.1), dropped by a current
 * one (§9.2): the caller decides.
 */
export class UnknownRequestError extends RequestDecodeError {
  override name = 'UnknownRequestError';
}

export type FieldType = 'bytes' | 'id16' | 'id32' | 'wcap' | 'rcap' | 'index' | 'bool' | 'uint' | 'text' | 'destinations';

/** Field types of every request kind one protocol level knows. */
export type RequestSchemas = Readonly<Record<string, Readonly<Record<string, FieldType>>>>;

export const PINNED_SCHEMAS: Record<RequestKind, Record<string, FieldType>> = {
  session_token: { client_instance_token: 'id16' },
  thin_close: {},
  send_message: { id: 'id16', with_surb: 'bool', surbid: 'id16', destination_id_hash: 'id32', recipient_queue_id: 'bytes', payload: 'bytes' },
  new_keypair: { query_id: 'id16', seed: 'bytes' },
  encrypt_read: { query_id: 'id16', read_cap: 'rcap', message_box_index: 'index' },
  encrypt_write: { query_id: 'id16', plaintext: 'bytes', write_cap: 'wcap', message_box_index: 'index' },
  start_resending_encrypted_message: {
    query_id: 'id16',
    read_cap: 'rcap',
    write_cap: 'wcap',
    // Declared as a plain byte string: not size-checked at decode (§3.7).
    message_box_index: 'bytes',
    reply_index: 'uint',
    envelope_descriptor: 'bytes',
    message_ciphertext: 'bytes',
    envelope_hash: 'id32',
    no_retry_on_box_id_not_found: 'bool',
    no_idempotent_box_already_exists: 'bool',
  },
  cancel_resending_encrypted_message: { query_id: 'id16', envelope_hash: 'id32' },
  start_resending_copy_command: { query_id: 'id16', write_cap: 'wcap', courier_identity_hash: 'id32', courier_queue_id: 'bytes' },
  cancel_resending_copy_command: { query_id: 'id16', write_cap_hash: 'id32' },
  next_message_box_index: { query_id: 'id16', message_box_index: 'index' },
  get_message_box_index_counter: { query_id: 'id16', message_box_index: 'index' },
  get_pki_document: { query_id: 'id16', epoch: 'uint' },
  create_courier_envelopes_from_payload: {
    query_id: 'id16',
    payload: 'bytes',
    dest_write_cap: 'wcap',
    dest_start_index: 'index',
    is_start: 'bool',
    is_last: 'bool',
  },
  create_courier_envelopes_from_multi_payload: { query_id: 'id16', destinations: 'destinations', is_start: 'bool', is_last: 'bool', buffer: 'bytes' },
  create_courier_envelopes_from_tombstone_range: {
    query_id: 'id16',
    dest_write_cap: 'wcap',
    dest_start_index: 'index',
    max_count: 'uint',
    is_start: 'bool',
    is_last: 'bool',
    buffer: 'bytes',
  },
};

const DESTINATION_SCHEMA: Record<string, FieldType> = { payload: 'bytes', write_cap: 'wcap', start_index: 'index' };

export interface Destination {
  payload: Buffer | null;
  write_cap: Buffer | null;
  start_index: Buffer | null;
}

/** A decoded request body: every schema field present, null/false/0 when absent. */
export type RequestBody = Record<string, any>;

export interface DecodedRequest {
  kind: string;
  body: RequestBody;
}

function asBuffer(v: unknown): Buffer | null {
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  return null;
}

function fixedId(b: Buffer, n: number): Buffer {
  if (b.length === n) return b;
  const out = Buffer.alloc(n);
  b.copy(out, 0, 0, Math.min(n, b.length));
  return out;
}

function convert(kind: string, field: string, type: FieldType, v: unknown): unknown {
  if (v === null || v === undefined) {
    if (type === 'bool') return false;
    if (type === 'uint') return 0;
    if (type === 'text') return '';
    return null;
  }
  const where = `${kind}.${field}`;
  switch (type) {
    case 'bool':
      if (typeof v !== 'boolean') throw new RequestDecodeError(`${where}: expected a boolean`);
      return v;
    case 'text':
      if (typeof v !== 'string') throw new RequestDecodeError(`${where}: expected a text string`);
      return v;
    case 'uint':
      if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v;
      if (typeof v === 'bigint' && v >= 0n && v < 1n << 64n) return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
      throw new RequestDecodeError(`${where}: expected an unsigned integer`);
    case 'destinations': {
      if (!Array.isArray(v)) throw new RequestDecodeError(`${where}: expected an array`);
      return v.map((d, i) => {
        if (d === null || typeof d !== 'object' || Array.isArray(d) || Buffer.isBuffer(d)) {
          throw new RequestDecodeError(`${where}[${i}]: expected a map`);
        }
        return convertMap(`${where}[${i}]`, DESTINATION_SCHEMA, d as Record<string, unknown>);
      });
    }
    default: {
      const b = asBuffer(v);
      if (!b) throw new RequestDecodeError(`${where}: expected a byte string`);
      if (type === 'id16') return fixedId(b, 16);
      if (type === 'id32') return fixedId(b, 32);
      const want = type === 'wcap' ? WRITE_CAP_LENGTH : type === 'rcap' ? READ_CAP_LENGTH : type === 'index' ? MESSAGE_BOX_INDEX_LENGTH : -1;
      if (want >= 0 && b.length !== want) throw new RequestDecodeError(`${where}: expected ${want} bytes, got ${b.length}`);
      return b;
    }
  }
}

function convertMap(kind: string, schema: Record<string, FieldType>, raw: Record<string, unknown>): RequestBody {
  const out: RequestBody = {};
  const lower = new Map<string, string>();
  for (const k of Object.keys(raw)) if (!(k in schema)) lower.set(k.toLowerCase(), k);
  for (const [field, type] of Object.entries(schema)) {
    const key = field in raw ? field : lower.get(field.toLowerCase());
    out[field] = convert(kind, field, type, key === undefined ? undefined : raw[key]);
  }
  return out;
}

/**
 * Decode one request frame body against the kinds of one protocol level
 * (the pinned ones by default); throws RequestDecodeError for anything the
 * daemon would not accept, UnknownRequestError when no member is known.
 */
export function decodeRequest(frame: Uint8Array, schemas: RequestSchemas = PINNED_SCHEMAS): DecodedRequest {
  const kinds = Object.keys(schemas);
  let env;
  try {
    env = decodeEnvelope(frame, kinds);
  } catch (e) {
    if (e instanceof EmptyEnvelopeError) throw new UnknownRequestError('request with no non-null member');
    throw new RequestDecodeError(`undecodable request: ${(e as Error).message}`);
  }
  if (!Object.hasOwn(schemas, env.kind)) {
    throw new UnknownRequestError(`unknown request kind "${env.kind}"`);
  }
  const kind = env.kind;
  const body = env.body;
  if (body === null || typeof body !== 'object' || Array.isArray(body) || Buffer.isBuffer(body) || body instanceof Map) {
    throw new RequestDecodeError(`${kind}: body is not a map`);
  }
  return { kind, body: convertMap(kind, schemas[kind], body as Record<string, unknown>) };
}
