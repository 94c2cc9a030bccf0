/**
 * Client events (PROTOCOL.md §4.3-§4.8, §2.6), their delivery to listeners,
 * and the unbounded queue behind ThinClient.events(). Events are never
 * dropped: a slow consumer only makes its own queue grow.
 */
import { errorText } from './messages';
import type { PkiDocument } from './pki';
import type { Logger } from './types';
import type { PigeonholeGeometry, SphinxGeometry } from '../wire';

/** The daemon's mixnet connectivity changed, or a (re)connect handshake reported it. */
export interface ConnectionStatusEvent {
  type: 'connectionStatus';
  /** The daemon's connection to the mixnet (not our local socket). */
  isConnected: boolean;
  /** The daemon process's instance token; it changes when the daemon restarts. */
  instanceToken: Buffer;
  sphinxGeometry: SphinxGeometry;
  pigeonholeGeometry: PigeonholeGeometry;
}

/** The daemon pushed a (stripped) PKI document for an epoch. */
export interface NewPkiDocumentEvent {
  type: 'newPkiDocument';
  document: PkiDocument;
  /** The CBOR the document was parsed from. */
  payload: Buffer;
}

/** A legacy send with a SURB left the daemon (or failed to, when `err` is set). */
export interface MessageSentEvent {
  type: 'messageSent';
  messageId: Buffer | null;
  surbId: Buffer | null;
  sentAt: Date | null;
  /** Expected round trip in milliseconds. */
  replyEtaMs: number;
  err: string | null;
}

/** A reply to a legacy send came back on its SURB. */
export interface MessageReplyEvent {
  type: 'messageReply';
  messageId: Buffer | null;
  surbId: Buffer;
  payload: Buffer | null;
  replyIndex: number | null;
  errorCode: number;
}

export interface MessageIdGarbageCollectedEvent {
  type: 'messageIdGarbageCollected';
  messageId: Buffer | null;
}

/** The daemon announced an orderly shutdown; the socket closes next. */
export interface ShutdownEvent {
  type: 'shutdown';
}

/** Our socket to the daemon was lost (not emitted for close()/disconnect()). */
export interface DaemonDisconnectedEvent {
  type: 'daemonDisconnected';
  /** True when the daemon sent shutdown_event on this connection first. */
  isGraceful: boolean;
  error: Error | null;
}

/** The client reconnected by itself after a loss. */
export interface DaemonReconnectedEvent {
  type: 'daemonReconnected';
  instanceToken: Buffer;
  /** The daemon re-bound our session token to its earlier app ID. */
  resumed: boolean;
  /** The daemon's instance token differs from before: a new daemon process. */
  daemonRestarted: boolean;
  /** How many in-flight StartResending* and copy requests were re-sent verbatim. */
  replayed: number;
}

/**
 * A connect or reconnect attempt failed (not emitted for an attempt that
 * close(), disconnect() or an aborted connect() cut short).
 */
export interface ConnectFailedEvent {
  type: 'connectFailed';
  /** Why, as connect() rejects: names the address and the socket error (the raw one is ThinClient.lastConnectionError). */
  error: Error;
  /** True for the client's own reconnect after a loss; false for connect(). */
  reconnecting: boolean;
  /** The delay before the next attempt, or null when none follows (connect() without retry). */
  retryInMs: number | null;
}

export type ThinClientEvent =
  | ConnectionStatusEvent
  | NewPkiDocumentEvent
  | MessageSentEvent
  | MessageReplyEvent
  | MessageIdGarbageCollectedEvent
  | ShutdownEvent
  | DaemonDisconnectedEvent
  | DaemonReconnectedEvent
  | ConnectFailedEvent;

export type ThinClientEventType = ThinClientEvent['type'];

/** Listener argument per event name; 'event' receives every event. */
export interface ThinClientEventMap {
  connectionStatus: ConnectionStatusEvent;
  newPkiDocument: NewPkiDocumentEvent;
  messageSent: MessageSentEvent;
  messageReply: MessageReplyEvent;
  messageIdGarbageCollected: MessageIdGarbageCollectedEvent;
  shutdown: ShutdownEvent;
  daemonDisconnected: DaemonDisconnectedEvent;
  daemonReconnected: DaemonReconnectedEvent;
  connectFailed: ConnectFailedEvent;
  event: ThinClientEvent;
}

/**
 * An unbounded FIFO exposed as an async iterator. Ending it (return(),
 * abort, client close) still lets the consumer drain what was queued.
 */
export class EventQueue<T> implements AsyncIterableIterator<T> {
  private items: T[] = [];
  private head = 0;
  private waiters: ((r: IteratorResult<T>) => void)[] = [];
  private ended = false;
  private readonly onAbort = () => this.end();

  constructor(
    private readonly onEnd: (q: EventQueue<T>) => void,
    private readonly signal?: AbortSignal,
  ) {
    if (signal?.aborted) this.end();
    else signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  get isEnded(): boolean {
    return this.ended;
  }

  push(item: T): void {
    if (this.ended) return;
    const w = this.waiters.shift();
    if (w) w({ value: item, done: false });
    else this.items.push(item);
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.signal?.removeEventListener('abort', this.onAbort);
    this.onEnd(this);
    for (const w of this.waiters.splice(0)) w({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<T>> {
    if (this.head < this.items.length) {
      const value = this.items[this.head++];
      // Compact now and then so a long-lived queue does not keep consumed items.
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items = this.items.slice(this.head);
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  return(): Promise<IteratorResult<T>> {
    this.end();
    this.items = [];
    this.head = 0;
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }
}

type Listener = (e: ThinClientEvent) => unknown;

/**
 * Hands every event to the listeners of its type, then to the 'event'
 * listeners, then to every events() iterator. A listener that throws or
 * rejects is logged; it never reaches the read loop.
 */
export class EventFanout {
  private readonly queues = new Set<EventQueue<ThinClientEvent>>();

  constructor(
    /** The listeners registered under a name, and the `this` they are called with. */
    private readonly listeners: (name: string) => Listener[],
    private readonly self: unknown,
    private readonly log: Logger,
  ) {}

  publish(ev: ThinClientEvent): void {
    this.deliver(ev.type, ev);
    this.deliver('event', ev);
    for (const q of this.queues) q.push(ev);
  }

  /** A new events() iterator; an already ended one when `ended` (the client is closed). */
  iterator(signal: AbortSignal | undefined, ended: boolean): EventQueue<ThinClientEvent> {
    const q = new EventQueue<ThinClientEvent>((done) => this.queues.delete(done), signal);
    if (ended) q.end();
    else if (!q.isEnded) this.queues.add(q);
    return q;
  }

  /** End every iterator (close()). */
  end(): void {
    for (const q of [...this.queues]) q.end();
  }

  private deliver(name: string, ev: ThinClientEvent): void {
    for (const listener of this.listeners(name)) {
      try {
        const r = listener.call(this.self, ev);
        if (r && typeof (r as Promise<unknown>).then === 'function') {
          (r as Promise<unknown>).then(undefined, (e: unknown) => this.log.error(`a '${name}' listener failed: ${errorText(e)}`));
        }
      } catch (e) {
        this.log.error(`a '${name}' listener threw: ${errorText(e)}`);
      }
    }
  }
}
