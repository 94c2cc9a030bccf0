/**
 * katzenpost-resend: sends an encrypted read or write (msg.envelope) through
 * the daemon's ARQ and waits for the final outcome.
 *
 * Indexes: on success msg.messageBoxIndex still names the box just written
 * or read, and msg.nextMessageBoxIndex its successor (from the encrypt node,
 * or computed here), so write -> resend -> encrypt read -> resend reads the
 * box that was written. "Advance" (off by default; on in flows saved before
 * this default changed) moves msg.messageBoxIndex on to the successor
 * instead, for loops that walk a channel.
 *
 * While it waits the status names the box ("waiting for box 3fa2c1, 12 s",
 * a hash prefix, never the index or a cap), updated every few seconds.
 *
 * Output 1: success. Output 2: expected outcomes (BoxIDNotFound,
 * BoxAlreadyExists, Tombstone), which complete an operation rather than fail
 * it. Every other error goes to Catch.
 */
import { InvalidArgumentError, isExpectedOutcome, type KatzenpostError } from '../client/errors';
import { boxLabel, defineOperationNode, describeValue, readEnvelope, SIZES, statusText } from './shared';
import type { NodeAPI, NodeDef, NodeMessage } from './types';

interface ResendDef extends NodeDef {
  variant?: 'default' | 'returnBoxExists' | 'noRetry';
  operation?: 'auto' | 'read' | 'write';
  advance?: boolean;
  payloadAs?: 'buffer' | 'string';
}

/** How often the "waiting for box" status is refreshed. */
const PROGRESS_INTERVAL_MS = 3000;

const OUTCOME_NAMES: Record<number, string> = { 1: 'BoxIDNotFound', 10: 'BoxAlreadyExists', 11: 'Tombstone' };

function present(v: unknown): boolean {
  return v !== undefined && v !== null;
}

export = function (RED: NodeAPI): void {
  defineOperationNode<ResendDef>(RED, {
    type: 'katzenpost-resend',
    credentials: { writeCap: { type: 'password' }, readCap: { type: 'password' } },
    cancellable: true,
    async run({ RED, client, msg, config, buffer, key, hasCredential, addCancelKey, signal, progress, optionalBuffer }) {
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
      // The box this message is about, for the status and for msg.nextMessageBoxIndex (writes need no index).
      const index = params.messageBoxIndex ?? writeIndex();
      const opts = { signal };
      let result;
      const stopProgress = index ? showProgress(index, kind) : () => undefined;
      try {
        if (config.variant === 'returnBoxExists') result = await client.startResendingEncryptedMessageReturnBoxExists(full, opts);
        else if (config.variant === 'noRetry') result = await client.startResendingEncryptedMessageNoRetry(full, opts);
        else result = await client.startResendingEncryptedMessage(full, opts);
      } catch (e) {
        stopProgress();
        if (!isExpectedOutcome(e)) throw e;
        const code = (e as KatzenpostError).errorCode ?? 0;
        msg.outcome = OUTCOME_NAMES[code] ?? (e as KatzenpostError).code;
        msg.errorCode = code;
        delete msg.envelope;
        return [null, msg];
      }
      stopProgress();
      delete msg.outcome;
      delete msg.errorCode;
      delete msg.envelope;
      if (kind === 'read') {
        const plain = result.plaintext ?? Buffer.alloc(0);
        msg.payload = config.payloadAs === 'string' ? plain.toString('utf8') : plain;
      }
      if (result.courierIdentityHash) msg.courierIdentityHash = result.courierIdentityHash;
      if (result.courierQueueId) msg.courierQueueId = result.courierQueueId;
      if (index && !present(msg.nextMessageBoxIndex)) {
        // An envelope made elsewhere: name the successor the way the encrypt nodes do.
        msg.nextMessageBoxIndex = await client.nextMessageBoxIndex(index, opts);
      }
      if (config.advance === true) advance(msg);
      return [msg, null];

      /** A write's msg.messageBoxIndex, when it holds one (a write does not need it). */
      function writeIndex(): Buffer | null {
        try {
          return optionalBuffer('messageBoxIndex', { size: SIZES.messageBoxIndex });
        } catch {
          return null;
        }
      }

      /** "waiting for box 3fa2c1, 12 s" (reads) or "writing box …" until stopped. */
      function showProgress(box: Buffer, what: 'read' | 'write'): () => void {
        const label = boxLabel(box);
        const started = Date.now();
        const show = (): void =>
          progress(statusText(RED, what === 'read' ? 'waiting' : 'writing', { box: label, seconds: Math.round((Date.now() - started) / 1000) }));
        show();
        const timer = setInterval(show, PROGRESS_INTERVAL_MS);
        timer.unref?.();
        return () => clearInterval(timer);
      }
    },
  });
};

/** "Advance": the next operation on this channel uses the next index (msg.messageBoxIndex moves on). */
function advance(msg: NodeMessage): void {
  if (msg.nextMessageBoxIndex === undefined || msg.nextMessageBoxIndex === null) return;
  msg.messageBoxIndex = msg.nextMessageBoxIndex;
  delete msg.nextMessageBoxIndex;
}
