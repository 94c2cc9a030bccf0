/**
 * How a failed message reaches Node-RED.
 *
 * Node-RED sends a node's error for a message either to Catch nodes (as
 * `msg.error = {message, source, code, ...}`) or, when no Catch node takes
 * it, to the log and the debug sidebar. An Error object logged that way
 * shows in the Node-RED 4 sidebar as an unreadable `{__enc__, type, data}`
 * object, so this module makes sure that:
 *
 *  - the sidebar and the log get the error's sentence as plain text
 *    ("msg.readCap: expected a Buffer of 136 bytes, got a string");
 *  - Catch nodes get `msg.error.message` (the same sentence), `msg.error.source`
 *    (as for core nodes), `msg.error.code` (our stable code, e.g. "INVALID_ARGUMENT")
 *    and `msg.error.cause` (the details: name, code, the daemon's errorCode, the
 *    argument at fault, ...), never a capability;
 *  - the message is completed exactly once, as failed (Complete nodes do not fire).
 */
import type { InputDone, Node, NodeMessage } from '../types';

interface FlowWithErrors {
  handleError(node: Node, logMessage: unknown, msg: NodeMessage): boolean;
}

/** Properties of our errors that are safe and useful in msg.error.cause (no payloads, no caps). */
const DETAIL_KEYS = ['errorCode', 'argument', 'expected', 'replicaErrorCode', 'failedEnvelopeIndex', 'capability', 'isGraceful'];

/** The error as plain data for msg.error.cause. */
export function errorDetails(err: Error): Record<string, unknown> {
  const e = err as Error & Record<string, unknown>;
  const out: Record<string, unknown> = { name: err.name };
  if (typeof e.code === 'string' || typeof e.code === 'number') out.code = e.code;
  for (const k of DETAIL_KEYS) {
    const v = e[k];
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') out[k] = v;
  }
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof Error) out.cause = cause.message;
  return out;
}

/** The Error a Catch node reads: toString() is the sentence alone, with own code and cause. */
function catchable(text: string, err: Error): Error {
  const e = new Error(text);
  Object.defineProperty(e, 'name', { value: '', enumerable: false, configurable: true, writable: true }); // Error.prototype.toString() is then the message alone
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' || typeof code === 'number') Object.assign(e, { code });
  Object.assign(e, { cause: errorDetails(err) });
  // No stack: it would only show this module's frames.
  delete (e as { stack?: unknown }).stack;
  return e;
}

export function asError(e: unknown): Error {
  if (e instanceof Error) return e;
  return new Error(typeof e === 'string' ? e : 'unknown error');
}

/**
 * Completes `msg` as failed with `err`: `done(text)` when the runtime gave a
 * done function (Node-RED >= 1.0), else `node.error(text, msg)`. Node-RED
 * then calls node.error(text, msg), which logs the text (no Catch node) or
 * hands it to the flow's handleError (Catch nodes); for that one synchronous
 * call the flow hands Catch nodes the detailed error instead.
 */
export function reportFailure(node: Node, err: unknown, msg: NodeMessage, done?: InputDone): void {
  const e = asError(err);
  const text = e.message || e.name || 'error';
  const complete = (): void => {
    if (done) done(text as unknown as Error);
    else node.error(text, msg);
  };
  const flow = (node as unknown as { _flow?: Partial<FlowWithErrors> & Record<string, unknown> })._flow;
  if (!flow || typeof flow.handleError !== 'function') {
    // Not inside a flow we know (or a future runtime): the sentence still reaches Catch and the sidebar.
    complete();
    return;
  }
  const forCatch = catchable(text, e);
  const own = Object.prototype.hasOwnProperty.call(flow, 'handleError');
  const original = flow.handleError as FlowWithErrors['handleError'];
  const restore = (): void => {
    if (own) flow.handleError = original;
    else delete flow.handleError;
  };
  flow.handleError = function (this: unknown, n: Node, logMessage: unknown, m: NodeMessage): boolean {
    if (n === node && logMessage === text) {
      restore();
      return original.call(this, n, forCatch, m);
    }
    return original.call(this, n, logMessage, m);
  };
  try {
    complete();
  } finally {
    if (flow.handleError !== original) restore();
  }
}
