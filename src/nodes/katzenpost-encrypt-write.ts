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
    async run({ client, msg, buffer, key, callOptions }) {
      const max = client.pigeonholeGeometry().MaxPlaintextPayloadLength;
      const payload = buffer('payload', {
        strings: 'utf8',
        max,
        maxReason: 'one Pigeonhole box; use katzenpost-copy for larger payloads',
      });
      const writeCap = key('writeCap', 'writeCap', SIZES.writeCap)!;
      const index = buffer('messageBoxIndex', { size: SIZES.messageBoxIndex });
      const r = await client.encryptWrite(payload, writeCap, index, callOptions());
      msg.envelope = envelopeFromResult(r, 'write');
      msg.nextMessageBoxIndex = r.nextMessageBoxIndex;
      return msg;
    },
  });
};
