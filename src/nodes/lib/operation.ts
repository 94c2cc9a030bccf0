/**
 * `defineOperationNode`: the frame every request/response node of the pack
 * runs in, so each node file holds only its own logic.
 *
 * It provides, for every input message:
 *  - the client (waiting for the first connection within the timeout);
 *  - an abort on timeout (msg.timeout ms, else the node's `timeout` field in
 *    seconds, else the node type's default), on a `msg.cancel` message (long
 *    operations), and on node close. A handler that asks for the AbortSignal
 *    gets it fired and passes it to its client calls (the client turns an
 *    abort of an ARQ call into the daemon-side cancel); a handler that never
 *    asks has its message completed by the frame at once (a fast local
 *    request then needs no signal, which is costly to create per message);
 *  - status: blue "working" while running, a red ring with the error code
 *    after a failure, the daemon connection state otherwise (coalesced, see
 *    StatusController);
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
import { formatMs, type DaemonEvent } from './daemon-connection';
import { DeadlineSweep, type Deadline } from '../../util/deadline-sweep';
import {
  credentialName,
  decodeKeyText,
  readBuffer,
  resolveSetting,
  resolveTimeoutMs,
  toBuffer,
  type BufferLimits,
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
  /**
   * Fires on timeout, msg.cancel or node close; pass it to every client call
   * that should stop then. Created on first use: a handler that never reads
   * it is not waited for on abort (the frame completes the message at once).
   */
  readonly signal: AbortSignal;
  /** The resolved timeout of this message, if any (ms). */
  readonly timeoutMs: number | undefined;
  readonly status: StatusController;
  /** `{ signal }`, the options object every client call accepts. */
  callOptions(): { signal: AbortSignal };
  /** Reads msg[prop] as a Buffer (error names "msg.<prop>"). */
  buffer(prop: string, spec?: BufferLimits): Buffer;
  /** Like buffer(), but missing (undefined/null) gives null. */
  optionalBuffer(prop: string, spec?: BufferLimits): Buffer | null;
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
  /** Created on first use (waiting for the first connection, or the handler asking for ctx.signal). */
  controller: AbortController | null;
  /** The handler asked for the signal: an abort is then its to handle. */
  handlerHoldsSignal: boolean;
  /** Why the operation was aborted (timeout, msg.cancel, close); null while it may run on. */
  reason: Error | null;
  /** Keys a msg.cancel can name (addCancelKey); null: none. */
  keys: Set<string> | null;
  /** Completes the message (once). */
  finish(err?: unknown): void;
}

/** Aborts one operation: through its signal, and when the handler does not hold that, by completing its message now. */
function abortOperation(op: InFlight, reason: Error): void {
  if (op.reason) return;
  op.reason = reason;
  op.controller?.abort(reason);
  if (!op.handlerHoldsSignal) op.finish(reason);
}

/** The operation's AbortSignal, created on first use (already aborted if the operation was). */
function signalOf(op: InFlight): AbortSignal {
  if (!op.controller) {
    op.controller = new AbortController();
    if (op.reason) op.controller.abort(op.reason);
  }
  return op.controller.signal;
}

/** Registers a Node-RED node type built on the operation frame. */
export function defineOperationNode<C extends NodeDef, S = undefined>(RED: NodeAPI, def: OperationNodeDefinition<C, S>): void {
  function OperationNodeCtor(this: OperationNode, config: NodeDef): void {
    RED.nodes.createNode(this, config);
    const node = this;
    const cfg = config as C;
    const inFlight = new Set<InFlight>();
    const deadlines = new DeadlineSweep();
    /** Credential keys decoded once per node (a redeploy makes a new node), by field and size. */
    const credentialKeys = new Map<string, Buffer>();
    const credentialKey = (field: string, size: number): Buffer | null => {
      const text = credentialText(node, field);
      if (text === undefined) return null;
      const id = `${field}/${size}`;
      let key = credentialKeys.get(id);
      if (!key) {
        key = decodeKeyText(text, credentialName(node.type, field), size);
        credentialKeys.set(id, key);
      }
      // A copy: the cached key must stay intact whatever a handler does with its Buffer.
      return Buffer.from(key);
    };
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
        if (wanted && !op.keys?.has(wanted)) continue;
        abortOperation(op, new OperationCancelledError(`${def.type}: cancelled by msg.cancel`));
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
      const end = node.daemonUser.status.begin();
      let deadline: Deadline | undefined;
      let finished = false;
      const op: InFlight = {
        controller: null,
        handlerHoldsSignal: false,
        reason: null,
        keys: null,
        finish: (err?: unknown): void => {
          if (finished) return;
          finished = true;
          if (deadline) deadlines.cancel(deadline);
          inFlight.delete(op);
          end(closing ? undefined : err);
          if (closing) {
            // The flow is stopping: complete the message without raising errors nobody can catch.
            done();
            return;
          }
          if (err === undefined) done();
          else done(asError(err));
        },
      };
      inFlight.add(op);
      try {
        const defaultMs =
          typeof def.defaultTimeoutMs === 'function'
            ? def.defaultTimeoutMs(cfg)
            : def.defaultTimeoutMs ?? tableTimeoutMs(def.type);
        const timeoutMs = resolveTimeoutMs(msg, cfg.timeout, defaultMs, `${def.type} timeout`);
        if (timeoutMs !== undefined) {
          const source = msg.timeout !== undefined && msg.timeout !== null && msg.timeout !== '' ? 'msg.timeout' : 'node timeout';
          deadline = { deadlineAt: 0, onDeadline: () => abortOperation(op, timeoutError(node, def.type, timeoutMs, source)) };
          deadlines.add(deadline, timeoutMs);
        }
        if (setupError) throw setupError;
        // Connected: the client at once; else wait for the first connection (abortable by the deadline).
        const client = node.daemonUser.connection?.currentClient() ?? (await node.daemonUser.acquire({ timeoutMs, signal: signalOf(op) }));
        if (op.reason) throw op.reason;
        const ctx = new MessageContext<C, S>(RED, node, cfg, state, msg, client, timeoutMs, op, send, end, credentialKey);
        let result: SendArgument | void;
        try {
          result = await def.run(ctx);
        } catch (e) {
          // Prefer our own reason (timeout with its source, msg.cancel, close) to the client's generic cancel error.
          throw op.reason ?? e;
        }
        if (result !== undefined && result !== null && !closing && !finished) send(result);
        op.finish();
      } catch (e) {
        op.finish(e);
      }
    }

    node.on('close', (_removed: boolean, done: () => void) => {
      closing = true;
      deadlines.clear();
      for (const op of [...inFlight]) abortOperation(op, new OperationCancelledError(`${def.type}: node closed`));
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

/**
 * The context of one message. A class rather than an object literal: a
 * literal with a getter (the lazy `signal`) is built slowly, property by
 * property, and this runs for every message. Its methods are arrow functions
 * so that handlers may destructure them.
 */
class MessageContext<C extends NodeDef, S> implements OperationContext<C, S> {
  readonly status: StatusController;

  constructor(
    readonly RED: NodeAPI,
    readonly node: OperationNode,
    readonly config: C,
    readonly state: S,
    readonly msg: NodeMessage,
    readonly client: ThinClient,
    readonly timeoutMs: number | undefined,
    private readonly op: InFlight,
    private readonly sendNow: InputSend,
    private readonly opStatus: OperationStatus,
    private readonly credentialKey: (field: string, size: number) => Buffer | null,
  ) {
    this.status = node.daemonUser.status;
  }

  get signal(): AbortSignal {
    this.op.handlerHoldsSignal = true;
    return signalOf(this.op);
  }

  callOptions = (): { signal: AbortSignal } => ({ signal: this.signal });

  buffer = (prop: string, spec: BufferLimits = {}): Buffer => readBuffer(this.msg[prop], `msg.${prop}`, spec);

  optionalBuffer = (prop: string, spec: BufferLimits = {}): Buffer | null => {
    const v = this.msg[prop];
    return v === undefined || v === null ? null : readBuffer(v, `msg.${prop}`, spec);
  };

  key = (field: string, msgProp: string, size: number, required = true): Buffer | null => {
    const fromCredential = this.credentialKey(field, size);
    if (fromCredential) return fromCredential;
    const v = this.msg[msgProp];
    if ((v === undefined || v === null) && !required) return null;
    return readBuffer(v, `msg.${msgProp}`, { size });
  };

  hasCredential = (field: string): boolean => credentialText(this.node, field) !== undefined;

  setting = (field: string, msgProp: string, label: string): Promise<{ value: unknown; name: string }> =>
    resolveSetting(this.RED, this.node, this.msg, { value: this.config[field], type: this.config[`${field}Type`], label }, msgProp);

  addCancelKey = (key: Uint8Array): void => {
    (this.op.keys ??= new Set()).add(Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('hex'));
  };

  send = (out: SendArgument): void => this.sendNow(out);

  progress = (text: string | null): void => this.opStatus.progress(text);
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

/** The error of an operation whose deadline passed, saying why when it is the daemon's fault. */
function timeoutError(node: OperationNode, type: string, timeoutMs: number, source: string): Error {
  const connection = node.daemonUser.connection;
  // Still waiting for a first connection: say why, rather than just "timed out".
  if (connection && !connection.currentClient()) return connection.unreachableError(timeoutMs);
  const state = connection?.getState();
  const socketError = connection?.socketError();
  const why =
    state === 'disconnected' || state === 'connecting'
      ? ` while the daemon at ${connection?.address} was unreachable${socketError ? ` (${socketError.message})` : ''}`
      : '';
  return new ThinClientTimeoutError(`${type}: timed out after ${formatMs(timeoutMs)} (${source})${why}`);
}

/** A credential field's text, when filled in. */
function credentialText(node: Node, field: string): string | undefined {
  const v = node.credentials?.[field];
  return typeof v === 'string' && v.trim() !== '' ? v : undefined;
}

function asError(e: unknown): Error {
  if (e instanceof Error) return e;
  return new Error(typeof e === 'string' ? e : 'unknown error');
}
