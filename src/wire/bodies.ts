/**
 * Request body builders (PROTOCOL.md §3): one per request kind, with the
 * keys in the order the reference Python binding writes them.
 */
import { u64 } from './cbor';

type Bytes = Uint8Array;

/** Request body builders; key order matches the reference Python binding byte for byte. */
export const requestBodies = {
  sessionToken: (clientInstanceToken: Bytes) => ({ client_instance_token: clientInstanceToken }),
  thinClose: () => ({}),
  sendMessage: (p: { id?: Bytes | null; withSurb: boolean; surbId: Bytes | null; destinationIdHash: Bytes; recipientQueueId: Bytes; payload: Bytes }) => ({
    id: p.id ?? null,
    with_surb: p.withSurb,
    surbid: p.surbId,
    destination_id_hash: p.destinationIdHash,
    recipient_queue_id: p.recipientQueueId,
    payload: p.payload,
  }),
  newKeypair: (queryId: Bytes, seed: Bytes) => ({ query_id: queryId, seed }),
  encryptRead: (queryId: Bytes, readCap: Bytes, messageBoxIndex: Bytes) => ({
    query_id: queryId,
    read_cap: readCap,
    message_box_index: messageBoxIndex,
  }),
  encryptWrite: (queryId: Bytes, plaintext: Bytes, writeCap: Bytes, messageBoxIndex: Bytes) => ({
    query_id: queryId,
    plaintext,
    write_cap: writeCap,
    message_box_index: messageBoxIndex,
  }),
  startResendingEncryptedMessage: (p: {
    queryId: Bytes;
    readCap: Bytes | null;
    writeCap: Bytes | null;
    messageBoxIndex: Bytes | null;
    replyIndex: number | null;
    envelopeDescriptor: Bytes;
    messageCiphertext: Bytes;
    envelopeHash: Bytes;
    noRetryOnBoxIdNotFound: boolean;
    noIdempotentBoxAlreadyExists: boolean;
  }) => ({
    query_id: p.queryId,
    read_cap: p.readCap,
    write_cap: p.writeCap,
    message_box_index: p.messageBoxIndex,
    reply_index: p.replyIndex,
    envelope_descriptor: p.envelopeDescriptor,
    message_ciphertext: p.messageCiphertext,
    envelope_hash: p.envelopeHash,
    no_retry_on_box_id_not_found: p.noRetryOnBoxIdNotFound,
    no_idempotent_box_already_exists: p.noIdempotentBoxAlreadyExists,
  }),
  cancelResendingEncryptedMessage: (queryId: Bytes, envelopeHash: Bytes) => ({ query_id: queryId, envelope_hash: envelopeHash }),
  startResendingCopyCommand: (queryId: Bytes, writeCap: Bytes, courierIdentityHash?: Bytes | null, courierQueueId?: Bytes | null) => {
    const body: Record<string, unknown> = { query_id: queryId, write_cap: writeCap };
    // (opt) fields: omitted entirely when not pinning, as Go and Python do.
    if (courierIdentityHash) body.courier_identity_hash = courierIdentityHash;
    if (courierQueueId) body.courier_queue_id = courierQueueId;
    return body;
  },
  cancelResendingCopyCommand: (queryId: Bytes, writeCapHash: Bytes) => ({ query_id: queryId, write_cap_hash: writeCapHash }),
  nextMessageBoxIndex: (queryId: Bytes, messageBoxIndex: Bytes) => ({ query_id: queryId, message_box_index: messageBoxIndex }),
  getMessageBoxIndexCounter: (queryId: Bytes, messageBoxIndex: Bytes) => ({ query_id: queryId, message_box_index: messageBoxIndex }),
  getPkiDocument: (queryId: Bytes, epoch: number | bigint) => ({ query_id: queryId, epoch: u64(epoch) }),
  createCourierEnvelopesFromPayload: (queryId: Bytes, payload: Bytes, destWriteCap: Bytes, destStartIndex: Bytes, isStart: boolean, isLast: boolean) => ({
    query_id: queryId,
    payload,
    dest_write_cap: destWriteCap,
    dest_start_index: destStartIndex,
    is_start: isStart,
    is_last: isLast,
  }),
  createCourierEnvelopesFromMultiPayload: (
    queryId: Bytes,
    destinations: { payload: Bytes; writeCap: Bytes; startIndex: Bytes }[],
    isStart: boolean,
    isLast: boolean,
    buffer: Bytes | null,
  ) => {
    const body: Record<string, unknown> = {
      query_id: queryId,
      destinations: destinations.map((d) => ({ payload: d.payload, write_cap: d.writeCap, start_index: d.startIndex })),
      is_start: isStart,
      is_last: isLast,
    };
    if (buffer && buffer.length > 0) body.buffer = buffer; // Python omits the key when None
    return body;
  },
  // ---- current daemon only (§9.3): query_id first, then the fields in Go order.
  getDirectoryAuthorities: (queryId: Bytes) => ({ query_id: queryId }),
  voucherMint: (queryId: Bytes, messageWriteCap: Bytes, displayName: string) => ({
    query_id: queryId,
    message_write_cap: messageWriteCap,
    display_name: displayName,
  }),
  voucherInduct: (queryId: Bytes, voucher: Bytes, voucherPayload: Bytes, whoReply: Bytes) => ({
    query_id: queryId,
    voucher,
    voucher_payload: voucherPayload,
    who_reply: whoReply,
  }),
  voucherOpen: (queryId: Bytes, voucherSecretKey: Bytes, sealedReply: Bytes, messageWriteCap: Bytes) => ({
    query_id: queryId,
    voucher_secret_key: voucherSecretKey,
    sealed_reply: sealedReply,
    message_write_cap: messageWriteCap,
  }),
  voucherDeriveStream: (queryId: Bytes, voucher: Bytes) => ({ query_id: queryId, voucher }),
  createCourierEnvelopesFromTombstoneRange: (
    queryId: Bytes,
    destWriteCap: Bytes,
    destStartIndex: Bytes,
    maxCount: number,
    isStart: boolean,
    isLast: boolean,
    buffer: Bytes | null,
  ) => {
    const body: Record<string, unknown> = {
      query_id: queryId,
      dest_write_cap: destWriteCap,
      dest_start_index: destStartIndex,
      max_count: maxCount,
      is_start: isStart,
      is_last: isLast,
    };
    if (buffer && buffer.length > 0) body.buffer = buffer;
    return body;
  },
};
