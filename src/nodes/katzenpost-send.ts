/**
 * katzenpost-send: a legacy (Sphinx) message to a mixnet service.
 *
 * "with reply": sends with a SURB and emits the reply, when it arrives, as
 * the original message (same _msgid, topic and other properties) with
 * msg.payload replaced and msg.surbId set. "fire and forget": sends without
 * a SURB and passes the message on once the daemon accepted it.
 */
import { ThinClientTimeoutError, KatzenpostError } from '../client/errors';
import { defineOperationNode, destinationToMsg, formatMs, resolveServiceDestination } from './shared';
import type { DaemonEvent } from './shared';
import type { NodeAPI, NodeDef } from './types';

interface SendDef extends NodeDef {
  mode?: 'reply' | 'fire';
  trim?: boolean;
  payloadAs?: 'buffer' | 'string';
}

const DEFAULT_TIMEOUT_MS = 30_000;

interface Pending {
  resolve(reply: { payload: Buffer | null; errorCode: number }): void;
  reject(err: Error): void;
  sent?: { sentAt: Date | null; replyEtaMs: number };
}

export = function (RED: NodeAPI): void {
  defineOperationNode<SendDef>(RED, {
    type: 'katzenpost-send',
    cancellable: true,
    defaultTimeoutMs: (c) => (c.mode === 'fire' ? undefined : DEFAULT_TIMEOUT_MS),
    setup(node) {
      // Replies waiting, by SURB id (hex). Kept on the node so each node instance has its own.
      const pending = new Map<string, Pending>();
      (node as unknown as { pendingReplies: Map<string, Pending> }).pendingReplies = pending;
      return {
        onEvent(ev: DaemonEvent) {
          if (ev.type !== 'messageReply' && ev.type !== 'messageSent') return;
          const surbId = ev.surbId;
          if (!Buffer.isBuffer(surbId)) return;
          const p = pending.get(surbId.toString('hex'));
          if (!p) return;
          if (ev.type === 'messageSent') {
            if (typeof ev.err === 'string' && ev.err) {
              p.reject(new KatzenpostError('SEND_FAILED', `katzenpost-send: the daemon could not send the message: ${ev.err}`));
            } else {
              p.sent = { sentAt: (ev.sentAt as Date | null) ?? null, replyEtaMs: Number(ev.replyEtaMs ?? 0) };
            }
            return;
          }
          p.resolve({ payload: (ev.payload as Buffer | null) ?? null, errorCode: Number(ev.errorCode ?? 0) });
        },
        onClose() {
          pending.clear();
        },
      };
    },
    async run(ctx) {
      const { client, msg, config, signal, buffer, node } = ctx;
      const max = client.sphinxGeometry().UserForwardPayloadLength;
      const payload = buffer('payload', { strings: 'utf8', max, maxReason: 'legacy message limit' });
      const dest = await resolveServiceDestination(ctx);
      msg.destination = destinationToMsg(dest);

      if (config.mode === 'fire') {
        await client.sendMessageWithoutReply(payload, dest.idHash, dest.queueId);
        return msg;
      }

      const pending = (node as unknown as { pendingReplies: Map<string, Pending> }).pendingReplies;
      const surbId = client.newSurbId();
      const key = surbId.toString('hex');
      const timeoutMs = ctx.timeoutMs ?? DEFAULT_TIMEOUT_MS;
      let entry: Pending | undefined;
      // Registered before sending: on a fast daemon the reply can beat sendMessage's own reply.
      const replyPromise = new Promise<{ payload: Buffer | null; errorCode: number }>((resolve, reject) => {
        entry = { resolve, reject };
        pending.set(key, entry);
      });
      const onAbort = (): void => entry?.reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      signal.addEventListener('abort', onAbort, { once: true });
      // The frame's timer aborts with the same deadline; this one names what was missing.
      const timer = setTimeout(
        () => entry?.reject(new ThinClientTimeoutError(`katzenpost-send: no reply within ${formatMs(timeoutMs)}`)),
        timeoutMs,
      );
      try {
        await client.sendMessage(surbId, payload, dest.idHash, dest.queueId);
        const reply = await replyPromise;
        const full = reply.payload ?? Buffer.alloc(0);
        const body = config.trim !== false && full.length >= payload.length ? full.subarray(0, payload.length) : full;
        msg.payload = config.payloadAs === 'string' ? body.toString('utf8') : body;
        msg.surbId = surbId;
        msg.replyErrorCode = reply.errorCode;
        if (entry?.sent) {
          msg.sentAt = entry.sent.sentAt;
          msg.replyEtaMs = entry.sent.replyEtaMs;
        }
        return msg;
      } finally {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        pending.delete(key);
        // A rejected promise nobody awaits any more (sendMessage failed first) must not surface as unhandled.
        replyPromise.catch(() => undefined);
      }
    },
  });
};
