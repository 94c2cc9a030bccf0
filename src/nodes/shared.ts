/**
 * Shared runtime of the Katzenpost node pack: the one module every node file
 * (ours and the channel nodes) builds on. Import from here, not from ./lib.
 *
 * ## Using a daemon from a node
 *
 * ```ts
 * import { defineOperationNode, SIZES } from './shared';
 * export = function (RED: NodeAPI) {
 *   defineOperationNode(RED, {
 *     type: 'katzenpost-example',
 *     credentials: { writeCap: { type: 'password' } },
 *     cancellable: true,                       // accepts msg.cancel = true
 *     async run(ctx) {
 *       const cap = ctx.key('writeCap', 'writeCap', SIZES.writeCap)!;   // credential wins, else msg.writeCap
 *       const index = ctx.buffer('messageBoxIndex', { size: SIZES.messageBoxIndex });
 *       const r = await ctx.client.encryptWrite(ctx.buffer('payload', { strings: 'utf8' }), cap, index, ctx.callOptions());
 *       ctx.msg.nextMessageBoxIndex = r.nextMessageBoxIndex;
 *       return ctx.msg;                          // sent on output 1, then done()
 *     },
 *   });
 * };
 * ```
 *
 * The frame gives each message a timeout (msg.timeout in ms, else the node's
 * `timeout` field in seconds, else `defaultTimeoutMs`), an AbortSignal for
 * client calls (`ctx.signal`, `ctx.callOptions()`; a handler that never asks
 * for it has its message completed by the frame on timeout, msg.cancel or
 * close), blue "working" status, and `done(err)` on any throw,
 * so Catch nodes receive the message. The editor side must declare a
 * `daemon` property of type "katzenpost-daemon" (and `timeout` if used).
 * What a node keeps across messages is built once by
 * `setup(node, config) { return { state, hooks } }` and reaches every run as
 * `ctx.state`, typed by `defineOperationNode<Config, State>`.
 *
 * For nodes that are not request/response (event sources, long-running
 * receivers), use `useDaemon(RED, node, config.daemon, { onEvent, onState })`
 * in the constructor and `await user.close()` in the close handler; status
 * then follows the connection automatically, and `user.acquire()` gives the
 * client.
 *
 * ## Input rules
 *  - node config wins: a TypedInput/credential set in the form is used;
 *    otherwise the msg property (`ctx.setting`, `ctx.key`);
 *  - blobs: `toBuffer` accepts Buffer, Uint8Array and `{type:'Buffer',data}`;
 *    strings only where a field is declared to take them (`strings: 'utf8'`
 *    for payloads, hex/base64 for credential text, told apart by length);
 *  - errors are InvalidArgumentError with messages like
 *    "msg.writeCap: expected a Buffer of 168 bytes, got a string".
 */
export { DaemonConnection, formatMs } from './lib/daemon-connection';
export type {
  DaemonConnectionSettings,
  DaemonEvent,
  DaemonUserHandlers,
  ConnectionLogger,
} from './lib/daemon-connection';
export {
  CoalescedStatus,
  StatusController,
  STATUS_TEXT,
  DAEMON_I18N_NAMESPACE,
  statusForConnection,
  errorStatusText,
  statusText,
} from './lib/status';
export type { ConnectionState, OperationStatus } from './lib/status';
export { DEFAULT_TIMEOUT_SECONDS, defaultTimeoutMs } from './lib/timeouts';
export { validationText, catalogueText } from './lib/messages';
export { reportFailure, errorDetails } from './lib/report';
export { useDaemon, isDaemonConfigNode, configNodeOf } from './lib/user';
export type { DaemonConfigNode, DaemonUser, UseDaemonOptions } from './lib/user';
export {
  toBuffer,
  optionalBuffer,
  decodeKeyText,
  credentialName,
  describeValue,
  toInteger,
  resolveTimeoutMs,
  parseSeconds,
  readSeconds,
  keyExpectation,
  evaluateTypedInput,
  resolveSetting,
} from './lib/inputs';
export type { BufferSpec, StringEncoding } from './lib/inputs';
export { defineOperationNode, SIZES } from './lib/operation';
export type { OperationContext, OperationNode, OperationNodeDefinition, NodeHooks, NodeSetup } from './lib/operation';
export {
  envelopeFromResult,
  readEnvelope,
  boxLabel,
  readDestination,
  destinationForCapability,
  destinationToMsg,
  readCourier,
  resolveServiceDestination,
} from './lib/pigeonhole';
export { summarizeDocument, serviceToMsg, courierToMsg } from './lib/pki-summary';
export type { PkiSummary, ServiceSummary } from './lib/pki-summary';
export type { MsgEnvelope, Destination } from './lib/pigeonhole';
export type { NodeAPI, Node, NodeDef, NodeMessage, NodeStatus, SendArgument } from './types';
export { dialFromConfig, DEFAULT_HOST, DEFAULT_PORT } from './lib/daemon-config';
export type { DaemonDef } from './lib/daemon-config';
