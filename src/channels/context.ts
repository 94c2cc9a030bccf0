/**
 * What the sender and the receiver borrow from the ChannelStore that owns
 * them: its database, the client of each channel, its retry settings, and
 * its events. The store builds one context and hands it to both.
 */
import type { ChannelDb } from './db';
import type {
  ChannelClient,
  ChannelProblem,
  ChannelProgress,
  ChannelStoreLogger,
  SendResult,
} from './types';

export interface ChannelContext {
  readonly db: ChannelDb;
  readonly logger: ChannelStoreLogger | undefined;
  /** First and longest delay between polls of a box that does not exist yet. */
  readonly pollInitialMs: number;
  readonly pollMaxMs: number;
  /** First and longest delay before retrying a failed write or read. */
  readonly retryInitialMs: number;
  readonly retryMaxMs: number;
  /** Keep message payloads in the received log after they were marked read. */
  readonly retainPayloads: boolean;
  /** True once the store finished closing (its database is closed). */
  isClosed(): boolean;
  /** The thin client of the channel, or null while none is attached. */
  clientFor(name: string): ChannelClient | null;
  /** Emits 'progress'. */
  progress(p: ChannelProgress): void;
  /** Logs and emits 'problem': something failed and is retried in `retryInMs`. */
  problem(channel: string, operation: ChannelProblem['operation'], error: Error, retryInMs: number): void;
  /** Emits 'sent'. */
  sent(result: SendResult): void;
  /** Emits 'queue' with the channel's current queue length. */
  queueChanged(channel: { id: number; name: string }): void;
}
