/**
 * Length-prefixed framing (PROTOCOL.md §1.2): encodeFrame and the
 * incremental FrameDecoder with its size limit and per-frame deadline.
 */
import { DEFAULT_MAX_FRAME_LENGTH, FRAME_PREFIX_LENGTH } from './sizes';

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
