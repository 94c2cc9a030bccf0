/**
 * katzenpost-encrypt-write: encrypts msg.payload for one box (local step, no
 * network). An empty payload makes a tombstone envelope.
 */
import { defineOperationNode, envelopeFromResult, SIZES } from './shared';
import type { NodeAPI, NodeDef } from './types';

export = function (RED: NodeAPI): void {
  defineOperationNode<NodeDef>(RED, {
    type: 'katzenpost-encrypt-write',
    credentials: { writeCap: { type: 'password' } },
    async run({ client, msg, buffer, key }) {
      const max = client.pigeonholeGeometry().MaxPlaintextPayloadLength;
      const payload = buffer('payload', {
        strings: 'utf8',
        max,
        maxReason: 'one Pigeonhole box; use katzenpost-copy for larger payloads',
      });
      const writeCap = key('writeCap', 'writeCap', SIZES.writeCap)!;
      const index = buffer('messageBoxIndex', { size: SIZES.messageBoxIndex });
      // A local request, called without an AbortSignal (one per message costs about as much as the rest of this
      // node): on timeout or close the frame completes the message itself, and the client's request timeout ends the call.
      const r = await client.encryptWrite(payload, writeCap, index);
      msg.envelope = envelopeFromResult(r, 'write');
      msg.nextMessageBoxIndex = r.nextMessageBoxIndex;
      return msg;
    },
  });
};
