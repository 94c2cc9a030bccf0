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
  /** Back-off before retry `attempt` (0-based) of a temp-stream box the courier cannot read; null = give up. */
  copyReadRetryDelay(attempt: number): number | null;
  /** The reply_eta announced in message_sent_event (ms). */
  replyEtaMs(): number;
}

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
        copyReadRetryDelay: (a) => (a < 3 ? 1 : null),
        replyEtaMs: () => 0,
      };
    case 'fast':
      return {
        mode,
        sendQueue: () => uniform(0, 2),
        roundTrip: () => uniform(2, 6),
        replicationLag: () => 0,
        copyPollMs: 5,
        copyReadRetryDelay: (a) => (a < 8 ? 10 + 10 * a : null),
        replyEtaMs: () => 5,
      };
    case 'realistic':
      return {
        mode,
        // λP = 0.001/ms: up to a second of queueing per packet.
        sendQueue: () => expCapped(1000, 1000),
        // 9 delayed hops per round trip (5 forward, 4 on the SURB path), plus courier-replica ticks.
        roundTrip: () => {
          let t = 0;
          for (let i = 0; i < 9; i++) t += expCapped(200, 1000);
          return t + expCapped(200, 1000) + uniform(0, 50);
        },
        replicationLag: () => uniform(200, 2000),
        copyPollMs: 5000,
        // ≈8 tries per shard replica with back-off 0.5 s → 10 s, two shards: about a minute and more.
        copyReadRetryDelay: (a) => (a < 16 ? Math.min(10_000, 500 * 2 ** (a % 8)) : null),
        replyEtaMs: () => 2500,
      };
  }
}
