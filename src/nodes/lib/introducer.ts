/**
 * Runs the Contact Voucher introduction of one katzenpost-channel config node
 * (kinds "invite" and "join") in the background, from wherever the channel
 * database says it stands to the end, and then opens the channels it leads to.
 *
 * Store names: the channel's own name is the OUTGOING channel (ours, written
 * by katzenpost-channel-send), `<name>/incoming` the INCOMING one (the other
 * side's, read by katzenpost-channel-receive).
 *  - invite: the voucher is minted from the outgoing channel's seed; once the
 *    other side answered, the outgoing channel is created in the store from
 *    the re-seeded write cap, and the incoming one from the read cap the other
 *    side sent.
 *  - join: the outgoing channel (from the seed) is usable at once (the config
 *    node opens it like an owned channel); once the sealed reply is written,
 *    the incoming channel is created from the inviter's re-seeded read cap.
 *
 * Daemon errors are retried with the shared Backoff; what a retry cannot fix
 * (a daemon without vouchers, a voucher that does not match its invitation,
 * caps that changed under the same name) ends it with one error. No secret
 * leaves this module except the voucher, through voucher(), for the
 * permission-protected admin endpoint.
 */
import { EventEmitter } from 'node:events';
import { blake2b256 } from '../../client/crypto';
import { ConfigError, InvalidArgumentError, KatzenpostError, UnsupportedByDaemonError, VoucherError } from '../../client/errors';
import type { ThinClient } from '../../client/client';
import {
  ChannelError,
  runIntroduction,
  startInvitation,
  startJoin,
  type ChannelStore,
  type IntroductionRole,
  type IntroductionState,
} from '../../channels';
import { Backoff } from '../../util/backoff';
import { pause } from '../../util/deadline';
import type { DaemonConnection } from './daemon-connection';

const READ_CAP_LENGTH = 136;

/** Where an introduction stands: 'starting' before the first saved step. */
export type IntroductionStep = 'starting' | IntroductionState['step'];

/** What the user nodes show of an introduction. Holds no secret. */
export interface IntroductionProgress {
  role: IntroductionRole;
  step: IntroductionStep;
  done: boolean;
  /** Set when the introduction stopped for good (a configuration error); a redeploy starts it again. */
  error: Error | null;
}

/** The daemon speaks the pinned protocol (kpclientd v0.0.76), which has no vouchers. */
export class VoucherUnsupportedError extends ChannelError {
  constructor(channel: string, address: string, cause?: UnsupportedByDaemonError) {
    super(
      'VOUCHER_UNSUPPORTED',
      `katzenpost-channel "${channel}": vouchers need kpclientd v0.0.99 or later, and the daemon at ${address} speaks the pinned ` +
        'thin-client protocol (kpclientd v0.0.76). Point the daemon config node at a current kpclientd (or the emulator with ' +
        '--protocol current), or share a read cap instead (kinds owned and imported).',
    );
    if (cause) (this as { cause?: unknown }).cause = cause;
  }
}

/** The introduction cannot go on as configured (wrong voucher, caps changed, both sides in one database). */
export class IntroductionError extends ChannelError {
  constructor(channel: string, detail: string, cause?: unknown) {
    super('INTRODUCTION_FAILED', `katzenpost-channel "${channel}": ${detail}`);
    if (cause) (this as { cause?: unknown }).cause = cause;
  }
}

/** The invitation's voucher was used already: there is nothing to show any more. */
export class VoucherUsedError extends ChannelError {
  constructor(channel: string) {
    super('VOUCHER_USED', `katzenpost-channel "${channel}": the voucher was used, the other side joined; this channel is introduced`);
  }
}

/** Errors a retry cannot fix. */
export function isFatalIntroductionError(err: unknown): boolean {
  if (err instanceof ChannelError) return (err as KatzenpostError).code !== 'NO_CLIENT' && (err as KatzenpostError).code !== 'CHANNEL_CLOSED';
  return err instanceof ConfigError || err instanceof InvalidArgumentError || err instanceof VoucherError || err instanceof UnsupportedByDaemonError;
}

export interface IntroducerSettings {
  /** The channel's name: the outgoing channel's store name, and the introduction's key in the database. */
  name: string;
  /** The incoming channel's store name. */
  incomingName: string;
  role: IntroductionRole;
  /** Invite: the name the other side sees. */
  displayName: string;
  /** The outgoing channel's 32-byte seed. */
  seed: Buffer;
  /** Join: the voucher typed in. */
  voucher: Buffer | null;
  /** The channel database (opened once by the config node). */
  store(): Promise<ChannelStore>;
  connection: DaemonConnection;
  /** Our id as a user of the daemon connection while we need it. */
  userId: string;
  debug(message: string): void;
  pollInitialMs?: number;
  pollMaxMs?: number;
  retryInitialMs?: number;
  retryMaxMs?: number;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(err: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => undefined); // rejections are reported by whoever awaits
  return { promise, resolve, reject };
}

export class Introducer {
  private readonly controller = new AbortController();
  private readonly emitter = new EventEmitter();
  private state: IntroductionProgress;
  private readonly introduced = deferred<void>();
  private readonly minted = deferred<Buffer>();
  private running: Promise<void> | null = null;
  private registered = false;

  constructor(private readonly s: IntroducerSettings) {
    this.emitter.setMaxListeners(0);
    this.state = { role: s.role, step: 'starting', done: false, error: null };
  }

  /** Starts the background work (once). */
  start(): void {
    if (!this.running) this.running = this.run().finally(() => this.leaveDaemon());
  }

  progress(): IntroductionProgress {
    return { ...this.state };
  }

  /** Calls `listener` on every change of progress; returns the function that stops it. */
  onProgress(listener: (p: IntroductionProgress) => void): () => void {
    this.emitter.on('progress', listener);
    return () => this.emitter.off('progress', listener);
  }

  /** Resolves when both sides' channels are in the store; rejects with the error that stopped the introduction. */
  done(): Promise<void> {
    return this.introduced.promise;
  }

  /** Invite: the voucher, once minted (from the database after a restart). A secret: only for the admin endpoint. */
  voucher(): Promise<Buffer> {
    if (this.s.role !== 'invite') return Promise.reject(new IntroductionError(this.s.name, 'only an invitation has a voucher to show'));
    if (this.state.error) return Promise.reject(this.state.error);
    if (this.state.done) return Promise.reject(new VoucherUsedError(this.s.name));
    return this.minted.promise;
  }

  /** Stops the work (in-flight daemon calls are cancelled or left to fail); resolves within 5 s. */
  async stop(): Promise<void> {
    this.controller.abort();
    if (this.running) {
      const grace = pause(5000);
      await Promise.race([this.running.catch(() => undefined), grace.promise]);
      grace.wake();
    }
    await this.leaveDaemon();
  }

  // ------------------------------------------------------------ internals

  private report(next: Partial<IntroductionProgress>): void {
    this.state = { ...this.state, ...next };
    this.emitter.emit('progress', this.progress());
  }

  private async run(): Promise<void> {
    const signal = this.controller.signal;
    const backoff = new Backoff(this.s.retryInitialMs ?? 1000, this.s.retryMaxMs ?? 30_000);
    while (!signal.aborted) {
      try {
        await this.attempt();
        return;
      } catch (err) {
        if (signal.aborted) return;
        if (isFatalIntroductionError(err)) {
          this.fail(err);
          return;
        }
        const wait = backoff.next();
        this.s.debug(`katzenpost-channel "${this.s.name}": introduction step failed (${(err as Error).message}); retrying in ${wait} ms`);
        await pause(wait, signal).promise;
      }
    }
  }

  private fail(err: unknown): void {
    const error =
      err instanceof UnsupportedByDaemonError
        ? new VoucherUnsupportedError(this.s.name, this.s.connection.address, err)
        : err instanceof VoucherError
          ? new IntroductionError(this.s.name, `the voucher does not match the invitation it was read with (${err.message}); ask for a new voucher`, err)
          : (err as Error);
    this.report({ error });
    this.introduced.reject(error);
    this.minted.reject(error);
  }

  /** One try from the saved state to the end. */
  private async attempt(): Promise<void> {
    const s = this.s;
    const store = await s.store();
    let state = store.introduction(s.name);
    if (state) this.checkSaved(state);
    if (state?.step === 'done') {
      await this.finish(store, state);
      return;
    }
    if (state && state.role === 'invite') this.minted.resolve(state.voucher);
    if (state) this.report({ step: state.step });
    const client = await this.client();
    if (client.daemonProtocol() === 'pinned') throw new VoucherUnsupportedError(s.name, s.connection.address);
    const outgoing = await client.newKeypair(s.seed);
    if (state && !state.readCap.equals(outgoing.readCap)) {
      throw new IntroductionError(s.name, 'the seed in the credentials is not the one this introduction was started with; to start over, give the channel a new name');
    }
    const save = (next: IntroductionState): void => store.saveIntroduction(s.name, next);
    if (!state) {
      if (s.role === 'invite') {
        state = await startInvitation(client, outgoing, s.displayName, save);
        this.minted.resolve(state.voucher);
      } else {
        state = startJoin(s.voucher!, outgoing);
      }
      this.report({ step: state.step });
    }
    const final = await runIntroduction(client, state, {
      save,
      signal: this.controller.signal,
      pollInitialMs: s.pollInitialMs ?? 500,
      pollMaxMs: s.pollMaxMs ?? 10_000,
      onStep: (st) => this.report({ step: st.step }),
    });
    await this.finish(store, final);
  }

  /** A saved introduction must be the one this node would run. */
  private checkSaved(state: IntroductionState): void {
    const s = this.s;
    if (state.role !== s.role) {
      throw new IntroductionError(
        s.name,
        `the channel database holds an introduction of this channel as "${state.role}", but the form says "${s.role}"; to start over, give the channel a new name`,
      );
    }
    if (s.role === 'join' && s.voucher && !state.voucher.equals(s.voucher)) {
      throw new IntroductionError(
        s.name,
        'this channel joined with another voucher (the channel database holds that introduction); to join with a new voucher, give the channel a new name',
      );
    }
  }

  /** Opens the channels the introduction led to (idempotent: a restart after 'done' comes here directly). */
  private async finish(store: ChannelStore, state: IntroductionState): Promise<void> {
    const s = this.s;
    const peer = state.peerReadCap;
    if (!peer) throw new IntroductionError(s.name, 'the saved introduction is done but holds no read cap of the other side');
    this.assertOnlyHere(store, s.incomingName, peer);
    if (s.role === 'invite') {
      this.assertOnlyHere(store, s.name, state.writeCap.subarray(state.writeCap.length - READ_CAP_LENGTH));
      await store.openChannel(s.name, { kind: 'owned', writeCap: state.writeCap });
    }
    await store.openChannel(s.incomingName, { kind: 'imported', readCap: peer });
    this.report({ step: 'done', done: true });
    this.introduced.resolve();
    await this.leaveDaemon();
  }

  /**
   * The store renames a channel opened under a new name with known caps. Both
   * sides of one introduction in one database would meet there (one side's
   * outgoing channel is the other's incoming one); refuse instead.
   */
  private assertOnlyHere(store: ChannelStore, name: string, readCap: Buffer): void {
    const id = blake2b256(readCap).toString('hex');
    const other = store.list().find((c) => c.id === id && c.name !== name);
    if (other) {
      throw new IntroductionError(
        this.s.name,
        `the channel database already holds this channel as "${other.name}" (both sides of the introduction use one database file); ` +
          'give one of the two channel nodes its own Database',
      );
    }
  }

  private async client(): Promise<ThinClient> {
    const connection = this.s.connection;
    if (!this.registered) {
      this.registered = true;
      connection.register(this.s.userId, {});
    }
    return connection.acquire({ timeoutMs: 30_000, signal: this.controller.signal });
  }

  private async leaveDaemon(): Promise<void> {
    if (!this.registered) return;
    this.registered = false;
    await this.s.connection.deregister(this.s.userId);
  }
}
