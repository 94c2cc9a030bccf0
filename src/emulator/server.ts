/**
 * The emulated kpclientd: sockets, per-connection sessions, the handshake,
 * bounded send queues, a deadline on partial request frames and a memory
 * cap across connections, ARQ operations, the legacy echo path, epochs and
 * fault injection (PROTOCOL.md §1-§2, §7.6, §10; PIGEONHOLE.md §2).
 *
 * It has no anonymity whatsoever: it is a single process holding every
 * "box" in memory, for tests and demos.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import * as net from 'node:net';
import { resolve as resolvePath } from 'node:path';
import type { Duplex } from 'node:stream';
import { setTimeout as sleepTimer } from 'node:timers/promises';
import type { DialConfig } from '../client/config';
import {
  APP_ID_LENGTH,
  DEFAULT_FRAME_TIMEOUT_MS,
  DEFAULT_MAX_FRAME_LENGTH,
  DEFAULT_SPHINX_GEOMETRY,
  encodeFrame,
  encodeResponse,
  FrameDecoder,
  INSTANCE_TOKEN_LENGTH,
  u64,
  type PigeonholeGeometry,
  type ResponseKind,
  type SphinxGeometry,
} from '../wire';
import { handleCurrentRequest, profileFor, type ProtocolLevel, type ProtocolProfile } from './current';
import * as local from './local';
import {
  BoxStore,
  boxGeometry,
  boxIdOf,
  CopyStreamDecoder,
  EnvelopeCrypto,
  firstIndexOfCap,
  nextIndex,
  openBox,
  readCapOf,
  type BoxGeometry,
} from './pigeonhole';
import {
  blake2b256,
  couriersOf,
  createNetwork,
  DEFAULT_EPOCH_PERIOD_MS,
  EPOCH_BASE_MS,
  epochAt,
  makeEpochDocument,
  pigeonholeGeometryMap,
  replicaEpochOf,
  SERVICE_ENDPOINTS,
  sphinxGeometryMap,
  type Courier,
  type EpochDocument,
  type Network,
} from './pki';
import { decodeRequest, RequestDecodeError, UnknownRequestError, type RequestBody } from './requests';
import { COURIER_PATIENCE_MS, createTiming, LATENCY_MODES, type LatencyMode, type Timing } from './timing';
import { listenWebSocket, type WebSocketListener } from './websocket';

// ------------------------------------------------------------------ public types
export interface EmulatorOptions {
  /** "127.0.0.1:64331" (default), "127.0.0.1:0" for an ephemeral port, "/tmp/x.sock" or "@name" for a Unix socket. */
  listen?: string | DialConfig;
  /**
   * Also listen for WebSocket clients, as kpclientd v0.0.99 [Listen.Ws]
   * ("ws://127.0.0.1:0" for an ephemeral port; see `wsAddress`). Default: none.
   */
  wsListen?: string;
  /**
   * The thin-client protocol spoken: 'pinned' (default; kpclientd v0.0.76,
   * PROTOCOL.md §1-8) or 'current' (kpclientd v0.0.99, §9: 25-key reply
   * envelope, directory authorities, Contact Vouchers, the v0.0.99 PKI
   * document and Pigeonhole geometry, 10-minute grace period, unknown
   * requests dropped instead of fatal).
   */
  protocol?: ProtocolLevel;
  /** Default 'fast' (a few ms); 'realistic' = mixnet-like round trips and ARQ timing. */
  latency?: LatencyMode;
  /** Mixnet epoch length; each new epoch broadcasts new_pki_document_event. Default 20 min. */
  epochPeriodMs?: number;
  /** Initial mixnet connectivity, default true. */
  online?: boolean;
  /** Service nodes, each offering courier + echo + testdest. Default 3, at least 2. */
  couriers?: number;
  /** Storage replicas, default 5. */
  replicas?: number;
  /** How long a disconnected session is kept for resumption. Default 30 min (pinned), 10 min (current). */
  sessionGracePeriodMs?: number;
  /** Per-connection bound on bytes waiting to be written; a client that stops reading is dropped. Default 64 MiB. */
  maxSendQueueBytes?: number;
  /** Largest request frame accepted (40 MiB, as HEAD). */
  maxFrameLength?: number;
  /** A request frame still incomplete this long after its first byte closes its connection. Default 60 s. */
  frameTimeoutMs?: number;
  /**
   * Bound on the memory all connections hold together: queued unsent
   * replies plus partial request frames (each counted at its declared
   * length, which is allocated up front). Past it, the connection holding
   * the most is dropped. Default 256 MiB.
   */
  maxBufferedBytes?: number;
  /**
   * How long the courier keeps trying to read a temp-stream box that is not
   * written (yet) before it fails the copy with replica code 1. Default
   * COURIER_PATIENCE_MS (91 s, as the real courier) in every latency mode;
   * shorten it only to test that failure.
   */
  courierPatienceMs?: number;
  /**
   * Start without a PKI document, as a daemon that has not fetched one yet
   * (the pinned kpclientd): the handshake carries a null document and
   * requests that need one fail (error 4; get_pki_document 10) until
   * publishPkiDocument(). Default false.
   */
  noPkiDocument?: boolean;
  /**
   * A delayed first PKI document: the daemon gets its first document this
   * long after start and, as HEAD kpclientd does (PROTOCOL.md §9.2), holds a
   * new connection's handshake until it has one (at most 30 s, then it sends
   * a null document). Default: a document from the start.
   */
  pkiDocumentDelayMs?: number;
  /** Log sink (never receives capabilities). Default: silent. */
  log?: (line: string) => void;
}

export interface Emulator {
  /** "127.0.0.1:54321", "/path.sock" or "@name": usable as the ThinClient `dial` option as is. */
  readonly address: string;
  /** "ws://127.0.0.1:54322" when started with wsListen, else null. */
  readonly wsAddress: string | null;
  /** The protocol level spoken ('pinned' or 'current'). */
  readonly protocol: ProtocolLevel;
  readonly instanceToken: Buffer;
  /** The epoch the emulated daemon considers current. */
  readonly epoch: number;
  readonly latency: LatencyMode;
  stop(options?: { graceful?: boolean }): Promise<void>;
  restart(options?: { keepState?: boolean }): Promise<void>;
  setOnline(online: boolean): void;
  isOnline(): boolean;
  advanceEpoch(): void;
  injectMalformedFrame(): void;
  injectOversizeLengthPrefix(): void;
  stallReplies(ms: number): void;
  connectionCount(): number;
  /** Whether the emulated daemon has a PKI document (see noPkiDocument, pkiDocumentDelayMs). */
  hasPkiDocument(): boolean;
  /** Fault: forget the PKI document; handshakes carry a null document until publishPkiDocument(). */
  withholdPkiDocument(): void;
  /**
   * Fault: forget the PKI document and get it back `ms` from now; meanwhile
   * new handshakes wait for it (at most 30 s, then a null document), as HEAD kpclientd.
   */
  delayPkiDocument(ms: number): void;
  /** The daemon receives its PKI document now: broadcast to every client, held handshakes complete. No-op if it has one. */
  publishPkiDocument(): void;
  /** Couriers of the PKI document (identity hash + queue ID), as clients derive them. */
  couriers(): { identityHash: Buffer; queueId: Buffer }[];
}

export const DEFAULT_LISTEN = '127.0.0.1:64331';
export const DEFAULT_GRACE_PERIOD_MS = 30 * 60 * 1000;
export const DEFAULT_MAX_SEND_QUEUE_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_BUFFERED_BYTES = 256 * 1024 * 1024;
/** Legacy replies and ARQ results kept for a disconnected session (§2.3). */
export const MAX_QUEUED_RESPONSES = 1000;
/** Terminal copy verdicts are cached by the courier this long (PIGEONHOLE §2.6). */
export const COPY_VERDICT_TTL_MS = 30 * 60 * 1000;
/** Pause between shutdown_event and closing the socket (§10.2). */
export const SHUTDOWN_PAUSE_MS = 200;
/** How long HEAD kpclientd holds a new connection's handshake while it has no PKI document (PROTOCOL.md §9.2). */
export const HANDSHAKE_PKI_WAIT_MS = 30_000;
const DOCUMENT_HISTORY = 5;

// ------------------------------------------------------------------ addresses
type ListenAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

export function parseListenAddress(listen: string | DialConfig): ListenAddress {
  if (typeof listen !== 'string') {
    if (listen.kind === 'unix') return { kind: 'unix', path: listen.path };
    if (listen.kind === 'ws') throw new RangeError('listen: a WebSocket listener is the wsListen option');
    return { kind: 'tcp', host: listen.host, port: listen.port };
  }
  let s = listen.trim();
  if (/^wss?:/i.test(s)) throw new RangeError(`listen address "${listen}": a WebSocket listener is the wsListen option`);
  if (s.startsWith('unix:')) s = s.slice(5);
  else {
    const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:/@\s]*):(\d+)$/.exec(s);
    if (m) {
      const port = Number(m[2]);
      if (port > 65535) throw new RangeError(`listen address ${listen}: port must be 0-65535`);
      return { kind: 'tcp', host: m[1] || '127.0.0.1', port };
    }
    if (!s.includes('/') && !s.startsWith('@')) throw new RangeError(`listen address "${listen}": expected host:port, a socket path or @name`);
  }
  if (s === '' || s === '@') throw new RangeError(`listen address "${listen}": empty socket path`);
  return { kind: 'unix', path: s.startsWith('@') ? s : resolvePath(s) };
}

function formatTcp(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Remove a stale socket file left by a crashed emulator, but never steal a live one. */
async function clearStaleSocket(path: string): Promise<void> {
  if (path.startsWith('@') || !existsSync(path)) return;
  if (!lstatSync(path).isSocket()) throw new Error(`${path} exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (live) throw new Error(`${path}: another daemon or emulator is listening there`);
  unlinkSync(path);
}

// ------------------------------------------------------------------ internal state
interface Session {
  appId: Buffer;
  token: string | null;
  conn: Connection | null;
  queued: Buffer[];
  abort: AbortController;
  graceTimer: NodeJS.Timeout | null;
  destroyed: boolean;
  ops: Set<Op>;
}

interface Op {
  kind: 'message' | 'copy';
  key: string;
  queryId: Buffer | null;
  session: Session;
  abort: AbortController;
  courier: Courier | null;
  finished: boolean;
}

interface CopyVerdict {
  code: number;
  replicaErrorCode: number;
  failedEnvelopeIndex: number;
}

interface CopyJob {
  promise: Promise<CopyVerdict>;
  result: CopyVerdict | null;
}

/** The "mixnet" side: replica storage and courier state, kept across a restart unless asked otherwise. */
interface Mixnet {
  store: BoxStore;
  copyVerdicts: Map<string, { verdict: CopyVerdict; expires: number }>;
  copyJobs: Map<string, CopyJob>;
  abort: AbortController;
}

function newMixnet(): Mixnet {
  return { store: new BoxStore(), copyVerdicts: new Map(), copyJobs: new Map(), abort: new AbortController() };
}


function isAbort(e: unknown): boolean {
  return (e as { name?: string })?.name === 'AbortError';
}

async function sleep(ms: number, signal: AbortSignal): Promise<void> {
  await sleepTimer(Math.max(0, ms), undefined, { signal });
}

/** Await a promise, giving up (AbortError) when the signal fires. */
function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

// ------------------------------------------------------------------ connection
let nextConnectionId = 1;

class Connection {
  readonly id = nextConnectionId++;
  session: Session;
  /** session_token_reply sent (or the client skipped the token): broadcasts flow directly. */
  handshakeReplied = false;
  /** Broadcasts held back until session_token_reply has been sent (§10.1). */
  private held: Buffer[] = [];
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private flushTimer: NodeJS.Timeout | null = null;
  closed = false;
  readonly decoder: FrameDecoder;

  constructor(
    private readonly emu: EmulatorServer,
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
      this.socket.write(frame);
    }
    this.checkBound();
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

// ------------------------------------------------------------------ the emulator
export class EmulatorServer implements Emulator {
  readonly latency: LatencyMode;
  readonly maxSendQueueBytes: number;
  readonly maxBufferedBytes: number;
  stalledUntil = 0;

  private readonly timing: Timing;
  private readonly epochPeriodMs: number;
  private readonly graceMs: number;
  private readonly framing: { maxFrameLength: number; frameTimeoutMs: number };
  private readonly sphinx: SphinxGeometry = DEFAULT_SPHINX_GEOMETRY;
  private readonly profile: ProtocolProfile;
  private readonly pigeonhole: PigeonholeGeometry;
  private readonly g: BoxGeometry;
  private readonly logSink: (line: string) => void;
  private readonly network: Network;
  private readonly courierList: Courier[];
  private readonly crypto: EnvelopeCrypto;
  private readonly listenAddress: ListenAddress;

  private server: net.Server | null = null;
  private boundAddress = '';
  private wsListener: WebSocketListener | null = null;
  private readonly wsListen: string | null;
  private token: Buffer = randomBytes(INSTANCE_TOKEN_LENGTH);
  private online: boolean;
  private onlineWaiters = new Set<() => void>();
  private readonly connections = new Set<Connection>();
  private readonly sessions = new Map<string, Session>();
  private readonly messageOps = new Map<string, Set<Op>>();
  private readonly copyOps = new Map<string, Set<Op>>();
  private mixnet: Mixnet = newMixnet();
  private epochOffset = 0;
  private currentEpoch: number;
  private readonly documents = new Map<number, EpochDocument>();
  private epochTimer: NodeJS.Timeout | null = null;
  private readonly faultTimers = new Set<NodeJS.Timeout>();
  private stopped = false;
  private readonly courierPatienceMs: number;
  /** The daemon has a PKI document (false: handshakes carry null, mixnet requests fail with 4). */
  private documentPresent = true;
  /** While the document is delayed: new handshakes wait for it (HEAD), instead of carrying null. */
  private holdHandshakes = false;
  private documentTimer: NodeJS.Timeout | null = null;
  /** Connections whose handshake frames 1 and 2 wait for the document, with their give-up timers. */
  private readonly awaitingDocument = new Map<Connection, NodeJS.Timeout>();
  /** pkiDocumentDelayMs, armed when the listener starts. */
  private pendingDocumentDelayMs: number | null;

  constructor(options: EmulatorOptions = {}) {
    const latency = options.latency ?? 'fast';
    if (!LATENCY_MODES.includes(latency)) throw new RangeError(`latency must be one of ${LATENCY_MODES.join(', ')}`);
    const couriers = options.couriers ?? 3;
    const replicas = options.replicas ?? 5;
    if (!Number.isInteger(couriers) || couriers < 2 || couriers > 64) throw new RangeError('couriers must be an integer from 2 to 64');
    if (!Number.isInteger(replicas) || replicas < 2 || replicas > 255) throw new RangeError('replicas must be an integer from 2 to 255');
    this.epochPeriodMs = options.epochPeriodMs ?? DEFAULT_EPOCH_PERIOD_MS;
    if (!(this.epochPeriodMs >= 100)) throw new RangeError('epochPeriodMs must be at least 100');
    this.latency = latency;
    this.timing = createTiming(latency);
    this.profile = profileFor(options.protocol);
    this.pigeonhole = this.profile.pigeonhole;
    this.wsListen = options.wsListen ?? null;
    this.graceMs = options.sessionGracePeriodMs ?? this.profile.gracePeriodMs;
    this.maxSendQueueBytes = options.maxSendQueueBytes ?? DEFAULT_MAX_SEND_QUEUE_BYTES;
    this.maxBufferedBytes = options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
    if (!(this.maxBufferedBytes > 0)) throw new RangeError('maxBufferedBytes must be a positive number');
    const frameTimeoutMs = options.frameTimeoutMs ?? DEFAULT_FRAME_TIMEOUT_MS;
    if (!(frameTimeoutMs > 0 && Number.isFinite(frameTimeoutMs))) throw new RangeError('frameTimeoutMs must be a positive number');
    this.framing = { maxFrameLength: options.maxFrameLength ?? DEFAULT_MAX_FRAME_LENGTH, frameTimeoutMs };
    this.online = options.online ?? true;
    this.courierPatienceMs = options.courierPatienceMs ?? COURIER_PATIENCE_MS;
    if (!(this.courierPatienceMs >= 0 && Number.isFinite(this.courierPatienceMs))) throw new RangeError('courierPatienceMs must be a non-negative number');
    if (options.pkiDocumentDelayMs !== undefined && !(options.pkiDocumentDelayMs >= 0 && Number.isFinite(options.pkiDocumentDelayMs))) {
      throw new RangeError('pkiDocumentDelayMs must be a non-negative number');
    }
    this.pendingDocumentDelayMs = options.pkiDocumentDelayMs ?? null;
    this.documentPresent = !options.noPkiDocument && this.pendingDocumentDelayMs === null;
    this.logSink = options.log ?? (() => {});
    this.listenAddress = parseListenAddress(options.listen ?? DEFAULT_LISTEN);
    this.g = boxGeometry(this.pigeonhole);
    this.crypto = new EnvelopeCrypto(randomBytes(32), this.g);
    this.currentEpoch = this.realEpoch();
    this.network = createNetwork({ serviceNodes: couriers, replicas, genesisEpoch: this.currentEpoch });
    this.courierList = couriersOf(this.network);
  }

  log(line: string): void {
    this.logSink(line);
  }

  /** A response frame with this protocol level's full envelope (20 or 25 keys). */
  private frameOf(kind: string, body: Record<string, unknown>): Buffer {
    return encodeFrame(encodeResponse(kind, body, this.profile.responseKinds));
  }

  get protocol(): ProtocolLevel {
    return this.profile.level;
  }

  get wsAddress(): string | null {
    return this.wsListener?.address ?? null;
  }

  /**
   * Keep the memory of all connections together under maxBufferedBytes by
   * dropping the connection that holds the most (on a tie, the newest),
   * until the rest fit. Called whenever a connection's share grows.
   */
  enforceMemoryCap(): void {
    for (;;) {
      let total = 0;
      let worst: Connection | null = null;
      for (const c of this.connections) {
        if (c.closed) continue;
        const held = c.bufferedBytes;
        total += held;
        if (!worst || held >= worst.bufferedBytes) worst = c;
      }
      if (!worst || total <= this.maxBufferedBytes) return;
      this.log(
        `conn ${worst.id}: memory held by all connections (${total} bytes) is over the cap of ${this.maxBufferedBytes} bytes; ` +
          `dropping this connection, which holds the most: ${worst.queuedBytes} bytes of queued unsent replies, ` +
          `${worst.decoder.reservedBytes} bytes for a partial request frame`,
      );
      worst.destroy();
    }
  }

  // ---------------------------------------------------------------- lifecycle
  async start(): Promise<void> {
    const a = this.listenAddress;
    if (a.kind === 'unix') await clearStaleSocket(a.path);
    const server = net.createServer((socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const onListening = () => {
        server.off('error', reject);
        resolve();
      };
      if (a.kind === 'unix') server.listen(a.path.startsWith('@') ? `\0${a.path.slice(1)}` : a.path, onListening);
      else server.listen(a.port, a.host, onListening);
    });
    server.on('error', (e) => this.log(`listener error: ${e.message}`));
    this.server = server;
    if (this.wsListen !== null) {
      try {
        this.wsListener = await listenWebSocket(this.wsListen, (stream) => this.accept(stream), (line) => this.log(line));
      } catch (e) {
        server.close();
        throw e;
      }
    }
    if (a.kind === 'unix') this.boundAddress = a.path;
    else this.boundAddress = formatTcp(a.host, (server.address() as net.AddressInfo).port);
    this.scheduleEpochTimer();
    if (this.pendingDocumentDelayMs !== null) this.delayPkiDocument(this.pendingDocumentDelayMs);
    this.pendingDocumentDelayMs = null;
    this.log(
      `listening on ${this.boundAddress}${this.wsListener ? ` and ${this.wsListener.address}` : ''} (protocol ${this.profile.level}, latency ${this.latency}, epoch ${this.currentEpoch}${this.documentPresent ? '' : ', no PKI document yet'})`,
    );
  }

  get address(): string {
    return this.boundAddress;
  }

  get instanceToken(): Buffer {
    return Buffer.from(this.token);
  }

  get epoch(): number {
    return this.currentEpoch;
  }

  connectionCount(): number {
    return this.connections.size;
  }

  couriers(): { identityHash: Buffer; queueId: Buffer }[] {
    return this.courierList.map((c) => ({ identityHash: Buffer.from(c.identityHash), queueId: Buffer.from(c.queueId) }));
  }

  isOnline(): boolean {
    return this.online;
  }

  async stop(options: { graceful?: boolean } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const graceful = options.graceful ?? true;
    if (this.epochTimer) clearTimeout(this.epochTimer);
    if (this.documentTimer) clearTimeout(this.documentTimer);
    for (const t of this.awaitingDocument.values()) clearTimeout(t);
    this.awaitingDocument.clear();
    for (const t of this.faultTimers) clearTimeout(t);
    this.faultTimers.clear();
    const server = this.server;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    const wsClosed = this.wsListener ? this.wsListener.close() : Promise.resolve();
    if (graceful && this.connections.size > 0) {
      const shutdown = this.frameOf('shutdown_event', {});
      for (const c of this.connections) c.send(shutdown, true);
      await new Promise((r) => setTimeout(r, SHUTDOWN_PAUSE_MS));
    }
    for (const c of [...this.connections]) c.destroy();
    for (const s of [...this.sessions.values()]) this.destroySession(s);
    this.mixnet.abort.abort();
    this.mixnet.store.clear();
    await closed;
    await wsClosed;
    this.log('stopped');
  }

  async restart(options: { keepState?: boolean } = {}): Promise<void> {
    if (this.stopped) throw new Error('emulator is stopped');
    const keep = options.keepState ?? true;
    // A new daemon process: new instance token, no connections, no sessions, no ARQ state.
    this.token = randomBytes(INSTANCE_TOKEN_LENGTH);
    for (const c of [...this.connections]) c.destroy();
    for (const s of [...this.sessions.values()]) this.destroySession(s);
    this.stalledUntil = 0;
    if (!keep) {
      this.mixnet.abort.abort();
      this.mixnet.store.clear();
      this.mixnet = newMixnet();
    }
    this.log(`restarted (${keep ? 'state kept' : 'fresh state'}), new instance token`);
  }

  // ---------------------------------------------------------------- faults
  setOnline(online: boolean): void {
    if (this.online === online) return;
    this.online = online;
    this.log(`mixnet connectivity: ${online ? 'online' : 'offline'}`);
    if (online) this.releaseOnlineWaiters();
    const frame = this.statusFrame();
    for (const c of this.connections) c.broadcast(frame);
  }

  private releaseOnlineWaiters(): void {
    const w = this.onlineWaiters;
    this.onlineWaiters = new Set();
    for (const fn of w) fn();
  }

  advanceEpoch(): void {
    this.epochOffset++;
    this.checkEpoch();
  }

  injectMalformedFrame(): void {
    // A map header promising two entries, then one key and nothing: undecodable CBOR.
    const body = Buffer.from('a26b6d616c666f726d6564', 'hex');
    for (const c of this.connections) c.writeRaw(encodeFrame(body));
    this.log(`injected a malformed frame into ${this.connections.size} connection(s)`);
  }

  injectOversizeLengthPrefix(): void {
    // A prefix far over the 40 MiB cap; the stream is useless afterwards, so close it if the client does not.
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32BE(0xfffffff0, 0);
    for (const c of this.connections) {
      c.writeRaw(prefix);
      const t = setTimeout(() => {
        this.faultTimers.delete(t);
        c.destroy();
      }, 1000);
      this.faultTimers.add(t);
    }
    this.log(`injected an oversize length prefix into ${this.connections.size} connection(s)`);
  }

  stallReplies(ms: number): void {
    this.stalledUntil = Math.max(this.stalledUntil, Date.now() + Math.max(0, ms));
    this.log(`stalling every outgoing frame for ${ms} ms`);
  }

  hasPkiDocument(): boolean {
    return this.documentPresent;
  }

  withholdPkiDocument(): void {
    if (this.documentTimer) clearTimeout(this.documentTimer);
    this.documentTimer = null;
    this.holdHandshakes = false;
    this.documentPresent = false;
    // Handshakes that were waiting for a delayed document stop waiting: null, as the pinned daemon.
    for (const conn of [...this.awaitingDocument.keys()]) this.sendHandshakeFrames(conn);
    this.log('PKI document withheld: handshakes carry a null document until it is published');
  }

  delayPkiDocument(ms: number): void {
    if (!(ms >= 0 && Number.isFinite(ms))) throw new RangeError('delay must be a non-negative number of milliseconds');
    if (this.stopped) return;
    if (this.documentTimer) clearTimeout(this.documentTimer);
    this.documentPresent = false;
    this.holdHandshakes = true;
    this.documentTimer = setTimeout(() => {
      this.documentTimer = null;
      this.publishPkiDocument();
    }, ms);
    this.log(`PKI document delayed by ${ms} ms: new handshakes wait for it (at most ${HANDSHAKE_PKI_WAIT_MS} ms)`);
  }

  publishPkiDocument(): void {
    if (this.documentTimer) clearTimeout(this.documentTimer);
    this.documentTimer = null;
    this.holdHandshakes = false;
    if (this.documentPresent || this.stopped) return;
    this.documentPresent = true;
    // Held handshakes complete with the document; everyone else gets the broadcast.
    const held = new Set(this.awaitingDocument.keys());
    for (const conn of held) this.sendHandshakeFrames(conn);
    const frame = this.frameOf('new_pki_document_event', { payload: this.document(this.currentEpoch).broadcast });
    for (const c of this.connections) if (!held.has(c)) c.broadcast(frame);
    this.log(`PKI document for epoch ${this.currentEpoch} published to ${this.connections.size} connection(s)`);
  }

  // ---------------------------------------------------------------- epochs and PKI
  private realEpoch(): number {
    return epochAt(Date.now(), this.epochPeriodMs);
  }

  private scheduleEpochTimer(): void {
    if (this.stopped) return;
    const real = this.realEpoch();
    const next = EPOCH_BASE_MS + (real + 1) * this.epochPeriodMs;
    this.epochTimer = setTimeout(() => {
      this.checkEpoch();
      this.scheduleEpochTimer();
    }, Math.max(1, next - Date.now()));
  }

  private checkEpoch(): void {
    const e = this.realEpoch() + this.epochOffset;
    if (e === this.currentEpoch) return;
    this.currentEpoch = e;
    for (const k of this.documents.keys()) if (k < e - DOCUMENT_HISTORY) this.documents.delete(k);
    if (!this.documentPresent) return;
    const doc = this.document(e);
    this.log(`epoch ${e}: broadcasting the new PKI document`);
    const frame = this.frameOf('new_pki_document_event', { payload: doc.broadcast });
    for (const c of this.connections) c.broadcast(frame);
  }

  private document(epoch: number): EpochDocument {
    let d = this.documents.get(epoch);
    if (!d) {
      d = makeEpochDocument(this.network, epoch, this.epochPeriodMs, this.sphinx, this.profile.droppedDocumentFields);
      this.documents.set(epoch, d);
    }
    return d;
  }

  private statusFrame(): Buffer {
    return this.frameOf('connection_status_event', {
      is_connected: this.online,
      err: null,
      instance_token: this.token,
      sphinx_geometry: sphinxGeometryMap(this.sphinx),
      pigeonhole_geometry: pigeonholeGeometryMap(this.pigeonhole),
    });
  }

  private localContext(): local.LocalContext {
    return {
      g: this.g,
      crypto: this.crypto,
      replica: { epoch: replicaEpochOf(this.currentEpoch, this.epochPeriodMs), replicaCount: this.network.replicas.length },
    };
  }

  // ---------------------------------------------------------------- connections and sessions
  private newSession(): Session {
    return {
      appId: randomBytes(APP_ID_LENGTH),
      token: null,
      conn: null,
      queued: [],
      abort: new AbortController(),
      graceTimer: null,
      destroyed: false,
      ops: new Set(),
    };
  }

  private accept(socket: Duplex): void {
    if (this.stopped) {
      socket.destroy();
      return;
    }
    (socket as Partial<net.Socket>).setNoDelay?.(true);
    const session = this.newSession();
    const conn = new Connection(this, socket, session, this.framing);
    session.conn = conn;
    this.connections.add(conn);
    this.log(`conn ${conn.id}: accepted (${this.connections.size} open)`);
    if (this.documentPresent || !(this.holdHandshakes || this.profile.handshakeWaitsForDocument)) this.sendHandshakeFrames(conn);
    else {
      // HEAD kpclientd waits for a document before frames 1 and 2 (§9.2).
      const t = setTimeout(() => {
        this.log(`conn ${conn.id}: no PKI document within ${HANDSHAKE_PKI_WAIT_MS} ms; handshake with a null document`);
        this.sendHandshakeFrames(conn);
      }, HANDSHAKE_PKI_WAIT_MS);
      this.awaitingDocument.set(conn, t);
      this.log(`conn ${conn.id}: handshake waits for the PKI document`);
    }
    socket.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    socket.on('error', (e) => this.log(`conn ${conn.id}: ${e.message}`));
    socket.on('close', () => this.onClose(conn));
  }

  /** Frames 1 and 2, before anything else (§2.1); a null document while the daemon has none. */
  private sendHandshakeFrames(conn: Connection): void {
    const t = this.awaitingDocument.get(conn);
    if (t) clearTimeout(t);
    this.awaitingDocument.delete(conn);
    conn.send(this.statusFrame());
    conn.send(this.frameOf('new_pki_document_event', { payload: this.documentPresent ? this.document(this.currentEpoch).canonical : null }));
  }

  private onData(conn: Connection, chunk: Buffer): void {
    if (conn.closed) return;
    let frames: Buffer[];
    try {
      frames = conn.decoder.push(chunk);
    } catch (e) {
      this.log(`conn ${conn.id}: ${(e as Error).message}; closing`);
      conn.destroy();
      return;
    }
    if (conn.decoder.reservedBytes > 0) this.enforceMemoryCap();
    for (const f of frames) {
      if (conn.closed) return;
      this.onFrame(conn, f);
    }
  }

  private onFrame(conn: Connection, frame: Buffer): void {
    let req;
    try {
      req = decodeRequest(frame, this.profile.requestSchemas);
    } catch (e) {
      if (e instanceof UnknownRequestError && this.profile.dropUnknownRequests) {
        // A current daemon logs and drops it (PROTOCOL.md §9.2); a pinned one would abort.
        this.log(`conn ${conn.id}: ${e.message}; dropped`);
        return;
      }
      // The daemon closes the connection on an undecodable request, without an error frame (§1.2).
      this.log(`conn ${conn.id}: ${e instanceof RequestDecodeError ? e.message : String(e)}; closing the connection`);
      conn.destroy();
      return;
    }
    this.log(`conn ${conn.id}: ${req.kind}`);
    // A client that never sends session_token must still receive broadcasts.
    if (!conn.handshakeReplied && req.kind !== 'session_token') conn.releaseHeld();
    try {
      this.dispatch(conn, req.kind, req.body);
    } catch (e) {
      this.log(`conn ${conn.id}: internal error handling ${req.kind}: ${(e as Error).stack ?? e}; closing`);
      conn.destroy();
    }
  }

  private onClose(conn: Connection): void {
    conn.closed = true;
    conn.decoder.close(); // the peer left mid-frame: release it and its deadline
    this.connections.delete(conn);
    const waiting = this.awaitingDocument.get(conn);
    if (waiting) clearTimeout(waiting);
    this.awaitingDocument.delete(conn);
    const s = conn.session;
    this.log(`conn ${conn.id}: closed (${this.connections.size} open)`);
    if (s.conn !== conn) return;
    s.conn = null;
    if (s.destroyed) return;
    if (s.token === null) {
      // Without a session token there is nothing to resume: clean up at once.
      this.destroySession(s);
      return;
    }
    this.dropArqOperations(s);
    s.graceTimer = setTimeout(() => {
      this.log(`session grace period over, destroying its state`);
      this.destroySession(s);
    }, this.graceMs);
  }

  /**
   * kpclientd discards a Pigeonhole reply for a client that is not connected
   * and deletes the ARQ entry at its next resend (§2.3), so a session that
   * goes away loses its in-flight ARQ operations; only legacy replies queue.
   * Work already handed to the courier (a box written, a copy running) goes on.
   */
  private dropArqOperations(s: Session): void {
    if (s.ops.size === 0) return;
    this.log(`session away: ${s.ops.size} in-flight ARQ operations dropped, as kpclientd drops them`);
    for (const op of [...s.ops]) {
      op.finished = true;
      this.unregister(op);
      op.abort.abort();
    }
  }

  private destroySession(s: Session): void {
    if (s.destroyed) return;
    s.destroyed = true;
    if (s.graceTimer) clearTimeout(s.graceTimer);
    s.abort.abort();
    for (const op of [...s.ops]) {
      op.finished = true;
      this.unregister(op);
      op.abort.abort();
    }
    if (s.token !== null && this.sessions.get(s.token) === s) this.sessions.delete(s.token);
    s.queued = [];
  }

  /** Send to whichever connection the session is on now, or queue while it is away (bounded). */
  private deliver(s: Session, frame: Buffer): void {
    if (s.destroyed) return;
    if (s.conn && !s.conn.closed) s.conn.send(frame);
    else if (s.token !== null && s.queued.length < MAX_QUEUED_RESPONSES) s.queued.push(frame);
  }

  private reply(conn: Connection, kind: ResponseKind, body: Record<string, unknown>): void {
    conn.send(this.frameOf(kind, body));
  }

  private onSessionToken(conn: Connection, b: RequestBody): void {
    const token: Buffer | null = b.client_instance_token;
    if (!token) {
      // Nothing to bind; answer as a fresh, non-resumable session.
      this.reply(conn, 'session_token_reply', { app_id: conn.session.appId, resumed: false });
      conn.releaseHeld();
      return;
    }
    const key = token.toString('hex');
    const existing = this.sessions.get(key);
    let resumed = false;
    if (existing && !existing.destroyed && existing !== conn.session) {
      resumed = true;
      if (existing.graceTimer) clearTimeout(existing.graceTimer);
      existing.graceTimer = null;
      const old = existing.conn;
      if (old && old !== conn) {
        // The new connection takes over the app ID; the old one keeps a fresh anonymous session.
        const anon = this.newSession();
        anon.conn = old;
        old.session = anon;
      }
      // Requests made on this connection before the token belong to the resumed session now.
      const provisional = conn.session;
      for (const op of provisional.ops) {
        op.session = existing;
        existing.ops.add(op);
      }
      provisional.ops.clear();
      provisional.destroyed = true;
      conn.session = existing;
      existing.conn = conn;
    } else if (existing === conn.session) {
      resumed = false;
    } else {
      conn.session.token = key;
      this.sessions.set(key, conn.session);
    }
    const s = conn.session;
    this.reply(conn, 'session_token_reply', { app_id: s.appId, resumed });
    // Queued responses come after session_token_reply: every reference client needs that reply as frame 4.
    const queued = s.queued;
    s.queued = [];
    for (const f of queued) conn.send(f);
    conn.releaseHeld();
    this.log(`conn ${conn.id}: session ${resumed ? `resumed (${queued.length} queued responses delivered)` : 'bound'}`);
  }

  // ---------------------------------------------------------------- dispatch
  private dispatch(conn: Connection, kind: string, b: RequestBody): void {
    // Without a PKI document the daemon cannot build envelopes (no replica keys): error 4 (PROTOCOL.md §5.4).
    if (!this.documentPresent && local.NEEDS_PKI_DOCUMENT.has(kind)) {
      return this.reply(conn, `${kind}_reply` as ResponseKind, local.noPkiDocumentReply(kind, b));
    }
    switch (kind) {
      case 'session_token':
        return this.onSessionToken(conn, b);
      case 'thin_close':
        // Destroy everything the session owns; the client closes the socket itself.
        this.destroySession(conn.session);
        conn.session = this.newSession();
        conn.session.conn = conn;
        return;
      case 'send_message':
        void this.runSend(conn.session, b);
        return;
      case 'new_keypair':
        return this.reply(conn, 'new_keypair_reply', local.newKeypair(b));
      case 'encrypt_read':
        return this.reply(conn, 'encrypt_read_reply', local.encryptRead(this.localContext(), b));
      case 'encrypt_write':
        return this.reply(conn, 'encrypt_write_reply', local.encryptWrite(this.localContext(), b));
      case 'next_message_box_index':
        return this.reply(conn, 'next_message_box_index_reply', local.nextMessageBoxIndex(b));
      case 'get_message_box_index_counter':
        return this.reply(conn, 'get_message_box_index_counter_reply', local.messageBoxIndexCounter(b));
      case 'get_pki_document':
        return this.onGetPkiDocument(conn, b);
      case 'create_courier_envelopes_from_payload':
        return this.reply(conn, 'create_courier_envelopes_from_payload_reply', local.envelopesFromPayload(this.localContext(), b));
      case 'create_courier_envelopes_from_multi_payload':
        return this.reply(conn, 'create_courier_envelopes_from_multi_payload_reply', local.envelopesFromMultiPayload(this.localContext(), b));
      case 'create_courier_envelopes_from_tombstone_range':
        return this.reply(conn, 'create_courier_envelopes_from_tombstone_range_reply', local.envelopesFromTombstoneRange(this.localContext(), b));
      case 'start_resending_encrypted_message': {
        const op = this.register('message', b.envelope_hash ? b.envelope_hash.toString('hex') : '', b.query_id, conn.session);
        void this.runMessage(op, b);
        return;
      }
      case 'cancel_resending_encrypted_message':
        return this.onCancel(conn, b, 'message');
      case 'start_resending_copy_command': {
        const key = b.write_cap ? blake2b256(b.write_cap).toString('hex') : '';
        const op = this.register('copy', key, b.query_id, conn.session);
        void this.runCopy(op, b);
        return;
      }
      case 'cancel_resending_copy_command':
        return this.onCancel(conn, b, 'copy');
    }
    // The kinds only the current protocol knows (the decoder let nothing else through).
    const answer = handleCurrentRequest(this.network, kind, b);
    if (answer) conn.send(this.frameOf(answer.kind, answer.body));
    else if (answer === null) this.log(`conn ${conn.id}: ${kind}: the handler failed; no reply (as kpclientd v0.0.99)`);
  }

  private onGetPkiDocument(conn: Connection, b: RequestBody): void {
    const requested = BigInt(b.epoch ?? 0);
    const epoch = requested === 0n ? BigInt(this.currentEpoch) : requested;
    const cached = this.documentPresent && epoch <= BigInt(this.currentEpoch) && epoch > BigInt(this.currentEpoch - DOCUMENT_HISTORY);
    if (!b.query_id || !cached) {
      // The epoch is echoed on error too (§4.16).
      const code = b.query_id ? local.ErrorCode.ServiceUnavailable : local.ErrorCode.InvalidRequest;
      this.reply(conn, 'get_pki_document_reply', { query_id: b.query_id, payload: null, epoch: u64(epoch), error_code: code });
      return;
    }
    this.reply(conn, 'get_pki_document_reply', { query_id: b.query_id, payload: this.document(Number(epoch)).signed, epoch: u64(epoch), error_code: 0 });
  }

  // ---------------------------------------------------------------- ARQ registry
  private table(kind: Op['kind']): Map<string, Set<Op>> {
    return kind === 'message' ? this.messageOps : this.copyOps;
  }

  private register(kind: Op['kind'], key: string, queryId: Buffer | null, session: Session): Op {
    const op: Op = { kind, key, queryId, session, abort: new AbortController(), courier: null, finished: false };
    session.ops.add(op);
    if (key) {
      const t = this.table(kind);
      let set = t.get(key);
      if (!set) t.set(key, (set = new Set()));
      set.add(op);
    }
    return op;
  }

  private unregister(op: Op): void {
    op.session.ops.delete(op);
    const t = this.table(op.kind);
    const set = t.get(op.key);
    if (set) {
      set.delete(op);
      if (set.size === 0) t.delete(op.key);
    }
  }

  private finishMessage(op: Op, code: number, plaintext: Buffer | null = null): void {
    if (op.finished) return;
    op.finished = true;
    this.unregister(op);
    this.deliver(
      op.session,
      this.frameOf('start_resending_encrypted_message_reply', {
        query_id: op.queryId,
        plaintext,
        error_code: code,
        courier_identity_hash: op.courier ? op.courier.identityHash : null,
        courier_queue_id: op.courier ? op.courier.queueId : null,
      }),
    );
  }

  private finishCopy(op: Op, v: CopyVerdict): void {
    if (op.finished) return;
    op.finished = true;
    this.unregister(op);
    const body: Record<string, unknown> = { query_id: op.queryId, error_code: v.code };
    // (opt) fields: omitted when zero, as Go's omitempty.
    if (v.replicaErrorCode) body.replica_error_code = v.replicaErrorCode;
    if (v.failedEnvelopeIndex) body.failed_envelope_index = u64(v.failedEnvelopeIndex);
    this.deliver(op.session, this.frameOf('start_resending_copy_command_reply', body));
  }

  private onCancel(conn: Connection, b: RequestBody, kind: Op['kind']): void {
    const hash: Buffer | null = kind === 'message' ? b.envelope_hash : b.write_cap_hash;
    const replyKind = kind === 'message' ? 'cancel_resending_encrypted_message_reply' : 'cancel_resending_copy_command_reply';
    if (!b.query_id || !hash) {
      this.reply(conn, replyKind, { query_id: b.query_id, error_code: local.ErrorCode.InvalidRequest });
      return;
    }
    // First the cancelled operation's own reply (24), then the cancel's reply (0) (§3.8).
    for (const op of [...(this.table(kind).get(hash.toString('hex')) ?? [])]) {
      op.abort.abort();
      if (kind === 'message') this.finishMessage(op, 24);
      else this.finishCopy(op, { code: 24, replicaErrorCode: 0, failedEnvelopeIndex: 0 });
    }
    this.reply(conn, replyKind, { query_id: b.query_id, error_code: 0 });
  }

  private whenOnline(signal: AbortSignal): Promise<void> {
    if (this.online) return Promise.resolve();
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      const onAbort = () => {
        this.onlineWaiters.delete(done);
        reject(signal.reason);
      };
      const done = () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      };
      this.onlineWaiters.add(done);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** One mixnet leg: wait until online, then the latency; repeat the wait if the mixnet went away meanwhile. */
  private async transit(ms: number, signal: AbortSignal): Promise<void> {
    // Instant legs (--instant, or a zero draw) take no timer hop at all.
    if (ms <= 0 && this.online) {
      if (signal.aborted) throw signal.reason;
      return;
    }
    await this.whenOnline(signal);
    await sleep(ms, signal);
    while (!this.online) await this.whenOnline(signal);
  }

  private randomCourier(): Courier | null {
    return this.courierList.length ? this.courierList[randomInt(this.courierList.length)] : null;
  }

  // ---------------------------------------------------------------- start_resending_encrypted_message
  private async runMessage(op: Op, b: RequestBody): Promise<void> {
    const signal = op.abort.signal;
    try {
      await this.transit(this.timing.sendQueue(), signal);
      const isRead = b.read_cap !== null;
      const isWrite = b.write_cap !== null;
      // Validation errors surface only when the request is dequeued, with no courier chosen.
      if (!b.query_id || isRead === isWrite || !b.envelope_descriptor?.length || !b.message_ciphertext?.length || !b.envelope_hash) {
        return this.finishMessage(op, local.ErrorCode.InvalidRequest);
      }
      // No document, no courier to send to (§3.7: error 4).
      if (!this.documentPresent) return this.finishMessage(op, local.ErrorCode.InternalError);
      op.courier = this.randomCourier();
      if (!op.courier) return this.finishMessage(op, local.ErrorCode.InternalError);
      const query = this.crypto.openQuery(b.message_ciphertext);
      await this.transit(this.timing.roundTrip() / 2, signal);
      // Not one of our envelopes: the courier's InvalidEnvelope (1) reaches the client raw at the pinned version, as 31 at the current one.
      if (!query) return this.finishMessage(op, this.profile.courierInvalidEnvelopeCode);
      if ((query.kind === 'read') !== isRead) return this.finishMessage(op, local.ErrorCode.InvalidRequest);
      if (isWrite) await this.processWrite(op, b, query);
      else await this.processRead(op, b, query);
    } catch (e) {
      if (signal.aborted || isAbort(e)) return;
      this.log(`start_resending_encrypted_message failed: ${(e as Error).stack ?? e}`);
      this.finishMessage(op, local.ErrorCode.InternalError);
    }
  }

  private async processWrite(op: Op, b: RequestBody, query: NonNullable<ReturnType<EnvelopeCrypto['openQuery']>>): Promise<void> {
    const signal = op.abort.signal;
    const verdict = this.mixnet.store.write(query.boxId, query.box!, this.timing.replicationLag());
    await this.transit(this.timing.roundTrip() / 2, signal);
    // The default write completes on the courier's ACK and cannot see a conflict (§2.3).
    if (!b.no_idempotent_box_already_exists) return this.finishMessage(op, 0);
    await this.transit(this.timing.followUpGate() + this.timing.roundTrip(), signal);
    const sealed = EnvelopeCrypto.sealReply(query.replyKey, { code: verdict === 'conflict' ? 10 : 0, boxId: query.boxId, box: null });
    const reply = EnvelopeCrypto.openReply(b.envelope_descriptor, sealed);
    if (!reply) return this.finishMessage(op, 22);
    this.finishMessage(op, reply.code);
  }

  private async processRead(op: Op, b: RequestBody, query: NonNullable<ReturnType<EnvelopeCrypto['openQuery']>>): Promise<void> {
    const signal = op.abort.signal;
    const idx: Buffer | null = b.message_box_index;
    // Without the index the reply cannot be verified or decrypted (§10.8).
    if (!idx || idx.length !== 104) {
      await this.transit(this.timing.roundTrip() / 2, signal);
      return this.finishMessage(op, 23);
    }
    for (;;) {
      // A read costs the courier ACK plus at least one more round trip for the payload.
      await this.transit(this.timing.roundTrip() / 2 + this.timing.followUpGate() + this.timing.roundTrip(), signal);
      const box = this.mixnet.store.get(query.boxId);
      const sealed = EnvelopeCrypto.sealReply(query.replyKey, box ? { code: 0, boxId: query.boxId, box } : { code: 1, boxId: null, box: null });
      const reply = EnvelopeCrypto.openReply(b.envelope_descriptor, sealed);
      if (!reply) return this.finishMessage(op, 22);
      if (reply.code === 1) {
        if (b.no_retry_on_box_id_not_found) return this.finishMessage(op, 1);
        // Default reads retry without limit; wake up when the box is written instead of polling blindly.
        await this.mixnet.store.waitFor(query.boxId, signal);
        continue;
      }
      const expected = boxIdOf(b.read_cap.subarray(0, 32), idx);
      if (!reply.boxId || !expected.equals(reply.boxId) || !reply.box) return this.finishMessage(op, 23);
      const opened = openBox(b.read_cap, idx, reply.box, reply.boxId);
      return this.finishMessage(op, opened.code, opened.plaintext);
    }
  }

  // ---------------------------------------------------------------- copy command
  private async runCopy(op: Op, b: RequestBody): Promise<void> {
    const signal = op.abort.signal;
    try {
      await this.transit(this.timing.sendQueue(), signal);
      if (!b.query_id || !b.write_cap) return this.finishCopy(op, { code: local.ErrorCode.InvalidRequest, replicaErrorCode: 0, failedEnvelopeIndex: 0 });
      if (!this.documentPresent) return this.finishCopy(op, { code: local.ErrorCode.InternalError, replicaErrorCode: 0, failedEnvelopeIndex: 0 });
      const pinHash: Buffer | null = b.courier_identity_hash;
      const pinQueue: Buffer | null = b.courier_queue_id;
      if (pinHash && pinQueue && pinQueue.length > 0) {
        op.courier = this.courierList.find((c) => c.identityHash.equals(pinHash) && c.queueId.equals(pinQueue)) ?? null;
        if (!op.courier) {
          this.log('copy command pinned to a courier that is not in the PKI document');
          return this.finishCopy(op, { code: local.ErrorCode.InternalError, replicaErrorCode: 0, failedEnvelopeIndex: 0 });
        }
      } else op.courier = this.randomCourier();
      const writeCap: Buffer = b.write_cap;
      const key = op.key;
      // The first answer is InProgress (or a cached verdict); then the daemon polls every CopyPollInterval.
      await this.transit(this.timing.roundTrip(), signal);
      const cached = this.mixnet.copyVerdicts.get(key);
      if (cached && cached.expires > Date.now()) return this.finishCopy(op, cached.verdict);
      const job = this.copyJob(key, writeCap);
      if (this.timing.copyPollMs === 0) {
        await abortable(job.promise, signal);
      } else {
        while (!job.result) {
          await this.transit(this.timing.copyPollMs, signal);
          await this.transit(this.timing.roundTrip(), signal);
        }
      }
      this.finishCopy(op, job.result ?? (await job.promise));
    } catch (e) {
      if (signal.aborted || isAbort(e)) return;
      this.log(`copy command failed: ${(e as Error).stack ?? e}`);
      this.finishCopy(op, { code: local.ErrorCode.InternalError, replicaErrorCode: 0, failedEnvelopeIndex: 0 });
    }
  }

  /** The courier's background job for one temp stream; shared by concurrent commands for the same cap. */
  private copyJob(key: string, writeCap: Buffer): CopyJob {
    const mixnet = this.mixnet;
    const running = mixnet.copyJobs.get(key);
    if (running) return running;
    const job: CopyJob = { promise: Promise.resolve(null as unknown as CopyVerdict), result: null };
    job.promise = this.executeCopy(mixnet, writeCap).then(
      (v) => {
        job.result = v;
        mixnet.copyJobs.delete(key);
        const now = Date.now();
        for (const [k, cached] of mixnet.copyVerdicts) if (cached.expires <= now) mixnet.copyVerdicts.delete(k);
        mixnet.copyVerdicts.set(key, { verdict: v, expires: now + COPY_VERDICT_TTL_MS });
        return v;
      },
      (e) => {
        mixnet.copyJobs.delete(key);
        const v = { code: isAbort(e) ? 24 : local.ErrorCode.InternalError, replicaErrorCode: 0, failedEnvelopeIndex: 0 };
        job.result = v;
        return v;
      },
    );
    mixnet.copyJobs.set(key, job);
    return job;
  }

  /**
   * Read the temp stream from its first index, decode envelopes as they
   * complete, write each destination box; stop after the final element
   * (PIGEONHOLE §2.6). Earlier writes stay when a later one fails.
   */
  private async executeCopy(mixnet: Mixnet, writeCap: Buffer): Promise<CopyVerdict> {
    const signal = mixnet.abort.signal;
    const fail = (replicaErrorCode: number, failedEnvelopeIndex: number): CopyVerdict => ({ code: 26, replicaErrorCode, failedEnvelopeIndex });
    const rootPublic = writeCap.subarray(32, 64);
    const readCap = readCapOf(writeCap);
    let idx = firstIndexOfCap(writeCap);
    const decoder = new CopyStreamDecoder();
    let done = 0;
    // Only the realistic mode spends time on the courier's replica exchanges; the others add no timer hop.
    const replicaTrip = async () => {
      const ms = this.timing.courierReplicaTrip();
      if (ms > 0) await sleep(ms, signal);
    };
    while (!decoder.finished) {
      const boxId = boxIdOf(rootPublic, idx);
      await replicaTrip();
      let box = mixnet.store.get(boxId);
      // The courier's patience is the real one whatever the latency mode (PIGEONHOLE §2.6 step 3).
      const giveUpAt = Date.now() + this.courierPatienceMs;
      for (let attempt = 0; !box; attempt++) {
        const left = giveUpAt - Date.now();
        if (left <= 0) {
          this.log(`copy: temp box ${done + 1} still unreadable after ${attempt} retries over ${this.courierPatienceMs} ms; the copy fails`);
          return fail(1, done + 1);
        }
        if (attempt === 0) this.log(`copy: temp box ${done + 1} not readable yet; the courier retries for up to ${this.courierPatienceMs} ms`);
        await this.awaitBox(mixnet, boxId, Math.min(this.timing.copyReadRetryDelay(attempt), left), signal);
        box = mixnet.store.get(boxId);
      }
      const opened = openBox(readCap, idx, box, boxId);
      if (opened.code !== 0 || !opened.plaintext) return fail(opened.code === 11 ? 11 : 5, done + 1);
      let envelopes: Buffer[];
      try {
        envelopes = decoder.push(opened.plaintext);
      } catch {
        return fail(5, done + 1);
      }
      for (const env of envelopes) {
        const q = this.crypto.openQuery(env);
        if (!q || q.kind === 'read' || !q.box) return fail(5, done + 1);
        // Destination writes are ordinary writes: identical content is success, anything else aborts.
        await replicaTrip();
        if (mixnet.store.write(q.boxId, q.box, this.timing.replicationLag()) === 'conflict') return fail(10, done + 1);
        done++;
      }
      idx = nextIndex(idx);
    }
    return { code: 0, replicaErrorCode: 0, failedEnvelopeIndex: 0 };
  }

  /** Sleep until the next retry; in the shortened modes wake as soon as the box is written. */
  private async awaitBox(mixnet: Mixnet, boxId: Buffer, ms: number, signal: AbortSignal): Promise<void> {
    if (!this.timing.wakesOnWrite) return sleep(ms, signal);
    const stop = new AbortController();
    const onAbort = () => stop.abort(signal.reason);
    if (signal.aborted) throw signal.reason;
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await Promise.race([mixnet.store.waitFor(boxId, stop.signal), sleep(ms, stop.signal)]);
    } finally {
      signal.removeEventListener('abort', onAbort);
      stop.abort();
    }
    if (signal.aborted) throw signal.reason;
  }

  // ---------------------------------------------------------------- legacy send
  private async runSend(s: Session, b: RequestBody): Promise<void> {
    const signal = s.abort.signal;
    try {
      await this.transit(this.timing.sendQueue(), signal);
      // Without a SURB nothing comes back, not even message_sent_event (§3.3).
      if (!b.with_surb) return;
      const payload: Buffer = b.payload ?? Buffer.alloc(0);
      const sentBody = (err: string | null, etaMs: number): Record<string, unknown> => {
        const body: Record<string, unknown> = {
          message_id: b.id,
          surbid: b.surbid,
          // Integers, never floats: cbor-x writes a JS number of 2^32 or more as float64, u64() avoids that.
          sent_at: u64(Math.floor(Date.now() / 1000)),
          reply_eta: u64(Math.round(etaMs * 1e6)),
        };
        if (err) body.err = err;
        return body;
      };
      const limit = this.sphinx.UserForwardPayloadLength;
      if (!this.documentPresent) {
        this.deliver(s, this.frameOf('message_sent_event', sentBody('no PKI document yet: no route to the service', 0)));
        return;
      }
      if (payload.length > limit) {
        this.deliver(s, this.frameOf('message_sent_event', sentBody(`payload of ${payload.length} bytes exceeds the ${limit}-byte Sphinx payload`, 0)));
        return;
      }
      if (!b.surbid) {
        this.deliver(s, this.frameOf('message_sent_event', sentBody('with_surb is set but surbid is missing', 0)));
        return;
      }
      const rtt = this.timing.roundTrip();
      this.deliver(s, this.frameOf('message_sent_event', sentBody(null, Math.max(rtt, this.timing.replyEtaMs()))));
      const service = this.findService(b.destination_id_hash, b.recipient_queue_id);
      if (service !== 'echo' && service !== 'testdest') return;
      await this.transit(rtt, signal);
      // The echo services answer with the payload zero-padded to a full Sphinx payload (§10.4).
      const reply = Buffer.alloc(Math.max(this.sphinx.ForwardPayloadLength, payload.length));
      payload.copy(reply);
      this.deliver(s, this.frameOf('message_reply_event', { message_id: b.id, surbid: b.surbid, payload: reply, error_code: 0 }));
    } catch (e) {
      if (signal.aborted || isAbort(e)) return;
      this.log(`send_message failed: ${(e as Error).stack ?? e}`);
    }
  }

  private findService(destination: Buffer | null, queue: Buffer | null): string | null {
    if (!destination || !queue) return null;
    const node = this.network.serviceNodes.find((n) => n.identityHash.equals(destination));
    if (!node) return null;
    const endpoint = queue.toString('utf8');
    return Object.entries(SERVICE_ENDPOINTS).find(([, ep]) => ep === endpoint)?.[0] ?? null;
  }
}

export async function startEmulator(options: EmulatorOptions = {}): Promise<Emulator> {
  const emu = new EmulatorServer(options);
  await emu.start();
  return emu;
}
