/**
 * The simulated mixnet behind the daemon: replica storage and courier
 * state, connectivity, the transit time of every leg, and the requests that
 * cross it: legacy sends to the echo services, Pigeonhole reads and writes
 * (start_resending_encrypted_message) and copy commands executed by the
 * courier (PROTOCOL.md §3.3, §10.4-§10.5; PIGEONHOLE.md §2).
 */
import { randomInt } from 'node:crypto';
import { abortable, pause, sleep } from '../util/deadline';
import { u64, type SphinxGeometry } from '../wire';
import type { ArqTable, CopyVerdict, Op } from './arq';
import * as local from './local';
import { BoxStore, boxIdOf, CopyStreamDecoder, EnvelopeCrypto, firstIndexOfCap, nextIndex, openBox, readCapOf } from './pigeonhole';
import { SERVICE_ENDPOINTS, type Courier, type Network } from './pki';
import type { RequestBody } from './requests';
import type { Session } from './sessions';
import { COURIER_MAX_REDISPATCHES, type Timing } from './timing';

/** Terminal copy verdicts are cached by the courier this long (PIGEONHOLE §2.6). */
export const COPY_VERDICT_TTL_MS = 30 * 60 * 1000;

interface CopyJob {
  promise: Promise<CopyVerdict>;
  result: CopyVerdict | null;
}

/** The "mixnet" side: replica storage and courier state, kept across a restart unless asked otherwise. */
interface MixnetState {
  store: BoxStore;
  copyVerdicts: Map<string, { verdict: CopyVerdict; expires: number }>;
  copyJobs: Map<string, CopyJob>;
  abort: AbortController;
}

function newMixnetState(): MixnetState {
  return { store: new BoxStore(), copyVerdicts: new Map(), copyJobs: new Map(), abort: new AbortController() };
}

function isAbort(e: unknown): boolean {
  return (e as { name?: string })?.name === 'AbortError';
}

/** The fixed parts of the simulation. */
export interface MixnetConfig {
  timing: Timing;
  crypto: EnvelopeCrypto;
  network: Network;
  courierList: readonly Courier[];
  sphinx: SphinxGeometry;
  /** What a courier's InvalidEnvelope (1) becomes in the reply (1 pinned, 31 current). */
  courierInvalidEnvelopeCode: number;
  /** How long the courier keeps retrying a temp-stream box that is not written yet. */
  courierPatienceMs: number;
  /** Age at which the courier forgets a cached reply; 0: no cache (reads wake on the write). */
  courierDedupTtlMs: number;
  /** Initial connectivity. */
  online: boolean;
}

/** What the mixnet needs from the daemon around it. */
export interface MixnetHost {
  /** Whether the daemon has a PKI document: without one there is no route (error 4). */
  hasDocument(): boolean;
  log(line: string): void;
  frameOf(kind: string, body: Record<string, unknown>): Buffer;
  /** To the session's connection, or queued while it is away. */
  deliver(s: Session, frame: Buffer): void;
}

export class SimulatedMixnet {
  private readonly timing: Timing;
  private readonly crypto: EnvelopeCrypto;
  private readonly network: Network;
  private readonly courierList: readonly Courier[];
  private readonly sphinx: SphinxGeometry;
  private readonly courierInvalidEnvelopeCode: number;
  private readonly courierPatienceMs: number;
  private readonly courierDedupTtlMs: number;
  private state: MixnetState = newMixnetState();
  private connected: boolean;
  private onlineWaiters = new Set<() => void>();

  constructor(
    private readonly host: MixnetHost,
    private readonly arq: ArqTable,
    config: MixnetConfig,
  ) {
    this.timing = config.timing;
    this.crypto = config.crypto;
    this.network = config.network;
    this.courierList = config.courierList;
    this.sphinx = config.sphinx;
    this.courierInvalidEnvelopeCode = config.courierInvalidEnvelopeCode;
    this.courierPatienceMs = config.courierPatienceMs;
    this.courierDedupTtlMs = config.courierDedupTtlMs;
    this.connected = config.online;
  }

  // ---------------------------------------------------------------- state and connectivity
  /** Whether the mixnet is reachable; while it is not, every leg waits. */
  get online(): boolean {
    return this.connected;
  }

  setOnline(online: boolean): void {
    this.connected = online;
    if (online) this.releaseOnlineWaiters();
  }

  /** A fresh daemon with fresh storage (restart --fresh): running work stops, every box is forgotten. */
  reset(): void {
    this.shutdown();
    this.state = newMixnetState();
  }

  /** Stop the courier's running work and forget every box (stop). */
  shutdown(): void {
    this.state.abort.abort();
    this.state.store.clear();
  }

  private releaseOnlineWaiters(): void {
    const w = this.onlineWaiters;
    this.onlineWaiters = new Set();
    for (const fn of w) fn();
  }

  /** Resolves when the mixnet is online (at once if it is); rejects with the signal's reason on abort. */
  private whenOnline(signal: AbortSignal): Promise<void> {
    if (this.connected) return Promise.resolve();
    let wake: () => void = () => {};
    const online = new Promise<void>((resolve) => (wake = resolve));
    this.onlineWaiters.add(wake);
    return abortable(online, signal).finally(() => this.onlineWaiters.delete(wake));
  }

  /** One mixnet leg: wait until online, then the latency; repeat the wait if the mixnet went away meanwhile. */
  private async transit(ms: number, signal: AbortSignal): Promise<void> {
    // Instant legs (--instant, or a zero draw) take no timer hop at all.
    if (ms <= 0 && this.connected) {
      if (signal.aborted) throw signal.reason;
      return;
    }
    await this.whenOnline(signal);
    await sleep(ms, signal);
    while (!this.connected) await this.whenOnline(signal);
  }

  private randomCourier(): Courier | null {
    return this.courierList.length ? this.courierList[randomInt(this.courierList.length)] : null;
  }

  // ---------------------------------------------------------------- start_resending_encrypted_message
  async runMessage(op: Op, b: RequestBody): Promise<void> {
    const signal = op.abort.signal;
    try {
      await this.transit(this.timing.sendQueue(), signal);
      const isRead = b.read_cap !== null;
      const isWrite = b.write_cap !== null;
      // Validation errors surface only when the request is dequeued, with no courier chosen.
      if (!b.query_id || isRead === isWrite || !b.envelope_descriptor?.length || !b.message_ciphertext?.length || !b.envelope_hash) {
        return this.arq.finishMessage(op, local.ErrorCode.InvalidRequest);
      }
      // No document, no courier to send to (§3.7: error 4).
      if (!this.host.hasDocument()) return this.arq.finishMessage(op, local.ErrorCode.InternalError);
      op.courier = this.randomCourier();
      if (!op.courier) return this.arq.finishMessage(op, local.ErrorCode.InternalError);
      const query = this.crypto.openQuery(b.message_ciphertext);
      await this.transit(this.timing.roundTrip() / 2, signal);
      // Not one of our envelopes: the courier's InvalidEnvelope (1) reaches the client raw at the pinned version, as 31 at the current one.
      if (!query) return this.arq.finishMessage(op, this.courierInvalidEnvelopeCode);
      if ((query.kind === 'read') !== isRead) return this.arq.finishMessage(op, local.ErrorCode.InvalidRequest);
      if (isWrite) await this.processWrite(op, b, query);
      else await this.processRead(op, b, query);
    } catch (e) {
      if (signal.aborted || isAbort(e)) return;
      this.host.log(`start_resending_encrypted_message failed: ${(e as Error).stack ?? e}`);
      this.arq.finishMessage(op, local.ErrorCode.InternalError);
    }
  }

  private async processWrite(op: Op, b: RequestBody, query: NonNullable<ReturnType<EnvelopeCrypto['openQuery']>>): Promise<void> {
    const signal = op.abort.signal;
    const verdict = this.state.store.write(query.boxId, query.box!, this.timing.replicationLag());
    await this.transit(this.timing.roundTrip() / 2, signal);
    // The default write completes on the courier's ACK and cannot see a conflict (§2.3).
    if (!b.no_idempotent_box_already_exists) return this.arq.finishMessage(op, 0);
    await this.transit(this.timing.followUpGate() + this.timing.roundTrip(), signal);
    const sealed = EnvelopeCrypto.sealReply(query.replyKey, { code: verdict === 'conflict' ? 10 : 0, boxId: query.boxId, box: null });
    const reply = EnvelopeCrypto.openReply(b.envelope_descriptor, sealed);
    if (!reply) return this.arq.finishMessage(op, 22);
    this.arq.finishMessage(op, reply.code);
  }

  private async processRead(op: Op, b: RequestBody, query: NonNullable<ReturnType<EnvelopeCrypto['openQuery']>>): Promise<void> {
    const signal = op.abort.signal;
    const idx: Buffer | null = b.message_box_index;
    // Without the index the reply cannot be verified or decrypted (§10.8).
    if (!idx || idx.length !== 104) {
      await this.transit(this.timing.roundTrip() / 2, signal);
      return this.arq.finishMessage(op, 23);
    }
    // The courier's cache entry for this envelope: when it was made, and how many misses it re-dispatched.
    let cachedSince = Date.now();
    let redispatches = 0;
    for (;;) {
      // A read costs the courier ACK plus at least one more round trip for the payload.
      await this.transit(this.timing.roundTrip() / 2 + this.timing.followUpGate() + this.timing.roundTrip(), signal);
      if (this.courierDedupTtlMs > 0 && redispatches >= COURIER_MAX_REDISPATCHES) {
        // Every resend until the entry expires gets the cached "not found"; then the courier dispatches afresh.
        const expiresIn = cachedSince + this.courierDedupTtlMs - Date.now();
        if (expiresIn > 0) {
          this.host.log(`read: the courier answers from its cache for ${Math.round(expiresIn / 1000)} s more (box not found ${redispatches + 1} times)`);
          await sleep(expiresIn, signal);
        }
        cachedSince = Date.now();
        redispatches = 0;
      }
      const box = this.state.store.get(query.boxId);
      const sealed = EnvelopeCrypto.sealReply(query.replyKey, box ? { code: 0, boxId: query.boxId, box } : { code: 1, boxId: null, box: null });
      const reply = EnvelopeCrypto.openReply(b.envelope_descriptor, sealed);
      if (!reply) return this.arq.finishMessage(op, 22);
      if (reply.code === 1) {
        if (b.no_retry_on_box_id_not_found) return this.arq.finishMessage(op, 1);
        if (this.courierDedupTtlMs > 0) {
          // The daemon re-sends the same envelope; the courier re-dispatches it (counted above).
          redispatches++;
          continue;
        }
        // Default reads retry without limit; wake up when the box is written instead of polling blindly.
        await this.state.store.waitFor(query.boxId, signal);
        continue;
      }
      const expected = boxIdOf(b.read_cap.subarray(0, 32), idx);
      if (!reply.boxId || !expected.equals(reply.boxId) || !reply.box) return this.arq.finishMessage(op, 23);
      const opened = openBox(b.read_cap, idx, reply.box, reply.boxId);
      return this.arq.finishMessage(op, opened.code, opened.plaintext);
    }
  }

  // ---------------------------------------------------------------- copy command
  async runCopy(op: Op, b: RequestBody): Promise<void> {
    const signal = op.abort.signal;
    try {
      await this.transit(this.timing.sendQueue(), signal);
      if (!b.query_id || !b.write_cap) return this.arq.finishCopy(op, { code: local.ErrorCode.InvalidRequest, replicaErrorCode: 0, failedEnvelopeIndex: 0 });
      if (!this.host.hasDocument()) return this.arq.finishCopy(op, { code: local.ErrorCode.InternalError, replicaErrorCode: 0, failedEnvelopeIndex: 0 });
      const pinHash: Buffer | null = b.courier_identity_hash;
      const pinQueue: Buffer | null = b.courier_queue_id;
      if (pinHash && pinQueue && pinQueue.length > 0) {
        op.courier = this.courierList.find((c) => c.identityHash.equals(pinHash) && c.queueId.equals(pinQueue)) ?? null;
        if (!op.courier) {
          this.host.log('copy command pinned to a courier that is not in the PKI document');
          return this.arq.finishCopy(op, { code: local.ErrorCode.InternalError, replicaErrorCode: 0, failedEnvelopeIndex: 0 });
        }
      } else op.courier = this.randomCourier();
      const writeCap: Buffer = b.write_cap;
      const key = op.key;
      // The first answer is InProgress (or a cached verdict); then the daemon polls every CopyPollInterval.
      await this.transit(this.timing.roundTrip(), signal);
      const cached = this.state.copyVerdicts.get(key);
      if (cached && cached.expires > Date.now()) return this.arq.finishCopy(op, cached.verdict);
      const job = this.copyJob(key, writeCap);
      if (this.timing.copyPollMs === 0) {
        await abortable(job.promise, signal);
      } else {
        while (!job.result) {
          await this.transit(this.timing.copyPollMs, signal);
          await this.transit(this.timing.roundTrip(), signal);
        }
      }
      this.arq.finishCopy(op, job.result ?? (await job.promise));
    } catch (e) {
      if (signal.aborted || isAbort(e)) return;
      this.host.log(`copy command failed: ${(e as Error).stack ?? e}`);
      this.arq.finishCopy(op, { code: local.ErrorCode.InternalError, replicaErrorCode: 0, failedEnvelopeIndex: 0 });
    }
  }

  /** The courier's background job for one temp stream; shared by concurrent commands for the same cap. */
  private copyJob(key: string, writeCap: Buffer): CopyJob {
    const mixnet = this.state;
    const running = mixnet.copyJobs.get(key);
    if (running) return running;
    const job: CopyJob = { promise: Promise.resolve(null as unknown as CopyVerdict), result: null };
    job.promise = this.executeCopy(mixnet, writeCap).then(
      (v) => {
        job.result = v;
        mixnet.copyJobs.delete(key);
        const now = Date.now();
        for (const [k, cached] of mixnet.copyVerdicts) if (cached.expires <= now) mixnet.copyVerdicts.delete(k);
        mixnet.copyVerdicts.set(key, { verdict: v, expires: now + COPY_VERDICT_TTL_MS });
        return v;
      },
      (e) => {
        mixnet.copyJobs.delete(key);
        const v = { code: isAbort(e) ? 24 : local.ErrorCode.InternalError, replicaErrorCode: 0, failedEnvelopeIndex: 0 };
        job.result = v;
        return v;
      },
    );
    mixnet.copyJobs.set(key, job);
    return job;
  }

  /**
   * Read the temp stream from its first index, decode envelopes as they
   * complete, write each destination box; stop after the final element
   * (PIGEONHOLE §2.6). Earlier writes stay when a later one fails.
   */
  private async executeCopy(mixnet: MixnetState, writeCap: Buffer): Promise<CopyVerdict> {
    const signal = mixnet.abort.signal;
    const fail = (replicaErrorCode: number, failedEnvelopeIndex: number): CopyVerdict => ({ code: 26, replicaErrorCode, failedEnvelopeIndex });
    const rootPublic = writeCap.subarray(32, 64);
    const readCap = readCapOf(writeCap);
    let idx = firstIndexOfCap(writeCap);
    const decoder = new CopyStreamDecoder();
    let done = 0;
    // Only the realistic mode spends time on the courier's replica exchanges; the others add no timer hop.
    const replicaTrip = async () => {
      const ms = this.timing.courierReplicaTrip();
      if (ms > 0) await sleep(ms, signal);
    };
    while (!decoder.finished) {
      const boxId = boxIdOf(rootPublic, idx);
      await replicaTrip();
      let box = mixnet.store.get(boxId);
      // The courier's patience is the real one whatever the latency mode (PIGEONHOLE §2.6 step 3).
      const giveUpAt = Date.now() + this.courierPatienceMs;
      for (let attempt = 0; !box; attempt++) {
        const left = giveUpAt - Date.now();
        if (left <= 0) {
          this.host.log(`copy: temp box ${done + 1} still unreadable after ${attempt} retries over ${this.courierPatienceMs} ms; the copy fails`);
          return fail(1, done + 1);
        }
        if (attempt === 0) this.host.log(`copy: temp box ${done + 1} not readable yet; the courier retries for up to ${this.courierPatienceMs} ms`);
        await this.awaitBox(mixnet, boxId, Math.min(this.timing.copyReadRetryDelay(attempt), left), signal);
        box = mixnet.store.get(boxId);
      }
      const opened = openBox(readCap, idx, box, boxId);
      if (opened.code !== 0 || !opened.plaintext) return fail(opened.code === 11 ? 11 : 5, done + 1);
      let envelopes: Buffer[];
      try {
        envelopes = decoder.push(opened.plaintext);
      } catch {
        return fail(5, done + 1);
      }
      for (const env of envelopes) {
        const q = this.crypto.openQuery(env);
        if (!q || q.kind === 'read' || !q.box) return fail(5, done + 1);
        // Destination writes are ordinary writes: identical content is success, anything else aborts.
        await replicaTrip();
        if (mixnet.store.write(q.boxId, q.box, this.timing.replicationLag()) === 'conflict') return fail(10, done + 1);
        done++;
      }
      idx = nextIndex(idx);
    }
    return { code: 0, replicaErrorCode: 0, failedEnvelopeIndex: 0 };
  }

  /** Sleep until the next retry; in the shortened modes wake as soon as the box is written. */
  private async awaitBox(mixnet: MixnetState, boxId: Buffer, ms: number, signal: AbortSignal): Promise<void> {
    if (!this.timing.wakesOnWrite) return sleep(ms, signal);
    if (signal.aborted) throw signal.reason;
    const retry = pause(ms, signal);
    const written = new AbortController();
    mixnet.store.waitFor(boxId, written.signal).then(retry.wake, () => {});
    await retry.promise;
    written.abort();
    if (signal.aborted) throw signal.reason;
  }

  // ---------------------------------------------------------------- legacy send
  async runSend(s: Session, b: RequestBody): Promise<void> {
    const signal = s.abort.signal;
    try {
      await this.transit(this.timing.sendQueue(), signal);
      // Without a SURB nothing comes back, not even message_sent_event (§3.3).
      if (!b.with_surb) return;
      const payload: Buffer = b.payload ?? Buffer.alloc(0);
      const sentBody = (err: string | null, etaMs: number): Record<string, unknown> => {
        const body: Record<string, unknown> = {
          message_id: b.id,
          surbid: b.surbid,
          // Integers, never floats: cbor-x writes a JS number of 2^32 or more as float64, u64() avoids that.
          sent_at: u64(Math.floor(Date.now() / 1000)),
          reply_eta: u64(Math.round(etaMs * 1e6)),
        };
        if (err) body.err = err;
        return body;
      };
      const limit = this.sphinx.UserForwardPayloadLength;
      if (!this.host.hasDocument()) {
        this.host.deliver(s, this.host.frameOf('message_sent_event', sentBody('no PKI document yet: no route to the service', 0)));
        return;
      }
      if (payload.length > limit) {
        this.host.deliver(s, this.host.frameOf('message_sent_event', sentBody(`payload of ${payload.length} bytes exceeds the ${limit}-byte Sphinx payload`, 0)));
        return;
      }
      if (!b.surbid) {
        this.host.deliver(s, this.host.frameOf('message_sent_event', sentBody('with_surb is set but surbid is missing', 0)));
        return;
      }
      const rtt = this.timing.roundTrip();
      this.host.deliver(s, this.host.frameOf('message_sent_event', sentBody(null, Math.max(rtt, this.timing.replyEtaMs()))));
      const service = this.findService(b.destination_id_hash, b.recipient_queue_id);
      if (service !== 'echo' && service !== 'testdest') return;
      await this.transit(rtt, signal);
      // The echo services answer with the payload zero-padded to a full Sphinx payload (§10.4).
      const reply = Buffer.alloc(Math.max(this.sphinx.ForwardPayloadLength, payload.length));
      payload.copy(reply);
      this.host.deliver(s, this.host.frameOf('message_reply_event', { message_id: b.id, surbid: b.surbid, payload: reply, error_code: 0 }));
    } catch (e) {
      if (signal.aborted || isAbort(e)) return;
      this.host.log(`send_message failed: ${(e as Error).stack ?? e}`);
    }
  }

  private findService(destination: Buffer | null, queue: Buffer | null): string | null {
    if (!destination || !queue) return null;
    const node = this.network.serviceNodes.find((n) => n.identityHash.equals(destination));
    if (!node) return null;
    const endpoint = queue.toString('utf8');
    return Object.entries(SERVICE_ENDPOINTS).find(([, ep]) => ep === endpoint)?.[0] ?? null;
  }
}
