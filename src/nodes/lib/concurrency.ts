/**
 * Running several client calls at once with a cap, stopping the rest at the
 * first failure.
 */
import { OperationCancelledError } from '../../client/errors';
import { abortReason } from '../../util/deadline';

const cancelled = (): Error => new OperationCancelledError();

/**
 * Runs `tasks` with at most `limit` in flight. Each task gets a signal that
 * aborts when `signal` does or when another task failed; the first failure
 * is rethrown after every started task settled (no stray rejections).
 * Returns how many tasks succeeded before the end.
 */
export async function runAllOrAbort(
  tasks: ((signal: AbortSignal) => Promise<unknown>)[],
  limit: number,
  signal: AbortSignal,
): Promise<number> {
  const inner = new AbortController();
  const onOuterAbort = (): void => inner.abort(abortReason(signal, cancelled));
  if (signal.aborted) onOuterAbort();
  else signal.addEventListener('abort', onOuterAbort, { once: true });
  let next = 0;
  let succeeded = 0;
  let firstError: unknown = null;
  const worker = async (): Promise<void> => {
    while (next < tasks.length && !inner.signal.aborted) {
      const task = tasks[next++];
      try {
        await task(inner.signal);
        succeeded++;
      } catch (e) {
        if (firstError === null) firstError = e;
        inner.abort(e instanceof Error ? e : new Error(String(e)));
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, tasks.length)) }, worker));
  } finally {
    signal.removeEventListener('abort', onOuterAbort);
  }
  if (firstError !== null) throw firstError;
  if (signal.aborted) throw abortReason(signal, cancelled);
  return succeeded;
}
