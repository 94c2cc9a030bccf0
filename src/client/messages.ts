/**
 * The daemon's replies and events as typed structures (PROTOCOL.md §3, §4):
 * one decoder per frame kind turns its raw CBOR map into typed fields, or
 * raises the daemon's error for the reply's code, or a ProtocolError naming
 * the frame and the field the daemon got wrong. Request bodies are built by
 * `requestBodies` in src/wire, shared with the emulator.
 */
import {
  ProtocolError,
  errorForCopyCode,
  errorForGenericCode,
  errorForResendCode,
  errorForVoucherCode,
} from './errors';
import type { MessageIdGarbageCollectedEvent, MessageReplyEvent, MessageSentEvent } from './events';
import type {
  CourierEnvelopesResult,
  DirectoryAuthority,
  EncryptResult,
  KeypairResult,
  MultiPayloadResult,
  RawPkiDocument,
  StartResendingResult,
  TombstoneRangeEnvelopesResult,
  VoucherInductResult,
  VoucherMintResult,
  VoucherOpenResult,
  VoucherStreamCaps,
} from './types';
import { describeValue } from './validate';
import { HASH_LENGTH, INSTANCE_TOKEN_LENGTH, PIGEONHOLE_GEOMETRY_KEYS, SPHINX_GEOMETRY_KEYS, bytesOrNull, checkFixedLengths, toBigInt, toNumber } from '../wire';
import type { AnyRequestKind, PigeonholeGeometry, SphinxGeometry } from '../wire';

/** A frame body as CBOR decoded it: only the decoders below read its fields. */
export type RawBody = Record<string, unknown>;

/** connection_status_event (§4.3); a geometry is null when a later event leaves it out. */
export interface StatusEventBody {
  instanceToken: Buffer;
  sphinx: SphinxGeometry | null;
  pigeonhole: PigeonholeGeometry | null;
  isConnected: boolean;
}

/** session_token_reply (§2.3). */
export interface SessionTokenReply {
  appId: Buffer | null;
  resumed: boolean;
}

// ------------------------------------------------------------------ events
export function decodeSessionTokenReply(body: RawBody): SessionTokenReply {
  return { appId: bytesOrNull(body.app_id), resumed: body.resumed === true };
}

/**
 * A connection status event; its geometries are checked in full (§6.8).
 * `strict`: in the handshake a missing geometry is an error.
 */
export function decodeStatusEvent(body: RawBody, strict: boolean): StatusEventBody {
  const token = bytesOrNull(body.instance_token);
  if (!token || token.length !== INSTANCE_TOKEN_LENGTH) {
    throw new ProtocolError(`connection_status_event: instance_token must be ${INSTANCE_TOKEN_LENGTH} bytes, got ${describeValue(body.instance_token)}`);
  }
  const sphinx = parseGeometry<SphinxGeometry>(body.sphinx_geometry, SPHINX_GEOMETRY_KEYS, 'sphinx_geometry', ['NIKEName', 'KEMName'], strict);
  const pigeonhole = parseGeometry<PigeonholeGeometry>(
    body.pigeonhole_geometry,
    PIGEONHOLE_GEOMETRY_KEYS,
    'pigeonhole_geometry',
    ['NIKEName', 'SignatureSchemeName'],
    strict,
  );
  return { instanceToken: token, sphinx, pigeonhole, isConnected: body.is_connected === true };
}

/** The CBOR of a new_pki_document_event, or null when the daemon has no document yet. */
export function decodePkiEvent(body: RawBody): Buffer | null {
  const payload = bytesOrNull(body.payload);
  return payload && payload.length > 0 ? payload : null;
}

export function decodeMessageSent(body: RawBody): MessageSentEvent {
  const surbId = bytesOrNull(body.surbid);
  const err = typeof body.err === 'string' && body.err !== '' ? body.err : null;
  return {
    type: 'messageSent',
    messageId: bytesOrNull(body.message_id),
    surbId,
    sentAt: body.sent_at === null || body.sent_at === undefined ? null : new Date(Number(u64Field(body, 'sent_at', 'message_sent_event')) * 1000),
    replyEtaMs: Number(u64Field(body, 'reply_eta', 'message_sent_event')) / 1e6,
    err,
  };
}

export function decodeMessageReply(body: RawBody): MessageReplyEvent {
  const surbId = bytesOrNull(body.surbid);
  const payload = bytesOrNull(body.payload);
  const errorCode = intField(body, 'error_code', 'message_reply_event');
  return {
    type: 'messageReply',
    messageId: bytesOrNull(body.message_id),
    surbId: surbId ?? Buffer.alloc(0),
    payload,
    replyIndex: body.reply_index === null || body.reply_index === undefined ? null : intField(body, 'reply_index', 'message_reply_event'),
    errorCode,
  };
}

export function decodeGarbageCollected(body: RawBody): MessageIdGarbageCollectedEvent {
  return { type: 'messageIdGarbageCollected', messageId: bytesOrNull(body.message_id) };
}

/** Every fixed-size byte field of a daemon frame has its §0 size; ProtocolError naming kind, field and sizes otherwise. */
export function checkFrameFields(kind: string, body: RawBody): void {
  try {
    checkFixedLengths(body);
  } catch (e) {
    throw new ProtocolError(`${kind}: ${errorText(e)}`);
  }
}

// ------------------------------------------------------------------ replies
/**
 * The reply of each request kind: the error its code stands for is thrown
 * (a success reply has code 0), then its fields are read. Kinds that only
 * report success (the cancels) use `succeeded`.
 */
export const replies = {
  /** The error of a reply that carries nothing else (the cancels). */
  succeeded(kind: AnyRequestKind, reply: RawBody): void {
    throwIf(errorForGenericCode(kind, code(reply, kind)));
  },

  getPkiDocument(reply: RawBody): RawPkiDocument {
    replies.succeeded('get_pki_document', reply);
    return { payload: requireBytes(reply, 'payload', 'get_pki_document_reply'), epoch: u64Field(reply, 'epoch', 'get_pki_document_reply') };
  },

  newKeypair(reply: RawBody): KeypairResult {
    replies.succeeded('new_keypair', reply);
    const k = 'new_keypair_reply';
    return {
      writeCap: requireBytes(reply, 'write_cap', k),
      readCap: requireBytes(reply, 'read_cap', k),
      firstMessageIndex: requireBytes(reply, 'first_message_index', k),
    };
  },

  nextMessageBoxIndex(reply: RawBody): Buffer {
    replies.succeeded('next_message_box_index', reply);
    return requireBytes(reply, 'next_message_box_index', 'next_message_box_index_reply');
  },

  getMessageBoxIndexCounter(reply: RawBody): bigint {
    replies.succeeded('get_message_box_index_counter', reply);
    return u64Field(reply, 'counter', 'get_message_box_index_counter_reply');
  },

  /** encrypt_read_reply and encrypt_write_reply alike. */
  encrypt(kind: 'encrypt_read' | 'encrypt_write', reply: RawBody): EncryptResult {
    replies.succeeded(kind, reply);
    const k = `${kind}_reply`;
    return {
      messageCiphertext: requireBytes(reply, 'message_ciphertext', k),
      envelopeDescriptor: requireBytes(reply, 'envelope_descriptor', k),
      envelopeHash: requireBytes(reply, 'envelope_hash', k),
      nextMessageBoxIndex: requireBytes(reply, 'next_message_box_index', k),
    };
  },

  startResendingEncryptedMessage(reply: RawBody): StartResendingResult {
    throwIf(errorForResendCode(code(reply, 'start_resending_encrypted_message')));
    return {
      plaintext: bytesOrNull(reply.plaintext),
      courierIdentityHash: bytesOrNull(reply.courier_identity_hash),
      courierQueueId: bytesOrNull(reply.courier_queue_id),
    };
  },

  startResendingCopyCommand(reply: RawBody): void {
    const k = 'start_resending_copy_command_reply';
    throwIf(
      errorForCopyCode(
        code(reply, 'start_resending_copy_command'),
        intField(reply, 'replica_error_code', k),
        intField(reply, 'failed_envelope_index', k),
      ),
    );
  },

  createCourierEnvelopesFromPayload(reply: RawBody): CourierEnvelopesResult {
    const kind = 'create_courier_envelopes_from_payload';
    replies.succeeded(kind, reply);
    return { envelopes: bytesList(reply.envelopes), nextDestIndex: requireBytes(reply, 'next_dest_index', `${kind}_reply`) };
  },

  createCourierEnvelopesFromMultiPayload(reply: RawBody): MultiPayloadResult {
    replies.succeeded('create_courier_envelopes_from_multi_payload', reply);
    return {
      envelopes: bytesList(reply.envelopes),
      buffer: bytesOrNull(reply.buffer),
      nextDestIndices: Array.isArray(reply.next_dest_indices) ? reply.next_dest_indices.map(bytesOrNull) : [],
    };
  },

  createCourierEnvelopesFromTombstoneRange(reply: RawBody): TombstoneRangeEnvelopesResult {
    const kind = 'create_courier_envelopes_from_tombstone_range';
    replies.succeeded(kind, reply);
    return {
      envelopes: bytesList(reply.envelopes),
      buffer: bytesOrNull(reply.buffer),
      nextDestIndex: requireBytes(reply, 'next_dest_index', `${kind}_reply`),
    };
  },

  getDirectoryAuthorities(reply: RawBody): DirectoryAuthority[] {
    const kind = 'get_directory_authorities';
    replies.succeeded(kind, reply);
    const list = reply.authorities;
    if (list === null || list === undefined) return [];
    if (!Array.isArray(list)) throw new ProtocolError(`${kind}_reply: authorities is not a list`);
    return list.map((a, i) => parseAuthority(a, `${kind}_reply: authorities[${i}]`));
  },

  voucherMint(reply: RawBody): VoucherMintResult {
    const k = voucherSucceeded('voucher_mint', reply);
    return {
      voucher: requireBytes(reply, 'voucher', k),
      voucherPayload: requireBytes(reply, 'voucher_payload', k),
      voucherWriteCap: requireBytes(reply, 'voucher_write_cap', k),
      voucherReadCap: requireBytes(reply, 'voucher_read_cap', k),
      voucherSecretKey: requireBytes(reply, 'voucher_secret_key', k),
      voucherPublicKey: requireBytes(reply, 'voucher_public_key', k),
    };
  },

  voucherInduct(reply: RawBody): VoucherInductResult {
    const k = voucherSucceeded('voucher_induct', reply);
    if (typeof reply.display_name !== 'string') throw new ProtocolError(`${k}: display_name is not a string`);
    return {
      displayName: reply.display_name,
      mutatedMessageReadCap: requireBytes(reply, 'mutated_message_read_cap', k),
      sealedReply: requireBytes(reply, 'sealed_reply', k),
      voucherWriteCap: requireBytes(reply, 'voucher_write_cap', k),
      voucherReadCap: requireBytes(reply, 'voucher_read_cap', k),
      salt: requireBytes(reply, 'salt', k),
    };
  },

  voucherOpen(reply: RawBody): VoucherOpenResult {
    const k = voucherSucceeded('voucher_open', reply);
    return {
      // An empty WhoReply may come back as an empty byte string or as null.
      whoReply: bytesOrNull(reply.who_reply) ?? Buffer.alloc(0),
      salt: requireBytes(reply, 'salt', k),
      mutatedMessageWriteCap: requireBytes(reply, 'mutated_message_write_cap', k),
    };
  },

  voucherDeriveStream(reply: RawBody): VoucherStreamCaps {
    const k = voucherSucceeded('voucher_derive_stream', reply);
    return { voucherWriteCap: requireBytes(reply, 'voucher_write_cap', k), voucherReadCap: requireBytes(reply, 'voucher_read_cap', k) };
  },
};

/** The voucher calls map codes 28-30 to their own errors; returns the reply kind for field errors. */
function voucherSucceeded(kind: AnyRequestKind, reply: RawBody): string {
  throwIf(errorForVoucherCode(kind, code(reply, kind)));
  return `${kind}_reply`;
}

// ------------------------------------------------------------------ fields
export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function throwIf(err: Error | null): void {
  if (err) throw err;
}

/** The error_code of the reply to a `requestKind` request. @throws ProtocolError when it is not an integer */
function code(reply: RawBody, requestKind: AnyRequestKind): number {
  return intField(reply, 'error_code', `${requestKind}_reply`);
}

/**
 * A numeric field of a daemon frame. A malformed one (a string, a float, a
 * value beyond 2^53) is the daemon breaking the protocol: ProtocolError
 * naming the frame kind and the field, never a bare TypeError/RangeError.
 */
function intField(body: RawBody, field: string, kind: string): number {
  const v = body[field];
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v; // the usual case, without a closure
  return inFrame(kind, () => toNumber(v, field));
}

/** A u64 field of a daemon frame as bigint; ProtocolError (kind and field) when malformed. */
function u64Field(body: RawBody, field: string, kind: string): bigint {
  return inFrame(kind, () => toBigInt(body[field], field));
}

/** Runs a conversion of a `kind` frame's field; its failure is the daemon's ProtocolError. */
function inFrame<T>(kind: string, convert: () => T): T {
  try {
    return convert();
  } catch (e) {
    throw new ProtocolError(`${kind}: ${errorText(e)}`);
  }
}

/** A success reply must carry its blobs; a daemon that omits one is broken. */
function requireBytes(reply: RawBody, field: string, kind: string): Buffer {
  const b = bytesOrNull(reply[field]);
  if (!b) throw new ProtocolError(`${kind}: success reply without ${field}`);
  return b;
}

function bytesList(v: unknown): Buffer[] {
  if (!Array.isArray(v)) return [];
  return v.map((item, i) => {
    const b = bytesOrNull(item);
    if (!b) throw new ProtocolError(`envelopes[${i}] is not a byte string`);
    return b;
  });
}

/**
 * A geometry map (§6.8): every listed key must be present with the right
 * type. Extra keys are tolerated (a newer daemon may add some), unlike the
 * Python/Rust bindings. Null is an error only in the handshake (strict).
 */
function parseGeometry<T>(v: unknown, keys: readonly string[], name: string, textKeys: readonly string[], strict: boolean): T | null {
  if (v === null || v === undefined) {
    if (strict) throw new ProtocolError(`connection_status_event: incompatible daemon: ${name} is missing`);
    return null;
  }
  if (typeof v !== 'object' || Array.isArray(v) || v instanceof Uint8Array) throw new ProtocolError(`connection_status_event: ${name} is not a map`);
  const m = v as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const key of keys) {
    const val = m[key];
    if (textKeys.includes(key)) {
      if (typeof val !== 'string') throw new ProtocolError(`connection_status_event: ${name}.${key} must be a string, got ${describeValue(val)}`);
      out[key] = val;
    } else {
      if (typeof val !== 'number' && typeof val !== 'bigint') {
        throw new ProtocolError(`connection_status_event: ${name}.${key} must be an unsigned integer, got ${describeValue(val)}`);
      }
      out[key] = inFrame('connection_status_event', () => toNumber(val, `${name}.${key}`));
    }
  }
  return out as T;
}

/** One authority map of get_directory_authorities_reply (§9.3); ProtocolError naming the field when malformed. */
function parseAuthority(v: unknown, where: string): DirectoryAuthority {
  if (v === null || typeof v !== 'object' || Array.isArray(v) || Buffer.isBuffer(v)) throw new ProtocolError(`${where} is not a map`);
  const a = v as Record<string, unknown>;
  const text = (field: string): string => {
    const t = a[field];
    if (typeof t !== 'string') throw new ProtocolError(`${where}.${field} is not a string`);
    return t;
  };
  const addresses = a.addresses ?? [];
  if (!Array.isArray(addresses) || addresses.some((x) => typeof x !== 'string')) throw new ProtocolError(`${where}.addresses is not a list of strings`);
  const hash = bytesOrNull(a.identity_key_hash);
  if (!hash || hash.length !== HASH_LENGTH) throw new ProtocolError(`${where}.identity_key_hash: expected ${HASH_LENGTH} bytes, got ${describeValue(a.identity_key_hash)}`);
  return {
    identifier: text('identifier'),
    pkiSignatureScheme: text('pki_signature_scheme'),
    wireKemScheme: text('wire_kem_scheme'),
    addresses: [...(addresses as string[])],
    identityPublicKeyPem: text('identity_public_key_pem'),
    linkPublicKeyPem: text('link_public_key_pem'),
    identityKeyHash: hash,
  };
}
