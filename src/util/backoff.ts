/**
 * Exponential backoff with jitter: the one schedule every retry and poll
 * loop in the package uses (client reconnect, channel polling and retries).
 */

/** Delays that start at `initialMs`, double after each use, stop at `maxMs`, each ±`jitter`. */
export class Backoff {
  private current: number;
  private used = 0;

  constructor(
    private readonly initialMs: number,
    private readonly maxMs: number,
    /** Fraction of spread, 0.2 = ±20 %, so many clients or channels do not retry in lockstep. */
    private readonly jitter = 0.2,
  ) {
    this.current = Math.max(0, initialMs);
  }

  /** The next delay in ms (never above maxMs), and double the one after. */
  next(): number {
    const base = this.current;
    this.current = Math.min(this.current * 2, this.maxMs);
    this.used++;
    const spread = 1 - this.jitter + Math.random() * 2 * this.jitter;
    return Math.min(this.maxMs, Math.round(base * spread));
  }

  /** How many delays were handed out since the last reset. */
  get attempts(): number {
    return this.used;
  }

  /** Start again from the initial delay (after a success). */
  reset(): void {
    this.current = Math.max(0, this.initialMs);
    this.used = 0;
  }
}
