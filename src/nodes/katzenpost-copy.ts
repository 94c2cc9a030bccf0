/**
 * katzenpost-copy: the whole copy-command chain of PIGEONHOLE.md §1.8/§1.9
 * in one node, for payloads larger than one box or several channels at once:
 *
 *  1. a new temporary channel (random seed; never reused);
 *  2. copy-stream elements (create_courier_envelopes_from_payload, or
 *     _from_multi_payload for msg.destinations);
 *  3. each element written to consecutive temporary boxes;
 *  4. optionally, a read of the last temporary box (waits until it is stored);
 *  5. the copy command (optionally pinned to msg.courier);
 *  6. msg.nextMessageBoxIndex / msg.nextDestIndices for the writer to keep.
 *
 * Output 1: success. Output 2: the courier reported a partial failure
 * (CopyCommandFailed): boxes before msg.failedEnvelopeIndex stay written.
 * Every other error goes to Catch.
 */
import { randomBytes } from 'node:crypto';
import { CopyCommandFailedError, InvalidArgumentError, replicaErrorName } from '../client/errors';
import { MAX_COPY_PAYLOAD_LENGTH } from '../wire';
import { defineOperationNode, describeValue, readCourier, SIZES, toBuffer } from './shared';
import { runAllOrAbort } from './lib/concurrency';
import { resendWrite } from './lib/pigeonhole';
import type { NodeAPI, NodeDef, NodeMessage } from './types';

interface CopyDef extends NodeDef {
  courier?: 'any' | 'msg';
  gate?: boolean;
}

/** Temporary-box writes in flight at once. */
const CONCURRENCY = 8;
/** Most destinations in one msg.destinations array. */
const MAX_DESTINATIONS = 64;

interface Dest {
  payload: Buffer;
  writeCap: Buffer;
  startIndex: Buffer;
}

function readDestinations(msg: NodeMessage): Dest[] {
  const list = msg.destinations;
  if (!Array.isArray(list) || list.length === 0 || list.length > MAX_DESTINATIONS) {
    throw new InvalidArgumentError(
      'msg.destinations',
      `an array of 1 to ${MAX_DESTINATIONS} objects {payload, writeCap, messageBoxIndex}`,
      describeValue(list),
    );
  }
  return list.map((d: unknown, i) => {
    const name = `msg.destinations[${i}]`;
    if (typeof d !== 'object' || d === null || Array.isArray(d)) {
      throw new InvalidArgumentError(name, 'an object {payload, writeCap, messageBoxIndex}', describeValue(d));
    }
    const o = d as Record<string, unknown>;
    return {
      payload: toBuffer(o.payload, {
        name: `${name}.payload`,
        strings: 'utf8',
        nonEmpty: true,
        max: MAX_COPY_PAYLOAD_LENGTH,
        maxReason: 'copy-stream limit per destination',
      }),
      writeCap: toBuffer(o.writeCap, { name: `${name}.writeCap`, size: SIZES.writeCap }),
      startIndex: toBuffer(o.messageBoxIndex ?? o.startIndex, { name: `${name}.messageBoxIndex`, size: SIZES.messageBoxIndex }),
    };
  });
}

export = function (RED: NodeAPI): void {
  defineOperationNode<CopyDef>(RED, {
    type: 'katzenpost-copy',
    credentials: { writeCap: { type: 'password' } },
    cancellable: true,
    async run({ client, msg, config, buffer, key, signal }) {
      const opts = { signal };
      // Validate everything before the first request.
      const multi = msg.destinations !== undefined && msg.destinations !== null;
      const dests: Dest[] = multi
        ? readDestinations(msg)
        : [
            {
              payload: buffer('payload', {
                strings: 'utf8',
                nonEmpty: true,
                max: MAX_COPY_PAYLOAD_LENGTH,
                maxReason: 'copy-stream limit per destination',
              }),
              writeCap: key('writeCap', 'writeCap', SIZES.writeCap)!,
              startIndex: buffer('messageBoxIndex', { size: SIZES.messageBoxIndex }),
            },
          ];
      const courier = config.courier === 'msg' ? readCourier(msg.courier) : null;

      // 1. A fresh temporary channel for this copy only.
      const temp = await client.newKeypair(randomBytes(SIZES.seed), opts);

      // 2. The copy stream.
      let elements: Buffer[];
      let nextIndex: Buffer | null = null;
      let nextIndices: (Buffer | null)[] | null = null;
      if (multi) {
        const r = await client.createCourierEnvelopesFromMultiPayload(dests, true, true, null, opts);
        elements = r.envelopes;
        nextIndices = r.nextDestIndices;
      } else {
        const d = dests[0];
        const r = await client.createCourierEnvelopesFromPayload(d.payload, d.writeCap, d.startIndex, true, true, opts);
        elements = r.envelopes;
        nextIndex = r.nextDestIndex;
      }

      // 3. Element i goes to temporary box i, from the first index on (the courier reads them in order).
      const encrypted = [];
      let t = temp.firstMessageIndex;
      let lastIndex = t;
      for (const el of elements) {
        const e = await client.encryptWrite(el, temp.writeCap, t, opts);
        encrypted.push(e);
        lastIndex = t;
        t = e.nextMessageBoxIndex;
      }
      await runAllOrAbort(
        encrypted.map((e) => (s: AbortSignal) => resendWrite(client, temp.writeCap, e, s)),
        CONCURRENCY,
        signal,
      );

      // 4. A default write returns on the courier's ACK; reading the last box back waits until it is stored.
      if (config.gate !== false && encrypted.length > 0) {
        const rd = await client.encryptRead(temp.readCap, lastIndex, opts);
        await client.startResendingEncryptedMessage(
          {
            readCap: temp.readCap,
            writeCap: null,
            messageBoxIndex: lastIndex,
            envelopeDescriptor: rd.envelopeDescriptor,
            messageCiphertext: rd.messageCiphertext,
            envelopeHash: rd.envelopeHash,
          },
          opts,
        );
      }

      // 5. The copy command.
      try {
        await client.startResendingCopyCommand(temp.writeCap, {
          signal,
          ...(courier ? { courierIdentityHash: courier.identityHash, courierQueueId: courier.queueId } : {}),
        });
      } catch (e) {
        if (!(e instanceof CopyCommandFailedError)) throw e;
        msg.outcome = 'CopyCommandFailed';
        msg.errorCode = e.errorCode;
        msg.replicaErrorCode = e.replicaErrorCode;
        msg.replicaError = e.replicaErrorCode ? replicaErrorName(e.replicaErrorCode) : null;
        msg.failedEnvelopeIndex = e.failedEnvelopeIndex;
        msg.copyElements = elements.length;
        return [null, msg];
      }

      // 6. Where the writer continues, and how many destination boxes each destination now uses
      //    (from the index counters, so readers know how many boxes to read back).
      delete msg.outcome;
      delete msg.errorCode;
      const boxes = async (start: Buffer, next: Buffer | null): Promise<number | null> =>
        next ? Number((await client.getMessageBoxIndexCounter(next, opts)) - (await client.getMessageBoxIndexCounter(start, opts))) : null;
      if (nextIndices) {
        msg.nextDestIndices = nextIndices;
        msg.boxesWritten = await Promise.all(dests.map((d, i) => boxes(d.startIndex, nextIndices![i] ?? null)));
      } else {
        msg.nextMessageBoxIndex = nextIndex;
        msg.boxesWritten = await boxes(dests[0].startIndex, nextIndex);
      }
      msg.copyElements = elements.length;
      return [msg, null];
    },
  });
};
