/**
 * The table of requests waiting for their replies, keyed by query ID: their
 * deadlines (one DeadlineSweep), abort and cancel, the replay of in-flight
 * ARQ operations on every reconnect (§2.6), and each reply routed to its caller.
 */
import type { Capabilities } from './capabilities';
import type { LinkState } from './connection';
import { newQueryId } from './crypto';
import { InvalidArgumentError, OperationCancelledError, StartResendingCancelledError, ThinClientTimeoutError } from './errors';
import { checkFrameFields, replies } from './messages';
import type { RawBody } from './messages';
import type { CallOptions, Logger } from './types';
import { describeValue, optionalSignal, optionalTimeout } from './validate';
import { bytesOrNull, requestBodies } from '../wire';
import type { AnyRequestKind } from '../wire';

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

/** A request waiting for its reply. */
interface Pending {
  op: string;
  kind: AnyRequestKind;
  key: string;
  /** The whole frame, kept so a re-send or replay is byte-for-byte the original. */
  frame: Buffer;
  arq: ArqIdentity | null;
  /** Written to some connection at least once (the daemon may know it). */
  written: boolean;
  /** Cancelled by the application: never replay it. */
  cancelled: boolean;
  /** Called after each write (starts a deadline that counts from the first write). */
  onWritten: (() => void) | null;
  resolve: (body: RawBody) => void;
  reject: (err: Error) => void;
}

export class RequestTable {
  private readonly pending = new Map<string, Pending>();
  /** In-flight ARQ operations by envelope hash / write-cap hash (§2.6). */
  private readonly arqInFlight = new Map<string, Pending>();
  /** Every call's deadline, swept by one timer (no timer per request). */
  private readonly deadlines = new DeadlineSweep();

  constructor(
    private readonly link: Transport,
    private readonly caps: Capabilities,
    private readonly requestTimeoutMs: number,
    private readonly log: Logger,
  ) {}

  /** A local request (no mixnet round trip): its deadline is requestTimeoutMs unless `opts` says otherwise. */
  local(kind: AnyRequestKind, body: RawBody, op: string, sizeArg: string, opts: CallOptions = {}): Promise<RawBody> {
    return this.call(kind, body, {
      op,
      sizeArg,
      timeoutMs: optionalTimeout('timeoutMs', opts.timeoutMs) ?? this.requestTimeoutMs,
      signal: optionalSignal('signal', opts.signal),
    });
  }

  /**
   * Register a request and write it now, or on the next (re)connect. The
   * promise settles with the reply body; argument checks throw synchronously
   * inside the async callers, before anything is registered.
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

    return new Promise((resolve, reject) => {
      let timer: Deadline | undefined;
      const onAbort = () => this.abandon(p, new OperationCancelledError(`${spec.op} was aborted`));
      const settle = () => {
        if (timer) this.deadlines.cancel(timer);
        spec.signal?.removeEventListener('abort', onAbort);
        if (this.pending.get(p.key) === p) this.pending.delete(p.key);
        if (p.arq && this.arqInFlight.get(p.arq.key) === p) this.arqInFlight.delete(p.arq.key);
      };
      const p: Pending = {
        op: spec.op,
        kind,
        key: queryId.toString('hex'),
        frame,
        arq: spec.arq ?? null,
        written: false,
        cancelled: false,
        onWritten: null,
        resolve: (b) => {
          settle();
          resolve(b);
        },
        reject: (e) => {
          settle();
          reject(e);
        },
      };
      const armDeadline = () => {
        if (spec.timeoutMs === undefined || timer !== undefined) return;
        const ms = spec.timeoutMs;
        timer = this.deadlines.add(ms, () => {
          const waiting = this.link.state === 'connected' ? '' : ' (the daemon connection is down)';
          this.abandon(p, new ThinClientTimeoutError(`${spec.op} timed out after ${ms} ms${waiting}`));
        });
      };
      if (spec.timeoutFromWrite) p.onWritten = armDeadline;
      else armDeadline();
      spec.signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(p.key, p);
      // Added just before the first write (§2.6), removed when the call settles.
      if (p.arq) this.arqInFlight.set(p.arq.key, p);
      if (this.link.write(frame)) {
        p.written = true;
        p.onWritten?.();
      }
    });
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
      p.written = true;
      p.onWritten?.();
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
    if (`${p.kind}_reply` !== kind) {
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
        ? requestBodies.cancelResendingCopyCommand(newQueryId(), arq.hash)
        : requestBodies.cancelResendingEncryptedMessage(newQueryId(), arq.hash);
    // Best effort: the caller already has its answer. The deadline counts
    // from the write, so a long reconnect does not expire the queued cancel.
    this.call(arq.cancelKind, body, { op: `${p.op} (cancel)`, sizeArg: 'hash', timeoutMs: this.requestTimeoutMs, timeoutFromWrite: true }).then(
      (reply) => this.log.debug(`${p.op}: daemon-side cancel answered ${describeValue(reply.error_code)}`),
      (e: Error) => this.log.debug(`${p.op}: daemon-side cancel failed: ${e.message}`),
    );
  }
}

// ------------------------------------------------------------ deadline sweep
interface Deadline {
  at: number;
  fire: () => void;
}

/** Node's setTimeout fires after 1 ms for anything longer than this. */
const MAX_TIMER_MS = 0x7fffffff;

/**
 * The deadlines of all calls under one timer, armed for the earliest live
 * one. add() and cancel() are O(1) (a Set); only a timer firing walks the
 * live deadlines, firing the due ones and re-arming for the next (a
 * cancelled earliest deadline costs one early wake-up, nothing more). A
 * deadline fires no earlier than `ms` after add(), like setTimeout; with no
 * live deadline no timer is armed, so an idle client keeps no process alive.
 */
class DeadlineSweep {
  private readonly live = new Set<Deadline>();
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;

  add(ms: number, fire: () => void): Deadline {
    const d: Deadline = { at: performance.now() + ms, fire };
    this.live.add(d);
    if (d.at < this.timerAt) this.arm(d.at);
    return d;
  }

  cancel(d: Deadline): void {
    if (this.live.delete(d) && this.live.size === 0) this.disarm();
  }

  private disarm(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
  }

  private arm(at: number): void {
    this.disarm();
    const wait = Math.min(MAX_TIMER_MS, Math.max(1, Math.ceil(at - performance.now())));
    this.timerAt = at;
    this.timer = setTimeout(() => this.sweep(), wait);
  }

  private sweep(): void {
    this.timer = null;
    this.timerAt = Infinity;
    const now = performance.now();
    const due: Deadline[] = [];
    for (const d of this.live) if (d.at <= now) due.push(d);
    due.sort((a, b) => a.at - b.at);
    for (const d of due) {
      // An earlier callback may have cancelled this one.
      if (!this.live.delete(d)) continue;
      d.fire();
    }
    let next = Infinity;
    for (const d of this.live) if (d.at < next) next = d.at;
    if (next < this.timerAt) this.arm(next);
  }
}
