/**
 * ThinClient: the TypeScript thin client for kpclientd (PROTOCOL.md).
 *
 * One object owns one session (its 16-byte session token) and at most one
 * socket at a time. Requests are multiplexed by query ID; the blocking ARQ
 * calls (start_resending_*) are tracked so that they can be replayed
 * verbatim on every reconnect (§2.6, and see onHandshakeComplete). Encoding, framing and error
 * tables live in wire.ts / errors.ts and are shared with the emulator.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import WebSocket, { createWebSocketStream } from 'ws';

import { describeDial, loadThinClientConfig, resolveDialConfig, unixSocketPath } from './config';
import type { DialConfig, ThinClientTomlShape } from './config';
import { blake2b256, newMessageId, newQueryId, newSurbId } from './crypto';
import {
  CborError,
  DaemonDisconnectedError,
  InvalidArgumentError,
  KatzenpostError,
  OperationCancelledError,
  ProtocolError,
  ServiceNotFoundError,
  StartResendingCancelledError,
  ThinClientOfflineError,
  ThinClientTimeoutError,
  UnsupportedByDaemonError,
  errorForCopyCode,
  errorForGenericCode,
  errorForResendCode,
  errorForVoucherCode,
} from './errors';
import { EventQueue } from './events';
import type { ThinClientEvent, ThinClientEventMap } from './events';
import {
  findCouriers,
  findServices,
  parsePkiDocument,
  pickDistinctCouriers,
  pickRandom,
} from './pki';
import type { CourierDescriptor, PkiDocument, ServiceDescriptor } from './pki';
import {
  anyBytes,
  booleanArg,
  describeValue,
  exactBytes,
  integerInRange,
  nonEmptyBytes,
  optionalExactBytes,
  optionalSignal,
  optionalTimeout,
  payloadBytes,
  u64Arg,
} from './validate';
import {
  DEFAULT_FRAME_TIMEOUT_MS,
  DEFAULT_MAX_FRAME_LENGTH,
  FrameDecoder,
  HASH_LENGTH,
  HEAD_REQUEST_KINDS,
  HEAD_RESPONSE_KINDS,
  INSTANCE_TOKEN_LENGTH,
  MAX_COPY_PAYLOAD_LENGTH,
  MESSAGE_BOX_INDEX_LENGTH,
  PIGEONHOLE_GEOMETRY_KEYS,
  READ_CAP_LENGTH,
  RESPONSE_KINDS,
  SEED_LENGTH,
  SPHINX_GEOMETRY_KEYS,
  SURB_ID_LENGTH,
  VOUCHER_LENGTH,
  VOUCHER_SECRET_KEY_LENGTH,
  WRITE_CAP_LENGTH,
  bytesOrNull,
  checkFixedLengths,
  decodeEnvelope,
  encodeFrame,
  encodeRequest,
  requestBodies,
  toBigInt,
  toNumber,
} from '../wire';
import type { AnyRequestKind, HeadRequestKind, PigeonholeGeometry, SphinxGeometry } from '../wire';

// ------------------------------------------------------------------ public types
export interface Logger {
  debug(m: string): void;
  info(m: string): void;
  warn(m: string): void;
  error(m: string): void;
}

/**
 * The thin-client protocol level of a daemon: 'pinned' = kpclientd v0.0.76
 * (20-key reply envelope), 'current' = v0.0.99 and later (25 keys: directory
 * authorities and Contact Vouchers, PROTOCOL.md §9.3).
 */
export type DaemonProtocol = 'pinned' | 'current';

/** The methods only a current daemon serves (each sends one HEAD request kind). */
export type CurrentOnlyMethod = 'getDirectoryAuthorities' | 'voucherMint' | 'voucherInduct' | 'voucherOpen' | 'voucherDeriveStream';

const METHOD_KINDS: Readonly<Record<CurrentOnlyMethod, HeadRequestKind>> = {
  getDirectoryAuthorities: 'get_directory_authorities',
  voucherMint: 'voucher_mint',
  voucherInduct: 'voucher_induct',
  voucherOpen: 'voucher_open',
  voucherDeriveStream: 'voucher_derive_stream',
};

/** Default handshake deadline: a current daemon without a PKI document holds the first frame up to 30 s (§9.2). */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 45_000;

export interface ThinClientOptions {
  /**
   * "host:port", "[::1]:port", "ws://host:port" (kpclientd v0.0.99+ [Listen.Ws]), "/path.sock",
   * "@abstract", a DialConfig or the thinclient.toml shape. Default localhost:64331.
   */
  dial?: DialConfig | ThinClientTomlShape | string;
  /** Path of a thinclient.toml (alternative to `dial`). */
  configFile?: string;
  /**
   * Socket + handshake deadline (§2.1). Default 45 s: a current kpclientd
   * that has no PKI document yet holds the first handshake frame up to 30 s (§9.2).
   */
  handshakeTimeoutMs?: number;
  /**
   * What the daemon supports. 'auto' (default) reads it from every
   * connection's handshake: a daemon whose reply envelope carries
   * `voucher_mint_reply` knows `voucher_mint`, and so on (the Go daemon
   * always sends its full envelope). Force 'pinned' or 'current' only for a
   * daemon that sends partial envelopes.
   */
  daemonProtocol?: DaemonProtocol | 'auto';
  /** Deadline of local requests (keypair, encrypt, index, PKI, envelopes, cancels), including any wait for a reconnect. Default 30 s. */
  requestTimeoutMs?: number;
  /** Largest frame body accepted on read (checked before allocating) and on write. Default 40 MiB. */
  maxFrameLength?: number;
  /** A daemon frame still incomplete this long after its first byte drops the connection (then the client reconnects). Default 60 s. */
  frameTimeoutMs?: number;
  /** Reconnect by itself after losing the daemon (§2.6). Default true. */
  reconnect?: boolean;
  /** First reconnect delay; doubles after each failed attempt. Default 1 s. */
  reconnectInitialDelayMs?: number;
  /** Cap of the reconnect delay. Default 60 s. */
  reconnectMaxDelayMs?: number;
  /** 16 bytes: resume the daemon session of an earlier client object (§2.3). */
  sessionToken?: Uint8Array;
  logger?: Logger;
}

/** Per-call options of local requests. */
export interface CallOptions {
  /** Overrides requestTimeoutMs for this call. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Options of the blocking ARQ calls; aborting or timing out also cancels on the daemon. */
export interface ArqOptions {
  signal?: AbortSignal;
  /** No deadline unless given: ARQ calls legitimately block for minutes. */
  timeoutMs?: number;
}

export interface CopyCommandOptions extends ArqOptions {
  /** Pin the courier (both or neither; from getAllCouriers()/getDistinctCouriers()). */
  courierIdentityHash?: Uint8Array;
  courierQueueId?: Uint8Array;
}

export interface BlockingSendOptions {
  /** Default 30 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface KeypairResult {
  writeCap: Buffer;
  readCap: Buffer;
  firstMessageIndex: Buffer;
}

export interface EncryptResult {
  messageCiphertext: Buffer;
  envelopeDescriptor: Buffer;
  envelopeHash: Buffer;
  nextMessageBoxIndex: Buffer;
}

export interface ResendParams {
  /** Set for a read (with messageBoxIndex) … */
  readCap?: Uint8Array | null;
  /** … or for a write; exactly one of the two. */
  writeCap?: Uint8Array | null;
  /** The index given to encryptRead; required for reads, ignored by the daemon for writes. */
  messageBoxIndex?: Uint8Array | null;
  replyIndex?: number | null;
  envelopeDescriptor: Uint8Array;
  messageCiphertext: Uint8Array;
  envelopeHash: Uint8Array;
  noRetryOnBoxIdNotFound?: boolean;
  noIdempotentBoxAlreadyExists?: boolean;
}

export interface StartResendingResult {
  /** The read plaintext; null for writes. */
  plaintext: Buffer | null;
  courierIdentityHash: Buffer | null;
  courierQueueId: Buffer | null;
}

export type TombstoneEnvelope = EncryptResult & { boxIndex: Buffer };

export interface TombstoneRangeResult {
  envelopes: TombstoneEnvelope[];
  /** The index after the last tombstoned box (equals start when maxCount is 0). */
  next: Buffer;
}

export interface CourierEnvelopesResult {
  envelopes: Buffer[];
  nextDestIndex: Buffer;
}

export interface MultiPayloadDestination {
  payload: Uint8Array | string;
  writeCap: Uint8Array;
  startIndex: Uint8Array;
}

export interface MultiPayloadResult {
  envelopes: Buffer[];
  buffer: Buffer | null;
  nextDestIndices: (Buffer | null)[];
}

export interface TombstoneRangeEnvelopesResult {
  envelopes: Buffer[];
  buffer: Buffer | null;
  nextDestIndex: Buffer;
}

export interface RawPkiDocument {
  payload: Buffer;
  epoch: bigint;
}

/** One directory authority the daemon is configured with (§9.3). */
export interface DirectoryAuthority {
  /** Its name, e.g. "auth1". */
  identifier: string;
  /** Its identity signature scheme, e.g. "Ed25519". */
  pkiSignatureScheme: string;
  /** Its wire-protocol KEM, e.g. "xwing". */
  wireKemScheme: string;
  /** Where it listens, e.g. ["tcp://127.0.0.1:30001"]. */
  addresses: string[];
  /** Identity public key, PEM text. */
  identityPublicKeyPem: string;
  /** Link public key, PEM text. */
  linkPublicKeyPem: string;
  /** BLAKE2b-256 of the identity key: the key of this authority's entry in a signed PKI document's Signatures map. */
  identityKeyHash: Buffer;
}

/** What voucherMint returns (the joiner's side of a Contact Voucher). */
export interface VoucherMintResult {
  /** The 32-byte token to hand to the inductor out of band (a QR code, a link). */
  voucher: Buffer;
  /** Write it to box 0 of the voucher stream (voucherWriteCap). */
  voucherPayload: Buffer;
  /** The rendezvous "voucher stream" (168 bytes); anyone with the voucher can derive it. */
  voucherWriteCap: Buffer;
  /** Its read cap (136 bytes). */
  voucherReadCap: Buffer;
  /** Keep it secret and persist it: voucherOpen needs it to open the inductor's sealed reply. */
  voucherSecretKey: Buffer;
  voucherPublicKey: Buffer;
}

/** What voucherInduct returns (the inductor's side). */
export interface VoucherInductResult {
  /** The display name the joiner put in the voucher payload. */
  displayName: string;
  /** The joiner's message read cap re-seeded by the salt: the live read cap to hand to the group. */
  mutatedMessageReadCap: Buffer;
  /** Write it to box 1 of the voucher stream; only the joiner's voucherSecretKey opens it. */
  sealedReply: Buffer;
  voucherWriteCap: Buffer;
  voucherReadCap: Buffer;
  /** The fresh 32-byte VoucherSalt sealed into the reply. */
  salt: Buffer;
}

/** What voucherOpen returns (the joiner again). */
export interface VoucherOpenResult {
  /** The inductor's opaque blob (e.g. how to reach the group). */
  whoReply: Buffer;
  salt: Buffer;
  /** The joiner's message write cap re-seeded by the salt: write real messages with it (it matches mutatedMessageReadCap). */
  mutatedMessageWriteCap: Buffer;
}

/** The voucher stream's caps, derived from the voucher alone. */
export interface VoucherStreamCaps {
  voucherWriteCap: Buffer;
  voucherReadCap: Buffer;
}

// ------------------------------------------------------------------ internals
type State = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

type EventArgs = { [K in keyof ThinClientEventMap]: [ThinClientEventMap[K]] };

const KNOWN_RESPONSE_KINDS: readonly string[] = [...RESPONSE_KINDS, ...HEAD_RESPONSE_KINDS];
const HEAD_KINDS: ReadonlySet<string> = new Set(HEAD_REQUEST_KINDS);
/** Pinned frames that answer no call: the events and the handshake's session_token_reply. */
const CALL_FREE_KINDS: ReadonlySet<string> = new Set(RESPONSE_KINDS.filter((k) => !k.endsWith('_reply') || k === 'session_token_reply'));
const DEFAULT_DIAL: DialConfig = { kind: 'tcp', host: 'localhost', port: 64331, network: 'tcp' };
const DEFAULT_BLOCKING_SEND_TIMEOUT_MS = 30_000;
const SOCKET_END_GRACE_MS = 1_000;
/** Frames of one tick are concatenated into writes of up to this many bytes; a larger frame is written alone. */
const WRITE_BATCH_BYTES = 64 * 1024;
const PKI_CACHE_EPOCHS = 5;
const U32_MAX = 0xffffffff;

const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

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

interface ArqIdentity {
  key: string;
  hash: Buffer;
  cancelKind: 'cancel_resending_encrypted_message' | 'cancel_resending_copy_command';
}

/** A request waiting for its reply. */
interface Pending {
  op: string;
  kind: AnyRequestKind;
  key: string;
  /** The whole frame, kept so a re-send or replay is byte-for-byte the original. */
  frame: Buffer;
  arq: ArqIdentity | null;
  /** Written to some connection at least once (the daemon may know it). */
  written: boolean;
  /** Cancelled by the application: never replay it. */
  cancelled: boolean;
  /** Called after each write (starts a deadline that counts from the first write). */
  onWritten: (() => void) | null;
  resolve: (body: Record<string, unknown>) => void;
  reject: (err: Error) => void;
}

interface SurbWaiter {
  resolve: (payload: Buffer) => void;
  reject: (err: Error) => void;
}

interface CallSpec {
  op: string;
  /** The argument blamed if the frame exceeds maxFrameLength. */
  sizeArg: string;
  timeoutMs?: number;
  /** The deadline starts at the first write instead of now (requests queued while the socket is down). */
  timeoutFromWrite?: boolean;
  signal?: AbortSignal;
  arq?: ArqIdentity;
}

function replyKindOf(kind: AnyRequestKind): string {
  return `${kind}_reply`;
}

function positiveOption(name: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new InvalidArgumentError(name, 'a positive finite number', describeValue(v));
  }
  return v;
}

/**
 * The thin client. Create it, call connect(), use the methods, close() at
 * the end. Every method validates its arguments locally (InvalidArgumentError
 * naming the argument) before anything is sent.
 */
export class ThinClient extends EventEmitter<EventArgs> {
  private readonly dial: DialConfig;
  /** Every call's deadline, swept by one timer (no timer per request). */
  private readonly deadlines = new DeadlineSweep();
  private readonly handshakeTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private readonly maxFrameLength: number;
  private readonly frameTimeoutMs: number;
  private readonly reconnectEnabled: boolean;
  private readonly reconnectInitialDelayMs: number;
  private readonly reconnectMaxDelayMs: number;
  private readonly protocolSetting: DaemonProtocol | 'auto';
  private readonly log: Logger;

  private readonly token: Buffer;
  private state: State = 'idle';
  private active: Connection | null = null;
  private handshaking: Connection | null = null;
  private connectionCounter = 0;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private reconnectAttempt = 0;
  /** The daemon instance token seen before the last loss, to detect a restart. */
  private tokenBeforeLoss: Buffer | null = null;
  private connectWaiters: { resolve: () => void; reject: (e: Error) => void }[] = [];

  private daemonInstanceToken: Buffer | null = null;
  private daemonAppId: Buffer | null = null;
  private sessionResumed = false;
  /** Reply kinds the daemon of the last completed handshake announced (its envelope keys). */
  private daemonKinds: ReadonlySet<string> | null = null;
  private mixnetConnected = false;
  /** Why the socket to the daemon is down: the last socket error of a lost connection or a failed (re)connect. */
  private lastSocketError: Error | null = null;
  private sphinx: SphinxGeometry | null = null;
  private pigeonhole: PigeonholeGeometry | null = null;
  private currentDocument: PkiDocument | null = null;
  private readonly documents = new Map<number, PkiDocument>();

  private readonly pending = new Map<string, Pending>();
  /** In-flight ARQ operations by envelope hash / write-cap hash (§2.6). */
  private readonly arqInFlight = new Map<string, Pending>();
  private readonly surbWaiters = new Map<string, SurbWaiter>();
  private readonly queues = new Set<EventQueue<ThinClientEvent>>();

  /**
   * @throws ConfigError for an unusable `dial` / `configFile`;
   *         InvalidArgumentError for a bad option (e.g. a sessionToken that is not 16 bytes).
   */
  constructor(options: ThinClientOptions = {}) {
    super();
    if (options.dial !== undefined && options.configFile !== undefined) {
      throw new InvalidArgumentError('options', 'either dial or configFile, not both');
    }
    if (options.configFile !== undefined) this.dial = loadThinClientConfig(options.configFile);
    else if (options.dial !== undefined) this.dial = resolveDialConfig(options.dial);
    else this.dial = DEFAULT_DIAL;
    this.handshakeTimeoutMs = positiveOption('handshakeTimeoutMs', options.handshakeTimeoutMs, DEFAULT_HANDSHAKE_TIMEOUT_MS);
    const protocol = options.daemonProtocol ?? 'auto';
    if (protocol !== 'auto' && protocol !== 'pinned' && protocol !== 'current') {
      throw new InvalidArgumentError('daemonProtocol', '"auto", "pinned" or "current"', describeValue(protocol));
    }
    this.protocolSetting = protocol;
    this.requestTimeoutMs = positiveOption('requestTimeoutMs', options.requestTimeoutMs, 30_000);
    this.maxFrameLength = positiveOption('maxFrameLength', options.maxFrameLength, DEFAULT_MAX_FRAME_LENGTH);
    this.frameTimeoutMs = positiveOption('frameTimeoutMs', options.frameTimeoutMs, DEFAULT_FRAME_TIMEOUT_MS);
    this.reconnectInitialDelayMs = positiveOption('reconnectInitialDelayMs', options.reconnectInitialDelayMs, 1_000);
    this.reconnectMaxDelayMs = positiveOption('reconnectMaxDelayMs', options.reconnectMaxDelayMs, 60_000);
    if (options.reconnect !== undefined) booleanArg('reconnect', options.reconnect);
    this.reconnectEnabled = options.reconnect ?? true;
    this.token =
      options.sessionToken === undefined
        ? randomBytes(INSTANCE_TOKEN_LENGTH)
        : Buffer.from(exactBytes('sessionToken', options.sessionToken, INSTANCE_TOKEN_LENGTH));
    this.log = options.logger ?? silentLogger;
  }

  /** A client for the daemon named in a thinclient.toml (§1.4). @throws ConfigError */
  static fromConfigFile(path: string, options: Omit<ThinClientOptions, 'dial' | 'configFile'> = {}): ThinClient {
    return new ThinClient({ ...options, configFile: path });
  }

  /** BLAKE2b-256 of a 168-byte WriteCap: the key of cancelResendingCopyCommand. @throws InvalidArgumentError */
  static writeCapHash(writeCap: Uint8Array): Buffer {
    return blake2b256(exactBytes('writeCap', writeCap, WRITE_CAP_LENGTH));
  }

  /**
   * The MessageBoxIndex a cap starts at: the last 104 bytes of a 168-byte
   * WriteCap or a 136-byte ReadCap (PROTOCOL.md §6.9). For a new keypair it
   * equals firstMessageIndex; use it for caps that come without an index,
   * such as the voucher stream caps and the mutated caps of voucherInduct /
   * voucherOpen (box 0 of the voucher stream is at this index, box 1 at its successor).
   * @throws InvalidArgumentError
   */
  static firstMessageIndexOf(cap: Uint8Array): Buffer {
    if (!(cap instanceof Uint8Array) || (cap.length !== WRITE_CAP_LENGTH && cap.length !== READ_CAP_LENGTH)) {
      throw new InvalidArgumentError('cap', `a ${WRITE_CAP_LENGTH}-byte WriteCap or a ${READ_CAP_LENGTH}-byte ReadCap`, describeValue(cap));
    }
    return Buffer.from(cap.subarray(cap.length - MESSAGE_BOX_INDEX_LENGTH));
  }

  // ------------------------------------------------------------- properties
  /** This object's session token (client_instance_token); pass it to a new client to resume the session. */
  get sessionToken(): Buffer {
    return Buffer.from(this.token);
  }

  /** The daemon's instance token from the last connection_status_event. */
  get instanceToken(): Buffer | null {
    return this.daemonInstanceToken ? Buffer.from(this.daemonInstanceToken) : null;
  }

  /** The app ID the daemon bound this session to. */
  get appId(): Buffer | null {
    return this.daemonAppId ? Buffer.from(this.daemonAppId) : null;
  }

  /** Whether the last handshake resumed an existing daemon session. */
  get resumed(): boolean {
    return this.sessionResumed;
  }

  /** The address this client dials. */
  get address(): string {
    return describeDial(this.dial);
  }

  /** The daemon's connection to the mixnet (last connection_status_event); false while our socket is down. */
  isConnected(): boolean {
    return this.mixnetConnected;
  }

  /**
   * Why the daemon cannot be reached right now: the socket error of the last
   * lost connection or failed (re)connect attempt (e.g. `connect
   * ECONNREFUSED 127.0.0.1:64331`, with its `code`), or null while connected
   * or when the daemon simply hung up.
   */
  get lastConnectionError(): Error | null {
    return this.isDaemonConnected() ? null : this.lastSocketError;
  }

  /** Our socket to the daemon is up and its handshake is done. */
  isDaemonConnected(): boolean {
    return this.state === 'connected' && this.active !== null && !this.active.dead;
  }

  /** The Sphinx geometry the daemon announced. @throws ProtocolError before the first status event */
  sphinxGeometry(): SphinxGeometry {
    if (!this.sphinx) throw new ProtocolError('no Sphinx geometry yet: connect() first');
    return { ...this.sphinx };
  }

  /** The Pigeonhole geometry the daemon announced. @throws ProtocolError before the first status event */
  pigeonholeGeometry(): PigeonholeGeometry {
    if (!this.pigeonhole) throw new ProtocolError('no Pigeonhole geometry yet: connect() first');
    return { ...this.pigeonhole };
  }

  /**
   * The protocol level of the daemon of the last handshake: 'current'
   * (kpclientd v0.0.99+) when its reply envelope carries every reply kind
   * of PROTOCOL.md §9.3, else 'pinned'; null before the first handshake.
   * Forced by the daemonProtocol option.
   */
  daemonProtocol(): DaemonProtocol | null {
    if (this.protocolSetting !== 'auto') return this.protocolSetting;
    if (!this.daemonKinds) return null;
    return HEAD_RESPONSE_KINDS.every((k) => this.daemonKinds!.has(k)) ? 'current' : 'pinned';
  }

  /**
   * Whether the connected daemon serves `method` (one of the current-only
   * methods: getDirectoryAuthorities and the voucher calls). False before
   * the first handshake. A call the daemon does not serve fails with
   * UnsupportedByDaemonError without sending anything.
   */
  supports(method: CurrentOnlyMethod): boolean {
    const kind = METHOD_KINDS[method];
    if (kind === undefined) throw new InvalidArgumentError('method', `one of ${Object.keys(METHOD_KINDS).join(', ')}`, describeValue(method));
    return this.unsupported(kind, method, this.daemonKinds) === null && (this.protocolSetting !== 'auto' || this.daemonKinds !== null);
  }

  // -------------------------------------------------------------- lifecycle
  /**
   * Open the socket and perform the handshake (§2.1). Resolves once the
   * session token reply arrived. While the client is reconnecting by
   * itself, resolves at the next successful reconnect.
   * @throws DaemonDisconnectedError (cannot reach the daemon, or the client is closed),
   *         ProtocolError / CborError (the daemon broke the handshake), ThinClientTimeoutError
   */
  connect(): Promise<void> {
    switch (this.state) {
      case 'closed':
        return Promise.reject(new DaemonDisconnectedError('the client is closed'));
      case 'connected':
        return Promise.resolve();
      case 'connecting':
      case 'reconnecting':
        return this.waitForConnection();
      case 'idle': {
        this.state = 'connecting';
        const done = this.waitForConnection();
        this.openConnection('connect');
        return done;
      }
    }
  }

  /**
   * Say goodbye (thin_close: the daemon drops this session's state), close
   * the socket and stop reconnecting. Pending calls reject with
   * OperationCancelledError and event iterators end. Idempotent; never throws.
   */
  close(): Promise<void> {
    return this.shutdown(true);
  }

  /**
   * Close the socket WITHOUT thin_close: the daemon keeps the session for its
   * grace period (30 minutes at kpclientd v0.0.76, 10 minutes by default at
   * v0.0.99, where it is the daemon's SessionGracePeriod setting), so
   * connect() again, or a new client given this sessionToken, resumes it
   * within that time. Pending calls reject with OperationCancelledError.
   * Idempotent; never throws.
   */
  disconnect(): Promise<void> {
    return this.shutdown(false);
  }

  /**
   * Every event, in order, as an async iterator with an unbounded buffer
   * (nothing is dropped). Ends when `signal` aborts, the iterator is
   * returned, or the client is closed.
   */
  events(signal?: AbortSignal): AsyncIterableIterator<ThinClientEvent> {
    const q = new EventQueue<ThinClientEvent>((done) => this.queues.delete(done), optionalSignal('signal', signal));
    if (this.state === 'closed') q.end();
    else if (!q.isEnded) this.queues.add(q);
    return q;
  }

  // ------------------------------------------------------- PKI and services
  /** The current stripped PKI document, or null before the daemon sent one. */
  pkiDocument(): PkiDocument | null {
    return this.currentDocument;
  }

  /** The document of `epoch` if it is among the last 5 received, else null. @throws InvalidArgumentError */
  pkiDocumentForEpoch(epoch: number | bigint): PkiDocument | null {
    const e = u64Arg('epoch', epoch);
    return e > BigInt(Number.MAX_SAFE_INTEGER) ? null : (this.documents.get(Number(e)) ?? null);
  }

  /**
   * The signed, certificate-wrapped document of `epoch` (0 = the daemon's
   * current one) and the epoch it belongs to (§3.13).
   * @throws DaemonError('get_pki_document', 10) when the daemon has no document for that epoch
   */
  async getPkiDocumentRaw(epoch: number | bigint = 0, opts?: CallOptions): Promise<RawPkiDocument> {
    const e = u64Arg('epoch', epoch);
    const reply = await this.localCall('get_pki_document', requestBodies.getPkiDocument(newQueryId(), e), 'getPkiDocumentRaw', 'epoch', opts);
    throwIf(errorForGenericCode('get_pki_document', code(reply, 'get_pki_document')));
    return { payload: requireBytes(reply, 'payload', 'get_pki_document_reply'), epoch: u64Field(reply, 'epoch', 'get_pki_document_reply') };
  }

  /** Every service offering `capability` (e.g. "echo", "courier"). @throws ServiceNotFoundError */
  getServices(capability: string): ServiceDescriptor[] {
    if (typeof capability !== 'string' || capability === '') {
      throw new InvalidArgumentError('capability', 'a non-empty string', describeValue(capability));
    }
    return findServices(this.currentDocument, capability);
  }

  /** One service offering `capability`, chosen uniformly at random. @throws ServiceNotFoundError */
  getService(capability: string): ServiceDescriptor {
    return pickRandom(this.getServices(capability));
  }

  /** Every courier in the current document (empty when there is none). */
  getAllCouriers(): CourierDescriptor[] {
    return findCouriers(this.currentDocument);
  }

  /**
   * `n` different couriers drawn at random (for nested copies).
   * @throws InvalidArgumentError (n not a positive integer), NotEnoughCouriersError
   */
  getDistinctCouriers(n: number): CourierDescriptor[] {
    integerInRange('n', n, 1, U32_MAX);
    return pickDistinctCouriers(this.getAllCouriers(), n);
  }

  /** One courier chosen at random. @throws ServiceNotFoundError when the document has none */
  getCourierDestination(): CourierDescriptor {
    const all = this.getAllCouriers();
    if (all.length === 0) throw new ServiceNotFoundError('courier');
    return pickRandom(all);
  }

  // ---------------------------------------------------------- legacy (§3.3)
  /**
   * Send `payload` with a SURB so the service can reply; returns once the
   * request is written. The reply arrives as a 'messageReply' event carrying `surbId`.
   * @throws InvalidArgumentError, ThinClientOfflineError (daemon not on the mixnet), DaemonDisconnectedError
   */
  async sendMessage(surbId: Uint8Array, payload: Uint8Array | string, destNode: Uint8Array, destQueue: Uint8Array): Promise<void> {
    const surb = exactBytes('surbId', surbId, SURB_ID_LENGTH);
    const frame = this.legacyFrame(surb, payload, destNode, destQueue);
    this.requireOnline();
    this.writeNow(frame);
  }

  /**
   * Fire-and-forget send: no SURB, so neither a sent event nor a reply follows.
   * @throws InvalidArgumentError, ThinClientOfflineError, DaemonDisconnectedError
   */
  async sendMessageWithoutReply(payload: Uint8Array | string, destNode: Uint8Array, destQueue: Uint8Array): Promise<void> {
    const frame = this.legacyFrame(null, payload, destNode, destQueue);
    this.requireOnline();
    this.writeNow(frame);
  }

  /**
   * Send with a fresh SURB and wait for the reply's payload (§7.5).
   * A lost daemon connection does not end the wait by itself: if the
   * reconnect resumes the session, the reply the daemon queued meanwhile
   * still arrives.
   * @throws InvalidArgumentError, ThinClientOfflineError, ThinClientTimeoutError (default 30 s),
   *         OperationCancelledError (signal), DaemonDisconnectedError ("connection lost": the daemon
   *         went offline, restarted, or did not resume the session after a reconnect; or the
   *         connection dropped with reconnect disabled), KatzenpostError SEND_FAILED
   *         (message_sent_event carried an error)
   */
  async blockingSendMessage(
    payload: Uint8Array | string,
    destNode: Uint8Array,
    destQueue: Uint8Array,
    opts: BlockingSendOptions = {},
  ): Promise<Buffer> {
    const timeoutMs = optionalTimeout('timeoutMs', opts.timeoutMs) ?? DEFAULT_BLOCKING_SEND_TIMEOUT_MS;
    const signal = optionalSignal('signal', opts.signal);
    const surb = newSurbId();
    const frame = this.legacyFrame(surb, payload, destNode, destQueue);
    this.requireOnline();
    if (signal?.aborted) throw new OperationCancelledError('blockingSendMessage was aborted');
    const key = surb.toString('hex');
    return new Promise<Buffer>((resolve, reject) => {
      const cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.surbWaiters.delete(key);
      };
      const onAbort = () => {
        cleanup();
        reject(new OperationCancelledError('blockingSendMessage was aborted'));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new ThinClientTimeoutError(`blockingSendMessage: no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      // Registered before the write, so even an instant reply finds its waiter.
      this.surbWaiters.set(key, {
        resolve: (p) => {
          cleanup();
          resolve(p);
        },
        reject: (e) => {
          cleanup();
          reject(e);
        },
      });
      try {
        this.writeNow(frame);
      } catch (e) {
        cleanup();
        reject(e as Error);
      }
    });
  }

  // ----------------------------------------------------- pigeonhole (§3.4-)
  /**
   * Derive a WriteCap, ReadCap and first index from a 32-byte seed
   * (deterministic: the same seed gives the same channel).
   * @throws InvalidArgumentError, DaemonError('new_keypair', code), ThinClientTimeoutError, OperationCancelledError
   */
  async newKeypair(seed: Uint8Array, opts?: CallOptions): Promise<KeypairResult> {
    const s = exactBytes('seed', seed, SEED_LENGTH);
    const reply = await this.localCall('new_keypair', requestBodies.newKeypair(newQueryId(), s), 'newKeypair', 'seed', opts);
    throwIf(errorForGenericCode('new_keypair', code(reply, 'new_keypair')));
    const k = 'new_keypair_reply';
    return {
      writeCap: requireBytes(reply, 'write_cap', k),
      readCap: requireBytes(reply, 'read_cap', k),
      firstMessageIndex: requireBytes(reply, 'first_message_index', k),
    };
  }

  /**
   * The successor of a 104-byte MessageBoxIndex.
   * @throws InvalidArgumentError, DaemonError('next_message_box_index', code), ThinClientTimeoutError
   */
  async nextMessageBoxIndex(index: Uint8Array, opts?: CallOptions): Promise<Buffer> {
    const idx = exactBytes('index', index, MESSAGE_BOX_INDEX_LENGTH);
    const reply = await this.localCall('next_message_box_index', requestBodies.nextMessageBoxIndex(newQueryId(), idx), 'nextMessageBoxIndex', 'index', opts);
    throwIf(errorForGenericCode('next_message_box_index', code(reply, 'next_message_box_index')));
    return requireBytes(reply, 'next_message_box_index', 'next_message_box_index_reply');
  }

  /**
   * The 64-bit counter of an index (a bigint: first counters are near 2^62).
   * @throws InvalidArgumentError, DaemonError('get_message_box_index_counter', code), ThinClientTimeoutError
   */
  async getMessageBoxIndexCounter(index: Uint8Array, opts?: CallOptions): Promise<bigint> {
    const idx = exactBytes('index', index, MESSAGE_BOX_INDEX_LENGTH);
    const reply = await this.localCall(
      'get_message_box_index_counter',
      requestBodies.getMessageBoxIndexCounter(newQueryId(), idx),
      'getMessageBoxIndexCounter',
      'index',
      opts,
    );
    throwIf(errorForGenericCode('get_message_box_index_counter', code(reply, 'get_message_box_index_counter')));
    return u64Field(reply, 'counter', 'get_message_box_index_counter_reply');
  }

  /**
   * Encrypt a read of one box; pass the result to startResendingEncryptedMessage
   * together with the same readCap and index.
   * @throws InvalidArgumentError, DaemonError('encrypt_read', code), ThinClientTimeoutError
   */
  async encryptRead(readCap: Uint8Array, index: Uint8Array, opts?: CallOptions): Promise<EncryptResult> {
    const rc = exactBytes('readCap', readCap, READ_CAP_LENGTH);
    const idx = exactBytes('index', index, MESSAGE_BOX_INDEX_LENGTH);
    const reply = await this.localCall('encrypt_read', requestBodies.encryptRead(newQueryId(), rc, idx), 'encryptRead', 'readCap', opts);
    throwIf(errorForGenericCode('encrypt_read', code(reply, 'encrypt_read')));
    return encryptResult(reply, 'encrypt_read_reply');
  }

  /**
   * Encrypt a write of `plaintext` (at most MaxPlaintextPayloadLength bytes;
   * empty = a tombstone) to one box.
   * @throws InvalidArgumentError, DaemonError('encrypt_write', code), ThinClientTimeoutError
   */
  async encryptWrite(plaintext: Uint8Array | string, writeCap: Uint8Array, index: Uint8Array, opts?: CallOptions): Promise<EncryptResult> {
    const pt = payloadBytes('plaintext', plaintext, this.pigeonhole?.MaxPlaintextPayloadLength, 'pigeonhole MaxPlaintextPayloadLength');
    const wc = exactBytes('writeCap', writeCap, WRITE_CAP_LENGTH);
    const idx = exactBytes('index', index, MESSAGE_BOX_INDEX_LENGTH);
    const reply = await this.localCall('encrypt_write', requestBodies.encryptWrite(newQueryId(), pt, wc, idx), 'encryptWrite', 'plaintext', opts);
    throwIf(errorForGenericCode('encrypt_write', code(reply, 'encrypt_write')));
    return encryptResult(reply, 'encrypt_write_reply');
  }

  /**
   * Send an encrypted read or write through the daemon's ARQ and block until
   * its final outcome (§3.7): the plaintext for reads, null for writes.
   * Replayed verbatim if the connection is lost meanwhile.
   * @throws InvalidArgumentError; the replica/courier errors of §5.5 (BoxIDNotFoundError,
   *         TombstoneError, StartResendingCancelledError, …); OperationCancelledError (signal)
   *         and ThinClientTimeoutError (timeoutMs), both of which also cancel on the daemon
   */
  startResendingEncryptedMessage(params: ResendParams, opts?: ArqOptions): Promise<StartResendingResult> {
    return this.startResending(params, opts, 'startResendingEncryptedMessage', {});
  }

  /**
   * Like startResendingEncryptedMessage, but a write to a box that already
   * holds different content fails with BoxAlreadyExistsError (one more round trip).
   */
  startResendingEncryptedMessageReturnBoxExists(params: ResendParams, opts?: ArqOptions): Promise<StartResendingResult> {
    return this.startResending(params, opts, 'startResendingEncryptedMessageReturnBoxExists', { noIdempotentBoxAlreadyExists: true });
  }

  /** Like startResendingEncryptedMessage, but a read of an unwritten box fails at once with BoxIDNotFoundError. */
  startResendingEncryptedMessageNoRetry(params: ResendParams, opts?: ArqOptions): Promise<StartResendingResult> {
    return this.startResending(params, opts, 'startResendingEncryptedMessageNoRetry', { noRetryOnBoxIdNotFound: true });
  }

  /**
   * Stop the ARQ of the operation with this envelope hash. The blocked
   * start call then rejects with StartResendingCancelledError (from the
   * daemon's reply, or locally once the cancel completed). Succeeds for
   * unknown hashes too.
   * @throws InvalidArgumentError, DaemonError('cancel_resending_encrypted_message', code), ThinClientTimeoutError
   */
  async cancelResendingEncryptedMessage(envelopeHash: Uint8Array, opts?: CallOptions): Promise<void> {
    const hash = exactBytes('envelopeHash', envelopeHash, HASH_LENGTH);
    await this.cancelArq(
      'cancel_resending_encrypted_message',
      requestBodies.cancelResendingEncryptedMessage(newQueryId(), hash),
      hash,
      'cancelResendingEncryptedMessage',
      opts,
    );
  }

  /**
   * Build the tombstones of `maxCount` consecutive boxes from `start` (a
   * client-side loop of encrypt_write with an empty plaintext, §3.6). Each
   * envelope still has to be sent with startResendingEncryptedMessage.
   * @throws InvalidArgumentError, DaemonError('encrypt_write', code), ThinClientTimeoutError
   */
  async tombstoneRange(writeCap: Uint8Array, start: Uint8Array, maxCount: number, opts?: CallOptions): Promise<TombstoneRangeResult> {
    const wc = exactBytes('writeCap', writeCap, WRITE_CAP_LENGTH);
    let idx: Buffer = Buffer.from(exactBytes('start', start, MESSAGE_BOX_INDEX_LENGTH));
    const count = integerInRange('maxCount', maxCount, 0, U32_MAX);
    const envelopes: TombstoneEnvelope[] = [];
    for (let i = 0; i < count; i++) {
      const r = await this.encryptWrite(Buffer.alloc(0), wc, idx, opts);
      envelopes.push({ ...r, boxIndex: idx });
      idx = r.nextMessageBoxIndex;
    }
    return { envelopes, next: idx };
  }

  /**
   * Cut `payload` (at most 10 MiB) into copy-stream elements for one
   * destination channel (§3.14).
   * @throws InvalidArgumentError, DaemonError('create_courier_envelopes_from_payload', code), ThinClientTimeoutError
   */
  async createCourierEnvelopesFromPayload(
    payload: Uint8Array | string,
    destWriteCap: Uint8Array,
    destStartIndex: Uint8Array,
    isStart: boolean,
    isLast: boolean,
    opts?: CallOptions,
  ): Promise<CourierEnvelopesResult> {
    const p = payloadBytes('payload', payload, MAX_COPY_PAYLOAD_LENGTH, '10 MiB per call');
    const wc = exactBytes('destWriteCap', destWriteCap, WRITE_CAP_LENGTH);
    const idx = exactBytes('destStartIndex', destStartIndex, MESSAGE_BOX_INDEX_LENGTH);
    const body = requestBodies.createCourierEnvelopesFromPayload(newQueryId(), p, wc, idx, booleanArg('isStart', isStart), booleanArg('isLast', isLast));
    const kind = 'create_courier_envelopes_from_payload';
    const reply = await this.localCall(kind, body, 'createCourierEnvelopesFromPayload', 'payload', opts);
    throwIf(errorForGenericCode(kind, code(reply, kind)));
    return { envelopes: bytesList(reply.envelopes), nextDestIndex: requireBytes(reply, 'next_dest_index', `${kind}_reply`) };
  }

  /**
   * Pack payloads for several destination channels into one copy stream
   * (§3.15). Pass the returned `buffer` to the next call; set isLast on the final one.
   * @throws InvalidArgumentError, DaemonError('create_courier_envelopes_from_multi_payload', code), ThinClientTimeoutError
   */
  async createCourierEnvelopesFromMultiPayload(
    destinations: MultiPayloadDestination[],
    isStart: boolean,
    isLast: boolean,
    buffer?: Uint8Array | null,
    opts?: CallOptions,
  ): Promise<MultiPayloadResult> {
    if (!Array.isArray(destinations) || destinations.length === 0) {
      throw new InvalidArgumentError('destinations', 'a non-empty array of { payload, writeCap, startIndex }', describeValue(destinations));
    }
    const dests = destinations.map((d, i) => {
      if (d === null || typeof d !== 'object') {
        throw new InvalidArgumentError(`destinations[${i}]`, 'an object { payload, writeCap, startIndex }', describeValue(d));
      }
      return {
        payload: payloadBytes(`destinations[${i}].payload`, d.payload, MAX_COPY_PAYLOAD_LENGTH, '10 MiB per destination'),
        writeCap: exactBytes(`destinations[${i}].writeCap`, d.writeCap, WRITE_CAP_LENGTH),
        startIndex: exactBytes(`destinations[${i}].startIndex`, d.startIndex, MESSAGE_BOX_INDEX_LENGTH),
      };
    });
    const buf = buffer === null || buffer === undefined ? null : anyBytes('buffer', buffer);
    const kind = 'create_courier_envelopes_from_multi_payload';
    const body = requestBodies.createCourierEnvelopesFromMultiPayload(newQueryId(), dests, booleanArg('isStart', isStart), booleanArg('isLast', isLast), buf);
    const reply = await this.localCall(kind, body, 'createCourierEnvelopesFromMultiPayload', 'destinations', opts);
    throwIf(errorForGenericCode(kind, code(reply, kind)));
    return {
      envelopes: bytesList(reply.envelopes),
      buffer: bytesOrNull(reply.buffer),
      nextDestIndices: Array.isArray(reply.next_dest_indices) ? reply.next_dest_indices.map(bytesOrNull) : [],
    };
  }

  /**
   * Tombstones for `maxCount` destination boxes as copy-stream elements
   * (§3.16), with the same `buffer` continuation as the multi-payload call.
   * @throws InvalidArgumentError, DaemonError('create_courier_envelopes_from_tombstone_range', code), ThinClientTimeoutError
   */
  async createCourierEnvelopesFromTombstoneRange(
    destWriteCap: Uint8Array,
    destStartIndex: Uint8Array,
    maxCount: number,
    isStart: boolean,
    isLast: boolean,
    buffer?: Uint8Array | null,
    opts?: CallOptions,
  ): Promise<TombstoneRangeEnvelopesResult> {
    const wc = exactBytes('destWriteCap', destWriteCap, WRITE_CAP_LENGTH);
    const idx = exactBytes('destStartIndex', destStartIndex, MESSAGE_BOX_INDEX_LENGTH);
    const count = integerInRange('maxCount', maxCount, 0, U32_MAX);
    const buf = buffer === null || buffer === undefined ? null : anyBytes('buffer', buffer);
    const kind = 'create_courier_envelopes_from_tombstone_range';
    const body = requestBodies.createCourierEnvelopesFromTombstoneRange(
      newQueryId(),
      wc,
      idx,
      count,
      booleanArg('isStart', isStart),
      booleanArg('isLast', isLast),
      buf,
    );
    const reply = await this.localCall(kind, body, 'createCourierEnvelopesFromTombstoneRange', 'buffer', opts);
    throwIf(errorForGenericCode(kind, code(reply, kind)));
    return {
      envelopes: bytesList(reply.envelopes),
      buffer: bytesOrNull(reply.buffer),
      nextDestIndex: requireBytes(reply, 'next_dest_index', `${kind}_reply`),
    };
  }

  /**
   * Tell a courier to copy the temporary stream of `writeCap` to its
   * destinations, blocking until done (§3.9). Optionally pinned to a courier.
   * Replayed verbatim if the connection is lost meanwhile.
   * @throws InvalidArgumentError, CopyCommandFailedError (replicaErrorCode, failedEnvelopeIndex),
   *         StartResendingCancelledError, OperationCancelledError / ThinClientTimeoutError (also cancel on the daemon)
   */
  async startResendingCopyCommand(writeCap: Uint8Array, opts: CopyCommandOptions = {}): Promise<void> {
    const wc = exactBytes('writeCap', writeCap, WRITE_CAP_LENGTH);
    const courierHash = optionalExactBytes('courierIdentityHash', opts.courierIdentityHash, HASH_LENGTH);
    const queueId = opts.courierQueueId === undefined || opts.courierQueueId === null ? null : nonEmptyBytes('courierQueueId', opts.courierQueueId);
    if ((courierHash === null) !== (queueId === null)) {
      throw new InvalidArgumentError(
        courierHash === null ? 'courierIdentityHash' : 'courierQueueId',
        'both courierIdentityHash and courierQueueId to pin a courier, or neither',
        courierHash === null ? 'only courierQueueId' : 'only courierIdentityHash',
      );
    }
    const hash = blake2b256(wc);
    const reply = await this.call('start_resending_copy_command', requestBodies.startResendingCopyCommand(newQueryId(), wc, courierHash, queueId), {
      op: 'startResendingCopyCommand',
      sizeArg: 'writeCap',
      timeoutMs: optionalTimeout('timeoutMs', opts.timeoutMs),
      signal: optionalSignal('signal', opts.signal),
      arq: { key: hash.toString('hex'), hash, cancelKind: 'cancel_resending_copy_command' },
    });
    const replyKind = 'start_resending_copy_command_reply';
    throwIf(
      errorForCopyCode(
        code(reply, 'start_resending_copy_command'),
        intField(reply, 'replica_error_code', replyKind),
        intField(reply, 'failed_envelope_index', replyKind),
      ),
    );
  }

  /**
   * Stop the copy command whose WriteCap hashes to `writeCapHash` (see
   * ThinClient.writeCapHash); the blocked call rejects with StartResendingCancelledError.
   * @throws InvalidArgumentError, DaemonError('cancel_resending_copy_command', code), ThinClientTimeoutError
   */
  async cancelResendingCopyCommand(writeCapHash: Uint8Array, opts?: CallOptions): Promise<void> {
    const hash = exactBytes('writeCapHash', writeCapHash, HASH_LENGTH);
    await this.cancelArq(
      'cancel_resending_copy_command',
      requestBodies.cancelResendingCopyCommand(newQueryId(), hash),
      hash,
      'cancelResendingCopyCommand',
      opts,
    );
  }

  // ------------------------------------------- current daemon only (§9.3)
  /**
   * The directory authorities the daemon is configured with. Their
   * identityKeyHash values are the keys of the Signatures map of the signed
   * document from getPkiDocumentRaw, so signatures can be named.
   * kpclientd v0.0.99+ only.
   * @throws UnsupportedByDaemonError (a pinned daemon; nothing is sent),
   *         DaemonError('get_directory_authorities', 10) when the daemon has none configured,
   *         ThinClientTimeoutError, OperationCancelledError
   */
  async getDirectoryAuthorities(opts?: CallOptions): Promise<DirectoryAuthority[]> {
    const kind = 'get_directory_authorities';
    const reply = await this.localCall(kind, requestBodies.getDirectoryAuthorities(newQueryId()), 'getDirectoryAuthorities', 'query', opts);
    throwIf(errorForGenericCode(kind, code(reply, kind)));
    const list = reply.authorities;
    if (list === null || list === undefined) return [];
    if (!Array.isArray(list)) throw new ProtocolError(`${kind}_reply: authorities is not a list`);
    return list.map((a, i) => parseAuthority(a, `${kind}_reply: authorities[${i}]`));
  }

  /**
   * Contact Voucher, step 1 (the joiner): mint a voucher from the write cap
   * of the channel the joiner will write on. Hand `voucher` (32 bytes) to
   * the inductor out of band; write `voucherPayload` to box 0 of the voucher
   * stream (voucherWriteCap, at ThinClient.firstMessageIndexOf(voucherWriteCap));
   * keep `voucherSecretKey` secret for voucherOpen. Local to the daemon (no
   * mixnet traffic); the daemon supplies all randomness. kpclientd v0.0.99+ only.
   * @param messageWriteCap the joiner's 168-byte WriteCap (e.g. from newKeypair)
   * @param displayName how the joiner wants to be known to the group (any text)
   * @throws InvalidArgumentError, UnsupportedByDaemonError, DaemonError('voucher_mint', 3) (a malformed cap),
   *         ThinClientTimeoutError, OperationCancelledError
   */
  async voucherMint(messageWriteCap: Uint8Array, displayName: string, opts?: CallOptions): Promise<VoucherMintResult> {
    const wc = exactBytes('messageWriteCap', messageWriteCap, WRITE_CAP_LENGTH);
    if (typeof displayName !== 'string') throw new InvalidArgumentError('displayName', 'a string', describeValue(displayName));
    const kind = 'voucher_mint';
    const reply = await this.localCall(kind, requestBodies.voucherMint(newQueryId(), wc, displayName), 'voucherMint', 'displayName', opts);
    throwIf(errorForVoucherCode(kind, code(reply, kind)));
    const k = `${kind}_reply`;
    return {
      voucher: requireBytes(reply, 'voucher', k),
      voucherPayload: requireBytes(reply, 'voucher_payload', k),
      voucherWriteCap: requireBytes(reply, 'voucher_write_cap', k),
      voucherReadCap: requireBytes(reply, 'voucher_read_cap', k),
      voucherSecretKey: requireBytes(reply, 'voucher_secret_key', k),
      voucherPublicKey: requireBytes(reply, 'voucher_public_key', k),
    };
  }

  /**
   * Contact Voucher, step 2 (the inductor): check the payload read from box 0
   * of the voucher stream against the voucher and its signature, and seal
   * `whoReply` with a fresh salt for the joiner. Write `sealedReply` to box 1
   * of the voucher stream; give `mutatedMessageReadCap` to whoever should read
   * the joiner. kpclientd v0.0.99+ only.
   * @param voucher the 32-byte token the joiner handed over
   * @param voucherPayload the plaintext of voucher stream box 0
   * @param whoReply any bytes for the joiner (may be empty), e.g. the group's read caps
   * @throws InvalidArgumentError, UnsupportedByDaemonError, VoucherHashMismatchError (28: the payload is not
   *         the voucher's), VoucherSignatureInvalidError (29), DaemonError('voucher_induct', 3) (a malformed payload),
   *         ThinClientTimeoutError, OperationCancelledError
   */
  async voucherInduct(voucher: Uint8Array, voucherPayload: Uint8Array, whoReply: Uint8Array | string, opts?: CallOptions): Promise<VoucherInductResult> {
    const v = exactBytes('voucher', voucher, VOUCHER_LENGTH);
    const payload = nonEmptyBytes('voucherPayload', voucherPayload);
    const who = payloadBytes('whoReply', whoReply, undefined, '');
    const kind = 'voucher_induct';
    const reply = await this.localCall(kind, requestBodies.voucherInduct(newQueryId(), v, payload, who), 'voucherInduct', 'voucherPayload', opts);
    throwIf(errorForVoucherCode(kind, code(reply, kind)));
    const k = `${kind}_reply`;
    if (typeof reply.display_name !== 'string') throw new ProtocolError(`${k}: display_name is not a string`);
    return {
      displayName: reply.display_name,
      mutatedMessageReadCap: requireBytes(reply, 'mutated_message_read_cap', k),
      sealedReply: requireBytes(reply, 'sealed_reply', k),
      voucherWriteCap: requireBytes(reply, 'voucher_write_cap', k),
      voucherReadCap: requireBytes(reply, 'voucher_read_cap', k),
      salt: requireBytes(reply, 'salt', k),
    };
  }

  /**
   * Contact Voucher, step 3 (the joiner): open the sealed reply read from box 1
   * of the voucher stream and re-seed the joiner's write cap with the salt.
   * Write real messages with `mutatedMessageWriteCap` from
   * ThinClient.firstMessageIndexOf(mutatedMessageWriteCap): they land where
   * the inductor's mutatedMessageReadCap reads. kpclientd v0.0.99+ only.
   * @param voucherSecretKey from voucherMint (162 bytes)
   * @param sealedReply the plaintext of voucher stream box 1
   * @param messageWriteCap the same write cap that was given to voucherMint
   * @throws InvalidArgumentError, UnsupportedByDaemonError, VoucherSealOpenFailedError (30: tampered, or not
   *         sealed for this key), DaemonError('voucher_open', 3), ThinClientTimeoutError, OperationCancelledError
   */
  async voucherOpen(voucherSecretKey: Uint8Array, sealedReply: Uint8Array, messageWriteCap: Uint8Array, opts?: CallOptions): Promise<VoucherOpenResult> {
    // Exact size: a shorter key makes kpclientd v0.0.99 panic in the handler, which it contains, and never answer.
    const sk = exactBytes('voucherSecretKey', voucherSecretKey, VOUCHER_SECRET_KEY_LENGTH);
    const sealed = nonEmptyBytes('sealedReply', sealedReply);
    const wc = exactBytes('messageWriteCap', messageWriteCap, WRITE_CAP_LENGTH);
    const kind = 'voucher_open';
    const reply = await this.localCall(kind, requestBodies.voucherOpen(newQueryId(), sk, sealed, wc), 'voucherOpen', 'sealedReply', opts);
    throwIf(errorForVoucherCode(kind, code(reply, kind)));
    const k = `${kind}_reply`;
    return {
      // An empty WhoReply may come back as an empty byte string or as null.
      whoReply: bytesOrNull(reply.who_reply) ?? Buffer.alloc(0),
      salt: requireBytes(reply, 'salt', k),
      mutatedMessageWriteCap: requireBytes(reply, 'mutated_message_write_cap', k),
    };
  }

  /**
   * The voucher stream's caps, from the voucher alone: the inductor reads
   * box 0 with voucherReadCap before voucherInduct. The same caps as
   * voucherMint returned to the joiner. kpclientd v0.0.99+ only.
   * @throws InvalidArgumentError, UnsupportedByDaemonError, DaemonError('voucher_derive_stream', code),
   *         ThinClientTimeoutError, OperationCancelledError
   */
  async voucherDeriveStream(voucher: Uint8Array, opts?: CallOptions): Promise<VoucherStreamCaps> {
    const v = exactBytes('voucher', voucher, VOUCHER_LENGTH);
    const kind = 'voucher_derive_stream';
    const reply = await this.localCall(kind, requestBodies.voucherDeriveStream(newQueryId(), v), 'voucherDeriveStream', 'voucher', opts);
    throwIf(errorForVoucherCode(kind, code(reply, kind)));
    const k = `${kind}_reply`;
    return { voucherWriteCap: requireBytes(reply, 'voucher_write_cap', k), voucherReadCap: requireBytes(reply, 'voucher_read_cap', k) };
  }

  // -------------------------------------------------------------- utilities
  /** 16 random bytes for the legacy message ID. */
  newMessageId(): Buffer {
    return newMessageId();
  }

  /** 16 random bytes naming a SURB (for sendMessage). */
  newSurbId(): Buffer {
    return newSurbId();
  }

  /** 16 random bytes correlating a request with its reply. */
  newQueryId(): Buffer {
    return newQueryId();
  }

  // ======================================================= request machinery
  private legacyFrame(surb: Buffer | null, payload: Uint8Array | string, destNode: Uint8Array, destQueue: Uint8Array): Buffer {
    const limit = this.sphinx?.UserForwardPayloadLength;
    const body = requestBodies.sendMessage({
      withSurb: surb !== null,
      surbId: surb,
      destinationIdHash: exactBytes('destNode', destNode, HASH_LENGTH),
      recipientQueueId: nonEmptyBytes('destQueue', destQueue),
      payload: payloadBytes('payload', payload, limit, 'sphinx UserForwardPayloadLength'),
    });
    return this.buildFrame('send_message', body, 'payload');
  }

  private buildFrame(kind: AnyRequestKind, body: Record<string, unknown>, sizeArg: string): Buffer {
    const cbor = encodeRequest(kind, body);
    if (cbor.length > this.maxFrameLength) {
      throw new InvalidArgumentError(sizeArg, `a value whose request fits the maximum frame length of ${this.maxFrameLength} bytes`, `a ${cbor.length}-byte frame`);
    }
    return encodeFrame(cbor);
  }

  /** Legacy sends go out only while the daemon is on the mixnet (all bindings refuse otherwise). */
  private requireOnline(): void {
    this.requireUsable();
    // The daemon itself unreachable is another problem than a daemon that cannot reach the mixnet: say which.
    if (!this.isDaemonConnected()) {
      const e = this.lastSocketError;
      throw new DaemonDisconnectedError(
        `the daemon at ${describeDial(this.dial)} is not reachable${e ? `: ${e.message}` : ''}; reconnecting`,
      );
    }
    if (!this.mixnetConnected) throw new ThinClientOfflineError();
  }

  private requireUsable(): void {
    if (this.state === 'closed') throw new DaemonDisconnectedError('the client is closed');
    if (this.state === 'idle') throw new DaemonDisconnectedError('not connected to the daemon: call connect() first');
  }

  private writeNow(frame: Buffer): void {
    const conn = this.active;
    if (!conn || !this.write(conn, frame)) throw new DaemonDisconnectedError('the daemon connection is down');
  }

  /**
   * Write a frame, whole and in order. The first frame of a tick goes out at
   * once (no added latency for one request at a time); the ones after it in
   * the same tick are queued and leave together in one socket.write
   * (flushWrites, on setImmediate).
   */
  private write(conn: Connection, frame: Buffer): boolean {
    if (conn.dead || conn.socket.destroyed || !conn.socket.writable) return false;
    if (conn.flushScheduled) {
      conn.outq.push(frame);
      return true;
    }
    conn.flushScheduled = true;
    setImmediate(() => this.flushWrites(conn));
    conn.socket.write(frame);
    return true;
  }

  /** Write the queued frames: small ones concatenated, a large one on its own (no copy). A dead connection drops them. */
  private flushWrites(conn: Connection): void {
    conn.flushScheduled = false;
    const q = conn.outq;
    if (q.length === 0) return;
    conn.outq = [];
    if (conn.dead || conn.socket.destroyed || !conn.socket.writable) return;
    if (q.length === 1) {
      conn.socket.write(q[0]);
      return;
    }
    let batch: Buffer[] = [];
    let size = 0;
    const send = () => {
      if (batch.length === 1) conn.socket.write(batch[0]);
      else if (batch.length > 1) conn.socket.write(Buffer.concat(batch, size));
      batch = [];
      size = 0;
    };
    for (const f of q) {
      if (f.length > WRITE_BATCH_BYTES) {
        send();
        conn.socket.write(f);
        continue;
      }
      if (size + f.length > WRITE_BATCH_BYTES) send();
      batch.push(f);
      size += f.length;
    }
    send();
  }

  private localCall(kind: AnyRequestKind, body: Record<string, unknown>, op: string, sizeArg: string, opts: CallOptions = {}): Promise<Record<string, unknown>> {
    return this.call(kind, body, {
      op,
      sizeArg,
      timeoutMs: optionalTimeout('timeoutMs', opts.timeoutMs) ?? this.requestTimeoutMs,
      signal: optionalSignal('signal', opts.signal),
    });
  }

  /**
   * Register a request and write it now, or on the next (re)connect. The
   * promise settles with the reply body; argument checks throw synchronously
   * inside the async callers, before anything is registered.
   */
  private call(kind: AnyRequestKind, body: Record<string, unknown>, spec: CallSpec): Promise<Record<string, unknown>> {
    const frame = this.buildFrame(kind, body, spec.sizeArg);
    this.requireUsable();
    if (spec.signal?.aborted) return Promise.reject(new OperationCancelledError(`${spec.op} was aborted`));
    // A daemon that does not know the kind never sees it (a pinned one would abort, §3.1).
    // While no connection is up the check waits for the next handshake (flushPending).
    if (this.state === 'connected') {
      const refused = this.unsupported(kind, spec.op, this.daemonKinds);
      if (refused) return Promise.reject(refused);
    }
    if (spec.arq && this.arqInFlight.has(spec.arq.key)) {
      const what = spec.arq.cancelKind === 'cancel_resending_copy_command' ? 'writeCap' : 'envelopeHash';
      return Promise.reject(new InvalidArgumentError(what, 'an operation not already in flight on this client', 'one with the same identity is still running'));
    }
    const queryId = bytesOrNull(body.query_id);
    if (!queryId) throw new Error(`internal: ${kind} without query_id`);

    return new Promise((resolve, reject) => {
      let timer: Deadline | undefined;
      const onAbort = () => this.abandon(p, new OperationCancelledError(`${spec.op} was aborted`));
      const settle = () => {
        if (timer) this.deadlines.cancel(timer);
        spec.signal?.removeEventListener('abort', onAbort);
        if (this.pending.get(p.key) === p) this.pending.delete(p.key);
        if (p.arq && this.arqInFlight.get(p.arq.key) === p) this.arqInFlight.delete(p.arq.key);
      };
      const p: Pending = {
        op: spec.op,
        kind,
        key: queryId.toString('hex'),
        frame,
        arq: spec.arq ?? null,
        written: false,
        cancelled: false,
        onWritten: null,
        resolve: (b) => {
          settle();
          resolve(b);
        },
        reject: (e) => {
          settle();
          reject(e);
        },
      };
      const armDeadline = () => {
        if (spec.timeoutMs === undefined || timer !== undefined) return;
        const ms = spec.timeoutMs;
        timer = this.deadlines.add(ms, () => {
          const waiting = this.state === 'connected' ? '' : ' (the daemon connection is down)';
          this.abandon(p, new ThinClientTimeoutError(`${spec.op} timed out after ${ms} ms${waiting}`));
        });
      };
      if (spec.timeoutFromWrite) p.onWritten = armDeadline;
      else armDeadline();
      spec.signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(p.key, p);
      // Added just before the first write (§2.6), removed when the call settles.
      if (p.arq) this.arqInFlight.set(p.arq.key, p);
      if (this.state === 'connected' && this.active && this.write(this.active, frame)) {
        p.written = true;
        p.onWritten?.();
      }
    });
  }

  /**
   * The caller gave up (timeout / abort). An ARQ operation the daemon knows
   * of is cancelled there too - also when the socket is down right now: a
   * resumed session still runs the operation, so the cancel waits in
   * `pending` and goes out on the next connection, in call order (before
   * any later start with the same identity). Only close()/disconnect()
   * drop it: thin_close ends the daemon session, and an idle client no
   * longer owns one.
   */
  private abandon(p: Pending, err: Error): void {
    if (this.pending.get(p.key) !== p) return;
    const arq = p.arq;
    const tellDaemon = arq !== null && p.written && !p.cancelled;
    p.reject(err);
    if (!arq || !tellDaemon || (this.state !== 'connected' && this.state !== 'reconnecting')) return;
    const body =
      arq.cancelKind === 'cancel_resending_copy_command'
        ? requestBodies.cancelResendingCopyCommand(newQueryId(), arq.hash)
        : requestBodies.cancelResendingEncryptedMessage(newQueryId(), arq.hash);
    // Best effort: the caller already has its answer. The deadline counts
    // from the write, so a long reconnect does not expire the queued cancel.
    this.call(arq.cancelKind, body, { op: `${p.op} (cancel)`, sizeArg: 'hash', timeoutMs: this.requestTimeoutMs, timeoutFromWrite: true }).then(
      (reply) => this.log.debug(`${p.op}: daemon-side cancel answered ${describeValue(reply.error_code)}`),
      (e: Error) => this.log.debug(`${p.op}: daemon-side cancel failed: ${e.message}`),
    );
  }

  private async startResending(
    params: ResendParams,
    opts: ArqOptions | undefined,
    op: string,
    forced: { noRetryOnBoxIdNotFound?: boolean; noIdempotentBoxAlreadyExists?: boolean },
  ): Promise<StartResendingResult> {
    if (params === null || typeof params !== 'object') {
      throw new InvalidArgumentError('params', 'an object { readCap | writeCap, messageBoxIndex, envelopeDescriptor, messageCiphertext, envelopeHash }', describeValue(params));
    }
    const readCap = optionalExactBytes('readCap', params.readCap, READ_CAP_LENGTH);
    const writeCap = optionalExactBytes('writeCap', params.writeCap, WRITE_CAP_LENGTH);
    if ((readCap === null) === (writeCap === null)) {
      throw new InvalidArgumentError('readCap', 'exactly one of readCap (136 bytes, a read) or writeCap (168 bytes, a write)', readCap ? 'both' : 'neither');
    }
    const index = optionalExactBytes('messageBoxIndex', params.messageBoxIndex, MESSAGE_BOX_INDEX_LENGTH);
    if (readCap && !index) {
      // Without it the daemon cannot verify and decrypt the box (§3.7).
      throw new InvalidArgumentError('messageBoxIndex', 'the 104-byte index given to encryptRead (required for reads)', describeValue(params.messageBoxIndex));
    }
    const replyIndex = params.replyIndex === undefined || params.replyIndex === null ? null : integerInRange('replyIndex', params.replyIndex, 0, 255);
    const envelopeHash = exactBytes('envelopeHash', params.envelopeHash, HASH_LENGTH);
    const flag = (name: 'noRetryOnBoxIdNotFound' | 'noIdempotentBoxAlreadyExists') =>
      forced[name] ?? (params[name] === undefined ? false : booleanArg(name, params[name]));
    const body = requestBodies.startResendingEncryptedMessage({
      queryId: newQueryId(),
      readCap,
      writeCap,
      messageBoxIndex: index,
      replyIndex,
      envelopeDescriptor: nonEmptyBytes('envelopeDescriptor', params.envelopeDescriptor),
      messageCiphertext: nonEmptyBytes('messageCiphertext', params.messageCiphertext),
      envelopeHash,
      noRetryOnBoxIdNotFound: flag('noRetryOnBoxIdNotFound'),
      noIdempotentBoxAlreadyExists: flag('noIdempotentBoxAlreadyExists'),
    });
    const reply = await this.call('start_resending_encrypted_message', body, {
      op,
      sizeArg: 'messageCiphertext',
      timeoutMs: optionalTimeout('timeoutMs', opts?.timeoutMs),
      signal: optionalSignal('signal', opts?.signal),
      arq: { key: envelopeHash.toString('hex'), hash: envelopeHash, cancelKind: 'cancel_resending_encrypted_message' },
    });
    throwIf(errorForResendCode(code(reply, 'start_resending_encrypted_message')));
    return {
      plaintext: bytesOrNull(reply.plaintext),
      courierIdentityHash: bytesOrNull(reply.courier_identity_hash),
      courierQueueId: bytesOrNull(reply.courier_queue_id),
    };
  }

  /**
   * Shared by both cancels (§3.8, §3.10, §7.4): drop the operation from the
   * replay table first, then ask the daemon. Unlike the reference bindings
   * the blocked call is always released: by the daemon's error-24 reply, or
   * here once the cancel is done (the daemon may not have dequeued it yet).
   */
  private async cancelArq(kind: AnyRequestKind, body: Record<string, unknown>, hash: Buffer, op: string, opts?: CallOptions): Promise<void> {
    const key = hash.toString('hex');
    const target = this.arqInFlight.get(key);
    if (target) {
      target.cancelled = true;
      this.arqInFlight.delete(key);
      if (!target.written) {
        // The daemon never saw it: nothing to cancel remotely.
        target.reject(new StartResendingCancelledError());
        return;
      }
    }
    try {
      const reply = await this.localCall(kind, body, op, 'hash', opts);
      throwIf(errorForGenericCode(kind, code(reply, kind)));
    } finally {
      if (target && this.pending.get(target.key) === target) target.reject(new StartResendingCancelledError());
    }
  }

  /**
   * Why the daemon whose envelope had `kinds` cannot take a `kind` request,
   * or null when it can. Only the current-only kinds are ever refused. A Go
   * daemon sends its whole envelope (every reply kind it knows, null but one)
   * in every frame, so `<kind>_reply` among its keys means it knows `kind`.
   */
  private unsupported(kind: string, op: string, kinds: ReadonlySet<string> | null): UnsupportedByDaemonError | null {
    if (!HEAD_KINDS.has(kind)) return null;
    if (this.protocolSetting === 'current') return null;
    if (this.protocolSetting === 'pinned') return new UnsupportedByDaemonError(op, kind, 'pinned', 'the daemonProtocol option says so');
    if (!kinds || kinds.has(`${kind}_reply`)) return null;
    const level = HEAD_RESPONSE_KINDS.some((k) => kinds.has(k)) ? 'current' : 'pinned';
    return new UnsupportedByDaemonError(op, kind, level, `its reply envelope has ${kinds.size} keys and no ${kind}_reply`);
  }

  // ====================================================== connection machinery
  private waitForConnection(): Promise<void> {
    return new Promise((resolve, reject) => this.connectWaiters.push({ resolve, reject }));
  }

  private settleConnectWaiters(err: Error | null): void {
    for (const w of this.connectWaiters.splice(0)) {
      if (err) w.reject(err);
      else w.resolve();
    }
  }

  private openConnection(purpose: Connection['purpose']): Connection {
    const d = this.dial;
    const socket = this.dialSocket(d);
    const conn: Connection = {
      id: ++this.connectionCounter,
      purpose,
      socket,
      envelopeKeys: null,
      decoder: new FrameDecoder({
        maxFrameLength: this.maxFrameLength,
        frameTimeoutMs: this.frameTimeoutMs,
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
    conn.timer = setTimeout(() => {
      this.failConnection(conn, new ThinClientTimeoutError(`handshake with the daemon at ${describeDial(d)} did not complete within ${this.handshakeTimeoutMs} ms`));
    }, this.handshakeTimeoutMs);
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

  /**
   * A byte stream to the daemon. WebSocket (kpclientd v0.0.99+ [Listen.Ws],
   * §9.1): the same length-prefixed frames inside binary messages whose
   * boundaries mean nothing, so the stream is read and written exactly like
   * a socket; each frame is one write, hence one message.
   */
  private dialSocket(d: DialConfig): Duplex {
    if (d.kind === 'ws') {
      const ws = new WebSocket(d.url, {
        perMessageDeflate: false,
        handshakeTimeout: this.handshakeTimeoutMs,
        // A message holds at least one whole frame when the daemon writes one frame per message.
        maxPayload: Math.max(100 * 1024 * 1024, this.maxFrameLength + 4),
      });
      const stream = createWebSocketStream(ws);
      // It ends when the daemon closes the WebSocket but, unlike a socket, never closes by itself.
      stream.on('end', () => stream.destroy());
      return stream;
    }
    const socket =
      d.kind === 'tcp'
        ? net.connect({ host: d.host, port: d.port, family: d.network === 'tcp4' ? 4 : d.network === 'tcp6' ? 6 : 0 })
        : net.connect({ path: unixSocketPath(d.path) });
    if (d.kind === 'tcp') socket.setNoDelay(true);
    return socket;
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
      let env: { kind: string; body: Record<string, unknown>; keys: string[] };
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

  private handleFrame(conn: Connection, kind: string, body: Record<string, unknown>): void {
    // A malformed reply fails only its own call (routeReply); a malformed event is a read error.
    if (CALL_FREE_KINDS.has(kind)) checkFrameFields(kind, body);
    if (kind === 'shutdown_event') {
      // Recorded synchronously, before the EOF that follows can be seen (§10.2).
      conn.sawShutdown = true;
      this.publish({ type: 'shutdown' });
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
        this.applyPkiEvent(body);
        conn.phase = 'token';
        if (!this.write(conn, encodeFrame(encodeRequest('session_token', requestBodies.sessionToken(this.token))))) {
          throw new DaemonDisconnectedError('the daemon closed the connection during the handshake');
        }
        return;
      case 'token':
        if (kind === 'session_token_reply') {
          this.daemonAppId = bytesOrNull(body.app_id);
          this.sessionResumed = body.resumed === true;
          conn.phase = 'ready';
          this.onHandshakeComplete(conn);
          return;
        }
        break; // status/PKI broadcasts and queued replies: process normally (§10.1)
      case 'ready':
        break;
    }
    this.dispatch(conn, kind, body);
  }

  private onHandshakeComplete(conn: Connection): void {
    if (conn.timer) clearTimeout(conn.timer);
    conn.timer = null;
    if (this.handshaking === conn) this.handshaking = null;
    if (this.state !== 'connecting' && this.state !== 'reconnecting') {
      this.failConnection(conn, new OperationCancelledError('connection no longer wanted'));
      return;
    }
    const reconnecting = this.state === 'reconnecting';
    const before = this.tokenBeforeLoss;
    const now = this.daemonInstanceToken;
    const daemonRestarted = reconnecting && before !== null && now !== null && !before.equals(now);
    this.daemonKinds = conn.envelopeKeys;
    this.active = conn;
    this.state = 'connected';
    this.reconnectAttempt = 0;
    this.lastSocketError = null;
    if (reconnecting && (daemonRestarted || !this.sessionResumed)) this.rejectLostSurbWaiters(daemonRestarted);
    // Every reconnect replays the in-flight ARQ operations. A new daemon knows
    // nothing of them; and a daemon that resumed our session has dropped them
    // too: kpclientd discards Pigeonhole replies for a disconnected client and
    // deletes the ARQ entry at its next resend (measured on v0.0.99; the
    // reference bindings replay only on a restart and so lose these).
    const replayed = this.flushPending(conn, reconnecting);
    this.log.info(
      `connection ${conn.id}: ${reconnecting ? 're' : ''}connected to ${describeDial(this.dial)} (resumed ${this.sessionResumed}${reconnecting ? `, daemon restarted ${daemonRestarted}, replayed ${replayed}` : ''})`,
    );
    if (reconnecting && now) {
      this.publish({ type: 'daemonReconnected', instanceToken: Buffer.from(now), resumed: this.sessionResumed, daemonRestarted, replayed });
    }
    this.settleConnectWaiters(null);
  }

  /**
   * Write everything waiting, in call order: requests never written, local
   * requests that were in flight on the lost connection, and - only when
   * `replayArq` - the in-flight ARQ requests, byte-for-byte the original frames.
   */
  private flushPending(conn: Connection, replayArq: boolean): number {
    let replayed = 0;
    for (const p of [...this.pending.values()]) {
      if (p.arq) {
        if (p.cancelled) continue;
        if (p.written && !replayArq) continue;
      }
      const refused = this.unsupported(p.kind, p.op, conn.envelopeKeys);
      if (refused) {
        p.reject(refused);
        continue;
      }
      if (!this.write(conn, p.frame)) break;
      if (p.arq && p.written) replayed++;
      p.written = true;
      p.onWritten?.();
    }
    return replayed;
  }

  /**
   * A legacy reply comes back to the daemon session that sent the message,
   * never to a new one: after a daemon restart or a session the daemon did
   * not resume it cannot arrive, so its waiters fail now instead of at their
   * timeout. (A resumed session gets its queued replies after session_token_reply.)
   */
  private rejectLostSurbWaiters(daemonRestarted: boolean): void {
    const why = daemonRestarted
      ? 'connection lost: the daemon restarted; the reply cannot arrive'
      : 'connection lost: the daemon did not resume the session; the reply cannot arrive';
    for (const w of [...this.surbWaiters.values()]) w.reject(new DaemonDisconnectedError(why));
  }

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
    if (!(conn.error instanceof OperationCancelledError)) this.lastSocketError = conn.error ?? err;
    if (this.state === 'connecting' && conn.purpose === 'connect') {
      this.state = 'idle';
      this.mixnetConnected = false;
      this.settleConnectWaiters(err);
      this.rejectAllPending(() => new DaemonDisconnectedError(`not connected: ${err.message}`));
    } else if (this.state === 'reconnecting' && conn.purpose === 'reconnect') {
      this.reconnectAttempt++;
      this.scheduleReconnect();
    }
  }

  private onConnectionLost(conn: Connection): void {
    const err = conn.error;
    this.lastSocketError = err;
    this.log.warn(`connection ${conn.id}: lost the daemon${conn.sawShutdown ? ' (shutdown)' : ''}${err ? `: ${err.message}` : ''}`);
    this.tokenBeforeLoss = this.daemonInstanceToken;
    // §2.6 step 2: the mixnet state is unknown until the next status event.
    this.mixnetConnected = false;
    if (this.reconnectEnabled) {
      this.state = 'reconnecting';
      this.reconnectAttempt = 0;
    } else {
      this.state = 'idle';
    }
    this.publish({ type: 'daemonDisconnected', isGraceful: conn.sawShutdown, error: err });
    if (this.state === 'reconnecting') {
      this.scheduleReconnect();
    } else if (this.state === 'idle') {
      const why = `the daemon connection was lost${err ? `: ${err.message}` : ''}`;
      this.rejectAllPending(() => new DaemonDisconnectedError(why, conn.sawShutdown));
    }
  }

  /** Exponential backoff with jitter (§2.6 step 3); a sleep precedes every attempt. */
  private scheduleReconnect(): void {
    if (this.state !== 'reconnecting' || this.reconnectTimer) return;
    const base = Math.min(this.reconnectInitialDelayMs * 2 ** Math.min(this.reconnectAttempt, 30), this.reconnectMaxDelayMs);
    // ±20 % so that many clients of one restarted daemon do not return in lockstep.
    const delay = Math.min(this.reconnectMaxDelayMs, Math.round(base * (0.8 + Math.random() * 0.4)));
    this.log.debug(`reconnecting in ${delay} ms (attempt ${this.reconnectAttempt + 1})`);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.state === 'reconnecting') this.openConnection('reconnect');
    }, delay);
  }

  private rejectAllPending(makeError: () => Error): void {
    for (const p of [...this.pending.values()]) p.reject(makeError());
    for (const w of [...this.surbWaiters.values()]) w.reject(makeError());
  }

  private async shutdown(sayGoodbye: boolean): Promise<void> {
    const finalState: State = sayGoodbye ? 'closed' : 'idle';
    if (this.state === 'closed' || this.state === 'idle') {
      if (sayGoodbye && this.state !== 'closed') this.state = 'closed';
      if (this.state === 'closed') this.endQueues();
      return;
    }
    const conn = this.active;
    const hs = this.handshaking;
    this.active = null;
    this.handshaking = null;
    this.state = finalState;
    this.mixnetConnected = false;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const why = sayGoodbye ? 'the client was closed' : 'the client was disconnected';
    this.rejectAllPending(() => new OperationCancelledError(why));
    this.settleConnectWaiters(new OperationCancelledError(why));
    if (hs) this.failConnection(hs, new OperationCancelledError(why));
    if (conn) {
      if (sayGoodbye) this.write(conn, encodeFrame(encodeRequest('thin_close', requestBodies.thinClose())));
      this.flushWrites(conn); // what was written before close() still goes out, thin_close last
      conn.dead = true;
      await endSocket(conn.socket);
    }
    if (sayGoodbye) this.endQueues();
  }

  private endQueues(): void {
    for (const q of [...this.queues]) q.end();
  }

  // ============================================================ incoming frames
  private dispatch(conn: Connection, kind: string, body: Record<string, unknown>): void {
    switch (kind) {
      case 'connection_status_event':
        this.applyStatus(body, false);
        return;
      case 'new_pki_document_event':
        this.applyPkiEvent(body);
        return;
      case 'message_sent_event':
        this.onMessageSent(body);
        return;
      case 'message_reply_event':
        this.onMessageReply(body);
        return;
      case 'message_id_garbage_collected':
        this.publish({ type: 'messageIdGarbageCollected', messageId: bytesOrNull(body.message_id) });
        return;
      case 'session_token_reply':
        this.log.debug(`connection ${conn.id}: ignoring a late session_token_reply`);
        return;
    }
    if (kind.endsWith('_reply')) {
      this.routeReply(kind, body);
      return;
    }
    this.log.debug(`connection ${conn.id}: ignoring ${kind}`);
  }

  private routeReply(kind: string, body: Record<string, unknown>): void {
    const qid = bytesOrNull(body.query_id);
    if (!qid || qid.length === 0) {
      this.log.debug(`dropping ${kind} without query_id`);
      return;
    }
    const p = this.pending.get(qid.toString('hex'));
    if (!p) {
      this.log.debug(`dropping ${kind}: nobody waits for query ${qid.toString('hex')}`);
      return;
    }
    if (replyKindOf(p.kind) !== kind) {
      this.log.warn(`dropping ${kind}: query ${p.key} is a ${p.kind}`);
      return;
    }
    try {
      checkFrameFields(kind, body);
    } catch (e) {
      p.reject(e as Error);
      return;
    }
    p.resolve(body);
  }

  private applyStatus(body: Record<string, unknown>, strict: boolean): void {
    const token = bytesOrNull(body.instance_token);
    if (!token || token.length !== INSTANCE_TOKEN_LENGTH) {
      throw new ProtocolError(`connection_status_event: instance_token must be ${INSTANCE_TOKEN_LENGTH} bytes, got ${describeValue(body.instance_token)}`);
    }
    const sphinx = parseGeometry<SphinxGeometry>(body.sphinx_geometry, SPHINX_GEOMETRY_KEYS, 'sphinx_geometry', ['NIKEName', 'KEMName'], strict);
    const pigeonhole = parseGeometry<PigeonholeGeometry>(
      body.pigeonhole_geometry,
      PIGEONHOLE_GEOMETRY_KEYS,
      'pigeonhole_geometry',
      ['NIKEName', 'SignatureSchemeName'],
      strict,
    );
    this.daemonInstanceToken = token;
    if (sphinx) this.sphinx = sphinx;
    if (pigeonhole) this.pigeonhole = pigeonhole;
    this.mixnetConnected = body.is_connected === true;
    if (!this.sphinx || !this.pigeonhole) throw new ProtocolError('connection_status_event: incompatible daemon: no geometry');
    this.publish({
      type: 'connectionStatus',
      isConnected: this.mixnetConnected,
      instanceToken: Buffer.from(token),
      sphinxGeometry: { ...this.sphinx },
      pigeonholeGeometry: { ...this.pigeonhole },
    });
    if (!this.mixnetConnected) {
      for (const w of [...this.surbWaiters.values()]) w.reject(new DaemonDisconnectedError('connection lost: the daemon is no longer connected to the mixnet'));
    }
  }

  private applyPkiEvent(body: Record<string, unknown>): void {
    const payload = bytesOrNull(body.payload);
    if (!payload || payload.length === 0) {
      this.log.debug('the daemon has no PKI document yet');
      return;
    }
    let doc: PkiDocument;
    try {
      doc = parsePkiDocument(payload);
    } catch (e) {
      // The Go binding logs and skips a document it cannot parse; so do we.
      this.log.warn(`ignoring a PKI document that does not parse: ${(e as Error).message}`);
      return;
    }
    this.currentDocument = doc;
    this.documents.delete(doc.epoch); // re-insert so it counts as newest
    this.documents.set(doc.epoch, doc);
    while (this.documents.size > PKI_CACHE_EPOCHS) {
      this.documents.delete(Math.min(...this.documents.keys()));
    }
    this.publish({ type: 'newPkiDocument', document: doc, payload });
  }

  private onMessageSent(body: Record<string, unknown>): void {
    const surbId = bytesOrNull(body.surbid);
    const err = typeof body.err === 'string' && body.err !== '' ? body.err : null;
    this.publish({
      type: 'messageSent',
      messageId: bytesOrNull(body.message_id),
      surbId,
      sentAt: body.sent_at === null || body.sent_at === undefined ? null : new Date(Number(u64Field(body, 'sent_at', 'message_sent_event')) * 1000),
      replyEtaMs: Number(u64Field(body, 'reply_eta', 'message_sent_event')) / 1e6,
      err,
    });
    if (err && surbId) {
      this.surbWaiters.get(surbId.toString('hex'))?.reject(new KatzenpostError('SEND_FAILED', `send_message failed: ${err}`));
    }
  }

  private onMessageReply(body: Record<string, unknown>): void {
    const surbId = bytesOrNull(body.surbid);
    const payload = bytesOrNull(body.payload);
    const errorCode = intField(body, 'error_code', 'message_reply_event');
    this.publish({
      type: 'messageReply',
      messageId: bytesOrNull(body.message_id),
      surbId: surbId ?? Buffer.alloc(0),
      payload,
      replyIndex: body.reply_index === null || body.reply_index === undefined ? null : intField(body, 'reply_index', 'message_reply_event'),
      errorCode,
    });
    const waiter = surbId ? this.surbWaiters.get(surbId.toString('hex')) : undefined;
    if (!waiter) return;
    const err = errorForGenericCode('send_message', errorCode);
    if (err) waiter.reject(err);
    else waiter.resolve(payload ?? Buffer.alloc(0));
  }

  /** Listeners, 'event' listeners and iterators; a throwing listener never reaches the read loop. */
  private publish(ev: ThinClientEvent): void {
    this.deliver(ev.type, ev);
    this.deliver('event', ev);
    for (const q of this.queues) q.push(ev);
  }

  private deliver(name: string, ev: ThinClientEvent): void {
    for (const listener of this.rawListeners(name as keyof EventArgs) as ((e: ThinClientEvent) => unknown)[]) {
      try {
        const r = listener.call(this, ev);
        if (r && typeof (r as Promise<unknown>).then === 'function') {
          (r as Promise<unknown>).then(undefined, (e: unknown) => this.log.error(`a '${name}' listener failed: ${errorText(e)}`));
        }
      } catch (e) {
        this.log.error(`a '${name}' listener threw: ${errorText(e)}`);
      }
    }
  }
}

// ------------------------------------------------------------------ helpers
function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function throwIf(err: Error | null): void {
  if (err) throw err;
}

/** The error_code of the reply to a `requestKind` request. @throws ProtocolError when it is not an integer */
function code(reply: Record<string, unknown>, requestKind: AnyRequestKind): number {
  return intField(reply, 'error_code', replyKindOf(requestKind));
}

/**
 * A numeric field of a daemon frame. A malformed one (a string, a float, a
 * value beyond 2^53) is the daemon breaking the protocol: ProtocolError
 * naming the frame kind and the field, never a bare TypeError/RangeError.
 */
function intField(body: Record<string, unknown>, field: string, kind: string): number {
  return inFrame(kind, () => toNumber(body[field], field));
}

/** A u64 field of a daemon frame as bigint; ProtocolError (kind and field) when malformed. */
function u64Field(body: Record<string, unknown>, field: string, kind: string): bigint {
  return inFrame(kind, () => toBigInt(body[field], field));
}

/** Runs a conversion of a `kind` frame's field; its failure is the daemon's ProtocolError. */
function inFrame<T>(kind: string, convert: () => T): T {
  try {
    return convert();
  } catch (e) {
    throw new ProtocolError(`${kind}: ${errorText(e)}`);
  }
}

/** Every fixed-size byte field of a daemon frame has its §0 size; ProtocolError naming kind, field and sizes otherwise. */
function checkFrameFields(kind: string, body: Record<string, unknown>): void {
  inFrame(kind, () => checkFixedLengths(body));
}

/** A success reply must carry its blobs; a daemon that omits one is broken. */
function requireBytes(reply: Record<string, unknown>, field: string, kind: string): Buffer {
  const b = bytesOrNull(reply[field]);
  if (!b) throw new ProtocolError(`${kind}: success reply without ${field}`);
  return b;
}

function bytesList(v: unknown): Buffer[] {
  if (!Array.isArray(v)) return [];
  return v.map((item, i) => {
    const b = bytesOrNull(item);
    if (!b) throw new ProtocolError(`envelopes[${i}] is not a byte string`);
    return b;
  });
}

function encryptResult(reply: Record<string, unknown>, kind: string): EncryptResult {
  return {
    messageCiphertext: requireBytes(reply, 'message_ciphertext', kind),
    envelopeDescriptor: requireBytes(reply, 'envelope_descriptor', kind),
    envelopeHash: requireBytes(reply, 'envelope_hash', kind),
    nextMessageBoxIndex: requireBytes(reply, 'next_message_box_index', kind),
  };
}

/**
 * A geometry map (§6.8): every listed key must be present with the right
 * type. Extra keys are tolerated (a newer daemon may add some), unlike the
 * Python/Rust bindings. Null is an error only in the handshake (strict).
 */
function parseGeometry<T>(v: unknown, keys: readonly string[], name: string, textKeys: readonly string[], strict: boolean): T | null {
  if (v === null || v === undefined) {
    if (strict) throw new ProtocolError(`connection_status_event: incompatible daemon: ${name} is missing`);
    return null;
  }
  if (typeof v !== 'object' || Array.isArray(v) || v instanceof Uint8Array) throw new ProtocolError(`connection_status_event: ${name} is not a map`);
  const m = v as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const key of keys) {
    const val = m[key];
    if (textKeys.includes(key)) {
      if (typeof val !== 'string') throw new ProtocolError(`connection_status_event: ${name}.${key} must be a string, got ${describeValue(val)}`);
      out[key] = val;
    } else {
      if (typeof val !== 'number' && typeof val !== 'bigint') {
        throw new ProtocolError(`connection_status_event: ${name}.${key} must be an unsigned integer, got ${describeValue(val)}`);
      }
      out[key] = inFrame('connection_status_event', () => toNumber(val, `${name}.${key}`));
    }
  }
  return out as T;
}

/** One authority map of get_directory_authorities_reply (§9.3); ProtocolError naming the field when malformed. */
function parseAuthority(v: unknown, where: string): DirectoryAuthority {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || Buffer.isBuffer(v)) throw new ProtocolError(`${where} is not a map`);
  const a = v as Record<string, unknown>;
  const text = (field: string): string => {
    const t = a[field];
    if (typeof t !== 'string') throw new ProtocolError(`${where}.${field} is not a string`);
    return t;
  };
  const addresses = a.addresses ?? [];
  if (!Array.isArray(addresses) || addresses.some((x) => typeof x !== 'string')) throw new ProtocolError(`${where}.addresses is not a list of strings`);
  const hash = bytesOrNull(a.identity_key_hash);
  if (!hash || hash.length !== HASH_LENGTH) throw new ProtocolError(`${where}.identity_key_hash: expected ${HASH_LENGTH} bytes, got ${describeValue(a.identity_key_hash)}`);
  return {
    identifier: text('identifier'),
    pkiSignatureScheme: text('pki_signature_scheme'),
    wireKemScheme: text('wire_kem_scheme'),
    addresses: [...(addresses as string[])],
    identityPublicKeyPem: text('identity_public_key_pem'),
    linkPublicKeyPem: text('link_public_key_pem'),
    identityKeyHash: hash,
  };
}

/** End a socket politely, destroying it if the peer does not close in time. */
function endSocket(socket: Duplex): Promise<void> {
  if (socket.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => socket.destroy(), SOCKET_END_GRACE_MS);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.end();
  });
}

// ------------------------------------------------------------ deadline sweep
interface Deadline {
  at: number;
  fire: () => void;
}

/** Node's setTimeout fires after 1 ms for anything longer than this. */
const MAX_TIMER_MS = 0x7fffffff;

/**
 * The deadlines of all calls under one timer, armed for the earliest live
 * one. add() and cancel() are O(1) (a Set); only a timer firing walks the
 * live deadlines, firing the due ones and re-arming for the next (a
 * cancelled earliest deadline costs one early wake-up, nothing more). A
 * deadline fires no earlier than `ms` after add(), like setTimeout; with no
 * live deadline no timer is armed, so an idle client keeps no process alive.
 */
class DeadlineSweep {
  private readonly live = new Set<Deadline>();
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;

  add(ms: number, fire: () => void): Deadline {
    const d: Deadline = { at: performance.now() + ms, fire };
    this.live.add(d);
    if (d.at < this.timerAt) this.arm(d.at);
    return d;
  }

  cancel(d: Deadline): void {
    if (this.live.delete(d) && this.live.size === 0) this.disarm();
  }

  private disarm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
  }

  private arm(at: number): void {
    this.disarm();
    const wait = Math.min(MAX_TIMER_MS, Math.max(1, Math.ceil(at - performance.now())));
    this.timerAt = at;
    this.timer = setTimeout(() => this.sweep(), wait);
  }

  private sweep(): void {
    this.timer = null;
    this.timerAt = Infinity;
    const now = performance.now();
    const due: Deadline[] = [];
    for (const d of this.live) if (d.at <= now) due.push(d);
    due.sort((a, b) => a.at - b.at);
    for (const d of due) {
      // An earlier callback may have cancelled this one.
      if (!this.live.delete(d)) continue;
      d.fire();
    }
    let next = Infinity;
    for (const d of this.live) if (d.at < next) next = d.at;
    if (next < this.timerAt) this.arm(next);
  }
}
