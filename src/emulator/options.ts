/**
 * The emulator's public face: the options it starts with, the Emulator
 * handle tests and the command line drive it through, and their defaults.
 */
import type { DialConfig } from '../client/config';
import type { ProtocolLevel } from './current';
import type { LatencyMode } from './timing';

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
   * The courier's cache of replies per envelope (kpclientd v0.0.99's courier):
   * a default read re-sent while its box does not exist is re-dispatched to
   * the replicas at most 5 times; after that the courier answers "not found"
   * from its cache until the entry is this old, so a read whose box is
   * written later stalls until then. Default COURIER_DEDUP_TTL_MS (5 min) in
   * 'realistic' mode; 0 (off: a read completes as soon as its box is
   * written) in 'instant' and 'fast'.
   */
  courierDedupTtlMs?: number;
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
