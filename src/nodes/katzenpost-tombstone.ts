/**
 * katzenpost-tombstone: deletes a range of boxes. Builds the tombstone
 * envelopes (tombstone_range) and dispatches each with the default write.
 */
import { defineOperationNode, SIZES, toInteger } from './shared';
import { runAllOrAbort } from './lib/concurrency';
import { resendWrite } from './lib/pigeonhole';
import type { NodeAPI, NodeDef } from './types';

/** Upper bound on one message's range: each box is one ARQ round trip. */
const MAX_COUNT = 1000;
/** ARQ operations in flight at once. */
const CONCURRENCY = 8;

export = function (RED: NodeAPI): void {
  defineOperationNode<NodeDef>(RED, {
    type: 'katzenpost-tombstone',
    credentials: { writeCap: { type: 'password' } },
    cancellable: true,
    async run({ client, msg, buffer, key, setting, addCancelKey, signal, callOptions }) {
      const writeCap = key('writeCap', 'writeCap', SIZES.writeCap)!;
      const start = buffer('messageBoxIndex', { size: SIZES.messageBoxIndex });
      const c = await setting('count', 'count', 'katzenpost-tombstone count');
      const count = c.value === undefined || c.value === null || c.value === '' ? 1 : toInteger(c.value, c.name, 1, MAX_COUNT);
      const { envelopes, next } = await client.tombstoneRange(writeCap, start, count, callOptions());
      for (const e of envelopes) addCancelKey(e.envelopeHash);
      // Counted as each box is done, so a Catch node sees how far a failed range got.
      let done = 0;
      msg.tombstoned = done;
      await runAllOrAbort(
        envelopes.map((e) => async (s: AbortSignal) => {
          await resendWrite(client, writeCap, e, s);
          msg.tombstoned = ++done;
        }),
        CONCURRENCY,
        signal,
      );
      msg.nextMessageBoxIndex = next;
      return msg;
    },
  });
};
