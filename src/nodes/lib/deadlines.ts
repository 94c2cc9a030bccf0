/**
 * The deadlines of one node's running operations, kept by a single timer.
 *
 * Arming and clearing a Node.js timer for every message costs more than the
 * bookkeeping of a fast local request, and nearly every deadline is cancelled
 * long before it is due. Here a deadline is an entry in a set; the one timer
 * is armed for the earliest entry, and re-armed only when an earlier one
 * arrives or when it fires (then for the earliest left). Cancelling leaves
 * the timer alone: when it fires with nothing due it simply re-arms or stops.
 */

export interface Deadline {
  /** When it is due (performance.now() ms). */
  readonly at: number;
  readonly fire: () => void;
}

/** setTimeout's largest delay; a longer one would fire at once (TimeoutOverflowWarning). */
const MAX_DELAY_MS = 2 ** 31 - 1;

export class DeadlineSweep {
  private readonly pending = new Set<Deadline>();
  private timer: NodeJS.Timeout | null = null;
  /** When the armed timer fires (Infinity: none armed). */
  private timerAt = Infinity;

  /** Calls `fire` once, `ms` from now, unless cancelled first. */
  add(ms: number, fire: () => void): Deadline {
    const d: Deadline = { at: performance.now() + ms, fire };
    this.pending.add(d);
    if (d.at < this.timerAt) this.arm(d.at);
    return d;
  }

  cancel(d: Deadline): void {
    this.pending.delete(d);
  }

  /** Drops every deadline (the node is closing). */
  clear(): void {
    this.pending.clear();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
  }

  private arm(at: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => this.sweep(), Math.min(MAX_DELAY_MS, Math.max(0, Math.ceil(at - performance.now()))));
    // Running operations keep the process busy by themselves; a timer left armed after they ended must not.
    this.timer.unref?.();
  }

  private sweep(): void {
    this.timer = null;
    this.timerAt = Infinity;
    const now = performance.now();
    const due: Deadline[] = [];
    let next = Infinity;
    for (const d of this.pending) {
      if (d.at <= now) due.push(d);
      else if (d.at < next) next = d.at;
    }
    for (const d of due) this.pending.delete(d);
    if (next < Infinity) this.arm(next);
    for (const d of due) d.fire();
  }
}
