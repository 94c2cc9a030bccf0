/**
 * katzenpost-cancel: stops the daemon resending an encrypted message (by
 * envelope hash) or a copy command (by write-cap hash). The blocked resend or
 * copy ends with "start resending cancelled" (code 24). Cancelling an unknown
 * or finished operation succeeds and does nothing.
 */
import { ThinClient } from '../client/client';
import { InvalidArgumentError } from '../client/errors';
import { defineOperationNode, describeValue, SIZES, toBuffer } from './shared';
import type { NodeAPI, NodeDef, NodeMessage } from './types';

interface CancelDef extends NodeDef {
  target?: 'auto' | 'message' | 'copy';
}

function present(v: unknown): boolean {
  return v !== undefined && v !== null;
}

function envelopeHashOf(msg: NodeMessage): { value: unknown; name: string } | null {
  if (present(msg.envelopeHash)) return { value: msg.envelopeHash, name: 'msg.envelopeHash' };
  const env = msg.envelope as { envelopeHash?: unknown } | undefined;
  if (env && typeof env === 'object' && present(env.envelopeHash)) {
    return { value: env.envelopeHash, name: 'msg.envelope.envelopeHash' };
  }
  return null;
}

export = function (RED: NodeAPI): void {
  defineOperationNode<CancelDef>(RED, {
    type: 'katzenpost-cancel',
    async run({ client, msg, config, callOptions }) {
      const target = config.target ?? 'auto';
      const envHash = envelopeHashOf(msg);
      const copyGiven = present(msg.writeCapHash) || present(msg.writeCap);
      const what = target === 'auto' ? (envHash ? 'message' : copyGiven ? 'copy' : null) : target;
      if (what === 'message') {
        if (!envHash) {
          throw new InvalidArgumentError('msg.envelopeHash', `a Buffer of ${SIZES.envelopeHash} bytes (or msg.envelope.envelopeHash)`, 'undefined (missing)');
        }
        const hash = toBuffer(envHash.value, { name: envHash.name, size: SIZES.envelopeHash });
        await client.cancelResendingEncryptedMessage(hash, callOptions());
        msg.cancelled = 'message';
        return msg;
      }
      if (what === 'copy') {
        const hash = present(msg.writeCapHash)
          ? toBuffer(msg.writeCapHash, { name: 'msg.writeCapHash', size: SIZES.envelopeHash })
          : ThinClient.writeCapHash(toBuffer(msg.writeCap, { name: 'msg.writeCap', size: SIZES.writeCap }));
        await client.cancelResendingCopyCommand(hash, callOptions());
        msg.cancelled = 'copy';
        return msg;
      }
      throw new InvalidArgumentError(
        'msg.envelopeHash',
        `a Buffer of ${SIZES.envelopeHash} bytes (or msg.envelope.envelopeHash, msg.writeCapHash, msg.writeCap)`,
        describeValue(msg.envelopeHash),
      );
    },
  });
};
