/**
 * The thin client wire format (PROTOCOL.md §0, §1, §3, §4): sizes, CBOR
 * codec settings, length-prefixed framing, envelopes and request bodies.
 *
 * Shared by the client and the emulator so both speak exactly one dialect;
 * both are additionally tested against the recorded reference frames.
 */
import { Decoder, Encoder, type Options } from 'cbor-x';

type EncoderOptions = Options & { useTag259ForMaps?: boolean };

// ---------------------------------------------------------------- sizes (§0)
export const QUERY_ID_LENGTH = 16;
export const MESSAGE_ID_LENGTH = 16;
export const SURB_ID_LENGTH = 16;
export const APP_ID_LENGTH = 16;
export const INSTANCE_TOKEN_LENGTH = 16;
export const HASH_LENGTH = 32;
export const WRITE_CAP_LENGTH = 168;
export const READ_CAP_LENGTH = 136;
export const MESSAGE_BOX_INDEX_LENGTH = 104;
export const SEED_LENGTH = 32;
/** Contact Voucher token: BLAKE2b-256 of the voucher payload (§9.3). */
export const VOUCHER_LENGTH = 32;
/** VoucherSalt, which re-seeds a channel's index ratchet (§9.3). */
export const VOUCHER_SALT_LENGTH = 32;
/** The voucher reply keypair is a CTIDH1024-X25519 hybrid NIKE pair (hpqc voucher): these sizes. */
export const VOUCHER_SECRET_KEY_LENGTH = 162;
export const VOUCHER_PUBLIC_KEY_LENGTH = 160;
/** Maximum payload per destination for the create_courier_envelopes_* calls. */
export const MAX_COPY_PAYLOAD_LENGTH = 10 * 1024 * 1024;
/** HEAD's frame cap (§9.1); we enforce it in both directions by default. */
export const DEFAULT_MAX_FRAME_LENGTH = 40 * 1024 * 1024;
export const FRAME_PREFIX_LENGTH = 4;

/**
 * The byte-string fields that have one fixed size wherever they appear
 * (§0), by wire key. Built from the constants above, which the client's
 * argument checks use; every daemon reply and event is checked against it
 * on arrival (checkFixedLengths).
 */
export const FIXED_FIELD_LENGTHS: Readonly<Record<string, number>> = Object.freeze({
  query_id: QUERY_ID_LENGTH,
  id: MESSAGE_ID_LENGTH,
  message_id: MESSAGE_ID_LENGTH,
  surbid: SURB_ID_LENGTH,
  app_id: APP_ID_LENGTH,
  instance_token: INSTANCE_TOKEN_LENGTH,
  client_instance_token: INSTANCE_TOKEN_LENGTH,
  envelope_hash: HASH_LENGTH,
  write_cap_hash: HASH_LENGTH,
  courier_identity_hash: HASH_LENGTH,
  destination_id_hash: HASH_LENGTH,
  write_cap: WRITE_CAP_LENGTH,
  dest_write_cap: WRITE_CAP_LENGTH,
  read_cap: READ_CAP_LENGTH,
  message_box_index: MESSAGE_BOX_INDEX_LENGTH,
  first_message_index: MESSAGE_BOX_INDEX_LENGTH,
  next_message_box_index: MESSAGE_BOX_INDEX_LENGTH,
  dest_start_index: MESSAGE_BOX_INDEX_LENGTH,
  start_index: MESSAGE_BOX_INDEX_LENGTH,
  next_dest_index: MESSAGE_BOX_INDEX_LENGTH,
  seed: SEED_LENGTH,
  // Contact Voucher fields (§9.3): opaque byte strings, of fixed size in every daemon that has them.
  voucher: VOUCHER_LENGTH,
  salt: VOUCHER_SALT_LENGTH,
  message_write_cap: WRITE_CAP_LENGTH,
  voucher_write_cap: WRITE_CAP_LENGTH,
  voucher_read_cap: READ_CAP_LENGTH,
  mutated_message_write_cap: WRITE_CAP_LENGTH,
  mutated_message_read_cap: READ_CAP_LENGTH,
  voucher_secret_key: VOUCHER_SECRET_KEY_LENGTH,
  voucher_public_key: VOUCHER_PUBLIC_KEY_LENGTH,
});

/** List-valued fields whose every element is null or of one fixed size (§4.18). */
export const FIXED_ELEMENT_LENGTHS: Readonly<Record<string, number>> = Object.freeze({
  next_dest_indices: MESSAGE_BOX_INDEX_LENGTH,
});

/**
 * Check the top-level fields of one message body against
 * FIXED_FIELD_LENGTHS and FIXED_ELEMENT_LENGTHS. null/absent means "not
 * set" and passes (whether a field is required is the caller's business).
 * Throws a RangeError naming the field, the expected and the actual size,
 * e.g. "write_cap: expected 168 bytes, got 5" or "next_dest_indices[1]: …".
 */
export function checkFixedLengths(body: Record<string, unknown>): void {
  for (const [field, v] of Object.entries(body)) {
    const want = FIXED_FIELD_LENGTHS[field];
    if (want !== undefined) checkLength(field, v, want);
    const each = FIXED_ELEMENT_LENGTHS[field];
    if (each === undefined || v === null || v === undefined) continue;
    if (!Array.isArray(v)) throw new TypeError(`${field}: expected a list, got ${describeKind(v)}`);
    v.forEach((item, i) => checkLength(`${field}[${i}]`, item, each));
  }
}

function checkLength(field: string, v: unknown, want: number): void {
  if (v === null || v === undefined || (v instanceof Uint8Array && v.length === want)) return;
  throw new RangeError(`${field}: expected ${want} bytes, got ${v instanceof Uint8Array ? v.length : describeKind(v)}`);
}

/** What a non-byte-string value is, without its content (caps are secrets). */
function describeKind(v: unknown): string {
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'a map' : `a ${typeof v}`;
}

// ------------------------------------------------------------- kinds (§3, §4)
/** Request kinds in the Go binding's order (pinned, 16 keys). */
export const REQUEST_KINDS = [
  'session_token',
  'thin_close',
  'send_message',
  'new_keypair',
  'encrypt_read',
  'encrypt_write',
  'start_resending_encrypted_message',
  'cancel_resending_encrypted_message',
  'start_resending_copy_command',
  'cancel_resending_copy_command',
  'next_message_box_index',
  'get_message_box_index_counter',
  'get_pki_document',
  'create_courier_envelopes_from_payload',
  'create_courier_envelopes_from_multi_payload',
  'create_courier_envelopes_from_tombstone_range',
] as const;
export type RequestKind = (typeof REQUEST_KINDS)[number];

/** Response kinds in the daemon's emission order (pinned, 20 keys). */
export const RESPONSE_KINDS = [
  'session_token_reply',
  'shutdown_event',
  'connection_status_event',
  'new_pki_document_event',
  'message_sent_event',
  'message_reply_event',
  'message_id_garbage_collected',
  'new_keypair_reply',
  'encrypt_read_reply',
  'encrypt_write_reply',
  'start_resending_encrypted_message_reply',
  'cancel_resending_encrypted_message_reply',
  'start_resending_copy_command_reply',
  'cancel_resending_copy_command_reply',
  'next_message_box_index_reply',
  'get_message_box_index_counter_reply',
  'get_pki_document_reply',
  'create_courier_envelopes_from_payload_reply',
  'create_courier_envelopes_from_multi_payload_reply',
  'create_courier_envelopes_from_tombstone_range_reply',
] as const;
export type ResponseKind = (typeof RESPONSE_KINDS)[number];

/** Response kinds only a HEAD daemon sends (§9.3); recognised, never required. */
export const HEAD_RESPONSE_KINDS = [
  'get_directory_authorities_reply',
  'voucher_mint_reply',
  'voucher_induct_reply',
  'voucher_open_reply',
  'voucher_derive_stream_reply',
] as const;
export type HeadResponseKind = (typeof HEAD_RESPONSE_KINDS)[number];

/**
 * Request kinds only a current daemon (kpclientd v0.0.99+) knows (§9.3).
 * Never send one to a pinned daemon: it aborts on a request kind it does
 * not know (§3.1). Each answers with `<kind>_reply`.
 */
export const HEAD_REQUEST_KINDS = [
  'get_directory_authorities',
  'voucher_mint',
  'voucher_induct',
  'voucher_open',
  'voucher_derive_stream',
] as const;
export type HeadRequestKind = (typeof HEAD_REQUEST_KINDS)[number];
/** Every request kind this library can send. */
export type AnyRequestKind = RequestKind | HeadRequestKind;

/** The current daemon's request envelope, 21 keys in Go order (§9.3). */
export const CURRENT_REQUEST_KINDS: readonly AnyRequestKind[] = [
  ...REQUEST_KINDS.slice(0, REQUEST_KINDS.indexOf('get_pki_document') + 1),
  'get_directory_authorities',
  ...REQUEST_KINDS.slice(REQUEST_KINDS.indexOf('get_pki_document') + 1),
  'voucher_mint',
  'voucher_induct',
  'voucher_open',
  'voucher_derive_stream',
];

/**
 * The current daemon's reply envelope, 25 keys in Go order (§9.3): the 20
 * pinned ones with get_directory_authorities_reply after
 * get_pki_document_reply and the four voucher replies at the end.
 */
export const CURRENT_RESPONSE_KINDS: readonly (ResponseKind | HeadResponseKind)[] = [
  ...RESPONSE_KINDS.slice(0, RESPONSE_KINDS.indexOf('get_pki_document_reply') + 1),
  'get_directory_authorities_reply',
  ...RESPONSE_KINDS.slice(RESPONSE_KINDS.indexOf('get_pki_document_reply') + 1),
  'voucher_mint_reply',
  'voucher_induct_reply',
  'voucher_open_reply',
  'voucher_derive_stream_reply',
];

// ---------------------------------------------------------- geometries (§6.8)
export interface SphinxGeometry {
  PacketLength: number;
  NrHops: number;
  HeaderLength: number;
  RoutingInfoLength: number;
  PerHopRoutingInfoLength: number;
  SURBLength: number;
  SphinxPlaintextHeaderLength: number;
  PayloadTagLength: number;
  ForwardPayloadLength: number;
  UserForwardPayloadLength: number;
  NextNodeHopLength: number;
  SPRPKeyMaterialLength: number;
  NIKEName: string;
  KEMName: string;
}

export interface PigeonholeGeometry {
  MaxPlaintextPayloadLength: number;
  CourierQueryReadLength: number;
  CourierQueryWriteLength: number;
  CourierQueryReplyReadLength: number;
  CourierQueryReplyWriteLength: number;
  NIKEName: string;
  SignatureSchemeName: string;
}

export const SPHINX_GEOMETRY_KEYS: readonly (keyof SphinxGeometry)[] = [
  'PacketLength',
  'NrHops',
  'HeaderLength',
  'RoutingInfoLength',
  'PerHopRoutingInfoLength',
  'SURBLength',
  'SphinxPlaintextHeaderLength',
  'PayloadTagLength',
  'ForwardPayloadLength',
  'UserForwardPayloadLength',
  'NextNodeHopLength',
  'SPRPKeyMaterialLength',
  'NIKEName',
  'KEMName',
];

export const PIGEONHOLE_GEOMETRY_KEYS: readonly (keyof PigeonholeGeometry)[] = [
  'MaxPlaintextPayloadLength',
  'CourierQueryReadLength',
  'CourierQueryWriteLength',
  'CourierQueryReplyReadLength',
  'CourierQueryReplyWriteLength',
  'NIKEName',
  'SignatureSchemeName',
];

/** The docker test network's geometry (§6.8), which the emulator serves by default. */
export const DEFAULT_SPHINX_GEOMETRY: SphinxGeometry = {
  PacketLength: 3082,
  NrHops: 5,
  HeaderLength: 476,
  RoutingInfoLength: 410,
  PerHopRoutingInfoLength: 82,
  SURBLength: 572,
  SphinxPlaintextHeaderLength: 2,
  PayloadTagLength: 32,
  ForwardPayloadLength: 2574,
  UserForwardPayloadLength: 2000,
  NextNodeHopLength: 65,
  SPRPKeyMaterialLength: 64,
  NIKEName: 'x25519',
  KEMName: '',
};

export const DEFAULT_PIGEONHOLE_GEOMETRY: PigeonholeGeometry = {
  MaxPlaintextPayloadLength: 1553,
  CourierQueryReadLength: 359,
  CourierQueryWriteLength: 2000,
  CourierQueryReplyReadLength: 1698,
  CourierQueryReplyWriteLength: 50,
  NIKEName: 'CTIDH1024-X25519',
  SignatureSchemeName: 'Ed25519',
};

// ---------------------------------------------------------------- CBOR (§1.3)
// Shortest-form map headers (variableMapSize), plain byte strings for
// Uint8Array, no record/259 tags: what the Go and Python encoders produce.
// (useTag259ForMaps is honoured by cbor-x but missing from its typings.)
const encoder = new Encoder({
  useRecords: false,
  mapsAsObjects: true,
  variableMapSize: true,
  useTag259ForMaps: false,
  tagUint8Array: false,
} as EncoderOptions);
// cbor-x decodes 8-byte integers (additional info 27) as bigint and shorter
// ones as number, so u64 fields (counters near 2^62) keep full precision.
const objectDecoder = new Decoder({ useRecords: false, mapsAsObjects: true });
const mapDecoder = new Decoder({ useRecords: false, mapsAsObjects: false });

export type CborValue = unknown;

export function encodeCbor(value: CborValue): Buffer {
  return encoder.encode(value);
}

/** Decode one CBOR item that must span the whole buffer. Maps become plain objects. */
export function decodeCbor(data: Uint8Array): any {
  return objectDecoder.decode(data);
}

/**
 * Decode keeping non-text map keys (integer epochs, byte-string hashes):
 * maps whose keys are all strings become objects, the others stay Maps.
 * Used for the PKI document, whose maps are keyed by u64 and bstr.
 */
export function decodeCborFaithful(data: Uint8Array): any {
  return normaliseMaps(mapDecoder.decode(data));
}

function normaliseMaps(v: any): any {
  if (v instanceof Map) {
    let allText = true;
    for (const k of v.keys()) if (typeof k !== 'string') allText = false;
    if (allText) {
      const o: Record<string, unknown> = {};
      for (const [k, val] of v) o[k] = normaliseMaps(val);
      return o;
    }
    const m = new Map();
    for (const [k, val] of v) m.set(k, normaliseMaps(val));
    return m;
  }
  if (Array.isArray(v)) return v.map(normaliseMaps);
  return v;
}

/**
 * An integer field that may have arrived as bigint (64-bit encodings), back
 * to number when exact. null/absent is 0. Anything else - text, a float
 * with a fraction, NaN - is a TypeError naming the field; a value beyond
 * 2^53 a RangeError.
 */
export function toNumber(v: unknown, field = 'value'): number {
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new TypeError(`${field}: expected an integer, got ${v}`);
    if (!Number.isSafeInteger(v)) throw new RangeError(`${field} ${v} does not fit a JavaScript number exactly`);
    return v;
  }
  if (typeof v === 'bigint') {
    if (v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER)) return Number(v);
    throw new RangeError(`${field} ${v} does not fit a JavaScript number`);
  }
  if (v === null || v === undefined) return 0;
  throw new TypeError(`${field}: expected an integer, got ${typeof v}`);
}

/**
 * A u64 as bigint (counters: the first index counter is a random value near
 * 2^62). null/absent is 0n; text, a float with a fraction and the like are a
 * TypeError naming the field, as in toNumber.
 */
export function toBigInt(v: unknown, field = 'value'): bigint {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new TypeError(`${field}: expected an integer, got ${v}`);
    return BigInt(v);
  }
  if (v === null || v === undefined) return 0n;
  throw new TypeError(`${field}: expected an integer, got ${typeof v}`);
}

/**
 * Encode a u64 in the shortest form: cbor-x writes every bigint with 8 bytes,
 * and a JS number of 2^32 or more as a float64, so only values that fit 32
 * bits go out as numbers.
 */
export function u64(v: number | bigint): number | bigint {
  const b = typeof v === 'bigint' ? v : BigInt(v);
  return b <= 0xffffffffn ? Number(b) : b;
}

/** A decoded byte string (cbor-x yields Buffer), or null for null/absent. */
export function bytesOrNull(v: unknown): Buffer | null {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v)) return v;
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  return null;
}

// ------------------------------------------------------------ framing (§1.2)
export class FrameTooLargeError extends Error {
  constructor(
    readonly declaredLength: number,
    readonly maxLength: number,
  ) {
    super(`frame length prefix ${declaredLength} exceeds the maximum of ${maxLength} bytes`);
    this.name = 'FrameTooLargeError';
  }
}

/** Default bound on the time from a frame's first byte to its last (both sides). */
export const DEFAULT_FRAME_TIMEOUT_MS = 60_000;

/** A frame did not complete within its bound; the decoder has been closed. */
export class FrameTimeoutError extends Error {
  constructor(
    /** From the length prefix; null while the prefix itself is incomplete. */
    readonly declaredLength: number | null,
    /** Body bytes received, or prefix bytes while declaredLength is null. */
    readonly receivedBytes: number,
    readonly timeoutMs: number,
  ) {
    super(
      declaredLength === null
        ? `frame length prefix incomplete after ${timeoutMs} ms: ${receivedBytes} of ${FRAME_PREFIX_LENGTH} bytes received`
        : `frame of declared length ${declaredLength} bytes incomplete after ${timeoutMs} ms: ${receivedBytes} bytes of its body received`,
    );
    this.name = 'FrameTimeoutError';
  }
}

export interface FrameDecoderOptions {
  /** Largest body accepted; checked before the body buffer is allocated. Default 40 MiB. */
  maxFrameLength?: number;
  /** Bound on the time from a frame's first byte to its last. Default: none. */
  frameTimeoutMs?: number;
  /** Called once when a frame misses frameTimeoutMs, after the decoder closed itself. */
  onFrameTimeout?: (err: FrameTimeoutError) => void;
}

/** Prefix a CBOR body with its 4-byte big-endian length: one contiguous buffer, one write. */
export function encodeFrame(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(FRAME_PREFIX_LENGTH + body.length);
  out.writeUInt32BE(body.length, 0);
  out.set(body, FRAME_PREFIX_LENGTH);
  return out;
}

/**
 * Incremental frame reader, shared by the client and the emulator. The
 * length prefix is checked against the limit before any body buffer is
 * allocated, so a hostile prefix costs nothing; an accepted one gets its
 * whole body buffer at once and every chunk is copied into it, so no
 * socket chunk is kept and a large frame never exists twice. With
 * frameTimeoutMs, a frame (prefix included) still incomplete that long
 * after its first byte closes the decoder and is reported to
 * onFrameTimeout: a peer that stops mid-frame cannot hold memory forever.
 */
export class FrameDecoder {
  readonly maxFrameLength: number;
  private readonly frameTimeoutMs: number | null;
  private readonly onFrameTimeout: ((err: FrameTimeoutError) => void) | null;
  private readonly prefix = Buffer.alloc(FRAME_PREFIX_LENGTH);
  private prefixFilled = 0;
  /** The body of the frame in progress, allocated once its length is known. */
  private body: Buffer | null = null;
  private bodyFilled = 0;
  private deadline: NodeJS.Timeout | null = null;
  private closed = false;

  /** `options` may be just the maximum frame length. */
  constructor(options: number | FrameDecoderOptions = {}) {
    const o = typeof options === 'number' ? { maxFrameLength: options } : options;
    this.maxFrameLength = o.maxFrameLength ?? DEFAULT_MAX_FRAME_LENGTH;
    this.frameTimeoutMs = o.frameTimeoutMs ?? null;
    this.onFrameTimeout = o.onFrameTimeout ?? null;
  }

  /**
   * Feed bytes; returns every frame body completed by them (each its own
   * buffer). Throws FrameTooLargeError, again on every later push: the
   * stream cannot be resynchronised. After close() or a timeout, returns [].
   */
  push(chunk: Buffer): Buffer[] {
    if (this.closed) return [];
    const frames: Buffer[] = [];
    let off = 0;
    while (off < chunk.length || (this.prefixFilled === FRAME_PREFIX_LENGTH && !this.body)) {
      if (!this.body) {
        const take = Math.min(FRAME_PREFIX_LENGTH - this.prefixFilled, chunk.length - off);
        chunk.copy(this.prefix, this.prefixFilled, off, off + take);
        this.prefixFilled += take;
        off += take;
        if (this.prefixFilled < FRAME_PREFIX_LENGTH) break;
        const length = this.prefix.readUInt32BE(0);
        if (length > this.maxFrameLength) {
          this.clearDeadline();
          throw new FrameTooLargeError(length, this.maxFrameLength);
        }
        this.body = Buffer.allocUnsafe(length);
        this.bodyFilled = 0;
      }
      const take = Math.min(this.body.length - this.bodyFilled, chunk.length - off);
      chunk.copy(this.body, this.bodyFilled, off, off + take);
      this.bodyFilled += take;
      off += take;
      if (this.bodyFilled < this.body.length) break;
      frames.push(this.body);
      this.body = null;
      this.bodyFilled = 0;
      this.prefixFilled = 0;
      this.clearDeadline(); // the next frame gets its own
    }
    if (this.prefixFilled > 0 && !this.deadline) this.startDeadline();
    return frames;
  }

  /** Bytes received and not yet returned as frames (prefix included). */
  get pendingBytes(): number {
    return this.prefixFilled + this.bodyFilled;
  }

  /** Memory held for the frame in progress: its whole body buffer, allocated at the prefix. */
  get reservedBytes(): number {
    return this.body ? this.body.length : 0;
  }

  /** Stop: cancel the deadline, release the frame in progress, ignore further bytes. */
  close(): void {
    this.closed = true;
    this.clearDeadline();
    this.body = null;
    this.bodyFilled = 0;
    this.prefixFilled = 0;
  }

  private startDeadline(): void {
    const ms = this.frameTimeoutMs;
    if (ms === null) return;
    this.deadline = setTimeout(() => {
      this.deadline = null;
      const err = this.body ? new FrameTimeoutError(this.body.length, this.bodyFilled, ms) : new FrameTimeoutError(null, this.prefixFilled, ms);
      this.close();
      this.onFrameTimeout?.(err);
    }, ms);
    // The socket, not this timer, decides whether the process stays alive.
    this.deadline.unref();
  }

  private clearDeadline(): void {
    if (this.deadline) clearTimeout(this.deadline);
    this.deadline = null;
  }
}

// ---------------------------------------------------------- envelopes (§1.3)
/** A client request as the Python binding writes it: a map with the one relevant key. */
export function encodeRequest(kind: AnyRequestKind, body: Record<string, unknown>): Buffer {
  return encodeCbor({ [kind]: body });
}

/**
 * A daemon response as the Go daemon writes it: every key of its envelope
 * (`kinds`: the pinned 20 by default, CURRENT_RESPONSE_KINDS for 25), every
 * one but `kind` null.
 */
export function encodeResponse(kind: string, body: Record<string, unknown>, kinds: readonly string[] = RESPONSE_KINDS): Buffer {
  if (!kinds.includes(kind)) throw new RangeError(`${kind} is not a key of this envelope`);
  const envelope: Record<string, unknown> = {};
  for (const k of kinds) envelope[k] = k === kind ? body : null;
  return encodeCbor(envelope);
}

export interface DecodedEnvelope {
  kind: string;
  body: any;
  /** Every top-level key of the envelope, null members included: a full Go envelope tells which kinds its sender knows. */
  keys: string[];
}

/**
 * Find the single non-null member of an envelope. Unknown keys are
 * ignored when a known member is present; an envelope whose only
 * non-null member is unknown is returned as that kind so the caller can
 * decide (the client ignores it, the emulator drops the connection).
 */
export function decodeEnvelope(data: Uint8Array, known: readonly string[]): DecodedEnvelope {
  const lazy = decodeEnvelopeLazily(data, known);
  return lazy ?? decodeEnvelopeFully(data, known);
}

/**
 * The common case without decoding the whole envelope: walk the top-level
 * map, skip the null members byte by byte, and decode only the member
 * chosen (the first known non-null one, else the first unknown one). Null
 * when the frame is anything but a definite map with distinct text keys, or
 * malformed: decodeEnvelopeFully then gives the answer (or the error).
 */
function decodeEnvelopeLazily(data: Uint8Array, known: readonly string[]): DecodedEnvelope | null {
  try {
    const r = { pos: 0 };
    const head = readHead(data, r);
    if (head.major !== 5 || head.indefinite) return null;
    const keys: string[] = [];
    let chosen: { kind: string; start: number; end: number; known: boolean } | null = null;
    for (let i = 0; i < head.value; i++) {
      const kh = readHead(data, r);
      if (kh.major !== 3 || kh.indefinite) return null;
      const end = r.pos + kh.value;
      if (end > data.length) return null;
      const k = Buffer.from(data.buffer, data.byteOffset + r.pos, kh.value).toString('utf8');
      if (keys.includes(k)) return null;
      keys.push(k);
      r.pos = end;
      if (r.pos >= data.length) return null;
      const b = data[r.pos];
      if (b === 0xf6 || b === 0xf7) {
        r.pos++;
        continue;
      }
      const start = r.pos;
      skipItem(data, r, 0);
      if (chosen?.known) continue;
      const isKnown = known.includes(k);
      if (!chosen || isKnown) chosen = { kind: k, start, end: r.pos, known: isKnown };
    }
    if (r.pos !== data.length) return null;
    if (!chosen) throw new EmptyEnvelopeError();
    const body = decodeCbor(data.subarray(chosen.start, chosen.end));
    if (body === null || body === undefined) return null;
    if (chosen.known && (typeof body !== 'object' || Array.isArray(body) || Buffer.isBuffer(body))) {
      throw new TypeError(`member ${chosen.kind} is not a map`);
    }
    return { kind: chosen.kind, body: ownBytes(body, data), keys };
  } catch (e) {
    if (e instanceof EmptyEnvelopeError || (e instanceof TypeError && /^member /.test(e.message))) throw e;
    return null;
  }
}

/** A CBOR item head: major type and argument (length, count or value). */
function readHead(data: Uint8Array, r: { pos: number }): { major: number; value: number; indefinite: boolean } {
  if (r.pos >= data.length) throw new RangeError('truncated');
  const b = data[r.pos++];
  const major = b >> 5;
  const ai = b & 0x1f;
  if (ai < 24) return { major, value: ai, indefinite: false };
  if (ai === 31) return { major, value: 0, indefinite: true };
  const n = ai === 24 ? 1 : ai === 25 ? 2 : ai === 26 ? 4 : ai === 27 ? 8 : -1;
  if (n < 0 || r.pos + n > data.length) throw new RangeError('bad head');
  let value = 0;
  for (let i = 0; i < n; i++) value = value * 256 + data[r.pos + i];
  r.pos += n;
  return { major, value, indefinite: false };
}

/** Move past one CBOR item without decoding it. */
function skipItem(data: Uint8Array, r: { pos: number }, depth: number): void {
  if (depth > 64) throw new RangeError('too deep');
  const h = readHead(data, r);
  switch (h.major) {
    case 0:
    case 1:
      return;
    case 2:
    case 3:
      if (h.indefinite) {
        while (data[r.pos] !== 0xff) skipItem(data, r, depth + 1);
        r.pos++;
        return;
      }
      r.pos += h.value;
      if (r.pos > data.length) throw new RangeError('truncated');
      return;
    case 4:
    case 5: {
      const per = h.major === 5 ? 2 : 1;
      if (h.indefinite) {
        while (r.pos < data.length && data[r.pos] !== 0xff) for (let j = 0; j < per; j++) skipItem(data, r, depth + 1);
        if (r.pos >= data.length) throw new RangeError('truncated');
        r.pos++;
        return;
      }
      for (let i = 0; i < h.value * per; i++) skipItem(data, r, depth + 1);
      return;
    }
    case 6:
      skipItem(data, r, depth + 1);
      return;
    default:
      if (h.indefinite) throw new RangeError('stray break');
      return;
  }
}

function decodeEnvelopeFully(data: Uint8Array, known: readonly string[]): DecodedEnvelope {
  const v = decodeCbor(data);
  if (v === null || typeof v !== 'object' || Array.isArray(v) || Buffer.isBuffer(v) || v instanceof Map) {
    throw new TypeError('frame is not a CBOR map with text keys');
  }
  const keys = Object.keys(v);
  let unknown: { kind: string; body: any } | null = null;
  for (const [k, body] of Object.entries(v)) {
    if (body === null || body === undefined) continue;
    if (known.includes(k)) {
      if (typeof body !== 'object' || Array.isArray(body) || Buffer.isBuffer(body)) {
        throw new TypeError(`member ${k} is not a map`);
      }
      return { kind: k, body: ownBytes(body, data), keys };
    }
    unknown ??= { kind: k, body };
  }
  if (unknown) return { kind: unknown.kind, body: ownBytes(unknown.body, data), keys };
  throw new EmptyEnvelopeError();
}

/** An envelope with no non-null member at all (§3.1: fatal to a pinned daemon, dropped by a current one). */
export class EmptyEnvelopeError extends TypeError {
  constructor() {
    super('envelope has no non-null member');
    this.name = 'EmptyEnvelopeError';
  }
}

/**
 * Give every byte string in a decoded value its own memory (in place).
 * cbor-x decodes byte strings as views into the frame, so a kept 32-byte
 * hash would pin the whole frame - or the 8 KiB pool slab a small frame
 * shares with other buffers. Small strings get an exactly sized copy (not
 * Buffer.from, which pools them again). A byte string that is nearly the
 * whole frame (a large payload) stays a view when the frame owns its
 * ArrayBuffer: at most 1/8 of it is overhead, and a copy would briefly
 * double a payload of up to 40 MiB.
 */
function ownBytes<T>(v: T, frame: Uint8Array): T {
  if (v instanceof Uint8Array) {
    const frameOwnsBuffer = frame.byteOffset === 0 && frame.byteLength === frame.buffer.byteLength;
    if (frameOwnsBuffer && v.buffer === frame.buffer && (frame.byteLength - v.byteLength) * 8 <= v.byteLength) {
      return (Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength)) as T;
    }
    return Buffer.from(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength)) as T;
  }
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) o[k] = ownBytes(o[k], frame);
  }
  return v;
}

// ------------------------------------------------ request bodies (§3, Python order)
type Bytes = Uint8Array;

/** Request body builders; key order matches the reference Python binding byte for byte. */
export const requestBodies = {
  sessionToken: (clientInstanceToken: Bytes) => ({ client_instance_token: clientInstanceToken }),
  thinClose: () => ({}),
  sendMessage: (p: { id?: Bytes | null; withSurb: boolean; surbId: Bytes | null; destinationIdHash: Bytes; recipientQueueId: Bytes; payload: Bytes }) => ({
    id: p.id ?? null,
    with_surb: p.withSurb,
    surbid: p.surbId,
    destination_id_hash: p.destinationIdHash,
    recipient_queue_id: p.recipientQueueId,
    payload: p.payload,
  }),
  newKeypair: (queryId: Bytes, seed: Bytes) => ({ query_id: queryId, seed }),
  encryptRead: (queryId: Bytes, readCap: Bytes, messageBoxIndex: Bytes) => ({
    query_id: queryId,
    read_cap: readCap,
    message_box_index: messageBoxIndex,
  }),
  encryptWrite: (queryId: Bytes, plaintext: Bytes, writeCap: Bytes, messageBoxIndex: Bytes) => ({
    query_id: queryId,
    plaintext,
    write_cap: writeCap,
    message_box_index: messageBoxIndex,
  }),
  startResendingEncryptedMessage: (p: {
    queryId: Bytes;
    readCap: Bytes | null;
    writeCap: Bytes | null;
    messageBoxIndex: Bytes | null;
    replyIndex: number | null;
    envelopeDescriptor: Bytes;
    messageCiphertext: Bytes;
    envelopeHash: Bytes;
    noRetryOnBoxIdNotFound: boolean;
    noIdempotentBoxAlreadyExists: boolean;
  }) => ({
    query_id: p.queryId,
    read_cap: p.readCap,
    write_cap: p.writeCap,
    message_box_index: p.messageBoxIndex,
    reply_index: p.replyIndex,
    envelope_descriptor: p.envelopeDescriptor,
    message_ciphertext: p.messageCiphertext,
    envelope_hash: p.envelopeHash,
    no_retry_on_box_id_not_found: p.noRetryOnBoxIdNotFound,
    no_idempotent_box_already_exists: p.noIdempotentBoxAlreadyExists,
  }),
  cancelResendingEncryptedMessage: (queryId: Bytes, envelopeHash: Bytes) => ({ query_id: queryId, envelope_hash: envelopeHash }),
  startResendingCopyCommand: (queryId: Bytes, writeCap: Bytes, courierIdentityHash?: Bytes | null, courierQueueId?: Bytes | null) => {
    const body: Record<string, unknown> = { query_id: queryId, write_cap: writeCap };
    // (opt) fields: omitted entirely when not pinning, as Go and Python do.
    if (courierIdentityHash) body.courier_identity_hash = courierIdentityHash;
    if (courierQueueId) body.courier_queue_id = courierQueueId;
    return body;
  },
  cancelResendingCopyCommand: (queryId: Bytes, writeCapHash: Bytes) => ({ query_id: queryId, write_cap_hash: writeCapHash }),
  nextMessageBoxIndex: (queryId: Bytes, messageBoxIndex: Bytes) => ({ query_id: queryId, message_box_index: messageBoxIndex }),
  getMessageBoxIndexCounter: (queryId: Bytes, messageBoxIndex: Bytes) => ({ query_id: queryId, message_box_index: messageBoxIndex }),
  getPkiDocument: (queryId: Bytes, epoch: number | bigint) => ({ query_id: queryId, epoch: u64(epoch) }),
  createCourierEnvelopesFromPayload: (queryId: Bytes, payload: Bytes, destWriteCap: Bytes, destStartIndex: Bytes, isStart: boolean, isLast: boolean) => ({
    query_id: queryId,
    payload,
    dest_write_cap: destWriteCap,
    dest_start_index: destStartIndex,
    is_start: isStart,
    is_last: isLast,
  }),
  createCourierEnvelopesFromMultiPayload: (
    queryId: Bytes,
    destinations: { payload: Bytes; writeCap: Bytes; startIndex: Bytes }[],
    isStart: boolean,
    isLast: boolean,
    buffer: Bytes | null,
  ) => {
    const body: Record<string, unknown> = {
      query_id: queryId,
      destinations: destinations.map((d) => ({ payload: d.payload, write_cap: d.writeCap, start_index: d.startIndex })),
      is_start: isStart,
      is_last: isLast,
    };
    if (buffer && buffer.length > 0) body.buffer = buffer; // Python omits the key when None
    return body;
  },
  // ---- current daemon only (§9.3): query_id first, then the fields in Go order.
  getDirectoryAuthorities: (queryId: Bytes) => ({ query_id: queryId }),
  voucherMint: (queryId: Bytes, messageWriteCap: Bytes, displayName: string) => ({
    query_id: queryId,
    message_write_cap: messageWriteCap,
    display_name: displayName,
  }),
  voucherInduct: (queryId: Bytes, voucher: Bytes, voucherPayload: Bytes, whoReply: Bytes) => ({
    query_id: queryId,
    voucher,
    voucher_payload: voucherPayload,
    who_reply: whoReply,
  }),
  voucherOpen: (queryId: Bytes, voucherSecretKey: Bytes, sealedReply: Bytes, messageWriteCap: Bytes) => ({
    query_id: queryId,
    voucher_secret_key: voucherSecretKey,
    sealed_reply: sealedReply,
    message_write_cap: messageWriteCap,
  }),
  voucherDeriveStream: (queryId: Bytes, voucher: Bytes) => ({ query_id: queryId, voucher }),
  createCourierEnvelopesFromTombstoneRange: (
    queryId: Bytes,
    destWriteCap: Bytes,
    destStartIndex: Bytes,
    maxCount: number,
    isStart: boolean,
    isLast: boolean,
    buffer: Bytes | null,
  ) => {
    const body: Record<string, unknown> = {
      query_id: queryId,
      dest_write_cap: destWriteCap,
      dest_start_index: destStartIndex,
      max_count: maxCount,
      is_start: isStart,
      is_last: isLast,
    };
    if (buffer && buffer.length > 0) body.buffer = buffer;
    return body;
  },
};
