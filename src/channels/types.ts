/**
 * Public types of the persistent-channel store, and the slice of the thin
 * client it needs. The store codes against {@link ChannelClient}, a
 * structural subset of `ThinClient`, so any ThinClient instance can be passed
 * directly.
 */
import type { ResendParams } from '../client/client';
import type { PigeonholeGeometry } from '../wire';

/** The result of an encrypt_read / encrypt_write call. */
export interface ChannelEncryptResult {
  messageCiphertext: Buffer;
  envelopeDescriptor: Buffer;
  envelopeHash: Buffer;
  nextMessageBoxIndex: Buffer;
}

/**
 * Parameters of start_resending_encrypted_message (and its variants): the
 * client's own ResendParams without the flags, which the store never sets
 * (it picks the variant method instead).
 */
export type ChannelResendParams = Pick<
  ResendParams,
  'readCap' | 'writeCap' | 'messageBoxIndex' | 'replyIndex' | 'envelopeDescriptor' | 'messageCiphertext' | 'envelopeHash'
>;

/** The thin-client methods the store uses (a structural subset of ThinClient). */
export interface ChannelClient {
  isDaemonConnected(): boolean;
  pigeonholeGeometry(): PigeonholeGeometry;
  newKeypair(seed: Uint8Array): Promise<{ writeCap: Buffer; readCap: Buffer; firstMessageIndex: Buffer }>;
  encryptWrite(plaintext: Uint8Array, writeCap: Uint8Array, index: Uint8Array): Promise<ChannelEncryptResult>;
  encryptRead(readCap: Uint8Array, index: Uint8Array): Promise<ChannelEncryptResult>;
  startResendingEncryptedMessage(
    params: ChannelResendParams,
    opts?: { signal?: AbortSignal; timeoutMs?: number },
  ): Promise<{ plaintext: Buffer | null }>;
  startResendingEncryptedMessageNoRetry(
    params: ChannelResendParams,
    opts?: { signal?: AbortSignal; timeoutMs?: number },
  ): Promise<{ plaintext: Buffer | null }>;
  tombstoneRange(
    writeCap: Uint8Array,
    start: Uint8Array,
    maxCount: number,
  ): Promise<{ envelopes: (ChannelEncryptResult & { boxIndex: Buffer })[]; next: Buffer }>;
  createCourierEnvelopesFromPayload(
    payload: Uint8Array,
    destWriteCap: Uint8Array,
    destStartIndex: Uint8Array,
    isStart: boolean,
    isLast: boolean,
  ): Promise<{ envelopes: Buffer[]; nextDestIndex: Buffer }>;
  startResendingCopyCommand(writeCap: Uint8Array, opts?: { signal?: AbortSignal; timeoutMs?: number }): Promise<void>;
  /** The index after `index` (next_message_box_index). Only `moveReader()` uses it, so it is optional here. */
  nextMessageBoxIndex?(index: Uint8Array): Promise<Buffer>;
}

export type ChannelKind = 'owned' | 'imported';

/** A channel as `list()` and the open/create calls describe it. Contains no capability. */
export interface ChannelInfo {
  name: string;
  kind: ChannelKind;
  /** Hex BLAKE2b-256 of the read capability: a public identifier of the channel. */
  id: string;
  /** Counter of the channel's first box (decimal). */
  firstIndex: string;
  /** Counter of the next box this store will write (owned channels; null until known). */
  writeIndex: string | null;
  /** Counter of the next box this store will read. */
  readIndex: string;
  /** Messages and tombstone requests waiting to be written, the one in flight included. */
  queued: number;
  /** Received entries not yet handed to a consumer. */
  unread: number;
}

/**
 * What happened on a channel and when (for status displays). Counts only,
 * no payload and no capability. Times are milliseconds since the epoch,
 * null when nothing of that kind happened yet.
 */
export interface ChannelActivity {
  /** Messages this store wrote and the courier acknowledged. */
  sent: number;
  /** Entries the reader took from the channel (messages, tombstones, malformed boxes). */
  received: number;
  /** Of those, messages. */
  receivedMessages: number;
  createdAt: number;
  lastSentAt: number | null;
  lastReceivedAt: number | null;
  /** When the newest queued (not yet acknowledged) message or tombstone was queued. */
  lastQueuedAt: number | null;
  /** The newest of the times above (creation included). */
  lastActivityAt: number;
}

/** One entry of the reader's log, as `receivedLog()` lists it: no payload. */
export interface ReceivedEntry {
  kind: 'message' | 'tombstone' | 'malformed';
  /** Counter of the entry's first box, decimal. */
  index: string;
  boxes: number;
  receivedAt: number;
  /** When the entry was handed to a consumer; null while unread. */
  readAt: number | null;
}

/** A message read from a channel. */
export interface ChannelMessage {
  kind: 'message';
  channel: string;
  /** Counter of the message's first box, as a decimal string. */
  index: string;
  payload: Buffer;
  /** Number of boxes the message occupied (1 unless it came through a copy stream). */
  boxes: number;
}

/** A box the reader skipped: a tombstone, or bytes that are not a channel message. */
export interface ChannelReport {
  kind: 'tombstone' | 'malformed';
  channel: string;
  /** Counter of the (first) skipped box, decimal. */
  index: string;
  /** Number of boxes skipped. */
  boxes: number;
  /** Why a box was reported as malformed. */
  reason?: string;
}

export type ChannelItem = ChannelMessage | ChannelReport;

/** Called once per item, in channel order. The item is marked read when this returns (or its promise resolves). */
export type ChannelHandler = (item: ChannelItem) => void | Promise<void>;

/** The outcome of an acknowledged send. */
export interface SendResult {
  channel: string;
  /** Counter of the message's first box, decimal: the index the reader reports. */
  index: string;
  /** Boxes written (1, or more through a copy command). */
  boxes: number;
  /** The durable queue sequence number the message had. */
  seq: number;
}

export interface TombstoneResult {
  channel: string;
  /** Index of the first tombstoned message. */
  index: string;
  /** Messages tombstoned. */
  messages: number;
  /** Boxes tombstoned. */
  boxes: number;
}

/**
 * Progress points, emitted synchronously (EventEmitter 'progress') so that
 * tests and status displays can observe, or stop at, each durable step.
 * A copy stream is built window by window, so `elements` of the element
 * stages counts the elements recorded so far (the stream's total once its
 * last window is recorded).
 */
export type ChannelProgress =
  | { stage: 'queued'; channel: string; seq: number }
  | { stage: 'pending-recorded'; channel: string; seq: number; mode: 'box' | 'copy'; index: string }
  | { stage: 'element-recorded'; channel: string; seq: number; element: number; elements: number }
  | { stage: 'element-acked'; channel: string; seq: number; element: number; elements: number }
  | { stage: 'copy-dispatch'; channel: string; seq: number }
  | { stage: 'write-acknowledged'; channel: string; seq: number; index: string }
  | { stage: 'sent'; channel: string; seq: number; index: string; boxes: number }
  | { stage: 'tombstoned'; channel: string; seq: number; index: string; boxes: number }
  | { stage: 'reading'; channel: string; index: string }
  | { stage: 'box-read'; channel: string; index: string; outcome: 'data' | 'tombstone' }
  | { stage: 'logged'; channel: string; index: string; kind: ChannelItem['kind'] }
  | { stage: 'delivered'; channel: string; index: string }
  | { stage: 'marked'; channel: string; index: string };

/** A problem the store is retrying through (it never drops a message because of one). */
export interface ChannelProblem {
  channel: string;
  operation: 'send' | 'receive' | 'scan' | 'tombstone';
  error: Error;
  /** Milliseconds until the next attempt. */
  retryInMs: number;
}

export interface ChannelStoreLogger {
  debug(m: string): void;
  info(m: string): void;
  warn(m: string): void;
  error(m: string): void;
}

export interface ChannelStoreOptions {
  /** Path of the SQLite database file (created if missing, mode 0600). */
  path: string;
  /** The thin client used for channels that have no client of their own (see `setClient`). */
  client?: ChannelClient | null;
  /** First delay between polls of a box that does not exist yet. Default 500 ms. */
  pollInitialMs?: number;
  /** Longest delay between polls. Default 10 000 ms. */
  pollMaxMs?: number;
  /** First delay before retrying a failed write or read. Default 1000 ms. */
  retryInitialMs?: number;
  /** Longest delay between retries. Default 30 000 ms. */
  retryMaxMs?: number;
  /** Keep message payloads in the received log after they were marked read. Default false. */
  retainPayloads?: boolean;
  logger?: ChannelStoreLogger;
}

/** Capabilities the caller supplies when it opens a channel it keeps elsewhere (e.g. Node-RED credentials). */
export type ChannelCaps =
  | { kind: 'owned'; seed: Uint8Array; writeCap?: undefined; readCap?: undefined }
  | { kind: 'owned'; writeCap: Uint8Array; seed?: undefined; readCap?: undefined }
  | { kind: 'imported'; readCap: Uint8Array; seed?: undefined; writeCap?: undefined };
