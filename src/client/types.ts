/**
 * The client's public types: its options, the per-call options and the
 * results of its calls. No code beyond two defaults; src/index.ts exports them all.
 */
import type { DialConfig, ThinClientTomlShape } from './config';

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

/** Default handshake deadline: a current daemon without a PKI document holds the first frame up to 30 s (§9.2). */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 45_000;

/**
 * Default deadline of local requests: encrypt_* and the envelope helpers run
 * CTIDH-1024 in the daemon, 1-5 s on an idle machine, over 60 s on a loaded one.
 */
export const DEFAULT_REQUEST_TIMEOUT_MS = 120_000;

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
  /** Deadline of local requests (keypair, encrypt, index, PKI, envelopes, cancels), including any wait for a reconnect. Default 120 s (DEFAULT_REQUEST_TIMEOUT_MS). */
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

/** Options of ThinClient.connect(). */
export interface ConnectOptions {
  /** Keep trying after a failed attempt, with the reconnect backoff, until connected, aborted or closed. Default false. */
  retry?: boolean;
  /** Stops connecting: the call rejects with the signal's reason (or OperationCancelledError). */
  signal?: AbortSignal;
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

/** A reply to a legacy send with a SURB (sendMessageAwaitingReply), with what the daemon said about the send. */
export interface LegacyReply {
  /** The reply (services such as echo pad it with zeros to the full packet size); empty when the reply carried none. */
  payload: Buffer;
  /** The 16-byte SURB ID the reply came back on. */
  surbId: Buffer;
  /** When the daemon sent the request (message_sent_event); null if it did not say (or no sent event came first). */
  sentAt: Date | null;
  /** The daemon's estimate of the round trip in ms; null when no sent event came before the reply. */
  replyEtaMs: number | null;
  /** The daemon's error code on the reply (0 = none). */
  errorCode: number;
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
