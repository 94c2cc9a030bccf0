/**
 * Persistent Pigeonhole channels (library; no Node-RED imports).
 * See sender.ts and receiver.ts for the durability design (the order of the
 * recorded steps and their crash windows) and framing.ts for the message format.
 */
export { ChannelStore, indexCounter } from './store';
export * from './types';
export * from './errors';
export {
  FRAME_VERSION,
  KIND_SINGLE,
  KIND_LARGE,
  SINGLE_HEADER_LENGTH,
  LARGE_HEADER_LENGTH,
  MAX_MESSAGE_LENGTH,
  maxSinglePayload,
  encodeSingle,
  encodeLarge,
  parseFirstBox,
  assembleLarge,
} from './framing';
export { SCHEMA_VERSION } from './db';
export { acquireSharedStore, type SharedStore } from './registry';
export {
  VOUCHER_LENGTH,
  formatVoucher,
  parseVoucher,
  startInvitation,
  startJoin,
  runIntroduction,
  type IntroductionClient,
  type IntroductionOptions,
  type IntroductionRole,
  type IntroductionState,
} from './introduction';
