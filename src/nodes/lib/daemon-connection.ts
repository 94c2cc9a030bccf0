/**
 * One daemon connection shared by every node that uses a katzenpost-daemon
 * config node, as thin as the core MQTT broker node: it registers the user
 * nodes, runs one ThinClient from the first user's arrival to the last one's
 * leaving, and reports the client's state to them. Connecting and
 * reconnecting are the client's job (connect({ retry: true })). An instance
 * lives on the config node (`node.connection`), never in a module-level map,
 * so two config nodes (or two copies of this module) never share state.
 *
 * In-flight policy: an operation asks `acquire()` for the client. Before the
 * first handshake it waits at most its own timeout (else the config's request
 * timeout) and then fails with DaemonDisconnectedError naming the address and
 * the last connection error. Once connected, the client itself queues local
 * requests across a daemon restart (up to its request timeout) and replays
 * ARQ operations; the operation's own timeout bounds them. Nothing is dropped
 * silently.
 */
import { ThinClient } from '../../client/client';
import type { ThinClientOptions } from '../../client/client';
import { DaemonDisconnectedError, OperationCancelledError } from '../../client/errors';
import type { ThinClientEvent } from '../../client/events';
import { withDeadline } from '../../util/deadline';
import type { ConnectionState } from './status';

/** Any event from the client (its 'event' channel), as user nodes receive it. */
export type DaemonEvent = ThinClientEvent;

/** Callbacks a user node gives when it registers. Exceptions thrown in them are caught and logged. */
export interface DaemonUserHandlers {
  /** `detail` names the cause while disconnected, e.g. "ECONNREFUSED 127.0.0.1:64331" (else null). */
  onState?(state: ConnectionState, detail?: string | null): void;
  onEvent?(event: DaemonEvent): void;
}

export interface DaemonConnectionSettings {
  /** How to reach the daemon: "host:port", a Unix path, or a DialConfig. Ignored when configFile is set. */
  dial?: ThinClientOptions['dial'];
  /** Path of a thinclient.toml. */
  configFile?: string;
  handshakeTimeoutMs: number;
  /** Local request timeout of the client, and the longest an operation waits for a first connection. */
  requestTimeoutMs: number;
  /** Longest delay between connection attempts (the client's backoff starts at 1 s and doubles). Default 30 s. */
  reconnectMaxDelayMs?: number;
  /** Longest wait for close() before giving up on a clean thin_close. */
  closeTimeoutMs?: number;
  /** Human-readable address for status and error messages ("127.0.0.1:64331"). */
  address: string;
  /** A problem with the settings themselves (e.g. a negative timeout): no connection is tried, every operation fails with it. */
  configError?: Error;
}

export interface ConnectionLogger {
  debug(m: string): void;
  info(m: string): void;
  warn(m: string): void;
  error(m: string): void;
}

/** The wait for the first handshake of one client: settled once, by the handshake or by stop(). */
interface FirstConnection {
  promise: Promise<ThinClient>;
  resolve(c: ThinClient): void;
  reject(e: Error): void;
}

export class DaemonConnection {
  private client: ThinClient | null = null;
  /** The client finished its first handshake (from then on it reconnects by itself). */
  private connected = false;
  /** While there are users: aborts the client's connect() when the last one leaves. */
  private run: AbortController | null = null;
  private first: FirstConnection | null = null;
  private readonly users = new Map<string, DaemonUserHandlers>();
  private readonly stateListeners = new Set<(state: ConnectionState) => void>();
  private state: ConnectionState = 'idle';
  private lastError: Error | null = null;
  /** Set when the client cannot even be created (bad address, unreadable thinclient.toml): no retry helps. */
  private fatalError: Error | null = null;
  private closing: Promise<void> | null = null;
  /** The detail last shown to users, to re-notify them only when it changes. */
  private shownDetail: string | null = null;

  constructor(
    readonly settings: DaemonConnectionSettings,
    private readonly log: ConnectionLogger,
  ) {}

  /** The daemon address as configured, for messages. */
  get address(): string {
    return this.settings.address;
  }

  getState(): ConnectionState {
    return this.state;
  }

  /** Why the connection last failed or dropped (null once connected again), for status displays. */
  getLastError(): Error | null {
    return this.fatalError ?? this.lastError;
  }

  /** The client once it has connected (it may be between reconnects), else null. Prefer acquire(). */
  currentClient(): ThinClient | null {
    return this.connected ? this.client : null;
  }

  userCount(): number {
    return this.users.size;
  }

  /** Listen to state changes without being a user (does not start the connection). Returns the unsubscribe. */
  on(_event: 'state', listener: (state: ConnectionState) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  /**
   * Adds a user node. The first user starts the connection. The handlers'
   * onState is called at once with the current state.
   */
  register(userId: string, handlers: DaemonUserHandlers = {}): void {
    if (this.state === 'closed') {
      safeCall(() => handlers.onState?.('closed'), this.log);
      return;
    }
    this.users.set(userId, handlers);
    safeCall(() => handlers.onState?.(this.state, this.statusDetail()), this.log);
    if (!this.run) this.start();
  }

  /** Removes a user node; the last one leaving closes the connection. Never rejects. */
  async deregister(userId: string): Promise<void> {
    if (!this.users.delete(userId)) return;
    if (this.users.size === 0 && this.state !== 'closed') await this.stop('idle');
  }

  /** Closes for good (config node closing). Never rejects; bounded by closeTimeoutMs. */
  async shutdown(): Promise<void> {
    if (this.state === 'closed') return this.closing ?? undefined;
    await this.stop('closed');
    this.users.clear();
  }

  /**
   * The client, once it can take requests. Before the first handshake this
   * waits up to `timeoutMs` (default: the request timeout), or until
   * `signal` aborts.
   */
  acquire(opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<ThinClient> {
    if (this.state === 'closed') return Promise.reject(new DaemonDisconnectedError(`katzenpost daemon connection ${this.address} is closed`));
    const client = this.currentClient();
    if (client) return Promise.resolve(client);
    if (this.fatalError) return Promise.reject(this.fatalError);
    const first = this.first;
    if (!first) return Promise.reject(new DaemonDisconnectedError(`katzenpost daemon connection ${this.address} has no user node`));
    const wait = opts.timeoutMs ?? this.settings.requestTimeoutMs;
    return withDeadline(wait, () => this.unreachableError(wait), () => first.promise, opts.signal);
  }

  /**
   * What keeps the daemon unreachable, for the status while disconnected:
   * the socket error code and the address ("ECONNREFUSED 127.0.0.1:64331"),
   * or null when no socket error is known (or not disconnected).
   */
  statusDetail(): string | null {
    return this.detailFor(this.state);
  }

  private detailFor(state: ConnectionState): string | null {
    if (state !== 'disconnected') return null;
    const e = this.socketError() as (Error & { code?: unknown }) | null;
    const code = e && typeof e.code === 'string' && /^E[A-Z0-9_]+$/.test(e.code) ? e.code : null;
    return code ? `${code} ${this.address}` : null;
  }

  /** The socket error behind the current disconnection, if known. */
  socketError(): Error | null {
    return this.client?.lastConnectionError ?? this.lastError;
  }

  /** The error for an operation that waited `waitedMs` for a first connection in vain. */
  unreachableError(waitedMs: number): DaemonDisconnectedError {
    const why = this.lastError ? `: ${this.lastError.message}` : '';
    return new DaemonDisconnectedError(`katzenpost daemon at ${this.address} not reachable within ${formatMs(waitedMs)}${why}`);
  }

  // ------------------------------------------------------------ internals

  /** Tells users and listeners the state, again when only the cause of a disconnection changed. */
  private setState(state: ConnectionState): void {
    const detail = this.detailFor(state);
    if (state === this.state && detail === this.shownDetail) return;
    this.state = state;
    this.shownDetail = detail;
    for (const handlers of [...this.users.values()]) safeCall(() => handlers.onState?.(state, detail), this.log);
    for (const listener of [...this.stateListeners]) safeCall(() => listener(state), this.log);
  }

  private start(): void {
    const run = new AbortController();
    this.run = run;
    let resolve!: (c: ThinClient) => void;
    let reject!: (e: Error) => void;
    const promise = new Promise<ThinClient>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.catch(() => undefined); // settled also when nobody waits
    const first = (this.first = { promise, resolve, reject });
    // Next turn: Node-RED is still constructing the flow's nodes, and state messages should find them all.
    setImmediate(() => void this.open(run, first));
  }

  private async open(run: AbortController, first: FirstConnection): Promise<void> {
    if (this.closing) await this.closing;
    if (run.signal.aborted) return;
    let client: ThinClient;
    try {
      if (this.settings.configError) throw this.settings.configError;
      client = new ThinClient({
        ...(this.settings.configFile ? { configFile: this.settings.configFile } : { dial: this.settings.dial }),
        handshakeTimeoutMs: this.settings.handshakeTimeoutMs,
        requestTimeoutMs: this.settings.requestTimeoutMs,
        reconnect: true,
        reconnectMaxDelayMs: this.settings.reconnectMaxDelayMs ?? 30_000,
        logger: this.log,
      });
    } catch (e) {
      // The config node's form, a bad address or an unreadable thinclient.toml: no retry helps; report once, until redeploy.
      const err = e as Error;
      this.lastError = this.fatalError = err;
      this.log.error(err === this.settings.configError ? err.message : `katzenpost daemon ${this.address}: ${err.message}`);
      this.setState('disconnected');
      first.reject(err);
      return;
    }
    this.client = client;
    this.follow(client);
    this.setState('connecting');
    try {
      await client.connect({ retry: true, signal: run.signal });
    } catch (e) {
      if (this.client === client) this.log.debug(`katzenpost daemon ${this.address}: connect stopped: ${(e as Error).message}`);
      return; // stopped: stop() settled `first`
    }
    if (this.client !== client) return;
    this.connected = true;
    this.lastError = null;
    this.log.info(`katzenpost daemon ${this.address}: connected`);
    this.setState(mixnetState(client));
    first.resolve(client);
  }

  /** The client's events become the users' state and events. */
  private follow(client: ThinClient): void {
    const current = (): boolean => this.client === client;
    client.on('connectFailed', (ev) => {
      if (!current()) return;
      this.lastError = ev.error;
      this.log.debug(`katzenpost daemon ${this.address}: ${ev.reconnecting ? 'reconnect' : 'connect'} failed: ${ev.error.message}`);
      this.setState('disconnected');
    });
    client.on('connectionStatus', (ev) => {
      if (current() && client.isDaemonConnected()) this.setState(ev.isConnected ? 'connected' : 'offline');
    });
    client.on('daemonDisconnected', (ev) => {
      if (!current()) return;
      this.lastError = ev.error;
      this.log.warn(
        `katzenpost daemon ${this.address}: disconnected${ev.isGraceful ? ' (daemon shut down)' : ''}${ev.error ? `: ${ev.error.message}` : ''}; reconnecting`,
      );
      this.setState('disconnected');
    });
    client.on('daemonReconnected', (ev) => {
      if (!current()) return;
      this.lastError = null;
      this.log.info(
        `katzenpost daemon ${this.address}: reconnected${ev.daemonRestarted ? ' (daemon restarted)' : ''}${ev.resumed ? ', session resumed' : ''}`,
      );
      this.setState(mixnetState(client));
    });
    client.on('event', (ev) => {
      if (!current()) return;
      for (const handlers of [...this.users.values()]) safeCall(() => handlers.onEvent?.(ev), this.log);
    });
  }

  private async stop(finalState: ConnectionState): Promise<void> {
    this.run?.abort();
    this.run = null;
    this.first?.reject(new OperationCancelledError(`katzenpost daemon connection ${this.address} closed`));
    this.first = null;
    const client = this.client;
    this.client = null;
    this.connected = false;
    this.setState(finalState);
    if (!client) return;
    // close() with a deadline; errors are swallowed (we are leaving anyway).
    const ms = this.settings.closeTimeoutMs ?? 3000;
    const closing = withDeadline(ms, () => new Error(`close took over ${ms} ms`), () => client.close())
      .catch(() => undefined)
      .then(() => {
        if (this.closing === closing) this.closing = null;
      });
    this.closing = closing;
    await closing;
  }
}

function mixnetState(client: ThinClient): ConnectionState {
  return client.isConnected() ? 'connected' : 'offline';
}

function safeCall(fn: () => void, log: ConnectionLogger): void {
  try {
    fn();
  } catch (e) {
    log.warn(`katzenpost: a listener failed: ${(e as Error)?.message ?? e}`);
  }
}

export function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}
