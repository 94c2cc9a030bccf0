/**
 * The emulated Contact Voucher (PROTOCOL.md §9.3, §9.4): the four local
 * requests of a current kpclientd, with the real outcomes and error codes.
 *
 * Like the rest of the emulator this is not the real cryptography. What is
 * kept: the voucher is BLAKE2b-256 of the payload; the payload is a nested
 * canonical-CBOR structure {SignedPleaseAdd, VoucherPubKey} whose please-add
 * {DisplayName, MessageReadCap} is Ed25519-signed by the joiner's write cap,
 * so it has the real size; the voucher stream caps are derived from the
 * voucher alone; the salt re-seeds the index ratchet of both caps the same
 * way, so the mutated write cap writes where the mutated read cap reads; key
 * and sealed-reply sizes are the real ones. What is not: the reply seal is
 * X25519 + AES-256-GCM (the real one is a CTIDH1024-X25519 MKEM), padded to
 * the real length; the key blobs carry an X25519 key and derived filler.
 */
import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  randomBytes,
  sign,
  verify,
} from 'node:crypto';
import { blake2b256 } from '../client/crypto';
import {
  decodeCbor,
  READ_CAP_LENGTH,
  VOUCHER_LENGTH,
  VOUCHER_PUBLIC_KEY_LENGTH,
  VOUCHER_SALT_LENGTH,
  VOUCHER_SECRET_KEY_LENGTH,
  WRITE_CAP_LENGTH,
} from '../wire';
import { deriveKeypair, hkdf, mutateIndex } from './pigeonhole';
import { ed25519FromSeed, ed25519PublicKey, encodeCanonical } from './pki';
import type { RequestBody } from './requests';

/** Reply codes of the voucher requests (§9.4); anything malformed is 3. */
export const VoucherCode = {
  Success: 0,
  InvalidRequest: 3,
  HashMismatch: 28,
  SignatureInvalid: 29,
  SealOpenFailed: 30,
} as const;

/** Fields of every voucher request, for the request decoder (all byte strings but the display name). */
export const VOUCHER_SCHEMAS = {
  voucher_mint: { query_id: 'id16', message_write_cap: 'bytes', display_name: 'text' },
  voucher_induct: { query_id: 'id16', voucher: 'bytes', voucher_payload: 'bytes', who_reply: 'bytes' },
  voucher_open: { query_id: 'id16', voucher_secret_key: 'bytes', sealed_reply: 'bytes', message_write_cap: 'bytes' },
  voucher_derive_stream: { query_id: 'id16', voucher: 'bytes' },
} as const;

type Body = Record<string, unknown>;

/**
 * What the real daemon does with a secret key too short to hold even the
 * X25519 half: its handler panics (contained) and no reply is ever sent.
 */
export const NO_REPLY = Symbol('no reply');

const X25519_LENGTH = 32;
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
/** The real sealed reply is 355 bytes plus the CBOR byte string of WhoReply (header and content). */
const SEAL_OVERHEAD = 355;
const GCM_TAG = 16;

function filler(from: Uint8Array, label: string, length: number): Buffer {
  return hkdf(from, 'katzenpost-emulator-voucher', label, length);
}

function x25519Private(raw: Uint8Array) {
  return createPrivateKey({ key: Buffer.concat([PKCS8_X25519_PREFIX, raw]), format: 'der', type: 'pkcs8' });
}

function x25519Public(raw: Uint8Array) {
  return createPublicKey({ key: Buffer.concat([SPKI_X25519_PREFIX, raw]), format: 'der', type: 'spki' });
}

function rawPublic(key: ReturnType<typeof createPublicKey>): Buffer {
  const der = key.export({ format: 'der', type: 'spki' });
  return Buffer.from(der.subarray(der.length - X25519_LENGTH));
}

/** A voucher keypair with the real blob sizes: X25519 key first, derived filler after. */
function newVoucherKeypair(): { secret: Buffer; public: Buffer } {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const der = privateKey.export({ format: 'der', type: 'pkcs8' });
  const priv = Buffer.from(der.subarray(der.length - X25519_LENGTH));
  const pub = rawPublic(publicKey);
  return {
    secret: Buffer.concat([priv, filler(priv, 'secret key', VOUCHER_SECRET_KEY_LENGTH - X25519_LENGTH)]),
    public: Buffer.concat([pub, filler(pub, 'public key', VOUCHER_PUBLIC_KEY_LENGTH - X25519_LENGTH)]),
  };
}

function sealKey(shared: Buffer, ephemeral: Buffer, recipient: Buffer): Buffer {
  return hkdf(shared, Buffer.concat([ephemeral, recipient]), 'voucher reply seal');
}

function cborBytesLength(n: number): number {
  return (n < 24 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n < 0x100000000 ? 5 : 9) + n;
}

/**
 * Seal the reply plaintext to a voucher public key: ephemeral ‖ length ‖
 * AES-GCM ‖ padding to the real size. The padding is derived from the rest,
 * so a change to any byte makes the seal fail to open, as the real one does.
 */
function sealReply(voucherPublicKey: Buffer, plaintext: Buffer, whoReplyLength: number): Buffer {
  const recipient = voucherPublicKey.subarray(0, X25519_LENGTH);
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const ephemeral = rawPublic(publicKey);
  const shared = diffieHellman({ privateKey, publicKey: x25519Public(recipient) });
  const c = createCipheriv('aes-256-gcm', sealKey(shared, ephemeral, recipient), Buffer.alloc(12));
  const ct = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
  const length = Buffer.alloc(4);
  length.writeUInt32BE(ct.length, 0);
  const sealed = Buffer.concat([ephemeral, length, ct]);
  const target = SEAL_OVERHEAD + cborBytesLength(whoReplyLength);
  return sealed.length >= target ? sealed : Buffer.concat([sealed, sealPadding(sealed, target - sealed.length)]);
}

function sealPadding(sealed: Buffer, length: number): Buffer {
  return length > 0 ? filler(blake2b256(sealed), 'seal padding', length) : Buffer.alloc(0);
}

function openSeal(secretKey: Buffer, sealed: Buffer): Buffer | null {
  if (sealed.length < X25519_LENGTH + 4 + GCM_TAG) return null;
  const ephemeral = sealed.subarray(0, X25519_LENGTH);
  const ctLength = sealed.readUInt32BE(X25519_LENGTH);
  const start = X25519_LENGTH + 4;
  if (ctLength < GCM_TAG || start + ctLength > sealed.length) return null;
  const body = sealed.subarray(0, start + ctLength);
  if (!sealPadding(body, sealed.length - body.length).equals(sealed.subarray(body.length))) return null;
  try {
    const priv = x25519Private(secretKey.subarray(0, X25519_LENGTH));
    const recipient = rawPublic(createPublicKey(priv));
    const shared = diffieHellman({ privateKey: priv, publicKey: x25519Public(ephemeral) });
    const d = createDecipheriv('aes-256-gcm', sealKey(shared, ephemeral, recipient), Buffer.alloc(12));
    const ct = sealed.subarray(start, start + ctLength);
    d.setAuthTag(ct.subarray(ct.length - GCM_TAG));
    return Buffer.concat([d.update(ct.subarray(0, ct.length - GCM_TAG)), d.final()]);
  } catch {
    return null;
  }
}

/** A CBOR map with the given byte-string / text fields, or null when it is not one. */
function decodeStruct(data: Buffer, fields: Record<string, 'bytes' | 'text'>): Record<string, any> | null {
  let v: unknown;
  try {
    v = decodeCbor(data);
  } catch {
    return null;
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v) || Buffer.isBuffer(v)) return null;
  const o = v as Record<string, unknown>;
  for (const [k, t] of Object.entries(fields)) {
    if (t === 'text' ? typeof o[k] !== 'string' : !Buffer.isBuffer(o[k])) return null;
  }
  return o;
}

/** The voucher stream: a channel derived from the voucher alone. */
function deriveStream(voucher: Buffer): { writeCap: Buffer; readCap: Buffer } {
  const kp = deriveKeypair(filler(voucher, 'voucher stream', 32));
  return { writeCap: kp.writeCap, readCap: kp.readCap };
}

/** A cap (write or read) with its index ratchet re-seeded by the salt; the key part is untouched. */
function mutateCap(cap: Buffer, salt: Buffer): Buffer {
  const keyPart = cap.length - 104;
  return Buffer.concat([cap.subarray(0, keyPart), mutateIndex(cap.subarray(keyPart), salt)]);
}

/** A failure reply: query_id, every field in order (null, or Go's zero value for text), error_code. */
const failure = (b: RequestBody, fields: string[], code: number): Body => {
  const body: Body = { query_id: b.query_id };
  for (const f of fields) body[f] = f === 'display_name' ? '' : null;
  body.error_code = code;
  return body;
};

const MINT_FIELDS = ['voucher', 'voucher_payload', 'voucher_write_cap', 'voucher_read_cap', 'voucher_secret_key', 'voucher_public_key'];
const INDUCT_FIELDS = ['display_name', 'mutated_message_read_cap', 'sealed_reply', 'voucher_write_cap', 'voucher_read_cap', 'salt'];
const OPEN_FIELDS = ['who_reply', 'salt', 'mutated_message_write_cap'];
const STREAM_FIELDS = ['voucher_write_cap', 'voucher_read_cap'];

/** voucher_mint: any 168-byte write cap (its key is not checked, as in the real daemon). */
export function voucherMint(b: RequestBody): Body {
  const wc: Buffer | null = b.message_write_cap;
  if (!wc || wc.length !== WRITE_CAP_LENGTH) return failure(b, MINT_FIELDS, VoucherCode.InvalidRequest);
  const readCap = wc.subarray(32, 32 + READ_CAP_LENGTH);
  const keypair = newVoucherKeypair();
  const pleaseAdd = encodeCanonical({ DisplayName: b.display_name ?? '', MessageReadCap: readCap });
  const signature = sign(null, pleaseAdd, ed25519FromSeed(wc.subarray(0, 32)).privateKey);
  const signed = encodeCanonical({ PleaseAdd: pleaseAdd, Signature: signature });
  const payload = encodeCanonical({ SignedPleaseAdd: signed, VoucherPubKey: keypair.public });
  const voucher = blake2b256(payload);
  const stream = deriveStream(voucher);
  return {
    query_id: b.query_id,
    voucher,
    voucher_payload: payload,
    voucher_write_cap: stream.writeCap,
    voucher_read_cap: stream.readCap,
    voucher_secret_key: keypair.secret,
    voucher_public_key: keypair.public,
    error_code: 0,
  };
}

/** voucher_induct: hash (28), structure (3), signature (29), then seal a fresh salt. */
export function voucherInduct(b: RequestBody): Body {
  const fail = (code: number) => failure(b, INDUCT_FIELDS, code);
  const voucher: Buffer | null = b.voucher;
  const payload: Buffer = b.voucher_payload ?? Buffer.alloc(0);
  if (!voucher || voucher.length !== VOUCHER_LENGTH) return fail(VoucherCode.InvalidRequest);
  if (!blake2b256(payload).equals(voucher)) return fail(VoucherCode.HashMismatch);
  const vp = decodeStruct(payload, { SignedPleaseAdd: 'bytes', VoucherPubKey: 'bytes' });
  const spa = vp && decodeStruct(vp.SignedPleaseAdd, { PleaseAdd: 'bytes', Signature: 'bytes' });
  const pa = spa && decodeStruct(spa.PleaseAdd, { DisplayName: 'text', MessageReadCap: 'bytes' });
  if (!vp || !spa || !pa || pa.MessageReadCap.length !== READ_CAP_LENGTH) return fail(VoucherCode.InvalidRequest);
  let valid = false;
  try {
    valid = verify(null, spa.PleaseAdd, ed25519PublicKey(pa.MessageReadCap.subarray(0, 32)), spa.Signature);
  } catch {
    valid = false;
  }
  if (!valid) return fail(VoucherCode.SignatureInvalid);
  if (vp.VoucherPubKey.length !== VOUCHER_PUBLIC_KEY_LENGTH) return fail(VoucherCode.InvalidRequest);
  const who: Buffer = b.who_reply ?? Buffer.alloc(0);
  const salt = randomBytes(VOUCHER_SALT_LENGTH);
  const sealed = sealReply(vp.VoucherPubKey, encodeCanonical({ WhoReply: who, VoucherSalt: salt }), who.length);
  const stream = deriveStream(voucher);
  return {
    query_id: b.query_id,
    display_name: pa.DisplayName,
    mutated_message_read_cap: mutateCap(pa.MessageReadCap, salt),
    sealed_reply: sealed,
    voucher_write_cap: stream.writeCap,
    voucher_read_cap: stream.readCap,
    salt,
    error_code: 0,
  };
}

/** voucher_open: key (3; too short: no reply at all), seal (30), then the write cap (3). */
export function voucherOpen(b: RequestBody): Body | typeof NO_REPLY {
  const sk: Buffer = b.voucher_secret_key ?? Buffer.alloc(0);
  if (sk.length < X25519_LENGTH) return NO_REPLY;
  if (sk.length !== VOUCHER_SECRET_KEY_LENGTH) return failure(b, OPEN_FIELDS, VoucherCode.InvalidRequest);
  const plaintext = openSeal(sk, b.sealed_reply ?? Buffer.alloc(0));
  const reply = plaintext && decodeStruct(plaintext, { WhoReply: 'bytes', VoucherSalt: 'bytes' });
  if (!reply || reply.VoucherSalt.length !== VOUCHER_SALT_LENGTH) return failure(b, OPEN_FIELDS, VoucherCode.SealOpenFailed);
  const wc: Buffer | null = b.message_write_cap;
  if (!wc || wc.length !== WRITE_CAP_LENGTH) return failure(b, OPEN_FIELDS, VoucherCode.InvalidRequest);
  return {
    query_id: b.query_id,
    who_reply: reply.WhoReply,
    salt: reply.VoucherSalt,
    mutated_message_write_cap: mutateCap(wc, reply.VoucherSalt),
    error_code: 0,
  };
}

/** voucher_derive_stream: the caps voucher_mint returned, from the voucher alone. */
export function voucherDeriveStream(b: RequestBody): Body {
  const voucher: Buffer | null = b.voucher;
  if (!voucher || voucher.length !== VOUCHER_LENGTH) return failure(b, STREAM_FIELDS, VoucherCode.InvalidRequest);
  const stream = deriveStream(voucher);
  return { query_id: b.query_id, voucher_write_cap: stream.writeCap, voucher_read_cap: stream.readCap, error_code: 0 };
}
