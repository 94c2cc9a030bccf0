/**
 * The emulated Pigeonhole storage layer: BACAP-like capabilities and
 * indexes, box encryption, courier envelopes, replica storage and the
 * copy-stream format (PIGEONHOLE.md §2, PROTOCOL.md §6.9, §10.5).
 *
 * It is not the real cryptography (no CTIDH MKEM, no blinded Ed25519 box
 * IDs), but it is real authenticated encryption with the real blob sizes,
 * so wrong caps, wrong indexes and mismatched descriptors fail the way the
 * real system does and with the same error codes:
 *  - box ID = BLAKE2b-256(root public key ‖ blinding factor of the index);
 *  - box payload = AES-256-GCM under the index's encryption key (nonce
 *    derived from the box ID, so identical writes give identical bytes)
 *    followed by an Ed25519 signature of the channel key;
 *  - courier envelope = ephemeral public value ‖ AES-256-GCM of the query
 *    under a key the "replicas" derive from it; the reply is sealed under a
 *    key derived from the ephemeral secret that only the envelope
 *    descriptor holds.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, randomInt, sign, verify } from 'node:crypto';
import { blake2b256 } from '../client/crypto';
import { abortable } from '../util/deadline';
import { decodeCbor, encodeCbor, MESSAGE_BOX_INDEX_LENGTH, READ_CAP_LENGTH, type PigeonholeGeometry } from '../wire';
import { ed25519FromSeed, ed25519PublicKey, type Ed25519Pair } from './pki';

// ------------------------------------------------------------------ sizes
export interface BoxGeometry {
  /** Largest plaintext of one box (1553). */
  maxPlaintext: number;
  /** Size of every courier envelope / message_ciphertext (1999): CourierQueryWriteLength minus the query-type byte. */
  envelopeLength: number;
  /** Destination chunk of the copy helpers (1549 = max - 4). */
  copyChunk: number;
  /** Stream bytes per copy-stream element (1548 = max - 5 header bytes). */
  elementData: number;
}

export function boxGeometry(g: PigeonholeGeometry): BoxGeometry {
  return {
    maxPlaintext: g.MaxPlaintextPayloadLength,
    envelopeLength: g.CourierQueryWriteLength - 1,
    copyChunk: g.MaxPlaintextPayloadLength - 4,
    elementData: g.MaxPlaintextPayloadLength - 5,
  };
}

const TAG = 16;
const NONCE = 12;
const SIG = 64;
const KEY = 32;

// HKDF-SHA256 (RFC 5869) from two HMACs, not hkdfSync: hkdfSync builds a
// KeyObject and validates per call (twice the cost), and an index derives
// three keys from one state, which share one extract step here.
const HASH_LENGTH = 32;

/** HKDF's extract step: the pseudorandom key of `ikm` under `salt`. */
function hkdfExtract(salt: string | Uint8Array, ikm: Uint8Array): Buffer {
  return createHmac('sha256', salt).update(ikm).digest();
}

/** HKDF's expand step: `length` bytes for `info` from a pseudorandom key. */
function hkdfExpand(prk: Buffer, info: Buffer, length = HASH_LENGTH): Buffer {
  if (length <= HASH_LENGTH) {
    const t = createHmac('sha256', prk).update(info).update(BLOCK_COUNTERS[1]).digest();
    return length === HASH_LENGTH ? t : t.subarray(0, length);
  }
  if (length > 255 * HASH_LENGTH) throw new RangeError(`hkdf: at most ${255 * HASH_LENGTH} bytes, asked for ${length}`);
  const out = Buffer.allocUnsafe(Math.ceil(length / HASH_LENGTH) * HASH_LENGTH);
  let t = Buffer.alloc(0);
  for (let i = 1; (i - 1) * HASH_LENGTH < length; i++) {
    t = createHmac('sha256', prk).update(t).update(info).update(BLOCK_COUNTERS[i]).digest();
    t.copy(out, (i - 1) * HASH_LENGTH);
  }
  return out.subarray(0, length);
}
const BLOCK_COUNTERS = Array.from({ length: 256 }, (_, i) => Buffer.of(i));

/** HKDF-SHA256 of `ikm` (byte-identical to node:crypto's hkdfSync('sha256', …)). */
export function hkdf(ikm: Uint8Array, salt: string | Uint8Array, info: string | Buffer, length = HASH_LENGTH): Buffer {
  return hkdfExpand(hkdfExtract(salt, ikm), typeof info === 'string' ? Buffer.from(info) : info, length);
}

function seal(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad?: Uint8Array): Buffer {
  const c = createCipheriv('aes-256-gcm', key, nonce);
  if (aad) c.setAAD(aad);
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
}

function open(key: Uint8Array, nonce: Uint8Array, sealed: Uint8Array, aad?: Uint8Array): Buffer | null {
  if (sealed.length < TAG) return null;
  try {
    const d = createDecipheriv('aes-256-gcm', key, nonce);
    if (aad) d.setAAD(aad);
    d.setAuthTag(sealed.subarray(sealed.length - TAG));
    return Buffer.concat([d.update(sealed.subarray(0, sealed.length - TAG)), d.final()]);
  } catch {
    return null;
  }
}

// ------------------------------------------------------- caps and indexes (§6.9)
const MASK62 = (1n << 62n) - 1n;

interface IndexParts {
  counter: bigint;
  blinding: Buffer;
  encKey: Buffer;
  state: Buffer;
}

const INDEX_SALT = Buffer.from('bacap-index');
const BLINDING_INFO = Buffer.from('blinding factor');
const ENCRYPTION_KEY_INFO = Buffer.from('encryption key');
const NEXT_STATE_INFO = Buffer.from('next state');

function indexFromState(counter: bigint, state: Buffer): Buffer {
  const out = Buffer.alloc(MESSAGE_BOX_INDEX_LENGTH);
  out.writeBigUInt64LE(counter, 0);
  const prk = hkdfExtract(INDEX_SALT, state);
  hkdfExpand(prk, BLINDING_INFO).copy(out, 8);
  hkdfExpand(prk, ENCRYPTION_KEY_INFO).copy(out, 40);
  state.copy(out, 72);
  return out;
}

export function parseIndex(idx: Uint8Array): IndexParts {
  const b = Buffer.from(idx.buffer, idx.byteOffset, idx.byteLength);
  return { counter: b.readBigUInt64LE(0), blinding: b.subarray(8, 40), encKey: b.subarray(40, 72), state: b.subarray(72, 104) };
}

/** The successor index: counter + 1, keys derived from the next HKDF state. */
export function nextIndex(idx: Uint8Array): Buffer {
  const p = parseIndex(idx);
  const counter = (p.counter + 1n) & ((1n << 64n) - 1n);
  return indexFromState(counter, hkdfExpand(hkdfExtract(INDEX_SALT, p.state), NEXT_STATE_INFO));
}

/**
 * The index re-seeded by `ctx` (a VoucherSalt): same counter, a state mixed
 * with ctx under its own label, keys derived from it, so it starts a fresh
 * box sequence nobody finds without ctx (like BACAP's MutateKDFState).
 */
export function mutateIndex(idx: Uint8Array, ctx: Uint8Array): Buffer {
  const p = parseIndex(idx);
  return indexFromState(p.counter, hkdf(p.state, ctx, 'bacap mutate kdf state'));
}

export function indexCounter(idx: Uint8Array): bigint {
  return parseIndex(idx).counter;
}

export interface Keypair {
  writeCap: Buffer;
  readCap: Buffer;
  firstIndex: Buffer;
}

/**
 * Deterministic keypair from a seed (>= 32 bytes). The first counter is the
 * sum of two 62-bit values derived from the seed: random-looking, non-zero,
 * below 2^63 (§10.7).
 */
export function deriveKeypair(seed: Uint8Array): Keypair {
  const m = hkdf(seed, 'katzenpost-emulator-bacap', 'new keypair', 32 + 8 + 8 + 32);
  const edSeed = m.subarray(0, 32);
  const a = m.readBigUInt64LE(32) & MASK62;
  const b = m.readBigUInt64LE(40) & MASK62;
  const counter = a + b === 0n ? 1n : a + b;
  const firstIndex = indexFromState(counter, Buffer.from(m.subarray(48, 80)));
  const { publicRaw } = ed25519FromSeed(edSeed);
  const writeCap = Buffer.concat([edSeed, publicRaw, firstIndex]);
  return { writeCap, readCap: Buffer.from(writeCap.subarray(32)), firstIndex };
}

export function boxIdOf(rootPublicKey: Uint8Array, idx: Uint8Array): Buffer {
  return blake2b256(Buffer.concat([rootPublicKey, parseIndex(idx).blinding]));
}

export function readCapOf(writeCap: Uint8Array): Buffer {
  return Buffer.from(writeCap.subarray(32, 32 + READ_CAP_LENGTH));
}

export function firstIndexOfCap(cap: Uint8Array): Buffer {
  return Buffer.from(cap.subarray(cap.length - MESSAGE_BOX_INDEX_LENGTH));
}

// ------------------------------------------------------------------ boxes
export interface StoredBox {
  tombstone: boolean;
  /** Data box: AES-GCM ciphertext ‖ signature. Tombstone: the signature alone. */
  payload: Buffer;
}

const TOMBSTONE_LABEL = Buffer.from('pigeonhole tombstone');

function boxNonce(boxId: Buffer): Buffer {
  return createHash('sha256').update('box nonce').update(boxId).digest().subarray(0, NONCE);
}

// ------------------------------------------------------- box signatures
/**
 * The box signatures this emulator made, each with a digest of the key and
 * message it signed. A box is signed once (encrypt_write, a copy) and
 * verified again when a copy or a read opens it; Ed25519 is deterministic,
 * so a signature found here over the same key and message verifies, and a
 * digest saves the Ed25519 verification (the costliest step of a large copy
 * stream). Anything else, a tampered box included, is verified in full.
 * Bounded: the oldest entries go first.
 */
const SIGNED_LIMIT = 16_384;
const signedBoxes = new Map<string, Buffer>();

function signedDigest(publicRaw: Uint8Array, boxId: Uint8Array, tail: Uint8Array): Buffer {
  return createHash('sha256').update(publicRaw).update(boxId).update(tail).digest();
}

/** The Ed25519 signature of boxId ‖ tail, remembered for verifyBox. */
function signBox(pair: Ed25519Pair, boxId: Buffer, tail: Buffer): Buffer {
  const sig = sign(null, Buffer.concat([boxId, tail]), pair.privateKey);
  if (signedBoxes.size >= SIGNED_LIMIT) signedBoxes.delete(signedBoxes.keys().next().value as string);
  signedBoxes.set(sig.toString('latin1'), signedDigest(pair.publicRaw, boxId, tail));
  return sig;
}

/** Forgets every remembered signature, so the next verifications are full ones (as after an eviction). */
export function forgetBoxSignatures(): void {
  signedBoxes.clear();
}

/** Whether sig is the Ed25519 signature of boxId ‖ tail under the 32-byte public key. */
function verifyBox(publicRaw: Uint8Array, boxId: Buffer, tail: Buffer, sig: Buffer): boolean {
  const made = signedBoxes.get(sig.toString('latin1'));
  if (made && made.equals(signedDigest(publicRaw, boxId, tail))) return true;
  return verify(null, Buffer.concat([boxId, tail]), ed25519PublicKey(publicRaw), sig);
}

/** Seal a plaintext into a box payload: deterministic for (cap, index, plaintext). */
export function sealBox(g: BoxGeometry, writeCap: Uint8Array, idx: Uint8Array, plaintext: Uint8Array): { boxId: Buffer; box: StoredBox } {
  const pair = ed25519FromSeed(writeCap.subarray(0, 32));
  const boxId = boxIdOf(writeCap.subarray(32, 64), idx);
  if (plaintext.length === 0) {
    return { boxId, box: { tombstone: true, payload: signBox(pair, boxId, TOMBSTONE_LABEL) } };
  }
  // Fixed-size padding (4-byte length, data, zeros): every box has the same size.
  const padded = Buffer.alloc(4 + g.maxPlaintext);
  padded.writeUInt32BE(plaintext.length, 0);
  padded.set(plaintext, 4);
  const ct = seal(parseIndex(idx).encKey, boxNonce(boxId), padded, boxId);
  const sig = signBox(pair, boxId, ct);
  return { boxId, box: { tombstone: false, payload: Buffer.concat([ct, sig]) } };
}

export type BoxOpenResult = { code: 0; plaintext: Buffer } | { code: 11 | 23 | 25; plaintext: Buffer | null };

/** What the daemon does with a replica's answer to a read: verify and decrypt with the read cap and index. */
export function openBox(readCap: Uint8Array, idx: Uint8Array, box: StoredBox, boxId: Buffer): BoxOpenResult {
  const pub = readCap.subarray(0, 32);
  if (box.tombstone) {
    const ok = box.payload.length === SIG && verifyBox(pub, boxId, TOMBSTONE_LABEL, box.payload);
    return ok ? { code: 11, plaintext: null } : { code: 25, plaintext: null };
  }
  if (box.payload.length < SIG + TAG + 4) return { code: 23, plaintext: null };
  const ct = box.payload.subarray(0, box.payload.length - SIG);
  const sig = box.payload.subarray(box.payload.length - SIG);
  if (!verifyBox(pub, boxId, ct, sig)) return { code: 23, plaintext: null };
  const padded = open(parseIndex(idx).encKey, boxNonce(boxId), ct, boxId);
  if (!padded) return { code: 23, plaintext: null };
  const len = padded.readUInt32BE(0);
  if (len > padded.length - 4) return { code: 23, plaintext: null };
  // A decrypted-but-empty payload is the daemon's defensive tombstone path (§5.4).
  if (len === 0) return { code: 11, plaintext: Buffer.alloc(0) };
  return { code: 0, plaintext: Buffer.from(padded.subarray(4, 4 + len)) };
}

// -------------------------------------------------------- courier envelopes
export type QueryKind = 'read' | 'write' | 'tombstone';

export interface CourierQuery {
  kind: QueryKind;
  boxId: Buffer;
  /** Writes only. */
  box: StoredBox | null;
  /** Where the replica seals its answer; derived from the descriptor's EnvelopeKey. */
  replyKey: Buffer;
}

export interface EncryptedEnvelope {
  messageCiphertext: Buffer;
  envelopeDescriptor: Buffer;
}

/**
 * envelope_hash: BLAKE2b-256 over the sender public value followed by the
 * ciphertext (§6.9), which is exactly our message_ciphertext. Computed only
 * where a reply carries it: copy-stream envelopes never need one, and the
 * pure-JS BLAKE2b is the costliest step of a 10 MiB copy stream.
 */
export function envelopeHashOf(messageCiphertext: Buffer): Buffer {
  return blake2b256(messageCiphertext);
}

export interface ReplicaReply {
  code: number;
  boxId: Buffer | null;
  box: StoredBox | null;
}

/** The "MKEM" layer: one secret shared by the emulated replicas. */
export class EnvelopeCrypto {
  constructor(
    private readonly replicaSecret: Buffer,
    private readonly g: BoxGeometry,
  ) {}

  private requestKey(ephemeralPublic: Uint8Array): Buffer {
    return hkdf(this.replicaSecret, ephemeralPublic, 'courier envelope request');
  }

  private static replyKeyOf(ephemeralSecret: Uint8Array): Buffer {
    return hkdf(ephemeralSecret, 'katzenpost-emulator-mkem', 'courier envelope reply');
  }

  /** A one-way public value for the ephemeral secret (stands in for the MKEM sender key). */
  private static publicOf(ephemeralSecret: Uint8Array): Buffer {
    return createHash('sha256').update('ephemeral public').update(ephemeralSecret).digest();
  }

  /**
   * Build a courier envelope holding one query. A fresh ephemeral secret and
   * nonce per call make the ciphertext, and so envelope_hash, fresh every
   * time (§10.3).
   */
  seal(kind: QueryKind, boxId: Buffer, box: StoredBox | null, replica: { epoch: number; replicaCount: number }): EncryptedEnvelope {
    const secret = randomBytes(KEY);
    const epk = EnvelopeCrypto.publicOf(secret);
    const inner = encodeCbor({
      k: kind,
      b: boxId,
      t: box ? box.tombstone : false,
      p: box ? box.payload : null,
      r: EnvelopeCrypto.replyKeyOf(secret),
    });
    const bodyLength = this.g.envelopeLength - KEY - NONCE - TAG;
    if (inner.length + 4 > bodyLength) throw new RangeError('courier query does not fit the envelope');
    const padded = Buffer.alloc(bodyLength);
    padded.writeUInt32BE(inner.length, 0);
    inner.copy(padded, 4);
    const nonce = randomBytes(NONCE);
    const messageCiphertext = Buffer.concat([epk, nonce, seal(this.requestKey(epk), nonce, padded)]);
    const nums = pickReplicas(replica.replicaCount);
    const envelopeDescriptor = encodeCbor({ Epoch: replica.epoch, ReplicaNums: nums, EnvelopeKey: secret });
    return { messageCiphertext, envelopeDescriptor };
  }

  /** The courier/replica side: decrypt an envelope; null when it is not one of ours. */
  openQuery(ciphertext: Uint8Array): CourierQuery | null {
    if (ciphertext.length !== this.g.envelopeLength) return null;
    const epk = ciphertext.subarray(0, KEY);
    const nonce = ciphertext.subarray(KEY, KEY + NONCE);
    const padded = open(this.requestKey(epk), nonce, ciphertext.subarray(KEY + NONCE));
    if (!padded) return null;
    try {
      const len = padded.readUInt32BE(0);
      const q = decodeCbor(padded.subarray(4, 4 + len));
      const kind = q.k as QueryKind;
      if (!['read', 'write', 'tombstone'].includes(kind) || !Buffer.isBuffer(q.b) || !Buffer.isBuffer(q.r)) return null;
      const box = kind === 'read' ? null : Buffer.isBuffer(q.p) ? { tombstone: q.t === true, payload: q.p } : null;
      if (kind !== 'read' && !box) return null;
      return { kind, boxId: q.b, box, replyKey: q.r };
    } catch {
      return null;
    }
  }

  /** The replica seals its answer for whoever holds the envelope's ephemeral secret. */
  static sealReply(replyKey: Buffer, reply: ReplicaReply): Buffer {
    const nonce = randomBytes(NONCE);
    const body = encodeCbor({ c: reply.code, b: reply.boxId, t: reply.box?.tombstone ?? false, p: reply.box?.payload ?? null });
    return Buffer.concat([nonce, seal(replyKey, nonce, body)]);
  }

  /** The daemon side: open a replica reply with the descriptor; null = MKEM decryption failed (22). */
  static openReply(envelopeDescriptor: Uint8Array, sealed: Buffer): ReplicaReply | null {
    let secret: unknown;
    try {
      secret = decodeCbor(envelopeDescriptor)?.EnvelopeKey;
    } catch {
      return null;
    }
    if (!Buffer.isBuffer(secret) || secret.length !== KEY) return null;
    const body = open(EnvelopeCrypto.replyKeyOf(secret), sealed.subarray(0, NONCE), sealed.subarray(NONCE));
    if (!body) return null;
    const r = decodeCbor(body);
    return { code: Number(r.c), boxId: r.b ?? null, box: Buffer.isBuffer(r.p) ? { tombstone: r.t === true, payload: r.p } : null };
  }
}

function pickReplicas(count: number): Buffer {
  if (count < 2) return Buffer.from([0, 0]);
  const a = randomInt(count);
  let b = randomInt(count - 1);
  if (b >= a) b++;
  return Buffer.from([a, b]);
}

// ------------------------------------------------------------ replica storage
export type WriteVerdict = 'written' | 'identical' | 'conflict';

/**
 * The replicas' boxes plus wake-ups for reads blocked on a box that does
 * not exist yet. A write may be given a replication lag: the verdict is
 * immediate (the replicas have it) but readers see the box only later.
 */
export class BoxStore {
  private readonly boxes = new Map<string, { box: StoredBox; visibleAt: number }>();
  private readonly waiters = new Map<string, Set<() => void>>();
  private readonly timers = new Set<NodeJS.Timeout>();

  get size(): number {
    return this.boxes.size;
  }

  /** The box as a reader sees it now (undefined while it is still replicating). */
  get(boxId: Buffer): StoredBox | undefined {
    const e = this.boxes.get(boxId.toString('hex'));
    return e && e.visibleAt <= Date.now() ? e.box : undefined;
  }

  /**
   * Write-once semantics (PIGEONHOLE §2.3): tombstones overwrite anything,
   * identical bytes are idempotent, anything else leaves the box unchanged.
   */
  write(boxId: Buffer, box: StoredBox, lagMs = 0): WriteVerdict {
    const key = boxId.toString('hex');
    const old = this.boxes.get(key)?.box;
    if (old && old.tombstone === box.tombstone && old.payload.equals(box.payload)) return 'identical';
    if (old && !box.tombstone) return 'conflict';
    this.boxes.set(key, { box, visibleAt: Date.now() + lagMs });
    if (lagMs <= 0) this.wake(key);
    else {
      const t = setTimeout(() => {
        this.timers.delete(t);
        this.wake(key);
      }, lagMs);
      this.timers.add(t);
    }
    return 'written';
  }

  private wake(key: string): void {
    const w = this.waiters.get(key);
    if (!w) return;
    this.waiters.delete(key);
    for (const fn of w) fn();
  }

  /** Resolves when the box is readable (at once if it is); rejects with the signal's reason on abort. */
  waitFor(boxId: Buffer, signal: AbortSignal): Promise<void> {
    const key = boxId.toString('hex');
    if (this.get(boxId)) return Promise.resolve();
    let set = this.waiters.get(key);
    if (!set) this.waiters.set(key, (set = new Set()));
    const mine = set;
    let wake: () => void = () => {};
    const written = new Promise<void>((resolve) => (wake = resolve));
    mine.add(wake);
    return abortable(written, signal).finally(() => {
      mine.delete(wake);
      if (mine.size === 0 && this.waiters.get(key) === mine) this.waiters.delete(key);
    });
  }

  /** Forget every box and pending wake-up timer (a fresh restart or stop). */
  clear(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.boxes.clear();
  }
}

// ------------------------------------------------------------- copy streams (§10.5)
export const ELEMENT_FLAG_START = 1;
export const ELEMENT_FLAG_FINAL = 2;
const ELEMENT_HEADER = 5;
const RECORD_HEADER = 4;

/** Record framing of the courier's byte stream: [4-byte BE length][courier envelope]. */
export function envelopeRecord(envelope: Buffer): Buffer {
  const r = Buffer.alloc(RECORD_HEADER + envelope.length);
  r.writeUInt32BE(envelope.length, 0);
  envelope.copy(r, RECORD_HEADER);
  return r;
}

export interface StreamState {
  /** The first stream byte has not been emitted yet, so the next element carries the start flag. */
  startPending: boolean;
  /** Stream bytes not yet packed into an element. */
  residual: Buffer;
}

/** The opaque `buffer` of the multi-payload / tombstone-range calls: a flag byte, then the residual bytes. */
export function encodeStreamBuffer(s: StreamState): Buffer | null {
  if (s.residual.length === 0 && !s.startPending) return null;
  return Buffer.concat([Buffer.from([s.startPending ? 1 : 0]), s.residual]);
}

export function decodeStreamBuffer(buffer: Buffer | null, isStart: boolean): StreamState | null {
  if (!buffer || buffer.length === 0) return { startPending: isStart, residual: Buffer.alloc(0) };
  if (buffer[0] > 1) return null;
  return { startPending: isStart || buffer[0] === 1, residual: Buffer.from(buffer.subarray(1)) };
}

/**
 * Pack stream bytes into elements of at most `elementData` data bytes.
 * flushAll: also emit a last partial element (the stateless single-payload
 * call, or an is_last call). The final flag goes on the last element of an
 * is_last call; a continued stream that ends with no data left still gets an
 * empty final element so the courier sees the end.
 */
export function packElements(
  g: BoxGeometry,
  state: StreamState,
  data: Buffer,
  opts: { isLast: boolean; flushAll: boolean; continued: boolean },
): { elements: Buffer[]; state: StreamState } {
  const stream = state.residual.length ? Buffer.concat([state.residual, data]) : data;
  const elements: Buffer[] = [];
  let startPending = state.startPending;
  let off = 0;
  const flush = opts.flushAll || opts.isLast;
  while (stream.length - off >= g.elementData || (flush && off < stream.length)) {
    const n = Math.min(g.elementData, stream.length - off);
    const last = off + n >= stream.length;
    let flags = 0;
    if (startPending) flags |= ELEMENT_FLAG_START;
    if (opts.isLast && last && flush) flags |= ELEMENT_FLAG_FINAL;
    startPending = false;
    const el = Buffer.alloc(ELEMENT_HEADER + n);
    el[0] = flags;
    el.writeUInt32BE(n, 1);
    stream.copy(el, ELEMENT_HEADER, off, off + n);
    elements.push(el);
    off += n;
  }
  if (opts.isLast && elements.length === 0 && opts.continued) {
    elements.push(Buffer.from([ELEMENT_FLAG_FINAL | (startPending ? ELEMENT_FLAG_START : 0), 0, 0, 0, 0]));
    startPending = false;
  }
  return { elements, state: { startPending, residual: Buffer.from(stream.subarray(off)) } };
}

/**
 * The courier's decoder: box plaintexts are concatenated into one byte
 * stream of elements (box boundaries need not match element boundaries,
 * which is what makes nested copies work), element data into one stream of
 * envelope records.
 */
export class CopyStreamDecoder {
  private elementBytes = Buffer.alloc(0);
  private recordBytes = Buffer.alloc(0);
  /** Set once the element carrying the final flag has been read. */
  finished = false;

  /** Feed one temp-box plaintext; returns the courier envelopes completed by it. Throws on a corrupt stream. */
  push(boxPlaintext: Buffer): Buffer[] {
    if (this.finished) return [];
    this.elementBytes = Buffer.concat([this.elementBytes, boxPlaintext]);
    const envelopes: Buffer[] = [];
    while (!this.finished && this.elementBytes.length >= ELEMENT_HEADER) {
      const flags = this.elementBytes[0];
      const len = this.elementBytes.readUInt32BE(1);
      if (flags > 3) throw new Error('invalid copy stream element flags');
      if (this.elementBytes.length < ELEMENT_HEADER + len) break;
      this.recordBytes = Buffer.concat([this.recordBytes, this.elementBytes.subarray(ELEMENT_HEADER, ELEMENT_HEADER + len)]);
      this.elementBytes = this.elementBytes.subarray(ELEMENT_HEADER + len);
      if (flags & ELEMENT_FLAG_FINAL) this.finished = true;
      while (this.recordBytes.length >= RECORD_HEADER) {
        const rlen = this.recordBytes.readUInt32BE(0);
        if (this.recordBytes.length < RECORD_HEADER + rlen) break;
        envelopes.push(Buffer.from(this.recordBytes.subarray(RECORD_HEADER, RECORD_HEADER + rlen)));
        this.recordBytes = this.recordBytes.subarray(RECORD_HEADER + rlen);
      }
    }
    if (this.finished && this.recordBytes.length > 0) throw new Error('copy stream ends inside an envelope record');
    return envelopes;
  }
}
