/**
 * Wiring a node to its katzenpost-daemon config node: registration, status,
 * event delivery and deregistration on close.
 */
import type { ThinClient } from '../../client/client';
import { ConfigError } from '../../client/errors';
import type { Node, NodeAPI } from '../types';
import type { DaemonConnection, DaemonEvent, DaemonUserHandlers } from './daemon-connection';
import { StatusController, STATUS_TEXT, type ConnectionState } from './status';

/** The katzenpost-daemon config node: a Node-RED node carrying the shared connection. */
export interface DaemonConfigNode extends Node {
  connection: DaemonConnection;
}

/** The deployed config node a node's config property (`id`) selects, when `is` accepts it; else null. */
export function configNodeOf<T>(RED: NodeAPI, id: unknown, is: (n: unknown) => n is T): T | null {
  const n = typeof id === 'string' && id ? RED.nodes.getNode(id) : null;
  return is(n) ? n : null;
}

export function isDaemonConfigNode(n: unknown): n is DaemonConfigNode {
  return (
    typeof n === 'object' &&
    n !== null &&
    (n as Node).type === 'katzenpost-daemon' &&
    typeof (n as DaemonConfigNode).connection === 'object'
  );
}

export interface DaemonUser {
  readonly node: Node;
  /** The shared connection, or null when the node has no (valid) daemon selected. */
  readonly connection: DaemonConnection | null;
  readonly status: StatusController;
  /** The connected client; rejects with ConfigError when no daemon is configured. */
  acquire(opts?: { timeoutMs?: number; signal?: AbortSignal }): Promise<ThinClient>;
  /** Deregisters (the last user closes the connection). Never rejects. */
  close(): Promise<void>;
}

export interface UseDaemonOptions {
  onEvent?(event: DaemonEvent): void;
  onState?(state: ConnectionState, detail?: string | null): void;
  /** Do not show the connection state on this node's status (it manages its own). */
  quietStatus?: boolean;
}

/**
 * Registers `node` with the daemon config node whose id is `daemonId`
 * (the node's `daemon` property). Shows the connection state on the node's
 * status from then on.
 */
export function useDaemon(RED: NodeAPI, node: Node, daemonId: unknown, options: UseDaemonOptions = {}): DaemonUser {
  const status = new StatusController(node);
  const connection = configNodeOf(RED, daemonId, isDaemonConfigNode)?.connection ?? null;
  const userId = node.id;

  if (!connection) {
    node.status({ fill: 'red', shape: 'ring', text: STATUS_TEXT.noDaemon });
    return {
      node,
      connection: null,
      status,
      acquire: () => Promise.reject(new ConfigError(`${node.type}: no katzenpost-daemon config node is selected`)),
      close: async () => {
        status.close();
      },
    };
  }

  const handlers: DaemonUserHandlers = {
    onState: (state, detail) => {
      if (!options.quietStatus) status.setConnection(state, detail ?? null);
      options.onState?.(state, detail ?? null);
    },
    onEvent: options.onEvent ? (ev) => options.onEvent?.(ev) : undefined,
  };
  connection.register(userId, handlers);

  return {
    node,
    connection,
    status,
    acquire: (opts) => connection.acquire(opts),
    close: async () => {
      status.close();
      await connection.deregister(userId);
    },
  };
}
