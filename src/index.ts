/**
 * @katzenpost-community/node-red-katzenpost — the thin client library.
 *
 * `import { ThinClient } from '@katzenpost-community/node-red-katzenpost'`.
 * The daemon emulator is a separate entry point ('.../emulator').
 */
export { ThinClient } from './client/client';
export { DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_REQUEST_TIMEOUT_MS } from './client/types';
export type {
  ArqOptions,
  BlockingSendOptions,
  CallOptions,
  ConnectOptions,
  CopyCommandOptions,
  CourierEnvelopesResult,
  CurrentOnlyMethod,
  DaemonProtocol,
  DirectoryAuthority,
  EncryptResult,
  KeypairResult,
  LegacyReply,
  Logger,
  MultiPayloadDestination,
  MultiPayloadResult,
  RawPkiDocument,
  ResendParams,
  StartResendingResult,
  ThinClientOptions,
  TombstoneEnvelope,
  TombstoneRangeEnvelopesResult,
  TombstoneRangeResult,
  VoucherInductResult,
  VoucherMintResult,
  VoucherOpenResult,
  VoucherStreamCaps,
} from './client/types';
export type {
  ConnectFailedEvent,
  ConnectionStatusEvent,
  DaemonDisconnectedEvent,
  DaemonReconnectedEvent,
  MessageIdGarbageCollectedEvent,
  MessageReplyEvent,
  MessageSentEvent,
  NewPkiDocumentEvent,
  ShutdownEvent,
  ThinClientEvent,
  ThinClientEventMap,
  ThinClientEventType,
} from './client/events';
export { parseMixDescriptor, parsePkiDocument } from './client/pki';
export type { CourierDescriptor, MixDescriptor, PkiDocument, ReplicaDescriptor, ServiceDescriptor } from './client/pki';
export { blake2b256, newMessageId, newQueryId, newSurbId } from './client/crypto';
export * from './client/errors';
export {
  APP_ID_LENGTH,
  CURRENT_REQUEST_KINDS,
  CURRENT_RESPONSE_KINDS,
  DEFAULT_FRAME_TIMEOUT_MS,
  DEFAULT_MAX_FRAME_LENGTH,
  DEFAULT_PIGEONHOLE_GEOMETRY,
  DEFAULT_SPHINX_GEOMETRY,
  FRAME_PREFIX_LENGTH,
  FrameTimeoutError,
  FrameTooLargeError,
  HASH_LENGTH,
  HEAD_REQUEST_KINDS,
  HEAD_RESPONSE_KINDS,
  INSTANCE_TOKEN_LENGTH,
  MAX_COPY_PAYLOAD_LENGTH,
  MESSAGE_BOX_INDEX_LENGTH,
  MESSAGE_ID_LENGTH,
  PIGEONHOLE_GEOMETRY_KEYS,
  QUERY_ID_LENGTH,
  READ_CAP_LENGTH,
  REQUEST_KINDS,
  RESPONSE_KINDS,
  SEED_LENGTH,
  SPHINX_GEOMETRY_KEYS,
  SURB_ID_LENGTH,
  VOUCHER_LENGTH,
  VOUCHER_PUBLIC_KEY_LENGTH,
  VOUCHER_SALT_LENGTH,
  VOUCHER_SECRET_KEY_LENGTH,
  WRITE_CAP_LENGTH,
} from './wire';
export type { AnyRequestKind, HeadRequestKind, HeadResponseKind, PigeonholeGeometry, RequestKind, ResponseKind, SphinxGeometry } from './wire';
export {
  describeDial,
  loadThinClientConfig,
  parseThinClientToml,
  parseWsAddress,
  resolveDialConfig,
  unixSocketPath,
  validateDialConfig,
} from './client/config';
export type { DialConfig, TcpNetwork, ThinClientTomlShape } from './client/config';
