/**
 * katzenpost-index: index arithmetic on msg.messageBoxIndex (local, no
 * network): advance it, or read its counter as a decimal string.
 */
import { defineOperationNode, SIZES, toInteger } from './shared';
import type { NodeAPI, NodeDef } from './types';

interface IndexDef extends NodeDef {
  mode?: 'next' | 'counter';
  steps?: string | number;
}

export = function (RED: NodeAPI): void {
  defineOperationNode<IndexDef>(RED, {
    type: 'katzenpost-index',
    async run({ client, msg, config, buffer, callOptions }) {
      let index = buffer('messageBoxIndex', { size: SIZES.messageBoxIndex });
      if (config.mode === 'counter') {
        const counter = await client.getMessageBoxIndexCounter(index, callOptions());
        // A u64 does not fit a JSON number; a decimal string survives debug, context and JSON alike.
        msg.counter = counter.toString();
        return msg;
      }
      const steps =
        config.steps === undefined || config.steps === '' ? 1 : toInteger(config.steps, 'katzenpost-index steps', 1, 10000);
      for (let i = 0; i < steps; i++) index = await client.nextMessageBoxIndex(index, callOptions());
      msg.messageBoxIndex = index;
      return msg;
    },
  });
};
