/**
 * The link to the daemon: one socket at a time (TCP, Unix or WebSocket,
 * dialed by socket.ts), its handshake (§2.1), the daemon's status, and the
 * connect/reconnect state machine with its one backoff (§2.6; also between
 * the attempts of connect({ retry: true })). Frames after the handshake go
 * to the client's hooks.
 */
import type { Duplex } from 'node:stream';

import type { Capabilities } from './capabilities';
import { describeDial } from './config';
import type { DialConfig } from './config';
import {
  CborError,
  DaemonDisconnectedError,
  InvalidArgumentError,
  KatzenpostError,
  OperationCancelledError,
  ProtocolError,
  ThinClientOfflineError,
  ThinClientTimeoutError,
} from './errors';
import type { ThinClientEvent } from './events';
import { checkFrameFields, decodeSessionTokenReply, decodeStatusEvent } from './messages';
import type { RawBody } from './messages';
import type { Transport } from './requests';
import type { Settings } from './settings';
import { dialDaemon, endSocket, writeBatched } from './socket';
import type { ConnectOptions, Logger } from './types';
import { booleanArg, optionalSignal } from './validate';
import { Backoff } from '../util/backoff';
import { abortReason } from '../util/deadline';
import { FrameDecoder, HEAD_RESPONSE_KINDS, RESPONSE_KINDS, decodeEnvelope, encodeFrame, encodeRequest, requestBodies } from '../wire';
import type { AnyRequestKind, PigeonholeGeometry, SphinxGeometry } from '../wire';

export type LinkState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

/** What the link hands to the rest of the client. */
export interface LinkHooks {
  /** Every event: the link's own (connection status, shutdown, daemon lost / back) and the ones it is given. */
  publish(ev: ThinClientEvent): void;
  /** A connection_status_event said the daemon is off the mixnet (after it was published). */
  mixnetDown(): void;
  /** A new_pki_document_event, in the handshake or later. */
  pkiEvent(body: RawBody): void;
  /** Any other frame after the handshake: the legacy events and the replies. */
  frame(kind: string, body: RawBody, connectionId: number): void;
  /**
   * A handshake completed: write what waits on `write` (the new connection;
   * Capabilities.kinds already holds what its daemon announced). Returns how
   * many ARQ requests were replayed.
   */
  ready(write: (frame: Buffer) => boolean, reconnect: { reconnecting: boolean; daemonRestarted: boolean }): number;
  /** Every waiting call fails: the first connect failed, the daemon was lost for good, or close()/disconnect(). */
  failAll(makeError: () => Error): void;
  /** close(): nothing will ever be published again. */
  closed(): void;
}

const KNOWN_RESPONSE_KINDS: readonly string[] = [...RESPONSE_KINDS, ...HEAD_RESPONSE_KINDS];
/** Pinned frames that answer no call: the events and the handshake's session_token_reply. */
const CALL_FREE_KINDS: ReadonlySet<string> = new Set(RESPONSE_KINDS.filter((k) => !k.endsWith('_reply') || k === 'session_token_reply'));

/** One socket (a TCP or Unix stream, or a WebSocket byte stream) and its handshake progress. */
interface Connection {
  id: number;
  purpose: 'connect' | 'reconnect';
  socket: Duplex;
  /** The top-level keys of the daemon's first frame: the reply kinds it knows (null until that frame). */
  envelopeKeys: ReadonlySet<string> | null;
  decoder: FrameDecoder;
  phase: 'status' | 'pki' | 'token' | 'ready';
  /** A shutdown_event arrived on this connection: its loss is graceful (§2.5). */
  sawShutdown: boolean;
  /** Failed or ending: ignore further frames and never write again. */
  dead: boolean;
  error: Error | null;
  timer: NodeJS.Timeout | null;
  /** Frames written this tick, sent together by flushWrites (in order). */
  outq: Buffer[];
  flushScheduled: boolean;
}

/** A connect() call waiting for the handshake; `retry`: it wants another attempt after a failed one. */
interface ConnectWaiter {
  retry: boolean;
  resolve(): void;
  reject(e: Error): void;
}

export class DaemonLink implements Transport {
  private readonly dial: DialConfig;
  private readonly log: Logger;
  private readonly backoff: Backoff;
  private linkState: LinkState = 'idle';
  private active: Connection | null = null;
  private handshaking: Connection | null = null;
  private connectionCounter = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  /** The daemon instance token seen before the last loss, to detect a restart. */
  private tokenBeforeLoss: Buffer | null = null;
  private connectWaiters: ConnectWaiter[] = [];

  // What the daemon said; written only here.
  /** Its instance token from the last connection_status_event. */
  instanceToken: Buffer | null = null;
  appId: Buffer | null = null;
  /** Whether the last handshake resumed an existing daemon session. */
  resumed = false;
  /** Its connection to the mixnet (last connection_status_event); false while our socket is down. */
  mixnetConnected = false;
  /** Why the socket to the daemon is down: the last socket error of a lost connection or a failed (re)connect. */
  lastSocketError: Error | null = null;
  sphinx: SphinxGeometry | null = null;
  pigeonhole: PigeonholeGeometry | null = null;

  constructor(
    private readonly settings: Settings,
    private readonly caps: Capabilities,
    private readonly hooks: LinkHooks,
  ) {
    this.dial = settings.dial;
    this.log = settings.log;
    // Exponential backoff with ±20 % jitter (§2.6 step 3), so that many clients of one restarted daemon
    // do not return in lockstep. The first delay is capped by the maximum like every later one.
    this.backoff = new Backoff(Math.min(settings.reconnectInitialDelayMs, settings.reconnectMaxDelayMs), settings.reconnectMaxDelayMs);
  }

  get state(): LinkState {
    return this.linkState;
  }

  /** Our socket to the daemon is up and its handshake is done (there is an active connection only in state 'connected'). */
  isDaemonConnected(): boolean {
    return this.active !== null && !this.active.dead;
  }

  /** See ThinClient.connect(). */
  async connect(opts: ConnectOptions): Promise<void> {
    const signal = optionalSignal('signal', opts.signal);
    const retry = opts.retry === undefined ? false : booleanArg('retry', opts.retry);
    switch (this.linkState) {
      case 'closed':
        throw new DaemonDisconnectedError('the client is closed');
      case 'connected':
        return;
      case 'connecting':
      case 'reconnecting':
        return this.waitForConnection(retry, signal);
      case 'idle': {
        if (signal?.aborted) throw connectAborted(signal);
        this.linkState = 'connecting';
        this.backoff.reset();
        const done = this.waitForConnection(retry, signal);
        this.openConnection('connect');
        return done;
      }
    }
  }

  // --------------------------------------------------------------- writing
  encode(kind: AnyRequestKind, body: RawBody, sizeArg: string): Buffer {
    const cbor = encodeRequest(kind, body);
    const max = this.settings.maxFrameLength;
    if (cbor.length > max) {
      throw new InvalidArgumentError(sizeArg, `a value whose request fits the maximum frame length of ${max} bytes`, `a ${cbor.length}-byte frame`);
    }
    return encodeFrame(cbor);
  }

  /** Write on the live connection; false when there is none (the caller keeps the frame for the next one). */
  write(frame: Buffer): boolean {
    return this.active !== null && this.writeOn(this.active, frame);
  }

  /** Write now or throw: for frames nobody replays (legacy sends). */
  writeNow(frame: Buffer): void {
    if (!this.write(frame)) throw new DaemonDisconnectedError('the daemon connection is down');
  }

  requireUsable(): void {
    if (this.linkState === 'closed') throw new DaemonDisconnectedError('the client is closed');
    if (this.linkState === 'idle') throw new DaemonDisconnectedError('not connected to the daemon: call connect() first');
  }

  /** Legacy sends go out only while the daemon is on the mixnet (all bindings refuse otherwise). */
  requireOnline(): void {
    this.requireUsable();
    // The daemon itself unreachable is another problem than a daemon that cannot reach the mixnet: say which.
    if (!this.isDaemonConnected()) {
      const e = this.lastSocketError;
      throw new DaemonDisconnectedError(`the daemon at ${describeDial(this.dial)} is not reachable${e ? `: ${e.message}` : ''}; reconnecting`);
    }
    if (!this.mixnetConnected) throw new ThinClientOfflineError();
  }

  /**
   * Write a frame, whole and in order. Frames are queued and leave together
   * (flushWrites) on process.nextTick, which runs once the current callback
   * and every promise continuation it set off are done: the calls made in
   * one burst (all the replies of one socket read answered at once) cost one
   * socket.write, and a lone call waits for nothing (the tick runs before
   * the event loop goes back to I/O).
   */
  private writeOn(conn: Connection, frame: Buffer): boolean {
    if (conn.dead || conn.socket.destroyed || !conn.socket.writable) return false;
    conn.outq.push(frame);
    if (!conn.flushScheduled) {
      conn.flushScheduled = true;
      process.nextTick(flushLater, this, conn);
    }
    return true;
  }

  /** Write the queued frames (see writeBatched). A dead connection drops them. */
  flushWrites(conn: Connection): void {
    const q = conn.outq;
    if (q.length === 0) return;
    conn.outq = [];
    if (conn.dead || conn.socket.destroyed || !conn.socket.writable) return;
    writeBatched(conn.socket, q);
  }

  // ---------------------------------------------------- sockets and frames
  /** A waiter for the next handshake; `signal` aborting removes it (and gives the first connect up when nobody waits any more). */
  private waitForConnection(retry: boolean, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(connectAborted(signal));
      const onAbort = (): void => {
        this.connectWaiters = this.connectWaiters.filter((x) => x !== w);
        reject(connectAborted(signal));
        if (this.linkState === 'connecting' && this.connectWaiters.length === 0) this.abandonConnect();
      };
      const w: ConnectWaiter = {
        retry,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (e) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.connectWaiters.push(w);
    });
  }

  private settleConnectWaiters(err: Error | null): void {
    for (const w of this.connectWaiters.splice(0)) {
      if (err) w.reject(err);
      else w.resolve();
    }
  }

  /** Every connect() of a first connection was aborted: stop the attempt in progress or the wait for the next one. */
  private abandonConnect(): void {
    const hs = this.handshaking;
    this.handshaking = null;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.linkState = 'idle';
    this.mixnetConnected = false;
    if (hs) this.failConnection(hs, new OperationCancelledError('connect() was aborted'));
    const e = this.lastSocketError;
    this.hooks.failAll(() => new DaemonDisconnectedError(`not connected: connect() was aborted${e ? ` (last attempt: ${e.message})` : ''}`));
  }

  private openConnection(purpose: Connection['purpose']): Connection {
    const d = this.dial;
    const socket = dialDaemon(d, this.settings);
    const conn: Connection = {
      id: ++this.connectionCounter,
      purpose,
      socket,
      envelopeKeys: null,
      decoder: new FrameDecoder({
        maxFrameLength: this.settings.maxFrameLength,
        frameTimeoutMs: this.settings.frameTimeoutMs,
        // A daemon that stops mid-frame would otherwise hold the buffer and look connected forever.
        onFrameTimeout: (e) => this.failConnection(conn, new ThinClientTimeoutError(`daemon frame dropped: ${e.message}`)),
      }),
      phase: 'status',
      sawShutdown: false,
      dead: false,
      error: null,
      timer: null,
      outq: [],
      flushScheduled: false,
    };
    this.handshaking = conn;
    const ms = this.settings.handshakeTimeoutMs;
    conn.timer = setTimeout(() => {
      this.failConnection(conn, new ThinClientTimeoutError(`handshake with the daemon at ${describeDial(d)} did not complete within ${ms} ms`));
    }, ms);
    socket.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    socket.on('end', () => {
      conn.dead = true; // the daemon hung up; nothing more can be written
    });
    socket.on('error', (err) => {
      conn.error ??= err;
    });
    socket.on('close', () => this.onClose(conn));
    this.log.debug(`connection ${conn.id}: dialing ${describeDial(d)}`);
    return conn;
  }

  /** Tear a connection down; its 'close' handler decides what happens next. */
  private failConnection(conn: Connection, err: Error): void {
    if (conn.dead && conn.socket.destroyed) return;
    conn.error ??= err;
    conn.dead = true;
    conn.socket.destroy();
  }

  private onData(conn: Connection, chunk: Buffer): void {
    if (conn.dead) return;
    let frames: Buffer[];
    try {
      frames = conn.decoder.push(chunk);
    } catch (e) {
      // An oversize length prefix: we cannot resynchronise, so drop the connection (§9.1).
      this.failConnection(conn, new ProtocolError(`daemon frame rejected: ${(e as Error).message}`));
      return;
    }
    for (const frame of frames) {
      if (conn.dead) return;
      let env: { kind: string; body: RawBody; keys: string[] };
      try {
        env = decodeEnvelope(frame, KNOWN_RESPONSE_KINDS);
      } catch (e) {
        // Like the Python and Rust bindings: an undecodable frame is a read error (§1.2, §2.6).
        this.failConnection(conn, new CborError(`undecodable frame from the daemon: ${(e as Error).message}`, { cause: e }));
        return;
      }
      // The first frame tells which kinds this daemon knows (its full envelope).
      conn.envelopeKeys ??= new Set(env.keys);
      try {
        this.handleFrame(conn, env.kind, env.body);
      } catch (e) {
        this.failConnection(conn, e instanceof Error ? e : new ProtocolError(String(e)));
        return;
      }
    }
  }

  // ------------------------------------------------------------- handshake
  private handleFrame(conn: Connection, kind: string, body: RawBody): void {
    // A malformed reply fails only its own call (RequestTable.route); a malformed event is a read error.
    if (CALL_FREE_KINDS.has(kind)) checkFrameFields(kind, body);
    if (kind === 'shutdown_event') {
      // Recorded synchronously, before the EOF that follows can be seen (§10.2).
      conn.sawShutdown = true;
      this.hooks.publish({ type: 'shutdown' });
      return;
    }
    switch (conn.phase) {
      case 'status':
        if (kind !== 'connection_status_event') throw new ProtocolError(`handshake: expected connection_status_event as the first frame, got ${kind}`);
        this.applyStatus(body, true);
        conn.phase = 'pki';
        return;
      case 'pki':
        if (kind === 'connection_status_event') {
          // The pinned daemon can queue a status broadcast here (§2.1 race); accept it.
          this.applyStatus(body, true);
          return;
        }
        if (kind !== 'new_pki_document_event') throw new ProtocolError(`handshake: expected new_pki_document_event as the second frame, got ${kind}`);
        this.hooks.pkiEvent(body);
        conn.phase = 'token';
        if (!this.writeOn(conn, encodeFrame(encodeRequest('session_token', requestBodies.sessionToken(this.settings.token))))) {
          throw new DaemonDisconnectedError('the daemon closed the connection during the handshake');
        }
        return;
      case 'token':
        if (kind === 'session_token_reply') {
          const reply = decodeSessionTokenReply(body);
          this.appId = reply.appId;
          this.resumed = reply.resumed;
          conn.phase = 'ready';
          this.onHandshakeComplete(conn);
          return;
        }
        break; // status/PKI broadcasts and queued replies: process normally (§10.1)
      case 'ready':
        break;
    }
    switch (kind) {
      case 'connection_status_event':
        this.applyStatus(body, false);
        return;
      case 'new_pki_document_event':
        this.hooks.pkiEvent(body);
        return;
      case 'session_token_reply':
        this.log.debug(`connection ${conn.id}: ignoring a late session_token_reply`);
        return;
    }
    this.hooks.frame(kind, body, conn.id);
  }

  private applyStatus(body: RawBody, strict: boolean): void {
    const status = decodeStatusEvent(body, strict);
    this.instanceToken = status.instanceToken;
    if (status.sphinx) this.sphinx = status.sphinx;
    if (status.pigeonhole) this.pigeonhole = status.pigeonhole;
    this.mixnetConnected = status.isConnected;
    if (!this.sphinx || !this.pigeonhole) throw new ProtocolError('connection_status_event: incompatible daemon: no geometry');
    this.hooks.publish({
      type: 'connectionStatus',
      isConnected: this.mixnetConnected,
      instanceToken: Buffer.from(status.instanceToken),
      sphinxGeometry: { ...this.sphinx },
      pigeonholeGeometry: { ...this.pigeonhole },
    });
    if (!this.mixnetConnected) this.hooks.mixnetDown();
  }

  private onHandshakeComplete(conn: Connection): void {
    if (conn.timer) clearTimeout(conn.timer);
    conn.timer = null;
    if (this.handshaking === conn) this.handshaking = null;
    if (this.linkState !== 'connecting' && this.linkState !== 'reconnecting') {
      this.failConnection(conn, new OperationCancelledError('connection no longer wanted'));
      return;
    }
    const reconnecting = this.linkState === 'reconnecting';
    const before = this.tokenBeforeLoss;
    const now = this.instanceToken;
    const daemonRestarted = reconnecting && before !== null && now !== null && !before.equals(now);
    this.caps.kinds = conn.envelopeKeys;
    this.active = conn;
    this.linkState = 'connected';
    this.backoff.reset();
    this.lastSocketError = null;
    // Every reconnect replays the in-flight ARQ operations. A new daemon knows
    // nothing of them; and a daemon that resumed our session has dropped them
    // too: kpclientd discards Pigeonhole replies for a disconnected client and
    // deletes the ARQ entry at its next resend (measured on v0.0.99; the
    // reference bindings replay only on a restart and so lose these).
    const replayed = this.hooks.ready((frame) => this.writeOn(conn, frame), { reconnecting, daemonRestarted });
    this.log.info(
      `connection ${conn.id}: ${reconnecting ? 're' : ''}connected to ${describeDial(this.dial)} (resumed ${this.resumed}${reconnecting ? `, daemon restarted ${daemonRestarted}, replayed ${replayed}` : ''})`,
    );
    if (reconnecting && now) {
      this.hooks.publish({ type: 'daemonReconnected', instanceToken: Buffer.from(now), resumed: this.resumed, daemonRestarted, replayed });
    }
    this.settleConnectWaiters(null);
  }

  // ------------------------------------------------------ loss and reconnect
  private onClose(conn: Connection): void {
    conn.dead = true;
    if (conn.timer) clearTimeout(conn.timer);
    conn.timer = null;
    conn.decoder.close(); // releases a partial frame and its deadline
    if (conn.phase !== 'ready') {
      if (this.handshaking === conn) this.handshaking = null;
      this.onHandshakeFailed(conn, this.handshakeError(conn));
      return;
    }
    if (conn !== this.active) return; // closed by close()/disconnect(), or superseded
    this.active = null;
    this.onConnectionLost(conn);
  }

  private handshakeError(conn: Connection): Error {
    const e = conn.error;
    if (e instanceof KatzenpostError) return e;
    const where = describeDial(this.dial);
    if (e) return new DaemonDisconnectedError(`cannot connect to the daemon at ${where}: ${e.message}`);
    return new DaemonDisconnectedError(`the daemon at ${where} closed the connection during the handshake`);
  }

  private onHandshakeFailed(conn: Connection, err: Error): void {
    this.log.debug(`connection ${conn.id}: handshake failed: ${err.message}`);
    if (conn.error instanceof OperationCancelledError) return; // torn down on purpose: close(), disconnect(), an aborted connect()
    this.lastSocketError = conn.error ?? err;
    if (this.linkState === 'connecting' && conn.purpose === 'connect') {
      // Plain connect() calls fail with this attempt; connect({ retry: true }) calls wait for the next one.
      for (const w of this.connectWaiters.filter((x) => !x.retry)) w.reject(err);
      this.connectWaiters = this.connectWaiters.filter((x) => x.retry);
      if (this.connectWaiters.length > 0) {
        this.attemptFailed(err, false, this.scheduleAttempt());
        return;
      }
      this.linkState = 'idle';
      this.mixnetConnected = false;
      this.attemptFailed(err, false, null);
      this.hooks.failAll(() => new DaemonDisconnectedError(`not connected: ${err.message}`));
    } else if (this.linkState === 'reconnecting' && conn.purpose === 'reconnect') {
      this.attemptFailed(err, true, this.scheduleAttempt());
    }
  }

  private attemptFailed(error: Error, reconnecting: boolean, retryInMs: number | null): void {
    this.hooks.publish({ type: 'connectFailed', error, reconnecting, retryInMs });
  }

  private onConnectionLost(conn: Connection): void {
    const err = conn.error;
    this.lastSocketError = err;
    this.log.warn(`connection ${conn.id}: lost the daemon${conn.sawShutdown ? ' (shutdown)' : ''}${err ? `: ${err.message}` : ''}`);
    this.tokenBeforeLoss = this.instanceToken;
    // §2.6 step 2: the mixnet state is unknown until the next status event.
    this.mixnetConnected = false;
    if (this.settings.reconnect) {
      this.linkState = 'reconnecting';
      this.backoff.reset();
    } else {
      this.linkState = 'idle';
    }
    this.hooks.publish({ type: 'daemonDisconnected', isGraceful: conn.sawShutdown, error: err });
    if (this.linkState === 'reconnecting') {
      this.scheduleAttempt();
    } else if (this.linkState === 'idle') {
      const why = `the daemon connection was lost${err ? `: ${err.message}` : ''}`;
      this.hooks.failAll(() => new DaemonDisconnectedError(why, conn.sawShutdown));
    }
  }

  /**
   * A backoff delay precedes every reconnect attempt (§2.6 step 3) and every
   * further attempt of connect({ retry: true }). Returns the delay.
   */
  private scheduleAttempt(): number {
    const wanted = this.linkState;
    const delay = this.backoff.next();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.log.debug(`${wanted === 'reconnecting' ? 're' : ''}connecting in ${delay} ms (attempt ${this.backoff.attempts})`);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.linkState === wanted) this.openConnection(wanted === 'reconnecting' ? 'reconnect' : 'connect');
    }, delay);
    return delay;
  }

  /** See ThinClient.close() (sayGoodbye: thin_close first) and ThinClient.disconnect(). */
  async shutdown(sayGoodbye: boolean): Promise<void> {
    const finalState: LinkState = sayGoodbye ? 'closed' : 'idle';
    if (this.linkState === 'closed' || this.linkState === 'idle') {
      if (sayGoodbye && this.linkState !== 'closed') this.linkState = 'closed';
      if (this.linkState === 'closed') this.hooks.closed();
      return;
    }
    const conn = this.active;
    const hs = this.handshaking;
    this.active = null;
    this.handshaking = null;
    this.linkState = finalState;
    this.mixnetConnected = false;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const why = sayGoodbye ? 'the client was closed' : 'the client was disconnected';
    this.hooks.failAll(() => new OperationCancelledError(why));
    this.settleConnectWaiters(new OperationCancelledError(why));
    if (hs) this.failConnection(hs, new OperationCancelledError(why));
    if (conn) {
      if (sayGoodbye) this.writeOn(conn, encodeFrame(encodeRequest('thin_close', requestBodies.thinClose())));
      this.flushWrites(conn); // what was written before close() still goes out, thin_close last
      conn.dead = true;
      await endSocket(conn.socket);
    }
    if (sayGoodbye) this.hooks.closed();
  }
}

/** The nextTick callback of writeOn (a plain function: no closure per burst). */
function flushLater(link: DaemonLink, conn: Connection): void {
  conn.flushScheduled = false;
  link.flushWrites(conn);
}

function connectAborted(signal: AbortSignal | undefined): Error {
  return abortReason(signal, () => new OperationCancelledError('connect() was aborted'));
}
