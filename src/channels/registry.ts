/**
 * One ChannelStore per database file per process, shared by reference count.
 *
 * Two stores on the same file would run two send workers for the same
 * channel; they would only re-send identical envelopes, but they would also
 * race on the read position. Node-RED can hold several channel config nodes
 * on one file (the default file is shared by all of them), and a redeploy
 * closes the old nodes while the new ones start, so an opener waits for a
 * previous close of the same file to finish before opening it again.
 */
import { resolve } from 'node:path';
import { ChannelStore } from './store';
import type { ChannelStoreOptions } from './types';

interface Entry {
  store: ChannelStore;
  refs: number;
}

const open = new Map<string, Entry>();
const closing = new Map<string, Promise<void>>();

export interface SharedStore {
  readonly store: ChannelStore;
  /** Drops this reference; the last one closes the store. Idempotent, never rejects. */
  release(): Promise<void>;
}

/**
 * Returns the process-wide store of `options.path` (resolved), opening it if
 * needed. Options other than the path apply only when this call opens it.
 */
export async function acquireSharedStore(options: ChannelStoreOptions): Promise<SharedStore> {
  const path = resolve(options.path);
  for (;;) {
    const pending = closing.get(path);
    if (!pending) break;
    await pending;
  }
  let entry = open.get(path);
  if (!entry || entry.store.isClosed) {
    entry = { store: new ChannelStore({ ...options, path }), refs: 0 };
    open.set(path, entry);
  }
  entry.refs++;
  const e = entry;
  let released = false;
  return {
    store: e.store,
    release: async () => {
      if (released) return;
      released = true;
      e.refs--;
      if (e.refs > 0 || open.get(path) !== e) return;
      open.delete(path);
      const done = e.store
        .close()
        .catch(() => undefined)
        .finally(() => {
          if (closing.get(path) === done) closing.delete(path);
        });
      closing.set(path, done);
      await done;
    },
  };
}
