/**
 * Timers tied to an AbortSignal, with their cleanup: the one place the
 * package writes "a timer, an abort listener, and remove both when done".
 */

/**
 * The signal's reason when it is an Error, else `fallback()` (an AbortError
 * by default); the client passes its own OperationCancelledError.
 */
export function abortReason(signal: AbortSignal | undefined, fallback: () => Error = abortError): Error {
  const r: unknown = signal?.reason;
  return r instanceof Error ? r : fallback();
}

function abortError(): Error {
  const e = new Error('aborted');
  e.name = 'AbortError';
  return e;
}

/**
 * Resolves after `ms`, or at once when `signal` aborts or `wake()` is called.
 * Never rejects: callers look at the signal themselves.
 */
export function pause(ms: number, signal?: AbortSignal): { promise: Promise<void>; wake: () => void } {
  let wake: () => void = () => {};
  const promise = new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    signal?.addEventListener('abort', done, { once: true });
    wake = done;
  });
  return { promise, wake };
}

/** Sleeps `ms`; rejects with the signal's reason if it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal));
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortReason(signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, Math.max(0, ms));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Awaits `p`, giving up with the signal's reason when it aborts first (p itself goes on). */
export function abortable<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(abortReason(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(abortReason(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

/**
 * Runs `task` with a signal that aborts when `signal` does or when `ms`
 * passes (with `onTimeout()` as its reason, which the returned promise then
 * rejects with). Timer and listener are removed however it ends.
 * `ms` of Infinity (or <= 0) means no deadline.
 */
export async function withDeadline<T>(
  ms: number,
  onTimeout: () => Error,
  task: (signal: AbortSignal) => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  const inner = new AbortController();
  const onOuterAbort = (): void => inner.abort(abortReason(signal));
  if (signal?.aborted) onOuterAbort();
  else signal?.addEventListener('abort', onOuterAbort, { once: true });
  const timer = Number.isFinite(ms) && ms > 0 ? setTimeout(() => inner.abort(onTimeout()), ms) : null;
  try {
    return await abortable(task(inner.signal), inner.signal);
  } finally {
    if (timer) clearTimeout(timer);
    signal?.removeEventListener('abort', onOuterAbort);
  }
}
