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

// The lazy walk below runs for every frame both ways, so it builds no
// string and no object it does not return: the reader's position and the
// last item head live in these module variables (the walk is
// synchronous), and keys are compared as bytes where they lie.
let at = 0;
let headValue = 0;
let headIndefinite = false;
/** Where each key read so far in the envelope being walked starts, and its length. */
let keyStarts = new Int32Array(32);
let keyLengths = new Int32Array(32);

/**
 * The common case without decoding the whole envelope: walk the top-level
 * map, skip the null members byte by byte, and decode only the member
 * chosen (the first known non-null one, else the first unknown one). Only
 * that member's key becomes a string; the list of keys is built when
 * asked for. Null when the frame is anything but a definite map with
 * distinct text keys, or malformed: decodeEnvelopeFully then gives the
 * answer (or the error).
 */
function decodeEnvelopeLazily(data: Uint8Array, known: readonly string[]): DecodedEnvelope | null {
  try {
    at = 0;
    if (readHead(data) !== 5 || headIndefinite) return null;
    const count = headValue;
    if (count > keyStarts.length) {
      if (count > data.length) return null;
      keyStarts = new Int32Array(count);
      keyLengths = new Int32Array(count);
    }
    let chosenKind: string | null = null;
    let chosenKnown = false;
    let chosenStart = 0;
    let chosenEnd = 0;
    for (let i = 0; i < count; i++) {
      if (readHead(data) !== 3 || headIndefinite) return null;
      const keyStart = at;
      const keyLength = headValue;
      const keyEnd = at + keyLength;
      if (keyEnd >= data.length) return null; // a key with no value
      // Duplicate keys: the full decoder says what they mean (the last one wins).
      for (let j = 0; j < i; j++) if (keyLengths[j] === keyLength && sameBytes(data, keyStarts[j], keyStart, keyLength)) return null;
      keyStarts[i] = keyStart;
      keyLengths[i] = keyLength;
      at = keyEnd;
      const b = data[at];
      if (b === 0xf6 || b === 0xf7) {
        at++;
        continue;
      }
      const start = at;
      skipItem(data, 0);
      if (chosenKnown) continue;
      const k = keyString(data, keyStart, keyEnd);
      const isKnown = known.includes(k);
      if (chosenKind === null || isKnown) {
        chosenKind = k;
        chosenKnown = isKnown;
        chosenStart = start;
        chosenEnd = at;
      }
    }
    if (at !== data.length) return null;
    if (chosenKind === null) throw new EmptyEnvelopeError();
    const body = decodeMember(data, chosenStart, chosenEnd) ?? ownBytes(decodeCbor(data.subarray(chosenStart, chosenEnd)), data);
    if (body === null || body === undefined) return null;
    if (chosenKnown && (typeof body !== 'object' || Array.isArray(body) || Buffer.isBuffer(body))) {
      throw new TypeError(`member ${chosenKind} is not a map`);
    }
    return new WalkedEnvelope(chosenKind, body, data);
  } catch (e) {
    if (e instanceof EmptyEnvelopeError || (e instanceof TypeError && /^member /.test(e.message))) throw e;
    return null;
  }
}

/**
 * The member at data[start, end) when it is a flat map of text keys (what
 * every reply and event is), decoded here the way cbor-x would decode it,
 * with its byte strings copied straight into memory of their own (see
 * ownBytes) and its keys from the key cache. Values other than unsigned
 * and negative integers below 2^32, byte strings, booleans, null and
 * undefined (text, floats, u64, tags, nested items) are handed to cbor-x
 * one by one. Undefined when the member is not such a map: cbor-x then
 * decodes all of it.
 */
function decodeMember(data: Uint8Array, start: number, end: number): Record<string, unknown> | undefined {
  at = start;
  if (readHead(data) !== 5 || headIndefinite) return undefined;
  const count = headValue;
  const body: Record<string, unknown> = {};
  for (let i = 0; i < count; i++) {
    if (readHead(data) !== 3 || headIndefinite) return undefined;
    const keyEnd = at + headValue;
    if (keyEnd > end) return undefined;
    for (let j = at; j < keyEnd; j++) if (data[j] >= 0x80) return undefined; // ASCII keys only: no UTF-8 edge cases
    const key = keyString(data, at, keyEnd);
    if (key === '__proto__') return undefined; // cbor-x renames it; let it
    at = keyEnd;
    if (at >= end) return undefined;
    const b = data[at];
    const major = b >> 5;
    const ai = b & 0x1f;
    if ((major === 0 || major === 1) && ai <= 26) {
      readHead(data);
      body[key] = major === 0 ? headValue : -1 - headValue;
    } else if (major === 2 && ai <= 26) {
      readHead(data);
      const bytesEnd = at + headValue;
      if (bytesEnd > end) return undefined;
      body[key] = ownBytesAt(data, at, headValue);
      at = bytesEnd;
    } else if (b >= 0xf4 && b <= 0xf7) {
      at++;
      body[key] = b === 0xf4 ? false : b === 0xf5 ? true : b === 0xf6 ? null : undefined;
    } else {
      const valueStart = at;
      skipItem(data, 0);
      if (at > end) return undefined;
      const resume = at;
      body[key] = ownBytes(decodeCbor(data.subarray(valueStart, resume)), data);
      at = resume;
    }
  }
  return at === end ? body : undefined;
}

/** An envelope decoded by the lazy walk: its keys are read from the frame again only when asked for. */
class WalkedEnvelope implements DecodedEnvelope {
  private frame: Uint8Array | null;
  private keyList: string[] | null = null;

  constructor(
    readonly kind: string,
    readonly body: any,
    frame: Uint8Array,
  ) {
    this.frame = frame;
  }

  get keys(): string[] {
    if (this.keyList === null) {
      this.keyList = envelopeKeys(this.frame!);
      this.frame = null;
    }
    return this.keyList;
  }
}

/** The top-level keys of an envelope the lazy walk accepted (a definite map with text keys). */
function envelopeKeys(data: Uint8Array): string[] {
  at = 0;
  readHead(data);
  const count = headValue;
  const keys: string[] = [];
  for (let i = 0; i < count; i++) {
    readHead(data);
    const end = at + headValue;
    keys.push(keyString(data, at, end));
    at = end;
    skipItem(data, 0);
  }
  return keys;
}

/**
 * Read a CBOR item head at `at`: returns its major type; its argument
 * (length, count or value) is left in headValue, and headIndefinite says
 * whether it opens an indefinite-length item.
 */
function readHead(data: Uint8Array): number {
  if (at >= data.length) throw new RangeError('truncated');
  const b = data[at++];
  const ai = b & 0x1f;
  headIndefinite = false;
  if (ai < 24) {
    headValue = ai;
  } else if (ai === 31) {
    headValue = 0;
    headIndefinite = true;
  } else {
    const n = ai === 24 ? 1 : ai === 25 ? 2 : ai === 26 ? 4 : ai === 27 ? 8 : -1;
    if (n < 0 || at + n > data.length) throw new RangeError('bad head');
    let value = 0;
    for (let i = 0; i < n; i++) value = value * 256 + data[at + i];
    at += n;
    headValue = value;
  }
  return b >> 5;
}

/** Move past one CBOR item without decoding it. */
function skipItem(data: Uint8Array, depth: number): void {
  if (depth > 64) throw new RangeError('too deep');
  const major = readHead(data);
  switch (major) {
    case 0:
    case 1:
      return;
    case 2:
    case 3:
      if (headIndefinite) {
        while (data[at] !== 0xff) skipItem(data, depth + 1);
        at++;
        return;
      }
      at += headValue;
      if (at > data.length) throw new RangeError('truncated');
      return;
    case 4:
    case 5: {
      const per = major === 5 ? 2 : 1;
      if (headIndefinite) {
        while (at < data.length && data[at] !== 0xff) for (let j = 0; j < per; j++) skipItem(data, depth + 1);
        if (at >= data.length) throw new RangeError('truncated');
        at++;
        return;
      }
      const items = headValue * per;
      for (let i = 0; i < items; i++) skipItem(data, depth + 1);
      return;
    }
    case 6:
      skipItem(data, depth + 1);
      return;
    default:
      if (headIndefinite) throw new RangeError('stray break');
      return;
  }
}

// ------------------------------------------------------------ key strings
/** A key string seen before, with its UTF-8 bytes. */
interface CachedKey {
  bytes: Uint8Array;
  text: string;
}
/** Envelope keys come from a small vocabulary (the kinds); a hostile peer cannot grow the cache past this. */
const KEY_CACHE_LIMIT = 256;
const KEY_CACHE_MAX_BYTES = 64;
const keyCache = new Map<number, CachedKey[]>();
let keyCacheSize = 0;

/**
 * The text of the UTF-8 key at data[start, end): the cached string when
 * these bytes were seen before (no string is built), else decoded, and
 * cached while the cache has room.
 */
function keyString(data: Uint8Array, start: number, end: number): string {
  const length = end - start;
  if (length > KEY_CACHE_MAX_BYTES) return utf8(data, start, end);
  // The length and three inner bytes pick the bucket; the bytes are then compared in full.
  const h = length === 0 ? 0 : length | (data[start + (length >> 2)] << 8) | (data[start + (length >> 1)] << 16) | (data[start + ((3 * length) >> 2)] << 24);
  const bucket = keyCache.get(h);
  if (bucket) {
    for (const c of bucket) if (cachedKeyIs(c.bytes, data, start, length)) return c.text;
  }
  const text = utf8(data, start, end);
  if (keyCacheSize < KEY_CACHE_LIMIT) {
    const entry = { bytes: new Uint8Array(data.buffer, data.byteOffset + start, length).slice(), text };
    if (bucket) bucket.push(entry);
    else keyCache.set(h, [entry]);
    keyCacheSize++;
  }
  return text;
}

function cachedKeyIs(key: Uint8Array, data: Uint8Array, start: number, length: number): boolean {
  if (key.length !== length) return false;
  for (let i = 0; i < length; i++) if (key[i] !== data[start + i]) return false;
  return true;
}

/** Whether data[a, a + length) and data[b, b + length) hold the same bytes. */
function sameBytes(data: Uint8Array, a: number, b: number, length: number): boolean {
  for (let i = 0; i < length; i++) if (data[a + i] !== data[b + i]) return false;
  return true;
}

function utf8(data: Uint8Array, start: number, end: number): string {
  return Buffer.from(data.buffer, data.byteOffset + start, end - start).toString('utf8');
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
    if (v.buffer === frame.buffer && v.byteOffset >= frame.byteOffset && v.byteOffset + v.byteLength <= frame.byteOffset + frame.byteLength) {
      return ownBytesAt(frame, v.byteOffset - frame.byteOffset, v.byteLength) as T;
    }
    return Buffer.from(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength)) as T;
  }
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    for (const k in o) {
      const x = o[k];
      if (x !== null && typeof x === 'object') o[k] = ownBytes(x, frame);
    }
  }
  return v;
}

/** The byte string frame[start, start + length) in memory of its own, or as a view by the rule of ownBytes. */
function ownBytesAt(frame: Uint8Array, start: number, length: number): Buffer {
  const frameOwnsBuffer = frame.byteOffset === 0 && frame.byteLength === frame.buffer.byteLength;
  if (frameOwnsBuffer && (frame.byteLength - length) * 8 <= length) return Buffer.from(frame.buffer, start, length);
  // allocUnsafeSlow: an ArrayBuffer of its own, exactly this size, not zeroed first (overwritten at once).
  const copy = Buffer.allocUnsafeSlow(length);
  // Short strings (ids, hashes, indices) byte by byte: no view object for set() to read from.
  if (length <= 128) for (let i = 0; i < length; i++) copy[i] = frame[start + i];
  else copy.set(frame.subarray(start, start + length));
  return copy;
}
