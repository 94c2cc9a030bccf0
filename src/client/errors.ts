/**
 * Error classes and code tables (PROTOCOL.md §5, §9.4).
 *
 * Every error the library raises is a KatzenpostError with a stable `code`
 * string; daemon-reported errors also carry the numeric `errorCode`.
 */

/** Thin-client error codes (§5.1 and HEAD's §9.4 additions). */
export const ThinClientErrorCode = {
  Success: 0,
  ConnectionLost: 1,
  Timeout: 2,
  InvalidRequest: 3,
  InternalError: 4,
  MaxRetries: 5,
  InvalidChannel: 6,
  ChannelNotFound: 7,
  PermissionDenied: 8,
  InvalidPayload: 9,
  ServiceUnavailable: 10,
  DuplicateCapability: 11,
  CourierCacheCorruption: 12,
  PropagationError: 13,
  InvalidWriteCapability: 14,
  InvalidReadCapability: 15,
  InvalidResumeWriteChannelRequest: 16,
  InvalidResumeReadChannelRequest: 17,
  ImpossibleHashError: 18,
  ImpossibleNewWriteCapError: 19,
  ImpossibleNewStatefulWriterError: 20,
  CapabilityAlreadyInUse: 21,
  MKEMDecryptionFailed: 22,
  BACAPDecryptionFailed: 23,
  StartResendingCancelled: 24,
  InvalidTombstoneSig: 25,
  CopyCommandFailed: 26,
  PayloadTooLarge: 27,
  VoucherHashMismatch: 28,
  VoucherSignatureInvalid: 29,
  VoucherSealOpenFailed: 30,
  CourierInvalidEnvelope: 31,
  CourierInvalidEpoch: 32,
} as const;

const THIN_CLIENT_MESSAGES: Record<number, string> = {
  0: 'Success',
  1: 'Connection lost',
  2: 'Timeout',
  3: 'Invalid request',
  4: 'Internal error',
  5: 'Maximum retries exceeded',
  6: 'Invalid channel',
  7: 'Channel not found',
  8: 'Permission denied',
  9: 'Invalid payload',
  10: 'Service unavailable',
  11: 'Duplicate capability',
  12: 'Courier cache corruption',
  13: 'Propagation error',
  14: 'Invalid write capability',
  15: 'Invalid read capability',
  16: 'Invalid resume write channel request',
  17: 'Invalid resume read channel request',
  18: 'Impossible hash error',
  19: 'Failed to create new write capability',
  20: 'Failed to create new stateful writer',
  21: 'Capability already in use',
  22: 'MKEM decryption failed',
  23: 'BACAP decryption failed',
  24: 'Start resending cancelled',
  25: 'Invalid tombstone signature',
  26: 'Copy command failed',
  27: 'Payload too large',
  28: 'Voucher payload does not hash to the voucher',
  29: 'Voucher signed please-add did not verify',
  30: 'Voucher sealed reply could not be opened',
  31: 'Courier rejected the envelope as malformed',
  32: 'Courier rejected the envelope: replica epoch outside tolerance window',
};

/** The §5.1 message string for a thin-client error code. */
export function thinClientErrorMessage(code: number): string {
  return THIN_CLIENT_MESSAGES[code] ?? `Unknown thin client error code: ${code}`;
}

/** Pigeonhole replica error codes (§5.2). */
export const ReplicaErrorCode = {
  Success: 0,
  BoxIDNotFound: 1,
  InvalidBoxID: 2,
  InvalidSignature: 3,
  DatabaseFailure: 4,
  InvalidPayload: 5,
  StorageFull: 6,
  InternalError: 7,
  InvalidEpoch: 8,
  ReplicationFailed: 9,
  BoxAlreadyExists: 10,
  Tombstone: 11,
} as const;

// ------------------------------------------------------------------ base
export class KatzenpostError extends Error {
  /** Stable machine-readable identifier, e.g. 'BOX_ID_NOT_FOUND'. */
  readonly code: string;
  /** The daemon's numeric error code where one was reported. */
  readonly errorCode?: number;

  constructor(code: string, message: string, errorCode?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    if (errorCode !== undefined) this.errorCode = errorCode;
  }
}

// ------------------------------------------------------- transport / lifecycle
/** The daemon is not connected to the mixnet; legacy sends are refused locally. */
export class ThinClientOfflineError extends KatzenpostError {
  constructor(message = 'cannot send message in offline mode - daemon not connected to mixnet') {
    super('OFFLINE', message);
  }
}

export class ThinClientTimeoutError extends KatzenpostError {
  constructor(message = 'operation timed out') {
    super('TIMEOUT', message, ThinClientErrorCode.Timeout);
  }
}

/** The caller aborted the operation (AbortSignal) or the client was closed. */
export class OperationCancelledError extends KatzenpostError {
  constructor(message = 'operation cancelled') {
    super('CANCELLED', message);
  }
}

/** The local socket to the daemon is gone and the operation could not complete. */
export class DaemonDisconnectedError extends KatzenpostError {
  constructor(
    message = 'daemon disconnected',
    readonly isGraceful = false,
  ) {
    super('DAEMON_DISCONNECTED', message, ThinClientErrorCode.ConnectionLost);
  }
}

/** A frame could not be encoded or decoded as CBOR. */
export class CborError extends KatzenpostError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('CBOR', message, undefined, options);
  }
}

/** The daemon broke the protocol (handshake order, missing geometry, oversize frame, a reply or event field of the wrong type or size). */
export class ProtocolError extends KatzenpostError {
  constructor(message: string) {
    super('PROTOCOL', message);
  }
}

/** A thinclient.toml or options object is invalid. */
export class ConfigError extends KatzenpostError {
  constructor(message: string) {
    super('CONFIG', message);
  }
}

/** A caller passed a bad argument; nothing was sent. */
export class InvalidArgumentError extends KatzenpostError {
  constructor(
    readonly argument: string,
    readonly expected: string,
    actual?: string,
  ) {
    super('INVALID_ARGUMENT', `${argument}: expected ${expected}${actual ? `, got ${actual}` : ''}`);
  }
}

/** No service in the PKI document offers the capability. */
export class ServiceNotFoundError extends KatzenpostError {
  constructor(readonly capability: string) {
    super('SERVICE_NOT_FOUND', `service not found: no service node offers "${capability}"`);
  }
}

/** Fewer couriers than requested are in the PKI document. */
export class NotEnoughCouriersError extends KatzenpostError {
  constructor(
    readonly requested: number,
    readonly available: number,
  ) {
    super('NOT_ENOUGH_COURIERS', `not enough couriers available: requested ${requested}, the PKI document has ${available}`);
  }
}

/**
 * The connected daemon does not know this request kind: it speaks an older
 * protocol level (kpclientd v0.0.76, "pinned") than the method needs. Raised
 * locally, before anything is written: a pinned daemon cannot take an
 * unknown request kind (it goes to its mixnet dispatcher, which aborts,
 * PROTOCOL.md §3.1), so the request is never sent and the connection and
 * every operation in flight are unaffected.
 */
export class UnsupportedByDaemonError extends KatzenpostError {
  constructor(
    /** The library method, e.g. 'voucherMint'. */
    readonly method: string,
    /** The request kind it sends, e.g. 'voucher_mint'. */
    readonly requestKind: string,
    /** What the connected daemon speaks: 'pinned' (v0.0.76) or 'current' (v0.0.99+). */
    readonly daemonProtocol: 'pinned' | 'current',
    /** How that was established, e.g. "its reply envelope has 20 keys and no voucher_mint_reply". */
    readonly evidence: string,
  ) {
    super(
      'UNSUPPORTED_BY_DAEMON',
      `${method} is not supported by the connected daemon: it speaks the ${daemonProtocol} thin-client protocol` +
        `${daemonProtocol === 'pinned' ? ' (kpclientd v0.0.76)' : ''} (${evidence}); ${method} needs kpclientd v0.0.99 or later. ` +
        'Nothing was sent; the connection is unaffected.',
    );
  }
}

/** A non-ARQ call failed with a thin-client code ("<op> failed: <string>"). */
export class DaemonError extends KatzenpostError {
  constructor(
    readonly operation: string,
    errorCode: number,
  ) {
    super('DAEMON_ERROR', `${operation} failed: ${thinClientErrorMessage(errorCode)}`, errorCode);
  }
}

// ------------------------------------------------------------- replica (1-11)
export class ReplicaError extends KatzenpostError {}
export class BoxIDNotFoundError extends ReplicaError {
  constructor() {
    super('BOX_ID_NOT_FOUND', 'box ID not found', 1);
  }
}
export class InvalidBoxIDError extends ReplicaError {
  constructor() {
    super('INVALID_BOX_ID', 'invalid box ID', 2);
  }
}
export class InvalidSignatureError extends ReplicaError {
  constructor() {
    super('INVALID_SIGNATURE', 'invalid signature (or the daemon rejected the request as invalid)', 3);
  }
}
export class DatabaseFailureError extends ReplicaError {
  constructor() {
    super('DATABASE_FAILURE', 'database failure (or a daemon internal error)', 4);
  }
}
export class InvalidPayloadError extends ReplicaError {
  constructor() {
    super('INVALID_PAYLOAD', 'invalid payload', 5);
  }
}
export class StorageFullError extends ReplicaError {
  constructor() {
    super('STORAGE_FULL', 'storage full', 6);
  }
}
export class ReplicaInternalError extends ReplicaError {
  constructor() {
    super('REPLICA_INTERNAL_ERROR', 'replica internal error', 7);
  }
}
export class InvalidEpochError extends ReplicaError {
  constructor() {
    super('INVALID_EPOCH', 'invalid epoch', 8);
  }
}
export class ReplicationFailedError extends ReplicaError {
  constructor() {
    super('REPLICATION_FAILED', 'replication failed', 9);
  }
}
export class BoxAlreadyExistsError extends ReplicaError {
  constructor() {
    super('BOX_ALREADY_EXISTS', 'box already exists', 10);
  }
}
export class TombstoneError extends ReplicaError {
  constructor() {
    super('TOMBSTONE', 'tombstone', 11);
  }
}

// ------------------------------------------------------------ courier (HEAD)
export class CourierError extends KatzenpostError {}
export class CourierCacheCorruptionError extends CourierError {
  constructor() {
    super('COURIER_CACHE_CORRUPTION', 'courier cache corruption', 12);
  }
}
export class CourierPropagationError extends CourierError {
  constructor() {
    super('COURIER_PROPAGATION', 'courier propagation error', 13);
  }
}
export class CourierInvalidEnvelopeError extends CourierError {
  constructor() {
    super('COURIER_INVALID_ENVELOPE', 'courier rejected envelope as malformed', 31);
  }
}
export class CourierInvalidEpochError extends CourierError {
  constructor() {
    super('COURIER_INVALID_EPOCH', 'courier rejected envelope: replica epoch outside tolerance window', 32);
  }
}

// ------------------------------------------------------------- pigeonhole
export class MKEMDecryptionFailedError extends KatzenpostError {
  constructor() {
    super('MKEM_DECRYPTION_FAILED', 'MKEM decryption failed', 22);
  }
}
export class BACAPDecryptionFailedError extends KatzenpostError {
  constructor() {
    super('BACAP_DECRYPTION_FAILED', 'BACAP decryption failed', 23);
  }
}
export class StartResendingCancelledError extends KatzenpostError {
  constructor() {
    super('START_RESENDING_CANCELLED', 'start resending cancelled', 24);
  }
}
export class InvalidTombstoneSignatureError extends KatzenpostError {
  constructor() {
    super('INVALID_TOMBSTONE_SIGNATURE', 'invalid tombstone signature', 25);
  }
}
export class PayloadTooLargeError extends KatzenpostError {
  constructor() {
    super('PAYLOAD_TOO_LARGE', 'payload too large', 27);
  }
}

// ------------------------------------------------------------ contact voucher (HEAD, §9.4)
/** A Contact Voucher call failed its cryptographic check (codes 28-30). */
export class VoucherError extends KatzenpostError {}
/** voucherInduct: the voucher payload does not hash to the voucher (tampered or wrong payload). */
export class VoucherHashMismatchError extends VoucherError {
  constructor() {
    super('VOUCHER_HASH_MISMATCH', 'voucher payload does not hash to the voucher', 28);
  }
}
/** voucherInduct: the signed please-add inside the payload does not verify under its read cap. */
export class VoucherSignatureInvalidError extends VoucherError {
  constructor() {
    super('VOUCHER_SIGNATURE_INVALID', 'voucher signed please-add did not verify', 29);
  }
}
/** voucherOpen: the sealed reply cannot be opened with this voucher secret key (tampered, or not for this key). */
export class VoucherSealOpenFailedError extends VoucherError {
  constructor() {
    super('VOUCHER_SEAL_OPEN_FAILED', 'voucher sealed reply could not be opened', 30);
  }
}
export class CopyCommandFailedError extends KatzenpostError {
  constructor(
    /** The replica error (§5.2) that aborted the copy; 0 when none was reported. */
    readonly replicaErrorCode: number,
    /** 1-based position in the copy stream of the envelope that failed; 0 if unknown. */
    readonly failedEnvelopeIndex: number,
  ) {
    super(
      'COPY_COMMAND_FAILED',
      replicaErrorCode
        ? `copy command failed: replica error ${replicaErrorCode} (${replicaErrorName(replicaErrorCode)}) at envelope ${failedEnvelopeIndex}`
        : 'copy command failed: no replica reply',
      26,
    );
  }
}

export function replicaErrorName(code: number): string {
  const entry = Object.entries(ReplicaErrorCode).find(([, v]) => v === code);
  return entry ? entry[0] : `Unknown replica error ${code}`;
}

/** A reply code that has no class of its own on the encrypted-message path. */
export class UnknownDaemonError extends KatzenpostError {
  constructor(errorCode: number) {
    super('DAEMON_ERROR', thinClientErrorMessage(errorCode), errorCode);
  }
}

const RESEND_ERRORS: Record<number, () => KatzenpostError> = {
  1: () => new BoxIDNotFoundError(),
  2: () => new InvalidBoxIDError(),
  3: () => new InvalidSignatureError(),
  4: () => new DatabaseFailureError(),
  5: () => new InvalidPayloadError(),
  6: () => new StorageFullError(),
  7: () => new ReplicaInternalError(),
  8: () => new InvalidEpochError(),
  9: () => new ReplicationFailedError(),
  10: () => new BoxAlreadyExistsError(),
  11: () => new TombstoneError(),
  12: () => new CourierCacheCorruptionError(),
  13: () => new CourierPropagationError(),
  22: () => new MKEMDecryptionFailedError(),
  23: () => new BACAPDecryptionFailedError(),
  24: () => new StartResendingCancelledError(),
  25: () => new InvalidTombstoneSignatureError(),
  27: () => new PayloadTooLargeError(),
  31: () => new CourierInvalidEnvelopeError(),
  32: () => new CourierInvalidEpochError(),
};

/**
 * The mixed table of §5.5 for start_resending_encrypted_message replies:
 * replica codes win over thin-client codes for 1-11.
 */
export function errorForResendCode(code: number): KatzenpostError | null {
  if (code === 0) return null;
  return RESEND_ERRORS[code]?.() ?? new UnknownDaemonError(code);
}

/** Copy-command replies (§5.5): 26 carries the replica diagnosis; others use the mixed table. */
export function errorForCopyCode(code: number, replicaErrorCode = 0, failedEnvelopeIndex = 0): KatzenpostError | null {
  if (code === 0) return null;
  if (code === 26) return new CopyCommandFailedError(replicaErrorCode, failedEnvelopeIndex);
  return errorForResendCode(code);
}

/** Codes 27-32 (§9.4), each with its own class. */
const HEAD_CODE_ERRORS: Record<number, () => KatzenpostError> = {
  27: () => new PayloadTooLargeError(),
  28: () => new VoucherHashMismatchError(),
  29: () => new VoucherSignatureInvalidError(),
  30: () => new VoucherSealOpenFailedError(),
  31: () => new CourierInvalidEnvelopeError(),
  32: () => new CourierInvalidEpochError(),
};

/**
 * Contact Voucher replies (§9.3, §9.4): 28-30 (and the other codes added
 * with them, 27, 31, 32) are their own classes; anything else, chiefly 3
 * (a malformed cap, key or payload), is DaemonError("<op> failed: …").
 */
export function errorForVoucherCode(operation: string, code: number): KatzenpostError | null {
  if (code === 0) return null;
  return HEAD_CODE_ERRORS[code]?.() ?? new DaemonError(operation, code);
}

/** Every other call: a non-zero code becomes "<op> failed: <message>". */
export function errorForGenericCode(operation: string, code: number): DaemonError | null {
  return code === 0 ? null : new DaemonError(operation, code);
}

/**
 * True for outcomes that complete an operation rather than fail it
 * (BoxIDNotFound, BoxAlreadyExists, Tombstone): do not retry on these.
 */
export function isExpectedOutcome(err: unknown): boolean {
  return err instanceof BoxIDNotFoundError || err instanceof BoxAlreadyExistsError || err instanceof TombstoneError;
}
