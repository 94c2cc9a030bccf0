/**
 * The slice of the Node-RED runtime API the node pack uses.
 *
 * Node-RED ships no TypeScript types of its own and `@types/node-red` is not
 * a dependency, so we describe only what we call. The shapes follow
 * Node-RED 4.x/5.x (`@node-red/registry` createNodeApi, `@node-red/runtime`
 * Node.prototype).
 */
import type { EventEmitter } from 'node:events';

/** A flow message. Every property is optional; `_msgid` is set by the runtime. */
export interface NodeMessage {
  _msgid?: string;
  payload?: unknown;
  topic?: string;
  [key: string]: unknown;
}

export type StatusFill = 'red' | 'green' | 'yellow' | 'blue' | 'grey';
export type StatusShape = 'ring' | 'dot';

/** `node.status()` argument; `{}` clears the status. */
export interface NodeStatus {
  fill?: StatusFill;
  shape?: StatusShape;
  text?: string;
}

/** One output port value: a message, several messages, or nothing. */
export type OutputValue = NodeMessage | NodeMessage[] | null | undefined;
/** What `send()` accepts: one value per output port, or the value for port 1. */
export type SendArgument = OutputValue | OutputValue[];

export type InputSend = (msg: SendArgument) => void;
export type InputDone = (err?: Error) => void;

/** The runtime node object (`this` inside a node constructor). */
export interface Node extends EventEmitter {
  readonly id: string;
  readonly type: string;
  readonly z?: string;
  name?: string;
  credentials?: Record<string, string | undefined>;
  status(status: NodeStatus): void;
  send(msg: SendArgument): void;
  error(err: unknown, msg?: NodeMessage): void;
  warn(message: unknown): void;
  log(message: unknown): void;
  debug(message: unknown): void;
  trace(message: unknown): void;
  context(): { flow: ContextStore; global: ContextStore; get(key: string): unknown; set(key: string, v: unknown): void };
  receive(msg?: NodeMessage): void;
  on(event: 'input', listener: (msg: NodeMessage, send: InputSend, done: InputDone) => void): this;
  on(event: 'close', listener: (removed: boolean, done: () => void) => void): this;
  on(event: string, listener: (...args: any[]) => void): this;
}

export interface ContextStore {
  get(key: string, store?: string, cb?: (err: Error | null, value: unknown) => void): unknown;
  set(key: string, value: unknown, store?: string, cb?: (err: Error | null) => void): void;
}

/** The editor's saved properties of a node (its `defaults`), plus id/type/z/name. */
export interface NodeDef {
  id: string;
  type: string;
  z?: string;
  name?: string;
  [key: string]: unknown;
}

export interface CredentialDef {
  type: 'text' | 'password';
}

export interface RegisterTypeOptions {
  credentials?: Record<string, CredentialDef>;
  settings?: Record<string, { value: unknown; exportable?: boolean }>;
}

/** The `RED` object handed to a node module. */
export interface NodeAPI {
  nodes: {
    createNode(node: Node, def: NodeDef): void;
    registerType(type: string, ctor: (this: Node, def: NodeDef) => void, opts?: RegisterTypeOptions): void;
    getNode(id: string): Node | null;
  };
  util: {
    evaluateNodeProperty(
      value: unknown,
      type: string,
      node: Node,
      msg: NodeMessage | undefined,
      callback: (err: Error | null, result: unknown) => void,
    ): void;
    cloneMessage<T extends NodeMessage>(msg: T): T;
    setMessageProperty(msg: NodeMessage, prop: string, value: unknown, createMissing?: boolean): boolean;
    generateId(): string;
  };
  settings: Record<string, unknown>;
  log: { debug(m: unknown): void; info(m: unknown): void; warn(m: unknown): void; error(m: unknown): void; trace(m: unknown): void };
  _(key: string, subs?: Record<string, unknown>): string;
}
