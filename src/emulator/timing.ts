/**
 * Latency model (PIGEONHOLE.md §2.7). 'instant' and 'fast' are for tests;
 * 'realistic' samples the docker network's mix delays, Poisson send
 * queueing and replication lag, so ARQ operations take seconds.
 */
export type LatencyMode = 'instant' | 'fast' | 'realistic';

export const LATENCY_MODES: readonly LatencyMode[] = ['instant', 'fast', 'realistic'];

export interface Timing {
  readonly mode: LatencyMode;
  /** Poisson send-queue wait before a mixnet-bound request leaves (ms). */
  sendQueue(): number;
  /** One mixnet round trip (ms). */
  roundTrip(): number;
  /** Delay between a write's acknowledgement and the box becoming readable (ms). */
  replicationLag(): number;
  /** Interval between the daemon's copy-status polls (ms). */
  readonly copyPollMs: number;
  /**
   * Back-off before retry `attempt` (0-based) of a temp-stream box the
   * courier cannot read yet. How long it keeps trying in all is not a matter
   * of latency: see COURIER_PATIENCE_MS.
   */
  copyReadRetryDelay(attempt: number): number;
  /**
   * Whether the emulated courier notices a temp-stream box the moment it is
   * written, instead of only at its next retry (shortened round trips).
   */
  readonly wakesOnWrite: boolean;
  /**
   * Wait before the daemon's follow-up poll of a read or of a write that
   * must report BoxAlreadyExists: v0.0.99 gates these polls on its Poisson
   * send schedule (PROTOCOL.md §9.6), which dominates a real read (ms).
   */
  followUpGate(): number;
  /** One courier ↔ replica exchange while executing a copy command: per temp box read and per destination write (ms). */
  courierReplicaTrip(): number;
  /** The reply_eta announced in message_sent_event (ms). */
  replyEtaMs(): number;
}

/**
 * The real courier's back-off for one shard replica when it cannot read a
 * temp-stream box: ≈8 tries, from 0.5 s up to 10 s (PIGEONHOLE.md §2.6,
 * processing step 3). After one shard it tries the other.
 */
const COURIER_SHARD_BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000] as const;

/**
 * How long the courier keeps trying to read a temp-stream box that is not
 * there (yet) before it fails the copy with replica code 1: both shards'
 * back-off, 91 s ("about a minute or more", PIGEONHOLE.md §2.6). The same
 * in every latency mode: a faster mode shortens round trips, not the
 * courier's patience, so a copy command may be sent before its temp stream
 * is written, as with a real mixnet. (EmulatorOptions.courierPatienceMs
 * changes it explicitly, for tests of the failure itself.)
 */
/** The real courier keeps a reply per envelope hash this long (courier/server/plugin.go DedupCacheTTL). */
export const COURIER_DEDUP_TTL_MS = 5 * 60_000;

/** Re-dispatches to the replicas of a cached envelope whose replies were all errors (maxRedispatchAttempts). */
export const COURIER_MAX_REDISPATCHES = 5;

export const COURIER_PATIENCE_MS = 2 * COURIER_SHARD_BACKOFF_MS.reduce((a, b) => a + b, 0);

function uniform(lo: number, hi: number): number {
  return lo + Math.random() * (hi - lo);
}

/** Exponential with the given mean, capped (μ = 0.005/ms → mean 200 ms, capped at 1000 ms). */
function expCapped(mean: number, cap: number): number {
  return Math.min(cap, -Math.log(1 - Math.random()) * mean);
}

export function createTiming(mode: LatencyMode): Timing {
  switch (mode) {
    case 'instant':
      return {
        mode,
        sendQueue: () => 0,
        roundTrip: () => 0,
        replicationLag: () => 0,
        copyPollMs: 0,
        wakesOnWrite: true,
        // A fallback only: the courier wakes as soon as the box is written.
        copyReadRetryDelay: () => 100,
        followUpGate: () => 0,
        courierReplicaTrip: () => 0,
        replyEtaMs: () => 0,
      };
    case 'fast':
      return {
        mode,
        sendQueue: () => uniform(0, 2),
        roundTrip: () => uniform(2, 6),
        replicationLag: () => 0,
        copyPollMs: 5,
        wakesOnWrite: true,
        copyReadRetryDelay: (a) => Math.min(80, 10 + 10 * a),
        followUpGate: () => uniform(0, 4),
        courierReplicaTrip: () => 0,
        replyEtaMs: () => 5,
      };
    case 'realistic':
      // Calibrated on the local v0.0.99 network of `npm run mixnet` (medians,
      // README "The emulator and its limits"): echo and a default write about
      // 1.5 s, a read about 8 s, a BoxAlreadyExists write about 8 s, a
      // two-element copy about 25 s.
      return {
        mode,
        // The send slot: most packets leave within a few hundred ms.
        sendQueue: () => expCapped(300, 1000),
        // 9 delayed hops per round trip (5 forward, 4 on the SURB path), about a second in all.
        roundTrip: () => {
          let t = 0;
          for (let i = 0; i < 9; i++) t += expCapped(110, 1000);
          return t + uniform(0, 50);
        },
        replicationLag: () => uniform(200, 2000),
        copyPollMs: 6000,
        wakesOnWrite: false,
        // ≈8 tries per shard replica with back-off 0.5 s → 10 s, then the other shard.
        copyReadRetryDelay: (a) => COURIER_SHARD_BACKOFF_MS[a % COURIER_SHARD_BACKOFF_MS.length],
        followUpGate: () => uniform(4000, 7000),
        courierReplicaTrip: () => uniform(3000, 5000),
        replyEtaMs: () => 2500,
      };
  }
}
