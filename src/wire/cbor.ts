/**
 * The CBOR codec settings (PROTOCOL.md §1.3) and the conversions of decoded
 * values: integers that may arrive as bigint, u64 written in shortest form,
 * byte strings.
 */
import { Decoder, Encoder, type Options } from 'cbor-x';

type EncoderOptions = Options & { useTag259ForMaps?: boolean };

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
