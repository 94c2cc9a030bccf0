/**
 * Node status shown under every node that uses a daemon, its updates
 * coalesced (StatusController) so that fast messages do not each cost two.
 *
 * Texts are i18n keys. The editor translates a status text that starts with
 * a letter or "@" through the node's catalogue; a key of the form
 * "<namespace>:<key>" reaches another catalogue, so all our shared texts live
 * once in the katzenpost-daemon catalogue (locales/en-US/katzenpost-daemon.json)
 * and the core "node-red:common.status.*" keys are reused where they exist.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Node, NodeStatus } from '../types';
import { catalogueText } from './messages';

function packageName(): string {
  // dist/nodes/lib/status.js and src/nodes/lib/status.ts are both three levels below the package root.
  try {
    const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as { name?: unknown };
    if (typeof pkg.name === 'string' && pkg.name) return pkg.name;
  } catch {
    // fall through: running from an unusual layout
  }
  return '@katzenpost-community/node-red-katzenpost';
}

/** Node-RED's i18n namespace of the katzenpost-daemon node set ("<module>/<set>"). */
export const DAEMON_I18N_NAMESPACE = `${packageName()}/katzenpost-daemon`;

/** Status texts (i18n keys). Each translation is shorter than 20 characters. */
export const STATUS_TEXT = {
  connecting: 'node-red:common.status.connecting',
  connected: 'node-red:common.status.connected',
  disconnected: 'node-red:common.status.disconnected',
  offline: `${DAEMON_I18N_NAMESPACE}:katzenpost-daemon.status.offline`,
  working: `${DAEMON_I18N_NAMESPACE}:katzenpost-daemon.status.working`,
  noDaemon: `${DAEMON_I18N_NAMESPACE}:katzenpost-daemon.status.no-daemon`,
} as const;

/** What the config node knows about its daemon. */
export type ConnectionState =
  /** no user node: nothing to do */
  | 'idle'
  /** first connection attempt or retry in progress */
  | 'connecting'
  /** handshake done, daemon connected to the mixnet */
  | 'connected'
  /** handshake done, daemon reports no mixnet connectivity */
  | 'offline'
  /** local socket lost (or never established); retrying */
  | 'disconnected'
  /** config node closed */
  | 'closed';

/**
 * The status of a connection state. `detail` names the cause of a
 * disconnection (e.g. "ECONNREFUSED 127.0.0.1:64331") and replaces the
 * plain "disconnected" text when known.
 */
export function statusForConnection(state: ConnectionState, detail?: string | null): NodeStatus {
  switch (state) {
    case 'connecting':
      return { fill: 'yellow', shape: 'ring', text: STATUS_TEXT.connecting };
    case 'connected':
      return { fill: 'green', shape: 'dot', text: STATUS_TEXT.connected };
    case 'offline':
      return { fill: 'yellow', shape: 'dot', text: STATUS_TEXT.offline };
    case 'disconnected':
      return { fill: 'red', shape: 'ring', text: detail || STATUS_TEXT.disconnected };
    default:
      return {};
  }
}

/** A short code for a failed operation's status: the error's `code`, at most 19 characters. */
export function errorStatusText(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  const text = typeof code === 'string' && code ? code.toLowerCase().replace(/_/g, ' ') : 'error';
  return text.length < 20 ? text : `${text.slice(0, 18)}…`;
}

/** What begin() returns: call it when the operation ends; `progress` replaces "working" while it runs. */
export interface OperationStatus {
  (err?: unknown): void;
  /** A status text for this running operation (e.g. "waiting for box 3fa2c1, 12 s"); null goes back to "working". */
  progress(text: string | null): void;
}

/**
 * Shortest interval between two status updates of one node (ms). node.status()
 * is relayed to every open editor; a flow pushing thousands of fast messages
 * through a node would otherwise send two updates per message (working, then
 * connected) that nobody can see.
 */
export const STATUS_MIN_INTERVAL_MS = 200;

/**
 * Combines the daemon connection state with the node's own activity. In
 * order of precedence: a daemon problem (connecting, mixnet offline,
 * disconnected); a blue "working" dot while operations run; a red ring with
 * the error code after a failure (until the next operation or connection
 * change); a node-specific status; "connected".
 *
 * Updates are coalesced: a change is shown at once when the node's status has
 * not changed for STATUS_MIN_INTERVAL_MS, otherwise at the end of that
 * interval, as the state is then (so the last state is always shown, at most
 * that late); a status equal to the one shown is not sent again.
 */
/**
 * A node's status as it reaches node.status(): the state `current()` gives,
 * shown at once after a quiet interval, else at the end of the
 * STATUS_MIN_INTERVAL_MS interval (as it is then), and never the same status
 * twice in a row. Each status update is a message to every open editor, so
 * a node handling hundreds of messages a second must not send one per message.
 */
export class CoalescedStatus {
  private closed = false;
  /** The status last passed to node.status() (null: none yet) and when (performance.now(): immune to clock changes). */
  private shown: NodeStatus | null = null;
  private shownAt = -Infinity;
  /** The deferred update of a coalesced change. */
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly node: Node,
    private readonly current: () => NodeStatus,
  ) {}

  /** The state changed: show it now, or at the end of the interval. */
  update(): void {
    if (this.closed || this.timer) return; // a deferred update is due: it shows the state as it is then
    const wait = this.shownAt + STATUS_MIN_INTERVAL_MS - performance.now();
    if (wait <= 0) {
      this.show();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      this.show();
    }, wait);
    this.timer.unref?.();
  }

  /** Shows nothing more (the node is closing). */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private show(): void {
    if (this.closed) return;
    const s = this.current();
    const last = this.shown;
    if (last && last.fill === s.fill && last.shape === s.shape && last.text === s.text) return;
    this.shown = s;
    this.shownAt = performance.now();
    try {
      this.node.status(s);
    } catch {
      // status() on a node that Node-RED already stopped: nothing to show it on
    }
  }
}

export class StatusController {
  private connection: ConnectionState = 'idle';
  private connectionDetail: string | null = null;
  /** Running operations, oldest first, each with its progress text (null: plain "working"). */
  private readonly running: { text: string | null }[] = [];
  private lastError: string | null = null;
  /** A configuration error: shown until the node is redeployed (connection changes do not clear it). */
  private configError: string | null = null;
  private extra: NodeStatus | null = null;
  private readonly output: CoalescedStatus;

  constructor(node: Node) {
    this.output = new CoalescedStatus(node, () => this.current());
  }

  setConnection(state: ConnectionState, detail: string | null = null): void {
    if (state !== this.connection) this.lastError = null;
    this.connection = state;
    this.connectionDetail = detail;
    this.render();
  }

  get connectionState(): ConnectionState {
    return this.connection;
  }

  /** Marks one operation as running; call the returned function when it ends. */
  begin(): OperationStatus {
    const entry: { text: string | null } = { text: null };
    this.running.push(entry);
    this.lastError = null;
    this.render();
    let ended = false;
    const end = ((err?: unknown) => {
      if (ended) return;
      ended = true;
      const i = this.running.indexOf(entry);
      if (i >= 0) this.running.splice(i, 1);
      if (err !== undefined && err !== null) this.lastError = errorStatusText(err);
      this.render();
    }) as OperationStatus;
    end.progress = (text: string | null) => {
      if (ended || entry.text === text) return;
      entry.text = text;
      this.render();
    };
    return end;
  }

  /** A node-specific status shown while idle and connected (e.g. "3 waiting"); null clears it. */
  setExtra(status: NodeStatus | null): void {
    this.extra = status;
    this.render();
  }

  /**
   * Shows an error (its short code) until the next operation or connection
   * change; with `sticky` (a configuration error only a redeploy fixes)
   * until the node closes.
   */
  setError(err: unknown, sticky = false): void {
    if (sticky) this.configError = errorStatusText(err);
    else this.lastError = errorStatusText(err);
    this.render();
  }

  close(): void {
    this.output.close();
  }

  private render(): void {
    this.output.update();
  }

  /** The status the node should show now. */
  private current(): NodeStatus {
    let s: NodeStatus;
    const healthy = this.connection === 'connected' || this.connection === 'idle' || this.connection === 'closed';
    // A daemon problem outranks "working": operations are then waiting on it, and the user should see why.
    if (!healthy) s = statusForConnection(this.connection, this.connectionDetail);
    else if (this.running.length > 0) {
      // The longest-running operation that says what it waits for, else "working".
      const withText = this.running.find((r) => r.text !== null);
      s = { fill: 'blue', shape: withText ? 'ring' : 'dot', text: withText?.text ?? STATUS_TEXT.working };
    } else if (this.lastError || this.configError) s = { fill: 'red', shape: 'ring', text: (this.lastError ?? this.configError)! };
    else if (this.extra && this.connection === 'connected') s = this.extra;
    else s = statusForConnection(this.connection, this.connectionDetail);
    return s;
  }
}

/**
 * A status text of the katzenpost-daemon catalogue with values filled in
 * (the editor translates only plain keys, so texts with values are
 * translated here). Falls back to the English catalogue file.
 */
export function statusText(RED: { _(key: string, subs?: Record<string, unknown>): string }, key: string, subs: Record<string, string | number>): string {
  const full = `${DAEMON_I18N_NAMESPACE}:katzenpost-daemon.status.${key}`;
  let text = '';
  try {
    text = RED._(full, subs);
  } catch {
    text = '';
  }
  if (!text || text === full || text.includes(`status.${key}`)) text = catalogueText(`status.${key}`, subs);
  return text;
}
