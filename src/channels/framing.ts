/**
 * Channel message framing, version 1.
 *
 * A Pigeonhole box holds at most MaxPlaintextPayloadLength bytes (1553 on
 * kpclientd v0.0.76, 1549 on v0.0.99: the geometry the daemon announces)
 * and box boundaries are not message boundaries once a payload goes through
 * a copy stream. Every channel message therefore starts,
 * at a box boundary, with a small header that tells the reader how to parse it.
 *
 * ```
 * offset  size  field
 * 0       2     magic 0x4B 0x43 ("KC", Katzenpost Channel)
 * 2       1     version = 0x01
 * 3       1     kind: 0x01 single, 0x02 large (0x03.. reserved)
 *
 * kind 0x01 (single): the message occupies exactly one box.
 * 4       n     payload; n = box plaintext length - 4 (0 allowed)
 *
 * kind 0x02 (large): the message spans k >= 2 consecutive boxes.
 * 4       4     T = payload length, unsigned 32-bit big-endian
 * 8       32    BLAKE2b-256(payload)
 * 40      ...   the first bytes of the payload
 * ```
 *
 * A large message's framed bytes (40-byte header + T payload bytes) are handed
 * to a copy stream as the payload of one destination; the daemon cuts them
 * into consecutive destination boxes of (MaxPlaintextPayloadLength - 4) bytes
 * ({@link copyBoxLength}), the last box holding the remainder. The sender
 * hands them over in several calls, each a whole number of boxes, so the boxes
 * are the same as from one call. Continuation boxes carry NO header of their
 * own: a reader that saw a large header concatenates the plaintexts of the
 * following boxes, in index order, until it holds exactly 40 + T bytes, then
 * checks the hash. More bytes than that, a hash mismatch, or a tombstone in a
 * continuation box make the message malformed.
 *
 * The sender uses kind 0x01 whenever 4 + payload length fits in one box, so a
 * payload of up to MaxPlaintextPayloadLength - 4 bytes (1549) is written
 * directly, and larger payloads (up to {@link MAX_MESSAGE_LENGTH}) go through
 * a copy command. A box whose first four bytes are not a known header (another
 * writer, or a future version) is reported as malformed and skipped.
 * An empty payload is a valid single message (a 4-byte box, not a tombstone).
 *
 * The index of a message is the counter of its first box (decimal string).
 */
import { blake2b256 } from '../client/crypto';
import { MAX_COPY_PAYLOAD_LENGTH } from '../wire';

export const FRAME_MAGIC_0 = 0x4b;
export const FRAME_MAGIC_1 = 0x43;
export const FRAME_VERSION = 1;
export const KIND_SINGLE = 0x01;
export const KIND_LARGE = 0x02;
/** Bytes before the payload in a single-box message. */
export const SINGLE_HEADER_LENGTH = 4;
/** Bytes before the payload in the first box of a large message. */
export const LARGE_HEADER_LENGTH = 40;
/** The largest payload a channel message can carry: one copy call's limit minus the header. */
export const MAX_MESSAGE_LENGTH = MAX_COPY_PAYLOAD_LENGTH - LARGE_HEADER_LENGTH;

/** Largest payload that still fits in a single box for the given box size. */
export function maxSinglePayload(maxPlaintextPayloadLength: number): number {
  return maxPlaintextPayloadLength - SINGLE_HEADER_LENGTH;
}

/** Framed bytes a copy stream puts in each destination box (all but the last are full). */
export function copyBoxLength(maxPlaintextPayloadLength: number): number {
  return maxPlaintextPayloadLength - 4;
}

/** True when the payload needs a copy stream (kind 0x02). */
export function needsCopy(payloadLength: number, maxPlaintextPayloadLength: number): boolean {
  return payloadLength > maxSinglePayload(maxPlaintextPayloadLength);
}

/** Frames a payload as one single-box message (kind 0x01). */
export function encodeSingle(payload: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(SINGLE_HEADER_LENGTH + payload.length);
  out[0] = FRAME_MAGIC_0;
  out[1] = FRAME_MAGIC_1;
  out[2] = FRAME_VERSION;
  out[3] = KIND_SINGLE;
  out.set(payload, SINGLE_HEADER_LENGTH);
  return out;
}

function checkMessageLength(payloadLength: number): void {
  if (payloadLength > MAX_MESSAGE_LENGTH) {
    throw new RangeError(`payload of ${payloadLength} bytes exceeds the ${MAX_MESSAGE_LENGTH}-byte channel message limit`);
  }
}

/** The 40-byte header of a large message (kind 0x02) of `payloadLength` bytes with BLAKE2b-256 `hash`. */
export function largeHeader(payloadLength: number, hash: Uint8Array): Buffer {
  checkMessageLength(payloadLength);
  const out = Buffer.allocUnsafe(LARGE_HEADER_LENGTH);
  out[0] = FRAME_MAGIC_0;
  out[1] = FRAME_MAGIC_1;
  out[2] = FRAME_VERSION;
  out[3] = KIND_LARGE;
  out.writeUInt32BE(payloadLength, 4);
  out.set(hash, 8);
  return out;
}

/** Frames a payload as a large message (kind 0x02): the copy stream's destination payload, whole. */
export function encodeLarge(payload: Uint8Array): Buffer {
  checkMessageLength(payload.length);
  return Buffer.concat([largeHeader(payload.length, blake2b256(payload)), payload]);
}

/** What the first box of a message says about it. */
export type FirstBox =
  | { kind: 'single'; payload: Buffer }
  | { kind: 'large'; totalLength: number; hash: Buffer; framedLength: number; first: Buffer }
  | { kind: 'malformed'; reason: string };

/** Parses the plaintext of a box that starts a message. */
export function parseFirstBox(box: Buffer): FirstBox {
  if (box.length < SINGLE_HEADER_LENGTH || box[0] !== FRAME_MAGIC_0 || box[1] !== FRAME_MAGIC_1) {
    return { kind: 'malformed', reason: 'box does not start with a channel message header' };
  }
  if (box[2] !== FRAME_VERSION) return { kind: 'malformed', reason: `unsupported framing version ${box[2]}` };
  if (box[3] === KIND_SINGLE) return { kind: 'single', payload: Buffer.from(box.subarray(SINGLE_HEADER_LENGTH)) };
  if (box[3] === KIND_LARGE) {
    if (box.length < LARGE_HEADER_LENGTH) return { kind: 'malformed', reason: 'truncated large-message header' };
    const totalLength = box.readUInt32BE(4);
    const framedLength = LARGE_HEADER_LENGTH + totalLength;
    if (totalLength > MAX_MESSAGE_LENGTH) return { kind: 'malformed', reason: `large message length ${totalLength} over the limit` };
    if (box.length >= framedLength) {
      // A large header must be followed by at least one continuation box.
      return { kind: 'malformed', reason: 'large-message header on a message that fits in its first box' };
    }
    return { kind: 'large', totalLength, hash: Buffer.from(box.subarray(8, 40)), framedLength, first: Buffer.from(box) };
  }
  return { kind: 'malformed', reason: `unknown message kind 0x${box[3].toString(16).padStart(2, '0')}` };
}

export type Assembled = { ok: true; payload: Buffer } | { ok: false; reason: string };

/**
 * Reassembles a large message box by box into one Buffer of its payload
 * length, allocated once: a box's bytes are copied in as it arrives.
 */
export class LargeMessageAssembler {
  private readonly payload: Buffer;
  /** Framed bytes received so far, the first box's included. */
  private framed: number;

  constructor(private readonly header: Extract<FirstBox, { kind: 'large' }>) {
    this.payload = Buffer.allocUnsafe(header.totalLength);
    header.first.copy(this.payload, 0, LARGE_HEADER_LENGTH);
    this.framed = header.first.length;
  }

  /** Framed bytes still to come (0 once every box is in). */
  get missing(): number {
    return Math.max(0, this.header.framedLength - this.framed);
  }

  /**
   * Adds the plaintext of the next continuation box. Returns the reason the
   * message is malformed when the box holds more bytes than the message has left.
   */
  add(box: Buffer): string | null {
    if (this.framed + box.length > this.header.framedLength) {
      return `large message spans ${this.framed + box.length} bytes, header says ${this.header.framedLength}`;
    }
    box.copy(this.payload, this.framed - LARGE_HEADER_LENGTH);
    this.framed += box.length;
    return null;
  }

  /** The payload once every box is in and its hash matches the header's. */
  finish(): Assembled {
    if (this.framed !== this.header.framedLength) {
      return { ok: false, reason: `large message spans ${this.framed} bytes, header says ${this.header.framedLength}` };
    }
    if (!blake2b256(this.payload).equals(this.header.hash)) return { ok: false, reason: 'large message hash mismatch' };
    return { ok: true, payload: this.payload };
  }
}

/**
 * Reassembles a large message from its boxes (first box included), or
 * explains why they do not form one.
 */
export function assembleLarge(header: Extract<FirstBox, { kind: 'large' }>, boxes: readonly Buffer[]): Assembled {
  const spans = boxes.reduce((n, b) => n + b.length, 0);
  if (spans !== header.framedLength) {
    return { ok: false, reason: `large message spans ${spans} bytes, header says ${header.framedLength}` };
  }
  const assembler = new LargeMessageAssembler(header);
  for (const box of boxes.slice(1)) assembler.add(box);
  return assembler.finish();
}
