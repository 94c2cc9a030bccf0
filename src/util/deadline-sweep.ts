/**
 * Many deadlines under one timer: the client's request table and each
 * Node-RED operation node keep their calls' deadlines here, instead of
 * arming and clearing a Node.js timer per call (which costs more than the
 * bookkeeping of a fast local request, and nearly every deadline is
 * cancelled long before it is due).
 *
 * add() and cancel() are O(1) (a Set) and touch the timer only when a
 * deadline earlier than it arrives. When the last live deadline goes, the
 * timer stays armed but unreferenced (an idle owner keeps no process
 * alive), and the next add() references it again instead of arming a new
 * one. Only a timer firing walks the live deadlines, firing the due ones in
 * time order and re-arming for the next (a timer earlier than every live
 * deadline costs one early wake-up, nothing more). A deadline fires no
 * earlier than `ms` after add(), like setTimeout.
 */

/** An entry of a DeadlineSweep: when it is due (set by add), and what to do then. */
export interface Deadline {
  /** performance.now() when it is due. */
  deadlineAt: number;
  onDeadline(): void;
}

/** setTimeout's largest delay; a longer one would fire after 1 ms (TimeoutOverflowWarning). */
const MAX_TIMER_MS = 0x7fffffff;

export class DeadlineSweep {
  private readonly live = new Set<Deadline>();
  private timer: NodeJS.Timeout | null = null;
  /** When the armed timer fires (Infinity: none armed). */
  private timerAt = Infinity;
  private timerRefed = false;

  /** Calls d.onDeadline() once, `ms` from now, unless cancelled first. Adding a live entry again moves its deadline. */
  add(d: Deadline, ms: number): void {
    d.deadlineAt = performance.now() + ms;
    this.live.add(d);
    if (d.deadlineAt < this.timerAt) this.arm(d.deadlineAt);
    else if (!this.timerRefed) {
      this.timer!.ref();
      this.timerRefed = true;
    }
  }

  cancel(d: Deadline): void {
    if (this.live.delete(d) && this.live.size === 0 && this.timerRefed) {
      this.timer!.unref();
      this.timerRefed = false;
    }
  }

  /** Drops every deadline and the timer (the owner is closing). */
  clear(): void {
    this.live.clear();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.timerAt = Infinity;
    this.timerRefed = false;
  }

  private arm(at: number): void {
    if (this.timer) clearTimeout(this.timer);
    const wait = Math.min(MAX_TIMER_MS, Math.max(1, Math.ceil(at - performance.now())));
    this.timerAt = at;
    this.timer = setTimeout(() => this.sweep(), wait);
    this.timerRefed = true;
  }

  private sweep(): void {
    this.timer = null;
    this.timerAt = Infinity;
    this.timerRefed = false;
    const now = performance.now();
    const due: Deadline[] = [];
    for (const d of this.live) if (d.deadlineAt <= now) due.push(d);
    due.sort((a, b) => a.deadlineAt - b.deadlineAt);
    for (const d of due) {
      // An earlier callback may have cancelled this one.
      if (!this.live.delete(d)) continue;
      d.onDeadline();
    }
    let next = Infinity;
    for (const d of this.live) if (d.deadlineAt < next) next = d.deadlineAt;
    if (next < this.timerAt) this.arm(next);
  }
}
