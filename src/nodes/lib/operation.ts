/**
 * `defineOperationNode`: the frame every request/response node of the pack
 * runs in, so each node file holds only its own logic.
 *
 * It provides, for every input message:
 *  - the client (waiting for the first connection within the timeout);
 *  - an AbortSignal that fires on timeout (msg.timeout ms, else the node's
 *    `timeout` field in seconds, else the node type's default), on a
 *    `msg.cancel` message (long operations), and on node close; the client
 *    turns an abort of an ARQ call into the daemon-side cancel;
 *  - status: blue "working" while running, a red ring with the error code
 *    after a failure, the daemon connection state otherwise;
 *  - input helpers (msg property or credential -> Buffer, TypedInput
 *    settings) whose errors name the property;
 *  - what the definition's setup() built for the node instance, typed, as
 *    ctx.state (with its event and close hooks);
 *  - exactly one `done()` per message: `done()` after sending the handler's
 *    result, `done(err)` on failure so a Catch node receives the message.
 *    Nothing thrown by a handler escapes to Node-RED.
 */
import type { ThinClient } from '../../client/client';
import { OperationCancelledError, ThinClientTimeoutError } from '../../client/errors';
import type { CredentialDef, InputDone, InputSend, Node, NodeAPI, NodeDef, NodeMessage, SendArgument } from '../types';
import { abortReason } from '../../util/deadline';
import { formatMs, type DaemonEvent } from './daemon-connection';
import {
  credentialName,
  decodeKeyText,
  resolveSetting,
  resolveTimeoutMs,
  toBuffer,
  type BufferSpec,
} from './inputs';
import type { OperationStatus, StatusController } from './status';
import { defaultTimeoutMs as tableTimeoutMs } from './timeouts';
import { reportFailure } from './report';
import { useDaemon, type DaemonUser } from './user';

/** Sizes of the Pigeonhole blobs (PIGEONHOLE.md §0). */
export const SIZES = {
  writeCap: 168,
  readCap: 136,
  messageBoxIndex: 104,
  envelopeHash: 32,
  seed: 32,
  idHash: 32,
  surbId: 16,
} as const;

/** Runtime state of an operation node, available to handlers and hooks. */
export interface OperationNode extends Node {
  /** The daemon wiring (connection, status). */
  daemonUser: DaemonUser;
}

export interface OperationContext<C extends NodeDef = NodeDef, S = undefined> {
  readonly RED: NodeAPI;
  readonly node: OperationNode;
  readonly config: C;
  /** What the definition's setup() built for this node instance (its `state`); undefined without setup. */
  readonly state: S;
  /** The input message. Handlers may modify and return it (Node-RED hands each node its own copy). */
  readonly msg: NodeMessage;
  readonly client: ThinClient;
  /** Fires on timeout, msg.cancel, cancel() or node close; pass it to every client call. */
  readonly signal: AbortSignal;
  /** The resolved timeout of this message, if any (ms). */
  readonly timeoutMs: number | undefined;
  readonly status: StatusController;
  /** `{ signal }`, the options object every client call accepts. */
  callOptions(): { signal: AbortSignal };
  /** Reads msg[prop] as a Buffer (error names "msg.<prop>"). */
  buffer(prop: string, spec?: Omit<BufferSpec, 'name'>): Buffer;
  /** Like buffer(), but missing (undefined/null) gives null. */
  optionalBuffer(prop: string, spec?: Omit<BufferSpec, 'name'>): Buffer | null;
  /**
   * A cap or other key: the node's credential field `field` when filled in
   * (hex or base64 text), else msg[msgProp]. Returns null when neither is set
   * and `required` is false.
   */
  key(field: string, msgProp: string, size: number, required?: boolean): Buffer | null;
  /** True when the credential field is filled in. */
  hasCredential(field: string): boolean;
  /** "Node config wins" for a TypedInput field `<field>` / `<field>Type`, else msg[msgProp]. */
  setting(field: string, msgProp: string, label: string): Promise<{ value: unknown; name: string }>;
  /** Registers a key (e.g. an envelope hash) so a `msg.cancel` naming it cancels only this operation. */
  addCancelKey(key: Uint8Array): void;
  /** Sends a message now, before the handler returns (e.g. progress). */
  send(out: SendArgument): void;
  /** Status text for this operation while it runs ("waiting for box 3fa2c1, 12 s"); null: plain "working". */
  progress(text: string | null): void;
}

export interface NodeHooks {
  /** Daemon events for this node (already guarded against exceptions). */
  onEvent?(event: DaemonEvent): void;
  /** Extra cleanup on close (timers, pending maps). */
  onClose?(): void | Promise<void>;
}

/** What setup() returns: the node instance's state, handed to every run() as ctx.state, and its hooks. */
export interface NodeSetup<S> {
  state: S;
  hooks?: NodeHooks;
}

export interface OperationNodeDefinition<C extends NodeDef = NodeDef, S = undefined> {
  type: string;
  /** Credential fields, all of type password unless said otherwise. */
  credentials?: Record<string, CredentialDef>;
  /**
   * Timeout when neither msg.timeout nor the node's `timeout` field is set
   * (ms); default: the type's entry in DEFAULT_TIMEOUT_SECONDS (lib/timeouts).
   */
  defaultTimeoutMs?: number | ((config: C) => number | undefined);
  /** Long network operation: accepts msg.cancel to abort running operations. */
  cancellable?: boolean;
  /**
   * Called once when the node starts: builds what run() needs across messages
   * (ctx.state, typed by S) and the node's hooks. If it throws, every message
   * fails with that error.
   */
  setup?(node: OperationNode, config: C, RED: NodeAPI): NodeSetup<S>;
  /** The operation. Its result is sent (one value per output); throwing sends the error to Catch. */
  run(ctx: OperationContext<C, S>): Promise<SendArgument | void>;
}

interface InFlight {
  controller: AbortController;
  keys: Set<string>;
}

/** Registers a Node-RED node type built on the operation frame. */
export function defineOperationNode<C extends NodeDef, S = undefined>(RED: NodeAPI, def: OperationNodeDefinition<C, S>): void {
  function OperationNodeCtor(this: OperationNode, config: NodeDef): void {
    RED.nodes.createNode(this, config);
    const node = this;
    const cfg = config as C;
    const inFlight = new Set<InFlight>();
    let closing = false;
    let hooks: NodeHooks = {};
    let state = undefined as S;
    let setupError: Error | null = null;

    node.daemonUser = useDaemon(RED, node, cfg.daemon, {
      onEvent: (ev) => hooks.onEvent?.(ev),
    });
    if (def.setup) {
      try {
        const built = def.setup(node, cfg, RED);
        state = built.state;
        hooks = built.hooks ?? {};
      } catch (e) {
        setupError = asError(e);
        node.error(`${def.type}: setup failed: ${setupError.message}`);
      }
    }

    /** Throws (cancelling nothing) when the message names a malformed key. */
    const cancelMatching = (msg: NodeMessage): number => {
      const wanted = cancelKeyOf(msg);
      let n = 0;
      for (const op of inFlight) {
        if (wanted && !op.keys.has(wanted)) continue;
        op.controller.abort(new OperationCancelledError(`${def.type}: cancelled by msg.cancel`));
        n++;
      }
      return n;
    };

    node.on('input', (msg: NodeMessage, send: InputSend, done: InputDone) => {
      const sendFn: InputSend = typeof send === 'function' ? send : (m) => node.send(m);
      // Failures reach Node-RED as their sentence (readable in the debug sidebar), with the details in msg.error for Catch nodes.
      const doneFn: InputDone = (err) => {
        if (err) reportFailure(node, err, msg, typeof done === 'function' ? done : undefined);
        else if (typeof done === 'function') done();
      };
      if (def.cancellable && msg.cancel === true) {
        let n: number;
        try {
          n = cancelMatching(msg);
        } catch (e) {
          doneFn(asError(e));
          return;
        }
        node.debug(`${def.type}: msg.cancel aborted ${n} operation(s)`);
        doneFn();
        return;
      }
      void runOne(msg, sendFn, doneFn);
    });

    async function runOne(msg: NodeMessage, send: InputSend, done: InputDone): Promise<void> {
      const op: InFlight = { controller: new AbortController(), keys: new Set() };
      inFlight.add(op);
      const end = node.daemonUser.status.begin();
      let timer: NodeJS.Timeout | undefined;
      let finished = false;
      const finish = (err?: unknown): void => {
        if (finished) return;
        finished = true;
        if (timer) clearTimeout(timer);
        inFlight.delete(op);
        end(closing ? undefined : err);
        if (closing) {
          // The flow is stopping: complete the message without raising errors nobody can catch.
          done();
          return;
        }
        if (err === undefined) done();
        else done(asError(err));
      };
      try {
        const defaultMs =
          typeof def.defaultTimeoutMs === 'function'
            ? def.defaultTimeoutMs(cfg)
            : def.defaultTimeoutMs ?? tableTimeoutMs(def.type);
        const timeoutMs = resolveTimeoutMs(msg, cfg.timeout, defaultMs, `${def.type} timeout`);
        if (timeoutMs !== undefined) {
          const source = msg.timeout !== undefined && msg.timeout !== null && msg.timeout !== '' ? 'msg.timeout' : 'node timeout';
          timer = setTimeout(() => {
            const connection = node.daemonUser.connection;
            if (connection && !connection.currentClient()) {
              // Still waiting for a first connection: say why, rather than just "timed out".
              op.controller.abort(connection.unreachableError(timeoutMs));
              return;
            }
            const state = connection?.getState();
            const socketError = connection?.socketError();
            const why =
              state === 'disconnected' || state === 'connecting'
                ? ` while the daemon at ${connection?.address} was unreachable${socketError ? ` (${socketError.message})` : ''}`
                : '';
            op.controller.abort(new ThinClientTimeoutError(`${def.type}: timed out after ${formatMs(timeoutMs)} (${source})${why}`));
          }, timeoutMs);
        }
        if (setupError) throw setupError;
        const signal = op.controller.signal;
        const client = await node.daemonUser.acquire({ timeoutMs, signal });
        if (signal.aborted) throw cancelReason(signal);
        const ctx = makeContext(RED, node, cfg, state, msg, client, signal, timeoutMs, op, send, end);
        let result: SendArgument | void;
        try {
          result = await def.run(ctx);
        } catch (e) {
          // Prefer our own reason (timeout with its source, msg.cancel, close) to the client's generic cancel error.
          throw signal.aborted ? cancelReason(signal) : e;
        }
        if (result !== undefined && result !== null && !closing) send(result);
        finish();
      } catch (e) {
        finish(e);
      }
    }

    node.on('close', (_removed: boolean, done: () => void) => {
      closing = true;
      for (const op of inFlight) op.controller.abort(new OperationCancelledError(`${def.type}: node closed`));
      const finish = async (): Promise<void> => {
        try {
          await hooks.onClose?.();
        } catch (e) {
          node.debug(`${def.type}: close hook failed: ${(e as Error).message}`);
        }
        await node.daemonUser.close();
      };
      finish()
        .catch(() => undefined)
        .finally(() => done());
    });
  }

  RED.nodes.registerType(def.type, OperationNodeCtor as (this: Node, def: NodeDef) => void, {
    credentials: def.credentials,
  });
}

function makeContext<C extends NodeDef, S>(
  RED: NodeAPI,
  node: OperationNode,
  config: C,
  state: S,
  msg: NodeMessage,
  client: ThinClient,
  signal: AbortSignal,
  timeoutMs: number | undefined,
  op: InFlight,
  send: InputSend,
  opStatus: OperationStatus,
): OperationContext<C, S> {
  const credentialText = (field: string): string | undefined => {
    const v = node.credentials?.[field];
    return typeof v === 'string' && v.trim() !== '' ? v : undefined;
  };
  return {
    RED,
    node,
    config,
    state,
    msg,
    client,
    signal,
    timeoutMs,
    status: node.daemonUser.status,
    callOptions: () => ({ signal }),
    buffer: (prop, spec = {}) => toBuffer(msg[prop], { ...spec, name: `msg.${prop}` }),
    optionalBuffer: (prop, spec = {}) => {
      const v = msg[prop];
      return v === undefined || v === null ? null : toBuffer(v, { ...spec, name: `msg.${prop}` });
    },
    key: (field, msgProp, size, required = true) => {
      const text = credentialText(field);
      if (text !== undefined) return decodeKeyText(text, credentialName(node.type, field), size);
      const v = msg[msgProp];
      if ((v === undefined || v === null) && !required) return null;
      return toBuffer(v, { name: `msg.${msgProp}`, size });
    },
    hasCredential: (field) => credentialText(field) !== undefined,
    setting: (field, msgProp, label) =>
      resolveSetting(RED, node, msg, { value: config[field], type: config[`${field}Type`], label }, msgProp),
    addCancelKey: (key) => {
      op.keys.add(Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('hex'));
    },
    send: (out) => send(out),
    progress: (text) => opStatus.progress(text),
  };
}

/**
 * The key a cancel message targets: msg.envelopeHash, else
 * msg.envelope.envelopeHash, as hex; null when the message names no key
 * (cancel everything). A key that is present but not a 32-byte hash throws
 * an InvalidArgumentError naming the property: guessing "everything" from a
 * typo would abort unrelated operations.
 */
export function cancelKeyOf(msg: NodeMessage): string | null {
  const env = msg.envelope;
  const candidates: [unknown, string][] = [
    [msg.envelopeHash, 'msg.envelopeHash'],
    [typeof env === 'object' && env !== null ? (env as { envelopeHash?: unknown }).envelopeHash : undefined, 'msg.envelope.envelopeHash'],
  ];
  for (const [value, name] of candidates) {
    if (value === undefined || value === null) continue;
    return toBuffer(value, { name, size: SIZES.envelopeHash }).toString('hex');
  }
  return null;
}

/** The reason an operation's signal carries (always an Error here), else OperationCancelledError. */
function cancelReason(signal: AbortSignal): Error {
  return abortReason(signal, () => new OperationCancelledError());
}

function asError(e: unknown): Error {
  if (e instanceof Error) return e;
  return new Error(typeof e === 'string' ? e : 'unknown error');
}
