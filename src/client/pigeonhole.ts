/**
 * The Pigeonhole operations (PROTOCOL.md §3.4-§3.16, §9.3): keys and box
 * indices, encryption of reads and writes, the blocking ARQ sends and their
 * cancels, copy streams, and Contact Vouchers. Each checks its arguments,
 * sends through the request table and reads its typed reply.
 */
import { blake2b256, requestQueryId } from './crypto';
import { InvalidArgumentError } from './errors';
import { replies } from './messages';
import type { RawBody } from './messages';
import type { RequestTable } from './requests';
import type {
  ArqOptions,
  CallOptions,
  CopyCommandOptions,
  CourierEnvelopesResult,
  EncryptResult,
  KeypairResult,
  MultiPayloadDestination,
  MultiPayloadResult,
  ResendParams,
  StartResendingResult,
  TombstoneEnvelope,
  TombstoneRangeEnvelopesResult,
  TombstoneRangeResult,
  VoucherInductResult,
  VoucherMintResult,
  VoucherOpenResult,
  VoucherStreamCaps,
} from './types';
import {
  anyBytes,
  booleanArg,
  describeValue,
  exactBytes,
  integerInRange,
  nonEmptyBytes,
  optionalExactBytes,
  optionalSignal,
  optionalTimeout,
  payloadBytes,
} from './validate';
import {
  HASH_LENGTH,
  MAX_COPY_PAYLOAD_LENGTH,
  MESSAGE_BOX_INDEX_LENGTH,
  READ_CAP_LENGTH,
  SEED_LENGTH,
  VOUCHER_LENGTH,
  VOUCHER_SECRET_KEY_LENGTH,
  WRITE_CAP_LENGTH,
  requestBodies,
} from '../wire';
import type { PigeonholeGeometry } from '../wire';

const U32_MAX = 0xffffffff;

/** The flags a startResending variant sets whatever the caller passed. */
export type ResendFlags = { noRetryOnBoxIdNotFound?: boolean; noIdempotentBoxAlreadyExists?: boolean };

/**
 * A call as an async function would run it, without being one: `send` (the
 * argument checks and the registered request) throws into a rejection, and
 * the reply is read by `read`. For the ARQ calls, which wait for minutes,
 * thousands at a time: a suspended async function would hold its frame
 * (the request body, the arguments) all that time, this holds only the
 * pending request. And for the encryption calls, the hot path: no async
 * function state per call.
 */
function callAndRead<T>(send: () => Promise<RawBody>, read: (reply: RawBody) => T): Promise<T> {
  let sent: Promise<RawBody>;
  try {
    sent = send();
  } catch (e) {
    return Promise.reject(e);
  }
  return sent.then(read);
}

const readEncryptRead = (reply: RawBody): EncryptResult => replies.encrypt('encrypt_read', reply);
const readEncryptWrite = (reply: RawBody): EncryptResult => replies.encrypt('encrypt_write', reply);

/** BLAKE2b-256 of a 168-byte WriteCap: the key of cancelResendingCopyCommand. */
export function hashWriteCap(writeCap: Uint8Array): Buffer {
  return blake2b256(exactBytes('writeCap', writeCap, WRITE_CAP_LENGTH));
}

/** The MessageBoxIndex a cap starts at: the last 104 bytes of a WriteCap or a ReadCap (§6.9). */
export function capStartIndex(cap: Uint8Array): Buffer {
  if (!(cap instanceof Uint8Array) || (cap.length !== WRITE_CAP_LENGTH && cap.length !== READ_CAP_LENGTH)) {
    throw new InvalidArgumentError('cap', `a ${WRITE_CAP_LENGTH}-byte WriteCap or a ${READ_CAP_LENGTH}-byte ReadCap`, describeValue(cap));
  }
  return Buffer.from(cap.subarray(cap.length - MESSAGE_BOX_INDEX_LENGTH));
}

export class Pigeonhole {
  constructor(
    private readonly requests: RequestTable,
    /** The geometry the daemon announced (null before the first status event). */
    private readonly geometry: () => PigeonholeGeometry | null,
  ) {}

  // ------------------------------------------------------ keys and indices
  async newKeypair(seed: Uint8Array, opts?: CallOptions): Promise<KeypairResult> {
    const s = exactBytes('seed', seed, SEED_LENGTH);
    return replies.newKeypair(await this.requests.local('new_keypair', requestBodies.newKeypair(requestQueryId(), s), 'newKeypair', 'seed', opts));
  }

  async nextMessageBoxIndex(index: Uint8Array, opts?: CallOptions): Promise<Buffer> {
    const idx = exactBytes('index', index, MESSAGE_BOX_INDEX_LENGTH);
    const body = requestBodies.nextMessageBoxIndex(requestQueryId(), idx);
    return replies.nextMessageBoxIndex(await this.requests.local('next_message_box_index', body, 'nextMessageBoxIndex', 'index', opts));
  }

  async getMessageBoxIndexCounter(index: Uint8Array, opts?: CallOptions): Promise<bigint> {
    const idx = exactBytes('index', index, MESSAGE_BOX_INDEX_LENGTH);
    const body = requestBodies.getMessageBoxIndexCounter(requestQueryId(), idx);
    return replies.getMessageBoxIndexCounter(await this.requests.local('get_message_box_index_counter', body, 'getMessageBoxIndexCounter', 'index', opts));
  }

  // ------------------------------------------------------------ encryption
  encryptRead(readCap: Uint8Array, index: Uint8Array, opts?: CallOptions): Promise<EncryptResult> {
    return callAndRead(() => {
      const rc = exactBytes('readCap', readCap, READ_CAP_LENGTH);
      const idx = exactBytes('index', index, MESSAGE_BOX_INDEX_LENGTH);
      const body = requestBodies.encryptRead(requestQueryId(), rc, idx);
      return this.requests.local('encrypt_read', body, 'encryptRead', 'readCap', opts);
    }, readEncryptRead);
  }

  encryptWrite(plaintext: Uint8Array | string, writeCap: Uint8Array, index: Uint8Array, opts?: CallOptions): Promise<EncryptResult> {
    return callAndRead(() => {
      const pt = payloadBytes('plaintext', plaintext, this.geometry()?.MaxPlaintextPayloadLength, 'pigeonhole MaxPlaintextPayloadLength');
      const wc = exactBytes('writeCap', writeCap, WRITE_CAP_LENGTH);
      const idx = exactBytes('index', index, MESSAGE_BOX_INDEX_LENGTH);
      const body = requestBodies.encryptWrite(requestQueryId(), pt, wc, idx);
      return this.requests.local('encrypt_write', body, 'encryptWrite', 'plaintext', opts);
    }, readEncryptWrite);
  }

  /** A client-side loop of encrypt_write with an empty plaintext (§3.6). */
  async tombstoneRange(writeCap: Uint8Array, start: Uint8Array, maxCount: number, opts?: CallOptions): Promise<TombstoneRangeResult> {
    const wc = exactBytes('writeCap', writeCap, WRITE_CAP_LENGTH);
    let idx: Buffer = Buffer.from(exactBytes('start', start, MESSAGE_BOX_INDEX_LENGTH));
    const count = integerInRange('maxCount', maxCount, 0, U32_MAX);
    const envelopes: TombstoneEnvelope[] = [];
    for (let i = 0; i < count; i++) {
      const r = await this.encryptWrite(Buffer.alloc(0), wc, idx, opts);
      envelopes.push({ ...r, boxIndex: idx });
      idx = r.nextMessageBoxIndex;
    }
    return { envelopes, next: idx };
  }

  // ---------------------------------------------------------- ARQ (§3.7-)
  /** The three startResendingEncryptedMessage variants; `forced` holds the flags the variant sets. */
  startResending(params: ResendParams, opts: ArqOptions | undefined, op: string, forced: ResendFlags): Promise<StartResendingResult> {
    return callAndRead(() => this.sendResending(params, opts, op, forced), replies.startResendingEncryptedMessage);
  }

  private sendResending(params: ResendParams, opts: ArqOptions | undefined, op: string, forced: ResendFlags): Promise<RawBody> {
    if (params === null || typeof params !== 'object') {
      throw new InvalidArgumentError('params', 'an object { readCap | writeCap, messageBoxIndex, envelopeDescriptor, messageCiphertext, envelopeHash }', describeValue(params));
    }
    const readCap = optionalExactBytes('readCap', params.readCap, READ_CAP_LENGTH);
    const writeCap = optionalExactBytes('writeCap', params.writeCap, WRITE_CAP_LENGTH);
    if ((readCap === null) === (writeCap === null)) {
      throw new InvalidArgumentError('readCap', 'exactly one of readCap (136 bytes, a read) or writeCap (168 bytes, a write)', readCap ? 'both' : 'neither');
    }
    const index = optionalExactBytes('messageBoxIndex', params.messageBoxIndex, MESSAGE_BOX_INDEX_LENGTH);
    if (readCap && !index) {
      // Without it the daemon cannot verify and decrypt the box (§3.7).
      throw new InvalidArgumentError('messageBoxIndex', 'the 104-byte index given to encryptRead (required for reads)', describeValue(params.messageBoxIndex));
    }
    const replyIndex = params.replyIndex === undefined || params.replyIndex === null ? null : integerInRange('replyIndex', params.replyIndex, 0, 255);
    const envelopeHash = exactBytes('envelopeHash', params.envelopeHash, HASH_LENGTH);
    const flag = (name: keyof ResendFlags) => forced[name] ?? (params[name] === undefined ? false : booleanArg(name, params[name]));
    const body = requestBodies.startResendingEncryptedMessage({
      queryId: requestQueryId(),
      readCap,
      writeCap,
      messageBoxIndex: index,
      replyIndex,
      envelopeDescriptor: nonEmptyBytes('envelopeDescriptor', params.envelopeDescriptor),
      messageCiphertext: nonEmptyBytes('messageCiphertext', params.messageCiphertext),
      envelopeHash,
      noRetryOnBoxIdNotFound: flag('noRetryOnBoxIdNotFound'),
      noIdempotentBoxAlreadyExists: flag('noIdempotentBoxAlreadyExists'),
    });
    return this.requests.call('start_resending_encrypted_message', body, {
      op,
      sizeArg: 'messageCiphertext',
      timeoutMs: optionalTimeout('timeoutMs', opts?.timeoutMs),
      signal: optionalSignal('signal', opts?.signal),
      arq: { key: envelopeHash.toString('hex'), hash: envelopeHash, cancelKind: 'cancel_resending_encrypted_message' },
    });
  }

  async cancelResendingEncryptedMessage(envelopeHash: Uint8Array, opts?: CallOptions): Promise<void> {
    const hash = exactBytes('envelopeHash', envelopeHash, HASH_LENGTH);
    const body = requestBodies.cancelResendingEncryptedMessage(requestQueryId(), hash);
    await this.requests.cancelArq('cancel_resending_encrypted_message', body, hash, 'cancelResendingEncryptedMessage', opts);
  }

  startResendingCopyCommand(writeCap: Uint8Array, opts: CopyCommandOptions): Promise<void> {
    return callAndRead(() => this.sendCopyCommand(writeCap, opts), replies.startResendingCopyCommand);
  }

  private sendCopyCommand(writeCap: Uint8Array, opts: CopyCommandOptions): Promise<RawBody> {
    const wc = exactBytes('writeCap', writeCap, WRITE_CAP_LENGTH);
    const courierHash = optionalExactBytes('courierIdentityHash', opts.courierIdentityHash, HASH_LENGTH);
    const queueId = opts.courierQueueId === undefined || opts.courierQueueId === null ? null : nonEmptyBytes('courierQueueId', opts.courierQueueId);
    if ((courierHash === null) !== (queueId === null)) {
      throw new InvalidArgumentError(
        courierHash === null ? 'courierIdentityHash' : 'courierQueueId',
        'both courierIdentityHash and courierQueueId to pin a courier, or neither',
        courierHash === null ? 'only courierQueueId' : 'only courierIdentityHash',
      );
    }
    const hash = blake2b256(wc);
    return this.requests.call('start_resending_copy_command', requestBodies.startResendingCopyCommand(requestQueryId(), wc, courierHash, queueId), {
      op: 'startResendingCopyCommand',
      sizeArg: 'writeCap',
      timeoutMs: optionalTimeout('timeoutMs', opts.timeoutMs),
      signal: optionalSignal('signal', opts.signal),
      arq: { key: hash.toString('hex'), hash, cancelKind: 'cancel_resending_copy_command' },
    });
  }

  async cancelResendingCopyCommand(writeCapHash: Uint8Array, opts?: CallOptions): Promise<void> {
    const hash = exactBytes('writeCapHash', writeCapHash, HASH_LENGTH);
    const body = requestBodies.cancelResendingCopyCommand(requestQueryId(), hash);
    await this.requests.cancelArq('cancel_resending_copy_command', body, hash, 'cancelResendingCopyCommand', opts);
  }

  // ------------------------------------------------- copy streams (§3.14-)
  async createCourierEnvelopesFromPayload(
    payload: Uint8Array | string,
    destWriteCap: Uint8Array,
    destStartIndex: Uint8Array,
    isStart: boolean,
    isLast: boolean,
    opts?: CallOptions,
  ): Promise<CourierEnvelopesResult> {
    const p = payloadBytes('payload', payload, MAX_COPY_PAYLOAD_LENGTH, '10 MiB per call');
    const wc = exactBytes('destWriteCap', destWriteCap, WRITE_CAP_LENGTH);
    const idx = exactBytes('destStartIndex', destStartIndex, MESSAGE_BOX_INDEX_LENGTH);
    const body = requestBodies.createCourierEnvelopesFromPayload(requestQueryId(), p, wc, idx, booleanArg('isStart', isStart), booleanArg('isLast', isLast));
    const reply = await this.requests.local('create_courier_envelopes_from_payload', body, 'createCourierEnvelopesFromPayload', 'payload', opts);
    return replies.createCourierEnvelopesFromPayload(reply);
  }

  async createCourierEnvelopesFromMultiPayload(
    destinations: MultiPayloadDestination[],
    isStart: boolean,
    isLast: boolean,
    buffer?: Uint8Array | null,
    opts?: CallOptions,
  ): Promise<MultiPayloadResult> {
    if (!Array.isArray(destinations) || destinations.length === 0) {
      throw new InvalidArgumentError('destinations', 'a non-empty array of { payload, writeCap, startIndex }', describeValue(destinations));
    }
    const dests = destinations.map((d, i) => {
      if (d === null || typeof d !== 'object') {
        throw new InvalidArgumentError(`destinations[${i}]`, 'an object { payload, writeCap, startIndex }', describeValue(d));
      }
      return {
        payload: payloadBytes(`destinations[${i}].payload`, d.payload, MAX_COPY_PAYLOAD_LENGTH, '10 MiB per destination'),
        writeCap: exactBytes(`destinations[${i}].writeCap`, d.writeCap, WRITE_CAP_LENGTH),
        startIndex: exactBytes(`destinations[${i}].startIndex`, d.startIndex, MESSAGE_BOX_INDEX_LENGTH),
      };
    });
    const buf = buffer === null || buffer === undefined ? null : anyBytes('buffer', buffer);
    const body = requestBodies.createCourierEnvelopesFromMultiPayload(requestQueryId(), dests, booleanArg('isStart', isStart), booleanArg('isLast', isLast), buf);
    const reply = await this.requests.local('create_courier_envelopes_from_multi_payload', body, 'createCourierEnvelopesFromMultiPayload', 'destinations', opts);
    return replies.createCourierEnvelopesFromMultiPayload(reply);
  }

  async createCourierEnvelopesFromTombstoneRange(
    destWriteCap: Uint8Array,
    destStartIndex: Uint8Array,
    maxCount: number,
    isStart: boolean,
    isLast: boolean,
    buffer?: Uint8Array | null,
    opts?: CallOptions,
  ): Promise<TombstoneRangeEnvelopesResult> {
    const wc = exactBytes('destWriteCap', destWriteCap, WRITE_CAP_LENGTH);
    const idx = exactBytes('destStartIndex', destStartIndex, MESSAGE_BOX_INDEX_LENGTH);
    const count = integerInRange('maxCount', maxCount, 0, U32_MAX);
    const buf = buffer === null || buffer === undefined ? null : anyBytes('buffer', buffer);
    const start = booleanArg('isStart', isStart);
    const body = requestBodies.createCourierEnvelopesFromTombstoneRange(requestQueryId(), wc, idx, count, start, booleanArg('isLast', isLast), buf);
    const reply = await this.requests.local('create_courier_envelopes_from_tombstone_range', body, 'createCourierEnvelopesFromTombstoneRange', 'buffer', opts);
    return replies.createCourierEnvelopesFromTombstoneRange(reply);
  }

  // ----------------------------------------- Contact Vouchers (v0.0.99+)
  async voucherMint(messageWriteCap: Uint8Array, displayName: string, opts?: CallOptions): Promise<VoucherMintResult> {
    const wc = exactBytes('messageWriteCap', messageWriteCap, WRITE_CAP_LENGTH);
    if (typeof displayName !== 'string') throw new InvalidArgumentError('displayName', 'a string', describeValue(displayName));
    const body = requestBodies.voucherMint(requestQueryId(), wc, displayName);
    return replies.voucherMint(await this.requests.local('voucher_mint', body, 'voucherMint', 'displayName', opts));
  }

  async voucherInduct(voucher: Uint8Array, voucherPayload: Uint8Array, whoReply: Uint8Array | string, opts?: CallOptions): Promise<VoucherInductResult> {
    const v = exactBytes('voucher', voucher, VOUCHER_LENGTH);
    const payload = nonEmptyBytes('voucherPayload', voucherPayload);
    const who = payloadBytes('whoReply', whoReply, undefined, '');
    const body = requestBodies.voucherInduct(requestQueryId(), v, payload, who);
    return replies.voucherInduct(await this.requests.local('voucher_induct', body, 'voucherInduct', 'voucherPayload', opts));
  }

  async voucherOpen(voucherSecretKey: Uint8Array, sealedReply: Uint8Array, messageWriteCap: Uint8Array, opts?: CallOptions): Promise<VoucherOpenResult> {
    // Exact size: a shorter key makes kpclientd v0.0.99 panic in the handler, which it contains, and never answer.
    const sk = exactBytes('voucherSecretKey', voucherSecretKey, VOUCHER_SECRET_KEY_LENGTH);
    const sealed = nonEmptyBytes('sealedReply', sealedReply);
    const wc = exactBytes('messageWriteCap', messageWriteCap, WRITE_CAP_LENGTH);
    const body = requestBodies.voucherOpen(requestQueryId(), sk, sealed, wc);
    return replies.voucherOpen(await this.requests.local('voucher_open', body, 'voucherOpen', 'sealedReply', opts));
  }

  async voucherDeriveStream(voucher: Uint8Array, opts?: CallOptions): Promise<VoucherStreamCaps> {
    const v = exactBytes('voucher', voucher, VOUCHER_LENGTH);
    const body = requestBodies.voucherDeriveStream(requestQueryId(), v);
    return replies.voucherDeriveStream(await this.requests.local('voucher_derive_stream', body, 'voucherDeriveStream', 'voucher', opts));
  }
}
