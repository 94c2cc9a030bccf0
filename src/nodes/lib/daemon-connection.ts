/**
 * One daemon connection shared by every node that uses a katzenpost-daemon
 * config node. An instance lives on the config node (`node.connection`),
 * never in a module-level map, so two config nodes (or two copies of this
 * module) never share state.
 *
 * Lifecycle: the first user node to register starts the connection; the last
 * one to leave closes it (thin_close, bounded wait). Until the first
 * handshake succeeds we retry with backoff ourselves, each attempt on a fresh
 * ThinClient; after that the client reconnects on its own and we only follow
 * its events.
 *
 * In-flight policy: an operation asks `acquire()` for the client. Before the
 * first handshake it waits at most its own timeout (else the config's request
 * timeout) and then fails with DaemonDisconnectedError naming the address and
 * the last connection error. Once connected, the client itself queues local
 * requests across a daemon restart (up to its request timeout) and replays
 * ARQ operations; the operation's own timeout bounds them. Nothing is dropped
 * silently.
 */
import { EventEmitter } from 'node:events';
import { ThinClient } from '../../client/client';
import type { ThinClientOptions } from '../../client/client';
import { DaemonDisconnectedError, OperationCancelledError } from '../../client/errors';
import type { ConnectionState } from './status';

/** Any event from the client, as delivered by its 'event' channel: `{ type, ...fields }`. */
export interface DaemonEvent {
  type: string;
  [field: string]: unknown;
}

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
  /** Backoff between first-connection attempts (the client has its own for reconnects). */
  retryInitialDelayMs?: number;
  retryMaxDelayMs?: number;
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

interface Waiter {
  resolve(c: ThinClient): void;
  reject(e: Error): void;
}

type ClientFactory = (options: ThinClientOptions) => ThinClient;

export class DaemonConnection {
  private client: ThinClient | null = null;
  /** True once the current client finished a handshake (then it handles reconnects itself). */
  private handshakeDone = false;
  private readonly users = new Map<string, DaemonUserHandlers>();
  private state: ConnectionState = 'idle';
  private lastError: Error | null = null;
  /** Set when the client cannot even be created (bad address, unreadable thinclient.toml): no retry helps. */
  private fatalError: Error | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryDelayMs: number;
  /** Bumped on every start/stop so callbacks of an older client are ignored. */
  private generation = 0;
  private closing: Promise<void> | null = null;
  private shutDown = false;
  private readonly waiters = new Set<Waiter>();
  private readonly emitter = new EventEmitter();
  /** The socket error of the last failed first-connection attempt (raw, with its `code`). */
  private lastSocketError: Error | null = null;
  /** The detail last shown to users, to re-notify them only when it changes. */
  private shownDetail: string | null = null;
  /** While disconnected after a handshake: follows the client's reconnect attempts for the status detail. */
  private detailTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly settings: DaemonConnectionSettings,
    private readonly log: ConnectionLogger,
    private readonly createClient: ClientFactory = (o) => new ThinClient(o),
  ) {
    this.emitter.setMaxListeners(0);
    this.retryDelayMs = settings.retryInitialDelayMs ?? 1000;
  }

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

  /** The client, if one exists (it may be between reconnects). Prefer acquire(). */
  currentClient(): ThinClient | null {
    return this.handshakeDone ? this.client : null;
  }

  userCount(): number {
    return this.users.size;
  }

  /** Listen to state changes and events without being a user (does not start the connection). */
  on(event: 'state', listener: (state: ConnectionState) => void): () => void;
  on(event: 'event', listener: (ev: DaemonEvent) => void): () => void;
  on(event: 'state' | 'event', listener: (arg: any) => void): () => void {
    this.emitter.on(event, listener);
    return () => this.emitter.off(event, listener);
  }

  /**
   * Adds a user node. The first user starts the connection. The handlers'
   * onState is called at once with the current state.
   */
  register(userId: string, handlers: DaemonUserHandlers = {}): void {
    if (this.shutDown) {
      safeCall(() => handlers.onState?.('closed'), this.log);
      return;
    }
    this.users.set(userId, handlers);
    safeCall(() => handlers.onState?.(this.state, this.statusDetail()), this.log);
    if (this.users.size === 1 && (this.state === 'idle' || this.state === 'closed')) this.start();
  }

  /** Removes a user node; the last one leaving closes the connection. Never rejects. */
  async deregister(userId: string): Promise<void> {
    if (!this.users.delete(userId)) return;
    if (this.users.size === 0 && !this.shutDown) await this.stop('idle');
  }

  /** Closes for good (config node closing). Never rejects; bounded by closeTimeoutMs. */
  async shutdown(): Promise<void> {
    if (this.shutDown) return this.closing ?? undefined;
    this.shutDown = true;
    await this.stop('closed');
    this.users.clear();
  }

  /**
   * The client, once it can take requests. Before the first handshake this
   * waits up to `timeoutMs` (default: the request timeout), or until
   * `signal` aborts.
   */
  acquire(opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<ThinClient> {
    if (this.shutDown) return Promise.reject(new DaemonDisconnectedError(`katzenpost daemon connection ${this.address} is closed`));
    if (this.client && this.handshakeDone) return Promise.resolve(this.client);
    if (this.fatalError) return Promise.reject(this.fatalError);
    if (this.users.size === 0) {
      return Promise.reject(new DaemonDisconnectedError(`katzenpost daemon connection ${this.address} has no user node`));
    }
    const wait = opts.timeoutMs ?? this.settings.requestTimeoutMs;
    return new Promise<ThinClient>((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        opts.signal?.removeEventListener('abort', onAbort);
      };
      const waiter: Waiter = {
        resolve: (c) => {
          cleanup();
          resolve(c);
        },
        reject: (e) => {
          cleanup();
          reject(e);
        },
      };
      const timer = setTimeout(() => waiter.reject(this.unreachableError(wait)), wait);
      const onAbort = (): void => waiter.reject(abortReason(opts.signal));
      if (opts.signal?.aborted) {
        onAbort();
        return;
      }
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(waiter);
    });
  }

  /**
   * What keeps the daemon unreachable, for the status while disconnected:
   * the socket error code and the address ("ECONNREFUSED 127.0.0.1:64331"),
   * or null when no socket error is known (or not disconnected).
   */
  statusDetail(): string | null {
    if (this.state !== 'disconnected') return null;
    const e = this.socketError() as (Error & { code?: unknown }) | null;
    const code = e && typeof e.code === 'string' && /^E[A-Z0-9_]+$/.test(e.code) ? e.code : null;
    return code ? `${code} ${this.address}` : null;
  }

  /** The socket error behind the current disconnection, if known. */
  socketError(): Error | null {
    if (this.client && this.handshakeDone) {
      return (this.client as { lastConnectionError?: Error | null }).lastConnectionError ?? this.lastError;
    }
    return this.lastSocketError ?? this.lastError;
  }

  /** The error for an operation that waited `waitedMs` for a first connection in vain. */
  unreachableError(waitedMs: number): DaemonDisconnectedError {
    const why = this.lastError ? `: ${this.lastError.message}` : '';
    return new DaemonDisconnectedError(`katzenpost daemon at ${this.address} not reachable within ${formatMs(waitedMs)}${why}`);
  }

  /** True once a handshake succeeded on the current client (it then handles reconnects itself). */
  hasConnected(): boolean {
    return this.client !== null && this.handshakeDone;
  }

  // ------------------------------------------------------------ internals

  private setState(state: ConnectionState): void {
    if (state === this.state) {
      this.refreshDetail();
      return;
    }
    this.state = state;
    this.notifyState();
    // Reconnect attempts happen inside the client: follow them so the status names today's cause.
    if (state === 'disconnected' && this.handshakeDone && !this.detailTimer) {
      this.detailTimer = setInterval(() => this.refreshDetail(), 1000);
      this.detailTimer.unref?.();
    } else if (state !== 'disconnected' && this.detailTimer) {
      clearInterval(this.detailTimer);
      this.detailTimer = null;
    }
  }

  private notifyState(): void {
    const state = this.state;
    const detail = this.statusDetail();
    this.shownDetail = detail;
    for (const handlers of [...this.users.values()]) safeCall(() => handlers.onState?.(state, detail), this.log);
    safeCall(() => this.emitter.emit('state', state), this.log);
  }

  /** Tells the users again when the cause of a disconnection changed (same state, new detail). */
  private refreshDetail(): void {
    if (this.statusDetail() !== this.shownDetail) this.notifyState();
  }

  private start(): void {
    const gen = ++this.generation;
    // Next turn: Node-RED is still constructing the flow's nodes, and state messages should find them all.
    setImmediate(() => void this.connectAttempt(gen));
  }

  private async connectAttempt(gen: number): Promise<void> {
    if (this.closing) await this.closing;
    if (gen !== this.generation || this.shutDown || this.users.size === 0) return;
    if (this.settings.configError) {
      // Settings no connection can fix (the config node's form): report once, until redeploy.
      this.lastError = this.settings.configError;
      this.fatalError = this.settings.configError;
      this.log.error(this.settings.configError.message);
      this.setState('disconnected');
      this.failWaiters(this.fatalError);
      return;
    }
    this.setState('connecting');
    let client: ThinClient;
    try {
      client = this.createClient({
        ...(this.settings.configFile ? { configFile: this.settings.configFile } : { dial: this.settings.dial }),
        handshakeTimeoutMs: this.settings.handshakeTimeoutMs,
        requestTimeoutMs: this.settings.requestTimeoutMs,
        reconnect: true,
        logger: this.log,
      });
    } catch (e) {
      // A bad address or an unreadable thinclient.toml: retrying will not help until redeploy.
      this.lastError = e as Error;
      this.fatalError = e as Error;
      this.log.error(`katzenpost daemon ${this.address}: ${(e as Error).message}`);
      this.setState('disconnected');
      this.failWaiters(this.fatalError);
      return;
    }
    this.client = client;
    this.handshakeDone = false;
    this.attachListeners(client, gen);
    try {
      await client.connect();
    } catch (e) {
      if (gen !== this.generation) return;
      this.lastError = e as Error;
      this.lastSocketError = (client as { lastConnectionError?: Error | null }).lastConnectionError ?? null;
      this.client = null;
      this.log.debug(`katzenpost daemon ${this.address}: connect failed: ${(e as Error).message}`);
      void closeQuietly(client, 1000);
      this.setState('disconnected');
      this.scheduleRetry(gen);
      return;
    }
    if (gen !== this.generation) {
      void closeQuietly(client, this.settings.closeTimeoutMs ?? 3000);
      return;
    }
    this.handshakeDone = true;
    this.lastError = null;
    this.lastSocketError = null;
    this.retryDelayMs = this.settings.retryInitialDelayMs ?? 1000;
    this.log.info(`katzenpost daemon ${this.address}: connected`);
    this.setState(safeIsConnected(client) ? 'connected' : 'offline');
    for (const w of [...this.waiters]) w.resolve(client);
  }

  private scheduleRetry(gen: number): void {
    const max = this.settings.retryMaxDelayMs ?? 30_000;
    const delay = Math.min(this.retryDelayMs, max);
    this.retryDelayMs = Math.min(this.retryDelayMs * 2, max);
    // Jitter (±20 %) so several Node-RED instances do not retry in lockstep.
    const jittered = Math.round(delay * (0.8 + Math.random() * 0.4));
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (gen === this.generation) void this.connectAttempt(gen);
    }, jittered);
  }

  private attachListeners(client: ThinClient, gen: number): void {
    const current = (): boolean => gen === this.generation && this.client === client;
    client.on('connectionStatus', (ev: { isConnected: boolean }) => {
      if (current() && this.handshakeDone) this.setState(ev.isConnected ? 'connected' : 'offline');
    });
    client.on('daemonDisconnected', (ev: { isGraceful: boolean; error: Error | null }) => {
      if (!current() || !this.handshakeDone) return;
      this.lastError = ev.error ?? null;
      this.log.warn(
        `katzenpost daemon ${this.address}: disconnected${ev.isGraceful ? ' (daemon shut down)' : ''}${ev.error ? `: ${ev.error.message}` : ''}; reconnecting`,
      );
      this.setState('disconnected');
    });
    client.on('daemonReconnected', (ev: { resumed: boolean; daemonRestarted: boolean }) => {
      if (!current()) return;
      this.log.info(
        `katzenpost daemon ${this.address}: reconnected${ev.daemonRestarted ? ' (daemon restarted)' : ''}${ev.resumed ? ', session resumed' : ''}`,
      );
      this.setState(safeIsConnected(client) ? 'connected' : 'offline');
    });
    client.on('event', (event) => {
      if (!current()) return;
      const ev = event as unknown as DaemonEvent;
      for (const handlers of [...this.users.values()]) safeCall(() => handlers.onEvent?.(ev), this.log);
      safeCall(() => this.emitter.emit('event', ev), this.log);
    });
  }

  private failWaiters(err: Error): void {
    for (const w of [...this.waiters]) w.reject(err);
  }

  private async stop(finalState: ConnectionState): Promise<void> {
    this.generation++;
    if (this.detailTimer) clearInterval(this.detailTimer);
    this.detailTimer = null;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retryDelayMs = this.settings.retryInitialDelayMs ?? 1000;
    this.failWaiters(new OperationCancelledError(`katzenpost daemon connection ${this.address} closed`));
    const client = this.client;
    this.client = null;
    this.handshakeDone = false;
    this.setState(finalState);
    if (!client) return;
    const closing = closeQuietly(client, this.settings.closeTimeoutMs ?? 3000).then(() => {
      if (this.closing === closing) this.closing = null;
    });
    this.closing = closing;
    await closing;
  }
}

function safeIsConnected(client: ThinClient): boolean {
  try {
    return client.isConnected();
  } catch {
    return false;
  }
}

function safeCall(fn: () => void, log: ConnectionLogger): void {
  try {
    fn();
  } catch (e) {
    log.warn(`katzenpost: a listener failed: ${(e as Error)?.message ?? e}`);
  }
}

/** close() with a deadline; errors are swallowed (we are leaving anyway). */
async function closeQuietly(client: ThinClient, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      client.close().catch(() => undefined),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
  } finally {
    if (timer) clearTimeout(timer);
  }
}

export function abortReason(signal: AbortSignal | undefined): Error {
  const r: unknown = signal?.reason;
  return r instanceof Error ? r : new OperationCancelledError();
}

export function formatMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}
