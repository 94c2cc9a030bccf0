/**
 * katzenpost-resend: sends an encrypted read or write (msg.envelope) through
 * the daemon's ARQ and waits for the final outcome.
 *
 * Output 1: success. Output 2: expected outcomes (BoxIDNotFound,
 * BoxAlreadyExists, Tombstone), which complete an operation rather than fail
 * it. Every other error goes to Catch.
 */
import { InvalidArgumentError, isExpectedOutcome, type KatzenpostError } from '../client/errors';
import { defineOperationNode, describeValue, readEnvelope, SIZES } from './shared';
import type { NodeAPI, NodeDef, NodeMessage } from './types';

interface ResendDef extends NodeDef {
  variant?: 'default' | 'returnBoxExists' | 'noRetry';
  operation?: 'auto' | 'read' | 'write';
  advance?: boolean;
  payloadAs?: 'buffer' | 'string';
}

const OUTCOME_NAMES: Record<number, string> = { 1: 'BoxIDNotFound', 10: 'BoxAlreadyExists', 11: 'Tombstone' };

function present(v: unknown): boolean {
  return v !== undefined && v !== null;
}

export = function (RED: NodeAPI): void {
  defineOperationNode<ResendDef>(RED, {
    type: 'katzenpost-resend',
    credentials: { writeCap: { type: 'password' }, readCap: { type: 'password' } },
    cancellable: true,
    async run({ client, msg, config, buffer, key, hasCredential, addCancelKey, signal }) {
      const env = readEnvelope(msg);
      let kind: 'read' | 'write' | undefined =
        config.operation === 'read' || config.operation === 'write' ? config.operation : env.kind;
      if (!kind) {
        const w = hasCredential('writeCap') || present(msg.writeCap);
        const r = hasCredential('readCap') || present(msg.readCap);
        if (w !== r) kind = w ? 'write' : 'read';
        else {
          throw new InvalidArgumentError(
            'msg.envelope.kind',
            '"read" or "write" (set by the encrypt nodes; or choose the Operation in this node)',
            describeValue(env.kind),
          );
        }
      }
      addCancelKey(env.envelopeHash);
      const params =
        kind === 'write'
          ? { writeCap: key('writeCap', 'writeCap', SIZES.writeCap), readCap: null, messageBoxIndex: null }
          : {
              readCap: key('readCap', 'readCap', SIZES.readCap),
              writeCap: null,
              // Must be the index given to encrypt-read: the daemon checks and decrypts the reply with it.
              messageBoxIndex: buffer('messageBoxIndex', { size: SIZES.messageBoxIndex }),
            };
      const full = {
        ...params,
        envelopeDescriptor: env.envelopeDescriptor,
        messageCiphertext: env.messageCiphertext,
        envelopeHash: env.envelopeHash,
      };
      const opts = { signal };
      let result;
      try {
        if (config.variant === 'returnBoxExists') result = await client.startResendingEncryptedMessageReturnBoxExists(full, opts);
        else if (config.variant === 'noRetry') result = await client.startResendingEncryptedMessageNoRetry(full, opts);
        else result = await client.startResendingEncryptedMessage(full, opts);
      } catch (e) {
        if (!isExpectedOutcome(e)) throw e;
        const code = (e as KatzenpostError).errorCode ?? 0;
        msg.outcome = OUTCOME_NAMES[code] ?? (e as KatzenpostError).code;
        msg.errorCode = code;
        delete msg.envelope;
        return [null, msg];
      }
      delete msg.outcome;
      delete msg.errorCode;
      delete msg.envelope;
      if (kind === 'read') {
        const plain = result.plaintext ?? Buffer.alloc(0);
        msg.payload = config.payloadAs === 'string' ? plain.toString('utf8') : plain;
      }
      if (result.courierIdentityHash) msg.courierIdentityHash = result.courierIdentityHash;
      if (result.courierQueueId) msg.courierQueueId = result.courierQueueId;
      if (config.advance !== false) advance(msg);
      return [msg, null];
    },
  });
};

/** After success, the next operation on this channel uses the next index. */
function advance(msg: NodeMessage): void {
  if (msg.nextMessageBoxIndex === undefined || msg.nextMessageBoxIndex === null) return;
  msg.messageBoxIndex = msg.nextMessageBoxIndex;
  delete msg.nextMessageBoxIndex;
}
