/** The shared backoff schedule and the signal-bound timers of src/util. */
import { strict as assert } from 'node:assert';

import { Backoff } from '../../src/util/backoff';
import { abortable, abortReason, pause, sleep, withDeadline } from '../../src/util/deadline';
import { DeadlineSweep, type Deadline } from '../../src/util/deadline-sweep';

describe('util: Backoff', () => {
  it('doubles from the initial delay up to the cap, each within ±jitter, and resets', () => {
    const b = new Backoff(100, 1000, 0.2);
    const bases = [100, 200, 400, 800, 1000, 1000];
    for (const base of bases) {
      const d = b.next();
      assert.ok(d >= Math.round(base * 0.8) && d <= Math.min(1000, Math.round(base * 1.2)), `${d} around ${base}`);
    }
    assert.equal(b.attempts, 6);
    b.reset();
    assert.equal(b.attempts, 0);
    const d = b.next();
    assert.ok(d >= 80 && d <= 120, String(d));
  });

  it('without jitter gives the exact schedule', () => {
    const b = new Backoff(1, 5, 0);
    assert.deepEqual([b.next(), b.next(), b.next(), b.next()], [1, 2, 4, 5]);
  });
});

describe('util: deadlines', () => {
  it('pause resolves on time, on wake, and at once on abort', async () => {
    let t = Date.now();
    await pause(30).promise;
    assert.ok(Date.now() - t >= 25);
    const p = pause(10_000);
    t = Date.now();
    p.wake();
    await p.promise;
    const ac = new AbortController();
    const q = pause(10_000, ac.signal);
    ac.abort();
    await q.promise;
    assert.ok(Date.now() - t < 1000);
  });

  it('sleep rejects with the abort reason', async () => {
    const ac = new AbortController();
    const s = sleep(10_000, ac.signal);
    ac.abort(new Error('stop now'));
    await assert.rejects(s, /stop now/);
    await assert.rejects(sleep(1, ac.signal), /stop now/);
  });

  it('abortable gives up on abort and passes results and errors through', async () => {
    assert.equal(await abortable(Promise.resolve(7), new AbortController().signal), 7);
    await assert.rejects(abortable(Promise.reject(new Error('inner')), new AbortController().signal), /inner/);
    const ac = new AbortController();
    const never = abortable(new Promise(() => {}), ac.signal);
    ac.abort();
    await assert.rejects(never, (e: Error) => e.name === 'AbortError');
  });

  it('withDeadline times out with the given error and aborts the task signal; an outer abort wins too', async () => {
    let seen: AbortSignal | null = null;
    await assert.rejects(
      withDeadline(20, () => new Error('too slow'), (signal) => {
        seen = signal;
        return new Promise(() => {});
      }),
      /too slow/,
    );
    assert.equal(seen!.aborted, true);
    const ac = new AbortController();
    const run = withDeadline(10_000, () => new Error('never'), () => new Promise(() => {}), ac.signal);
    ac.abort(new Error('caller gave up'));
    await assert.rejects(run, /caller gave up/);
    assert.equal(await withDeadline(Infinity, () => new Error('x'), async () => 'done'), 'done');
  });

  it('abortReason uses the fallback when the reason is not an Error', () => {
    const ac = new AbortController();
    ac.abort('plain string');
    assert.equal(abortReason(ac.signal, () => new RangeError('fallback')).name, 'RangeError');
    assert.equal(abortReason(undefined).name, 'AbortError');
  });
});

describe('util: DeadlineSweep', () => {
  /** A deadline entry that records its name when it fires. */
  const entry = (fired: string[], name: string): Deadline => ({ deadlineAt: 0, onDeadline: () => void fired.push(name) });
  /** Whether the sweep's one timer would keep the process alive (private state, read for this test only). */
  const timerKeepsProcessAlive = (sweep: DeadlineSweep): boolean | null => {
    const timer = (sweep as unknown as { timer: NodeJS.Timeout | null }).timer;
    return timer === null ? null : timer.hasRef();
  };

  it('fires each deadline once, in time order, and never a cancelled one', async () => {
    const sweep = new DeadlineSweep();
    const fired: string[] = [];
    sweep.add(entry(fired, 'late'), 120);
    const cancelled = entry(fired, 'cancelled');
    sweep.add(cancelled, 30);
    sweep.add(entry(fired, 'early'), 60); // later than the armed timer: no re-arm needed
    sweep.add(entry(fired, 'earliest'), 10); // earlier: re-arms
    sweep.cancel(cancelled);
    await sleep(40);
    assert.deepEqual(fired, ['earliest']);
    await sleep(150);
    assert.deepEqual(fired, ['earliest', 'early', 'late']);
  });

  it('keeps one timer: unreferenced while idle, referenced again by the next add', () => {
    const sweep = new DeadlineSweep();
    const fired: string[] = [];
    const a = entry(fired, 'a');
    sweep.add(a, 60_000);
    const armed = (sweep as unknown as { timer: NodeJS.Timeout }).timer;
    assert.equal(timerKeepsProcessAlive(sweep), true);
    sweep.cancel(a);
    assert.equal(timerKeepsProcessAlive(sweep), false, 'an idle sweep must not keep the process alive');
    const b = entry(fired, 'b');
    sweep.add(b, 60_000);
    assert.equal((sweep as unknown as { timer: NodeJS.Timeout }).timer, armed, 'the same timer is reused');
    assert.equal(timerKeepsProcessAlive(sweep), true);
    sweep.clear();
    assert.equal(timerKeepsProcessAlive(sweep), null);
    assert.deepEqual(fired, []);
  });

  it('a deadline cancelled by an earlier one in the same sweep does not fire', async () => {
    const sweep = new DeadlineSweep();
    const fired: string[] = [];
    const second = entry(fired, 'second');
    sweep.add({ deadlineAt: 0, onDeadline: () => (fired.push('first'), sweep.cancel(second)) }, 5);
    sweep.add(second, 6);
    await sleep(40);
    assert.deepEqual(fired, ['first']);
  });

  it('clear() drops every deadline', async () => {
    const sweep = new DeadlineSweep();
    const fired: string[] = [];
    sweep.add(entry(fired, 'a'), 10);
    sweep.add(entry(fired, 'b'), 20);
    sweep.clear();
    await sleep(50);
    assert.deepEqual(fired, []);
  });

  it('a deadline beyond the longest timer delay waits instead of firing at once', async () => {
    const sweep = new DeadlineSweep();
    const fired: string[] = [];
    sweep.add(entry(fired, 'far'), 2 ** 32);
    await sleep(20);
    assert.deepEqual(fired, []);
    sweep.clear();
  });
});
