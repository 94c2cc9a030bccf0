/**
 * Legacy sends (PROTOCOL.md §3.3, §7.5): a payload to a service queue, with
 * or without a SURB, and the sends that wait for the reply on their SURB ID
 * (with its details, or just its payload); the daemon's sent and reply
 * events feed those waiters.
 */
import type { DaemonLink } from './connection';
import { newSurbId } from './crypto';
import { DaemonDisconnectedError, KatzenpostError, OperationCancelledError, ThinClientTimeoutError, errorForGenericCode } from './errors';
import type { ThinClientEvent } from './events';
import { decodeMessageReply, decodeMessageSent } from './messages';
import type { RawBody } from './messages';
import type { BlockingSendOptions, LegacyReply } from './types';
import { exactBytes, nonEmptyBytes, optionalSignal, optionalTimeout, payloadBytes } from './validate';
import { withDeadline } from '../util/deadline';
import { HASH_LENGTH, SURB_ID_LENGTH, requestBodies } from '../wire';

const DEFAULT_REPLY_TIMEOUT_MS = 30_000;

/** A send waiting for its reply, by SURB ID; `sent` is filled in by the daemon's message_sent_event. */
interface SurbWaiter {
  sent: { sentAt: Date | null; replyEtaMs: number } | null;
  resolve: (reply: LegacyReply) => void;
  reject: (err: Error) => void;
}

export class LegacySend {
  /** Sends waiting for their reply, by SURB ID (hex). */
  private readonly waiters = new Map<string, SurbWaiter>();

  constructor(
    private readonly link: DaemonLink,
    private readonly publish: (ev: ThinClientEvent) => void,
  ) {}

  async sendMessage(surbId: Uint8Array, payload: Uint8Array | string, destNode: Uint8Array, destQueue: Uint8Array): Promise<void> {
    const surb = exactBytes('surbId', surbId, SURB_ID_LENGTH);
    const frame = this.frame(surb, payload, destNode, destQueue);
    this.link.requireOnline();
    this.link.writeNow(frame);
  }

  async sendMessageWithoutReply(payload: Uint8Array | string, destNode: Uint8Array, destQueue: Uint8Array): Promise<void> {
    const frame = this.frame(null, payload, destNode, destQueue);
    this.link.requireOnline();
    this.link.writeNow(frame);
  }

  sendMessageAwaitingReply(payload: Uint8Array | string, destNode: Uint8Array, destQueue: Uint8Array, opts: BlockingSendOptions = {}): Promise<LegacyReply> {
    return this.sendAwaiting('sendMessageAwaitingReply', payload, destNode, destQueue, opts);
  }

  /** sendMessageAwaitingReply for the payload; a reply's error code becomes a DaemonError. */
  async blockingSendMessage(payload: Uint8Array | string, destNode: Uint8Array, destQueue: Uint8Array, opts: BlockingSendOptions = {}): Promise<Buffer> {
    const reply = await this.sendAwaiting('blockingSendMessage', payload, destNode, destQueue, opts);
    const err = errorForGenericCode('send_message', reply.errorCode);
    if (err) throw err;
    return reply.payload;
  }

  /** Send with a fresh SURB and wait for its reply; `method` names the caller in errors. */
  private async sendAwaiting(
    method: string,
    payload: Uint8Array | string,
    destNode: Uint8Array,
    destQueue: Uint8Array,
    opts: BlockingSendOptions,
  ): Promise<LegacyReply> {
    const timeoutMs = optionalTimeout('timeoutMs', opts.timeoutMs) ?? DEFAULT_REPLY_TIMEOUT_MS;
    const signal = optionalSignal('signal', opts.signal);
    const surb = newSurbId();
    const frame = this.frame(surb, payload, destNode, destQueue);
    this.link.requireOnline();
    const cancelled = () => new OperationCancelledError(`${method} was aborted`);
    if (signal?.aborted) throw cancelled();
    let wait: AbortSignal | undefined;
    let timedOut: Error | undefined;
    try {
      return await withDeadline(
        timeoutMs,
        () => (timedOut = new ThinClientTimeoutError(`${method}: no reply within ${timeoutMs} ms`)),
        (s) => this.awaitReply(surb, frame, (wait = s)),
        signal,
      );
    } catch (e) {
      // An abort of `signal` comes out of withDeadline as its reason; these methods have always said OperationCancelledError.
      throw wait?.aborted && e === wait.reason && e !== timedOut ? cancelled() : e;
    }
  }

  /** Register the waiter, then write (so even an instant reply finds it); `signal` aborting forgets the waiter. */
  private awaitReply(surb: Buffer, frame: Buffer, signal: AbortSignal): Promise<LegacyReply> {
    const key = surb.toString('hex');
    return new Promise<LegacyReply>((resolve, reject) => {
      const forget = () => this.waiters.delete(key);
      signal.addEventListener('abort', forget, { once: true });
      this.waiters.set(key, {
        sent: null,
        resolve: (r) => {
          forget();
          resolve(r);
        },
        reject: (e) => {
          forget();
          reject(e);
        },
      });
      try {
        this.link.writeNow(frame);
      } catch (e) {
        forget();
        reject(e as Error);
      }
    });
  }

  private frame(surb: Buffer | null, payload: Uint8Array | string, destNode: Uint8Array, destQueue: Uint8Array): Buffer {
    const limit = this.link.sphinx?.UserForwardPayloadLength;
    const body = requestBodies.sendMessage({
      withSurb: surb !== null,
      surbId: surb,
      destinationIdHash: exactBytes('destNode', destNode, HASH_LENGTH),
      recipientQueueId: nonEmptyBytes('destQueue', destQueue),
      payload: payloadBytes('payload', payload, limit, 'sphinx UserForwardPayloadLength'),
    });
    return this.link.encode('send_message', body, 'payload');
  }

  // ------------------------------------------------------------ daemon events
  onMessageSent(body: RawBody): void {
    const ev = decodeMessageSent(body);
    this.publish(ev);
    const waiter = ev.surbId ? this.waiters.get(ev.surbId.toString('hex')) : undefined;
    if (!waiter) return;
    if (ev.err) waiter.reject(new KatzenpostError('SEND_FAILED', `send_message failed: ${ev.err}`));
    else waiter.sent = { sentAt: ev.sentAt, replyEtaMs: ev.replyEtaMs };
  }

  onMessageReply(body: RawBody): void {
    const ev = decodeMessageReply(body);
    this.publish(ev);
    const waiter = this.waiters.get(ev.surbId.toString('hex'));
    waiter?.resolve({
      payload: ev.payload ?? Buffer.alloc(0),
      surbId: Buffer.from(ev.surbId),
      sentAt: waiter.sent?.sentAt ?? null,
      replyEtaMs: waiter.sent?.replyEtaMs ?? null,
      errorCode: ev.errorCode,
    });
  }

  /** The daemon went off the mixnet: no reply will come. */
  mixnetDown(): void {
    this.rejectAll(() => new DaemonDisconnectedError('connection lost: the daemon is no longer connected to the mixnet'));
  }

  /**
   * A legacy reply comes back to the daemon session that sent the message,
   * never to a new one: after a daemon restart or a session the daemon did
   * not resume it cannot arrive, so its waiters fail now instead of at their
   * timeout. (A resumed session gets its queued replies after session_token_reply.)
   */
  sessionLost(daemonRestarted: boolean): void {
    const why = daemonRestarted
      ? 'connection lost: the daemon restarted; the reply cannot arrive'
      : 'connection lost: the daemon did not resume the session; the reply cannot arrive';
    this.rejectAll(() => new DaemonDisconnectedError(why));
  }

  rejectAll(makeError: () => Error): void {
    for (const w of [...this.waiters.values()]) w.reject(makeError());
  }
}
