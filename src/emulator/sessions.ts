/**
 * Sessions of the emulated daemon (PROTOCOL.md §2.3): the app ID a
 * connection gets, binding it to the client's session token, resuming it on
 * a new connection (queued replies delivered after session_token_reply),
 * the grace period after a disconnect, and dropping the session's in-flight
 * ARQ operations when it goes away, as kpclientd does.
 */
import { randomBytes } from 'node:crypto';
import { APP_ID_LENGTH } from '../wire';
import type { ArqTable, Op } from './arq';
import type { Connection } from './connection';

/** Legacy replies and ARQ results kept for a disconnected session (§2.3). */
export const MAX_QUEUED_RESPONSES = 1000;

export interface Session {
  appId: Buffer;
  token: string | null;
  conn: Connection | null;
  queued: Buffer[];
  abort: AbortController;
  graceTimer: NodeJS.Timeout | null;
  destroyed: boolean;
  ops: Set<Op>;
}

/** What the session table needs from the server. */
export interface SessionHost {
  log(line: string): void;
  frameOf(kind: string, body: Record<string, unknown>): Buffer;
}

export class SessionTable {
  /** Sessions bound to a token, by the token in hex. */
  private readonly sessions = new Map<string, Session>();

  constructor(
    private readonly host: SessionHost,
    private readonly arq: ArqTable,
    private readonly graceMs: number,
  ) {}

  /** A fresh anonymous session, as every new connection gets. */
  create(): Session {
    return {
      appId: randomBytes(APP_ID_LENGTH),
      token: null,
      conn: null,
      queued: [],
      abort: new AbortController(),
      graceTimer: null,
      destroyed: false,
      ops: new Set(),
    };
  }

  /**
   * The connection closed: a session without a token goes at once; one with
   * a token loses its ARQ operations and waits out the grace period.
   */
  disconnected(conn: Connection): void {
    const s = conn.session;
    if (s.conn !== conn) return;
    s.conn = null;
    if (s.destroyed) return;
    if (s.token === null) {
      // Without a session token there is nothing to resume: clean up at once.
      this.destroy(s);
      return;
    }
    this.dropArqOperations(s);
    s.graceTimer = setTimeout(() => {
      this.host.log(`session grace period over, destroying its state`);
      this.destroy(s);
    }, this.graceMs);
  }

  /**
   * kpclientd discards a Pigeonhole reply for a client that is not connected
   * and deletes the ARQ entry at its next resend (§2.3), so a session that
   * goes away loses its in-flight ARQ operations; only legacy replies queue.
   * Work already handed to the courier (a box written, a copy running) goes on.
   */
  private dropArqOperations(s: Session): void {
    if (s.ops.size === 0) return;
    this.host.log(`session away: ${s.ops.size} in-flight ARQ operations dropped, as kpclientd drops them`);
    for (const op of [...s.ops]) this.arq.drop(op);
  }

  destroy(s: Session): void {
    if (s.destroyed) return;
    s.destroyed = true;
    if (s.graceTimer) clearTimeout(s.graceTimer);
    s.abort.abort();
    for (const op of [...s.ops]) this.arq.drop(op);
    if (s.token !== null && this.sessions.get(s.token) === s) this.sessions.delete(s.token);
    s.queued = [];
  }

  /** Destroy every session bound to a token (stop, restart). */
  destroyAll(): void {
    for (const s of [...this.sessions.values()]) this.destroy(s);
  }

  /** thin_close: destroy everything the connection's session owns and give it a fresh one. */
  replace(conn: Connection): void {
    this.destroy(conn.session);
    conn.session = this.create();
    conn.session.conn = conn;
  }

  /** Send to whichever connection the session is on now, or queue while it is away (bounded). */
  deliver(s: Session, frame: Buffer): void {
    if (s.destroyed) return;
    if (s.conn && !s.conn.closed) s.conn.send(frame);
    else if (s.token !== null && s.queued.length < MAX_QUEUED_RESPONSES) s.queued.push(frame);
  }

  /** session_token: bind the token, or resume the session it names; then session_token_reply and the queued replies. */
  onSessionToken(conn: Connection, token: Buffer | null): void {
    if (!token) {
      // Nothing to bind; answer as a fresh, non-resumable session.
      conn.send(this.host.frameOf('session_token_reply', { app_id: conn.session.appId, resumed: false }));
      conn.releaseHeld();
      return;
    }
    const key = token.toString('hex');
    const existing = this.sessions.get(key);
    let resumed = false;
    if (existing && !existing.destroyed && existing !== conn.session) {
      resumed = true;
      if (existing.graceTimer) clearTimeout(existing.graceTimer);
      existing.graceTimer = null;
      const old = existing.conn;
      if (old && old !== conn) {
        // The new connection takes over the app ID; the old one keeps a fresh anonymous session.
        const anon = this.create();
        anon.conn = old;
        old.session = anon;
      }
      // Requests made on this connection before the token belong to the resumed session now.
      const provisional = conn.session;
      for (const op of provisional.ops) {
        op.session = existing;
        existing.ops.add(op);
      }
      provisional.ops.clear();
      provisional.destroyed = true;
      conn.session = existing;
      existing.conn = conn;
    } else if (existing === conn.session) {
      resumed = false;
    } else {
      conn.session.token = key;
      this.sessions.set(key, conn.session);
    }
    const s = conn.session;
    conn.send(this.host.frameOf('session_token_reply', { app_id: s.appId, resumed }));
    // Queued responses come after session_token_reply: every reference client needs that reply as frame 4.
    const queued = s.queued;
    s.queued = [];
    for (const f of queued) conn.send(f);
    conn.releaseHeld();
    this.host.log(`conn ${conn.id}: session ${resumed ? `resumed (${queued.length} queued responses delivered)` : 'bound'}`);
  }
}
