/**
 * The kpclientd emulator: an in-memory stand-in for the Katzenpost client
 * daemon and the mixnet behind it, speaking the real thin-client protocol.
 * A SIMULATOR for tests and demos: it provides NO anonymity and runs NO
 * real mixnet.
 */
export {
  startEmulator,
  parseListenAddress,
  EmulatorServer,
  DEFAULT_LISTEN,
  DEFAULT_GRACE_PERIOD_MS,
  DEFAULT_MAX_SEND_QUEUE_BYTES,
  DEFAULT_MAX_BUFFERED_BYTES,
  MAX_QUEUED_RESPONSES,
  COPY_VERDICT_TTL_MS,
  SHUTDOWN_PAUSE_MS,
  HANDSHAKE_PKI_WAIT_MS,
  type Emulator,
  type EmulatorOptions,
} from './server';
export { COURIER_PATIENCE_MS, LATENCY_MODES, type LatencyMode } from './timing';
export { DEFAULT_EPOCH_PERIOD_MS, EPOCH_BASE_MS, epochAt } from './pki';
export { CURRENT_PIGEONHOLE_GEOMETRY, DROPPED_DOCUMENT_FIELDS, PROTOCOL_LEVELS, type ProtocolLevel } from './current';
