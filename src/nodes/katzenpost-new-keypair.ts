/**
 * katzenpost-new-keypair: a fresh Pigeonhole channel (write cap, read cap,
 * first index) from a random seed or a 32-byte seed in msg.payload.
 */
import { randomBytes } from 'node:crypto';
import { defineOperationNode, SIZES } from './shared';
import type { NodeAPI, NodeDef } from './types';

interface KeypairDef extends NodeDef {
  seedFrom?: 'random' | 'payload';
  outputSeed?: boolean;
}

export = function (RED: NodeAPI): void {
  defineOperationNode<KeypairDef>(RED, {
    type: 'katzenpost-new-keypair',
    async run({ client, msg, config, buffer, callOptions }) {
      let seed: Buffer;
      if (config.seedFrom === 'payload') {
        seed = buffer('payload', { size: SIZES.seed });
        // The seed is as secret as the write cap: do not let it travel on to an encrypt node as plaintext.
        delete msg.payload;
      } else {
        seed = randomBytes(SIZES.seed);
      }
      const kp = await client.newKeypair(seed, callOptions());
      msg.writeCap = kp.writeCap;
      msg.readCap = kp.readCap;
      msg.messageBoxIndex = kp.firstMessageIndex;
      msg.firstMessageIndex = Buffer.from(kp.firstMessageIndex);
      if (config.outputSeed === true) msg.seed = Buffer.from(seed);
      return msg;
    },
  });
};
