/**
 * katzenpost-blocking-send: a legacy (Sphinx + SURB) request to a mixnet
 * service; the reply replaces msg.payload.
 */
import { defineOperationNode, destinationToMsg, resolveServiceDestination } from './shared';
import type { NodeAPI, NodeDef } from './types';

interface BlockingSendDef extends NodeDef {
  trim?: boolean;
  payloadAs?: 'buffer' | 'string';
}

/** Default reply timeout, as the reference bindings use. */
const DEFAULT_TIMEOUT_MS = 30_000;

export = function (RED: NodeAPI): void {
  defineOperationNode<BlockingSendDef>(RED, {
    type: 'katzenpost-blocking-send',
    defaultTimeoutMs: DEFAULT_TIMEOUT_MS,
    cancellable: true,
    async run(ctx) {
      const { client, msg, config, signal, buffer } = ctx;
      const max = client.sphinxGeometry().UserForwardPayloadLength;
      const payload = buffer('payload', { strings: 'utf8', max, maxReason: 'legacy message limit' });
      const dest = await resolveServiceDestination(ctx);
      const reply = await client.blockingSendMessage(payload, dest.idHash, dest.queueId, {
        timeoutMs: ctx.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        signal,
      });
      // Services such as echo pad their reply with zeros to the full packet size.
      const body = config.trim !== false && reply.length >= payload.length ? reply.subarray(0, payload.length) : reply;
      msg.payload = config.payloadAs === 'string' ? body.toString('utf8') : body;
      msg.destination = destinationToMsg(dest);
      return msg;
    },
  });
};
