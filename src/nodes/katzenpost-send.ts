/**
 * katzenpost-send: a legacy (Sphinx) message to a mixnet service.
 *
 * "with reply": sends with a SURB and emits the reply, when it arrives, as
 * the original message (same _msgid, topic and other properties) with
 * msg.payload replaced and msg.surbId set. "fire and forget": sends without
 * a SURB and passes the message on once the daemon accepted it.
 */
import { defineOperationNode, destinationToMsg, resolveServiceDestination } from './shared';
import type { NodeAPI, NodeDef } from './types';

interface SendDef extends NodeDef {
  mode?: 'reply' | 'fire';
  trim?: boolean;
  payloadAs?: 'buffer' | 'string';
}

const DEFAULT_TIMEOUT_MS = 30_000;

export = function (RED: NodeAPI): void {
  defineOperationNode<SendDef>(RED, {
    type: 'katzenpost-send',
    cancellable: true,
    defaultTimeoutMs: (c) => (c.mode === 'fire' ? undefined : DEFAULT_TIMEOUT_MS),
    async run(ctx) {
      const { client, msg, config, signal, buffer } = ctx;
      const max = client.sphinxGeometry().UserForwardPayloadLength;
      const payload = buffer('payload', { strings: 'utf8', max, maxReason: 'legacy message limit' });
      const dest = await resolveServiceDestination(ctx);
      msg.destination = destinationToMsg(dest);

      if (config.mode === 'fire') {
        await client.sendMessageWithoutReply(payload, dest.idHash, dest.queueId);
        return msg;
      }

      // The client waits for the reply on a fresh SURB; the frame's timer aborts `signal` with the same deadline.
      const reply = await client.sendMessageAwaitingReply(payload, dest.idHash, dest.queueId, {
        timeoutMs: ctx.timeoutMs ?? DEFAULT_TIMEOUT_MS,
        signal,
      });
      // Services such as echo pad their reply with zeros to the full packet size.
      const full = reply.payload;
      const body = config.trim !== false && full.length >= payload.length ? full.subarray(0, payload.length) : full;
      msg.payload = config.payloadAs === 'string' ? body.toString('utf8') : body;
      msg.surbId = reply.surbId;
      msg.replyErrorCode = reply.errorCode;
      if (reply.replyEtaMs !== null) {
        msg.sentAt = reply.sentAt;
        msg.replyEtaMs = reply.replyEtaMs;
      }
      return msg;
    },
  });
};
