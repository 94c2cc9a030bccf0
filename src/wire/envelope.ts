/**
 * Envelopes (PROTOCOL.md §1.3): a request or response wrapped in the map
 * keyed by its kind; encoding them, and finding the one non-null member of
 * a received one without decoding the rest.
 */
import { decodeCbor, encodeCbor } from './cbor';
import { RESPONSE_KINDS, type AnyRequestKind } from './kinds';

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
