/**
 * One client connection of the emulated daemon: request framing (with the
 * deadline on partial frames), the ordered send queue with reply stalls,
 * broadcasts held until the handshake is done, and backpressure (a bound
 * per connection, and a cap on the memory of all connections together).
 */
import type { Duplex } from 'node:stream';
import { FrameDecoder } from '../wire';
import type { Session } from './sessions';

/** What a connection needs from the server that owns it. */
export interface ConnectionHost {
  /** Every outgoing frame waits until this time (the stallReplies fault); 0 = no stall. */
  readonly stalledUntil: number;
  /** Bytes a connection may have waiting to be written before it is dropped. */
  readonly maxSendQueueBytes: number;
  log(line: string): void;
  /** Called whenever a connection's share of memory grows. */
  enforceMemoryCap(): void;
}

let nextConnectionId = 1;

export class Connection {
  readonly id = nextConnectionId++;
  session: Session;
  /** session_token_reply sent (or the client skipped the token): broadcasts flow directly. */
  handshakeReplied = false;
  /** Broadcasts held back until session_token_reply has been sent (§10.1). */
  private held: Buffer[] = [];
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private flushTimer: NodeJS.Timeout | null = null;
  /** Writes of this tick are held (corkForTick). */
  private corkedForTick = false;
  closed = false;
  readonly decoder: FrameDecoder;

  constructor(
    private readonly emu: ConnectionHost,
    readonly socket: Duplex,
    session: Session,
    framing: { maxFrameLength: number; frameTimeoutMs: number },
  ) {
    this.session = session;
    this.decoder = new FrameDecoder({
      ...framing,
      onFrameTimeout: (e) => {
        this.emu.log(`conn ${this.id}: ${e.message}; closing`);
        this.destroy();
      },
    });
  }

  /** Replies written or queued but not yet taken by the peer (our queues plus the socket's). */
  get queuedBytes(): number {
    return this.pendingBytes + this.socket.writableLength;
  }

  /** What this connection costs in memory: queued replies plus the partial request frame. */
  get bufferedBytes(): number {
    return this.queuedBytes + this.decoder.reservedBytes;
  }

  /** Queue a frame; frames leave in order. `force` ignores a reply stall (shutdown). */
  send(frame: Buffer, force = false): void {
    if (this.closed) return;
    if (!force && (this.emu.stalledUntil > Date.now() || this.pending.length > 0)) {
      this.pending.push(frame);
      this.pendingBytes += frame.length;
      this.scheduleFlush();
    } else {
      if (force) this.flushNow();
      else this.corkForTick();
      this.socket.write(frame);
    }
    this.checkBound();
  }

  /**
   * Hold this tick's writes and let them leave together on process.nextTick
   * (one writev for all the replies answered from one socket read, instead
   * of a syscall each). The tick runs before the event loop polls again, so
   * a lone reply waits for nothing.
   */
  private corkForTick(): void {
    if (this.corkedForTick) return;
    this.corkedForTick = true;
    this.socket.cork();
    process.nextTick(uncorkAfterTick, this);
  }

  /** End of the tick: the held writes leave. */
  uncorkTick(): void {
    this.corkedForTick = false;
    if (!this.closed) this.socket.uncork();
  }

  /** A broadcast: held until the handshake is complete. */
  broadcast(frame: Buffer): void {
    if (this.closed) return;
    if (!this.handshakeReplied) {
      this.held.push(frame);
      this.pendingBytes += frame.length;
      this.checkBound();
    } else this.send(frame);
  }

  releaseHeld(): void {
    this.handshakeReplied = true;
    const held = this.held;
    this.held = [];
    for (const f of held) {
      this.pendingBytes -= f.length;
      this.send(f);
    }
  }

  private checkBound(): void {
    if (this.closed) return;
    if (this.queuedBytes > this.emu.maxSendQueueBytes) {
      this.emu.log(`conn ${this.id}: send queue over ${this.emu.maxSendQueueBytes} bytes (client not reading), dropping the connection`);
      this.destroy();
      return;
    }
    this.emu.enforceMemoryCap();
  }

  private scheduleFlush(): void {
    if (this.flushTimer) return;
    const wait = Math.max(0, this.emu.stalledUntil - Date.now());
    this.flushTimer = setTimeout(() => {
      this.flushTimer = null;
      if (this.emu.stalledUntil > Date.now()) this.scheduleFlush();
      else this.flushNow();
    }, wait);
  }

  flushNow(): void {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    const frames = this.pending;
    this.pending = [];
    this.pendingBytes -= frames.reduce((n, f) => n + f.length, 0);
    if (this.closed || frames.length === 0) return;
    this.socket.cork();
    for (const f of frames) this.socket.write(f);
    this.socket.uncork();
  }

  /** Write raw bytes that are not a well-formed frame (fault injection), bypassing the queue. */
  writeRaw(bytes: Buffer): void {
    if (this.closed) return;
    this.flushNow();
    this.socket.write(bytes);
  }

  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.pending = [];
    this.held = [];
    this.decoder.close();
    this.socket.destroy();
  }
}

/** The nextTick callback of corkForTick (a plain function: no closure per tick). */
function uncorkAfterTick(conn: Connection): void {
  conn.uncorkTick();
}

/**
 * Keep the memory of all connections together under `maxBufferedBytes` by
 * dropping the connection that holds the most (on a tie, the newest),
 * until the rest fit.
 */
export function enforceMemoryCap(connections: Iterable<Connection>, maxBufferedBytes: number, log: (line: string) => void): void {
  for (;;) {
    let total = 0;
    let worst: Connection | null = null;
    for (const c of connections) {
      if (c.closed) continue;
      const held = c.bufferedBytes;
      total += held;
      if (!worst || held >= worst.bufferedBytes) worst = c;
    }
    if (!worst || total <= maxBufferedBytes) return;
    log(
      `conn ${worst.id}: memory held by all connections (${total} bytes) is over the cap of ${maxBufferedBytes} bytes; ` +
        `dropping this connection, which holds the most: ${worst.queuedBytes} bytes of queued unsent replies, ` +
        `${worst.decoder.reservedBytes} bytes for a partial request frame`,
    );
    worst.destroy();
  }
}
