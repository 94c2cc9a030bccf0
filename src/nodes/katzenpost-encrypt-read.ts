/**
 * katzenpost-encrypt-read: prepares a read of one box (local step, no
 * network). Make a fresh one for every attempt; never resend an old one to poll.
 */
import { defineOperationNode, envelopeFromResult, SIZES } from './shared';
import type { NodeAPI, NodeDef } from './types';

export = function (RED: NodeAPI): void {
  defineOperationNode<NodeDef>(RED, {
    type: 'katzenpost-encrypt-read',
    credentials: { readCap: { type: 'password' } },
    async run({ client, msg, buffer, key }) {
      const readCap = key('readCap', 'readCap', SIZES.readCap)!;
      const index = buffer('messageBoxIndex', { size: SIZES.messageBoxIndex });
      // A local request: no signal, as in katzenpost-encrypt-write.
      const r = await client.encryptRead(readCap, index);
      msg.envelope = envelopeFromResult(r, 'read');
      msg.nextMessageBoxIndex = r.nextMessageBoxIndex;
      return msg;
    },
  });
};
