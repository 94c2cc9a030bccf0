/**
 * Sizes of the wire format (PROTOCOL.md §0): the fixed lengths of ids,
 * hashes, caps and indexes, the frame limits, and the tables that check a
 * message body's byte-string fields against them.
 */

export const QUERY_ID_LENGTH = 16;
export const MESSAGE_ID_LENGTH = 16;
export const SURB_ID_LENGTH = 16;
export const APP_ID_LENGTH = 16;
export const INSTANCE_TOKEN_LENGTH = 16;
export const HASH_LENGTH = 32;
export const WRITE_CAP_LENGTH = 168;
export const READ_CAP_LENGTH = 136;
export const MESSAGE_BOX_INDEX_LENGTH = 104;
export const SEED_LENGTH = 32;
/** Contact Voucher token: BLAKE2b-256 of the voucher payload (§9.3). */
export const VOUCHER_LENGTH = 32;
/** VoucherSalt, which re-seeds a channel's index ratchet (§9.3). */
export const VOUCHER_SALT_LENGTH = 32;
/** The voucher reply keypair is a CTIDH1024-X25519 hybrid NIKE pair (hpqc voucher): these sizes. */
export const VOUCHER_SECRET_KEY_LENGTH = 162;
export const VOUCHER_PUBLIC_KEY_LENGTH = 160;
/** Maximum payload per destination for the create_courier_envelopes_* calls. */
export const MAX_COPY_PAYLOAD_LENGTH = 10 * 1024 * 1024;
/** HEAD's frame cap (§9.1); we enforce it in both directions by default. */
export const DEFAULT_MAX_FRAME_LENGTH = 40 * 1024 * 1024;
export const FRAME_PREFIX_LENGTH = 4;

/**
 * The byte-string fields that have one fixed size wherever they appear
 * (§0), by wire key. Built from the constants above, which the client's
 * argument checks use; every daemon reply and event is checked against it
 * on arrival (checkFixedLengths).
 */
export const FIXED_FIELD_LENGTHS: Readonly<Record<string, number>> = Object.freeze({
  query_id: QUERY_ID_LENGTH,
  id: MESSAGE_ID_LENGTH,
  message_id: MESSAGE_ID_LENGTH,
  surbid: SURB_ID_LENGTH,
  app_id: APP_ID_LENGTH,
  instance_token: INSTANCE_TOKEN_LENGTH,
  client_instance_token: INSTANCE_TOKEN_LENGTH,
  envelope_hash: HASH_LENGTH,
  write_cap_hash: HASH_LENGTH,
  courier_identity_hash: HASH_LENGTH,
  destination_id_hash: HASH_LENGTH,
  write_cap: WRITE_CAP_LENGTH,
  dest_write_cap: WRITE_CAP_LENGTH,
  read_cap: READ_CAP_LENGTH,
  message_box_index: MESSAGE_BOX_INDEX_LENGTH,
  first_message_index: MESSAGE_BOX_INDEX_LENGTH,
  next_message_box_index: MESSAGE_BOX_INDEX_LENGTH,
  dest_start_index: MESSAGE_BOX_INDEX_LENGTH,
  start_index: MESSAGE_BOX_INDEX_LENGTH,
  next_dest_index: MESSAGE_BOX_INDEX_LENGTH,
  seed: SEED_LENGTH,
  // Contact Voucher fields (§9.3): opaque byte strings, of fixed size in every daemon that has them.
  voucher: VOUCHER_LENGTH,
  salt: VOUCHER_SALT_LENGTH,
  message_write_cap: WRITE_CAP_LENGTH,
  voucher_write_cap: WRITE_CAP_LENGTH,
  voucher_read_cap: READ_CAP_LENGTH,
  mutated_message_write_cap: WRITE_CAP_LENGTH,
  mutated_message_read_cap: READ_CAP_LENGTH,
  voucher_secret_key: VOUCHER_SECRET_KEY_LENGTH,
  voucher_public_key: VOUCHER_PUBLIC_KEY_LENGTH,
});

/** List-valued fields whose every element is null or of one fixed size (§4.18). */
export const FIXED_ELEMENT_LENGTHS: Readonly<Record<string, number>> = Object.freeze({
  next_dest_indices: MESSAGE_BOX_INDEX_LENGTH,
});

/**
 * Check the top-level fields of one message body against
 * FIXED_FIELD_LENGTHS and FIXED_ELEMENT_LENGTHS. null/absent means "not
 * set" and passes (whether a field is required is the caller's business).
 * Throws a RangeError naming the field, the expected and the actual size,
 * e.g. "write_cap: expected 168 bytes, got 5" or "next_dest_indices[1]: …".
 */
export function checkFixedLengths(body: Record<string, unknown>): void {
  // for-in over a decoded map (a plain object: every key its own) builds no entry arrays, as Object.entries would.
  for (const field in body) {
    const v = body[field];
    const want = FIXED_FIELD_LENGTHS[field];
    if (want !== undefined) checkLength(field, v, want);
    const each = FIXED_ELEMENT_LENGTHS[field];
    if (each === undefined || v === null || v === undefined) continue;
    if (!Array.isArray(v)) throw new TypeError(`${field}: expected a list, got ${describeKind(v)}`);
    v.forEach((item, i) => checkLength(`${field}[${i}]`, item, each));
  }
}

function checkLength(field: string, v: unknown, want: number): void {
  if (v === null || v === undefined || (v instanceof Uint8Array && v.length === want)) return;
  throw new RangeError(`${field}: expected ${want} bytes, got ${v instanceof Uint8Array ? v.length : describeKind(v)}`);
}

/** What a non-byte-string value is, without its content (caps are secrets). */
function describeKind(v: unknown): string {
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'a map' : `a ${typeof v}`;
}
