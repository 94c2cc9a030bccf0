/**
 * The table of requests waiting for their replies, keyed by query ID: their
 * deadlines (one DeadlineSweep timer for all), abort (one listener per
 * AbortSignal, AbortWatch) and cancel, the replay of in-flight ARQ
 * operations on every reconnect (§2.6), and each reply routed to its caller.
 */
import type { Capabilities } from './capabilities';
import type { LinkState } from './connection';
import { requestQueryId } from './crypto';
import { InvalidArgumentError, OperationCancelledError, StartResendingCancelledError, ThinClientTimeoutError } from './errors';
import { checkFrameFields, replies } from './messages';
import type { RawBody } from './messages';
import type { CallOptions, Logger } from './types';
import { describeValue, optionalSignal, optionalTimeout } from './validate';
import { bytesOrNull, requestBodies } from '../wire';
import type { AnyRequestKind } from '../wire';
import { DeadlineSweep, type Deadline } from '../util/deadline-sweep';

/** What the table needs of the connection. */
export interface Transport {
  readonly state: LinkState;
  /** The whole frame of a request. @throws InvalidArgumentError naming `sizeArg` when it exceeds maxFrameLength */
  encode(kind: AnyRequestKind, body: RawBody, sizeArg: string): Buffer;
  /** Write on the live connection; false when there is none. */
  write(frame: Buffer): boolean;
  /** @throws DaemonDisconnectedError when the client is closed or was never connected */
  requireUsable(): void;
}

/** The identity of an ARQ operation: its envelope hash or write-cap hash, and how to cancel it. */
export interface ArqIdentity {
  key: string;
  hash: Buffer;
  cancelKind: 'cancel_resending_encrypted_message' | 'cancel_resending_copy_command';
}

export interface CallSpec {
  op: string;
  /** The argument blamed if the frame exceeds maxFrameLength. */
  sizeArg: string;
  timeoutMs?: number;
  /** The deadline starts at the first write instead of now (requests queued while the socket is down). */
  timeoutFromWrite?: boolean;
  signal?: AbortSignal;
  arq?: ArqIdentity;
}

/** `<kind>_reply` for every request kind, built once (routing compares it with each reply's kind). */
const REPLY_KINDS = new Map<string, string>();
function replyKindOf(kind: AnyRequestKind): string {
  let r = REPLY_KINDS.get(kind);
  if (r === undefined) REPLY_KINDS.set(kind, (r = `${kind}_reply`));
  return r;
}

/**
 * A request waiting for its reply. One object per call holds everything
 * the call needs until it settles (its deadline entry and abort
 * subscription included), so a call allocates no closures of its own.
 */
class Pending implements Deadline {
  /** Written to some connection at least once (the daemon may know it). */
  written = false;
  /** Cancelled by the application: never replay it. */
  cancelled = false;
  /** When its deadline is due (performance.now()); set by DeadlineSweep.add. */
  deadlineAt = 0;
  /** Its deadline is in the sweep. */
  armed = false;
  private settleResolve: ((body: RawBody) => void) | null = null;
  private settleReject: ((err: Error) => void) | null = null;

  constructor(
    private readonly table: RequestTable,
    readonly op: string,
    readonly kind: AnyRequestKind,
    /** The kind of the reply that answers it. */
    readonly replyKind: string,
    readonly key: string,
    /** The whole frame, kept so a re-send or replay is byte-for-byte the original. */
    readonly frame: Buffer,
    readonly arq: ArqIdentity | null,
    readonly timeoutMs: number | undefined,
    /** The deadline starts at the first write instead of now. */
    readonly timeoutFromWrite: boolean,
    readonly signal: AbortSignal | undefined,
  ) {}

  /** The promise the caller gets; settled by resolve() or reject(). */
  start(): Promise<RawBody> {
    return new Promise<RawBody>((resolve, reject) => {
      this.settleResolve = resolve;
      this.settleReject = reject;
    });
  }

  resolve(body: RawBody): void {
    const resolve = this.settleResolve;
    if (!resolve) return;
    this.table.settled(this);
    resolve(body);
  }

  reject(err: Error): void {
    const reject = this.settleReject;
    if (!reject) return;
    this.table.settled(this);
    reject(err);
  }

  /** Forget the settle functions: a settled call ignores later replies, deadlines and aborts. */
  clearSettlers(): void {
    this.settleResolve = null;
    this.settleReject = null;
  }

  onDeadline(): void {
    this.armed = false;
    this.table.timedOut(this);
  }

  onAbort(): void {
    this.table.aborted(this);
  }
}

export class RequestTable {
  private readonly pending = new Map<string, Pending>();
  /** In-flight ARQ operations by envelope hash / write-cap hash (§2.6). */
  private readonly arqInFlight = new Map<string, Pending>();
  /** Every call's deadline, swept by one timer (no timer per request). */
  private readonly deadlines = new DeadlineSweep();
  /** Every call's AbortSignal, one listener per signal (however many calls share it). */
  private readonly aborts = new AbortWatch<Pending>();

  constructor(
    private readonly link: Transport,
    private readonly caps: Capabilities,
    private readonly requestTimeoutMs: number,
    private readonly log: Logger,
  ) {}

  /** A local request (no mixnet round trip): its deadline is requestTimeoutMs unless `opts` says otherwise. */
  local(kind: AnyRequestKind, body: RawBody, op: string, sizeArg: string, opts?: CallOptions): Promise<RawBody> {
    return this.call(kind, body, {
      op,
      sizeArg,
      timeoutMs: optionalTimeout('timeoutMs', opts?.timeoutMs) ?? this.requestTimeoutMs,
      signal: optionalSignal('signal', opts?.signal),
    });
  }

  /**
   * Register a request and write it now, or on the next (re)connect. The
   * promise settles with the reply body; argument checks throw synchronously,
   * before anything is registered, and the callers (async functions, or
   * pigeonhole.ts's callAndRead) turn that into a rejection.
   */
  call(kind: AnyRequestKind, body: RawBody, spec: CallSpec): Promise<RawBody> {
    const frame = this.link.encode(kind, body, spec.sizeArg);
    this.link.requireUsable();
    if (spec.signal?.aborted) return Promise.reject(new OperationCancelledError(`${spec.op} was aborted`));
    // A daemon that does not know the kind never sees it (a pinned one would abort, §3.1).
    // While no connection is up the check waits for the next handshake (flush).
    if (this.link.state === 'connected') {
      const refused = this.caps.refusal(kind, spec.op);
      if (refused) return Promise.reject(refused);
    }
    if (spec.arq && this.arqInFlight.has(spec.arq.key)) {
      const what = spec.arq.cancelKind === 'cancel_resending_copy_command' ? 'writeCap' : 'envelopeHash';
      return Promise.reject(new InvalidArgumentError(what, 'an operation not already in flight on this client', 'one with the same identity is still running'));
    }
    const queryId = bytesOrNull(body.query_id);
    if (!queryId) throw new Error(`internal: ${kind} without query_id`);

    const p = new Pending(
      this,
      spec.op,
      kind,
      replyKindOf(kind),
      queryId.toString('hex'),
      frame,
      spec.arq ?? null,
      spec.timeoutMs,
      spec.timeoutFromWrite === true,
      spec.signal,
    );
    const promise = p.start();
    if (!p.timeoutFromWrite) this.armDeadline(p);
    if (p.signal) this.aborts.add(p.signal, p);
    this.pending.set(p.key, p);
    // Added just before the first write (§2.6), removed when the call settles.
    if (p.arq) this.arqInFlight.set(p.arq.key, p);
    if (this.link.write(frame)) this.markWritten(p);
    return promise;
  }

  // Pending's callbacks: settled, timed out, aborted.
  /** A call settles: it leaves every table, its deadline and its abort subscription. */
  settled(p: Pending): void {
    p.clearSettlers();
    if (p.armed) {
      p.armed = false;
      this.deadlines.cancel(p);
    }
    if (p.signal) this.aborts.delete(p.signal, p);
    if (this.pending.get(p.key) === p) this.pending.delete(p.key);
    if (p.arq && this.arqInFlight.get(p.arq.key) === p) this.arqInFlight.delete(p.arq.key);
  }

  /** Its deadline passed. */
  timedOut(p: Pending): void {
    const waiting = this.link.state === 'connected' ? '' : ' (the daemon connection is down)';
    this.abandon(p, new ThinClientTimeoutError(`${p.op} timed out after ${p.timeoutMs} ms${waiting}`));
  }

  /** Its signal aborted. */
  aborted(p: Pending): void {
    this.abandon(p, new OperationCancelledError(`${p.op} was aborted`));
  }

  private armDeadline(p: Pending): void {
    if (p.timeoutMs === undefined || p.armed) return;
    p.armed = true;
    this.deadlines.add(p, p.timeoutMs);
  }

  /** After each write: a deadline that counts from the first write starts now. */
  private markWritten(p: Pending): void {
    p.written = true;
    if (p.timeoutFromWrite) this.armDeadline(p);
  }

  /**
   * Shared by both cancels (§3.8, §3.10, §7.4): drop the operation from the
   * replay table first, then ask the daemon. Unlike the reference bindings
   * the blocked call is always released: by the daemon's error-24 reply, or
   * here once the cancel is done (the daemon may not have dequeued it yet).
   */
  async cancelArq(kind: ArqIdentity['cancelKind'], body: RawBody, hash: Buffer, op: string, opts?: CallOptions): Promise<void> {
    const key = hash.toString('hex');
    const target = this.arqInFlight.get(key);
    if (target) {
      target.cancelled = true;
      this.arqInFlight.delete(key);
      if (!target.written) {
        // The daemon never saw it: nothing to cancel remotely.
        target.reject(new StartResendingCancelledError());
        return;
      }
    }
    try {
      replies.succeeded(kind, await this.local(kind, body, op, 'hash', opts));
    } finally {
      if (target && this.pending.get(target.key) === target) target.reject(new StartResendingCancelledError());
    }
  }

  /**
   * Write everything waiting, in call order, on a connection that just
   * completed its handshake: requests never written, local requests that
   * were in flight on the lost connection, and - only when `replayArq` - the
   * in-flight ARQ requests, byte-for-byte the original frames. Kinds its
   * daemon does not serve fail instead. Returns how many ARQ requests were replayed.
   */
  flush(write: (frame: Buffer) => boolean, replayArq: boolean): number {
    let replayed = 0;
    for (const p of [...this.pending.values()]) {
      if (p.arq) {
        if (p.cancelled) continue;
        if (p.written && !replayArq) continue;
      }
      const refused = this.caps.refusal(p.kind, p.op);
      if (refused) {
        p.reject(refused);
        continue;
      }
      if (!write(p.frame)) break;
      if (p.arq && p.written) replayed++;
      this.markWritten(p);
    }
    return replayed;
  }

  /** A `kind` reply from the daemon: to the call waiting for its query ID, else dropped. */
  route(kind: string, body: RawBody): void {
    const qid = bytesOrNull(body.query_id);
    if (!qid || qid.length === 0) {
      this.log.debug(`dropping ${kind} without query_id`);
      return;
    }
    const p = this.pending.get(qid.toString('hex'));
    if (!p) {
      this.log.debug(`dropping ${kind}: nobody waits for query ${qid.toString('hex')}`);
      return;
    }
    if (p.replyKind !== kind) {
      this.log.warn(`dropping ${kind}: query ${p.key} is a ${p.kind}`);
      return;
    }
    try {
      checkFrameFields(kind, body);
    } catch (e) {
      p.reject(e as Error);
      return;
    }
    p.resolve(body);
  }

  rejectAll(makeError: () => Error): void {
    for (const p of [...this.pending.values()]) p.reject(makeError());
  }

  /**
   * The caller gave up (timeout / abort). An ARQ operation the daemon knows
   * of is cancelled there too - also when the socket is down right now: a
   * resumed session still runs the operation, so the cancel waits in
   * `pending` and goes out on the next connection, in call order (before
   * any later start with the same identity). Only close()/disconnect()
   * drop it: thin_close ends the daemon session, and an idle client no
   * longer owns one.
   */
  private abandon(p: Pending, err: Error): void {
    if (this.pending.get(p.key) !== p) return;
    const arq = p.arq;
    const tellDaemon = arq !== null && p.written && !p.cancelled;
    p.reject(err);
    const state = this.link.state;
    if (!arq || !tellDaemon || (state !== 'connected' && state !== 'reconnecting')) return;
    const body =
      arq.cancelKind === 'cancel_resending_copy_command'
        ? requestBodies.cancelResendingCopyCommand(requestQueryId(), arq.hash)
        : requestBodies.cancelResendingEncryptedMessage(requestQueryId(), arq.hash);
    // Best effort: the caller already has its answer. The deadline counts
    // from the write, so a long reconnect does not expire the queued cancel.
    this.call(arq.cancelKind, body, { op: `${p.op} (cancel)`, sizeArg: 'hash', timeoutMs: this.requestTimeoutMs, timeoutFromWrite: true }).then(
      (reply) => this.log.debug(`${p.op}: daemon-side cancel answered ${describeValue(reply.error_code)}`),
      (e: Error) => this.log.debug(`${p.op}: daemon-side cancel failed: ${e.message}`),
    );
  }
}

// ------------------------------------------------------------- abort watch
/**
 * The calls waiting on each AbortSignal, behind one 'abort' listener per
 * signal. An AbortSignal checks every listener added for a duplicate, so a
 * listener per call would make each call on a signal shared by N others
 * cost O(N) (20,000 reads sharing one signal: quadratic); here adding and
 * removing a call is O(1). On abort the calls are told in the order they
 * were added, as their own listeners would have been.
 */
class AbortWatch<T extends { onAbort(): void }> {
  private readonly bySignal = new Map<AbortSignal, { members: Set<T>; listener: () => void }>();

  add(signal: AbortSignal, member: T): void {
    let entry = this.bySignal.get(signal);
    if (!entry) {
      const members = new Set<T>();
      const listener = (): void => {
        this.bySignal.delete(signal);
        for (const m of members) m.onAbort();
      };
      entry = { members, listener };
      this.bySignal.set(signal, entry);
      signal.addEventListener('abort', listener, { once: true });
    }
    entry.members.add(member);
  }

  delete(signal: AbortSignal, member: T): void {
    const entry = this.bySignal.get(signal);
    if (!entry || !entry.members.delete(member) || entry.members.size > 0) return;
    this.bySignal.delete(signal);
    signal.removeEventListener('abort', entry.listener);
  }
}
