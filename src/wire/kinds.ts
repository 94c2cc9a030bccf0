/**
 * The request and response kinds (PROTOCOL.md §3, §4, §9.3): the keys of
 * the envelope, in the order the pinned and current daemons declare them.
 */

/** Request kinds in the Go binding's order (pinned, 16 keys). */
export const REQUEST_KINDS = [
  'session_token',
  'thin_close',
  'send_message',
  'new_keypair',
  'encrypt_read',
  'encrypt_write',
  'start_resending_encrypted_message',
  'cancel_resending_encrypted_message',
  'start_resending_copy_command',
  'cancel_resending_copy_command',
  'next_message_box_index',
  'get_message_box_index_counter',
  'get_pki_document',
  'create_courier_envelopes_from_payload',
  'create_courier_envelopes_from_multi_payload',
  'create_courier_envelopes_from_tombstone_range',
] as const;
export type RequestKind = (typeof REQUEST_KINDS)[number];

/** Response kinds in the daemon's emission order (pinned, 20 keys). */
export const RESPONSE_KINDS = [
  'session_token_reply',
  'shutdown_event',
  'connection_status_event',
  'new_pki_document_event',
  'message_sent_event',
  'message_reply_event',
  'message_id_garbage_collected',
  'new_keypair_reply',
  'encrypt_read_reply',
  'encrypt_write_reply',
  'start_resending_encrypted_message_reply',
  'cancel_resending_encrypted_message_reply',
  'start_resending_copy_command_reply',
  'cancel_resending_copy_command_reply',
  'next_message_box_index_reply',
  'get_message_box_index_counter_reply',
  'get_pki_document_reply',
  'create_courier_envelopes_from_payload_reply',
  'create_courier_envelopes_from_multi_payload_reply',
  'create_courier_envelopes_from_tombstone_range_reply',
] as const;
export type ResponseKind = (typeof RESPONSE_KINDS)[number];

/** Response kinds only a HEAD daemon sends (§9.3); recognised, never required. */
export const HEAD_RESPONSE_KINDS = [
  'get_directory_authorities_reply',
  'voucher_mint_reply',
  'voucher_induct_reply',
  'voucher_open_reply',
  'voucher_derive_stream_reply',
] as const;
export type HeadResponseKind = (typeof HEAD_RESPONSE_KINDS)[number];

/**
 * Request kinds only a current daemon (kpclientd v0.0.99+) knows (§9.3).
 * Never send one to a pinned daemon: it aborts on a request kind it does
 * not know (§3.1). Each answers with `<kind>_reply`.
 */
export const HEAD_REQUEST_KINDS = [
  'get_directory_authorities',
  'voucher_mint',
  'voucher_induct',
  'voucher_open',
  'voucher_derive_stream',
] as const;
export type HeadRequestKind = (typeof HEAD_REQUEST_KINDS)[number];
/** Every request kind this library can send. */
export type AnyRequestKind = RequestKind | HeadRequestKind;

/** The current daemon's request envelope, 21 keys in Go order (§9.3). */
export const CURRENT_REQUEST_KINDS: readonly AnyRequestKind[] = [
  ...REQUEST_KINDS.slice(0, REQUEST_KINDS.indexOf('get_pki_document') + 1),
  'get_directory_authorities',
  ...REQUEST_KINDS.slice(REQUEST_KINDS.indexOf('get_pki_document') + 1),
  'voucher_mint',
  'voucher_induct',
  'voucher_open',
  'voucher_derive_stream',
];

/**
 * The current daemon's reply envelope, 25 keys in Go order (§9.3): the 20
 * pinned ones with get_directory_authorities_reply after
 * get_pki_document_reply and the four voucher replies at the end.
 */
export const CURRENT_RESPONSE_KINDS: readonly (ResponseKind | HeadResponseKind)[] = [
  ...RESPONSE_KINDS.slice(0, RESPONSE_KINDS.indexOf('get_pki_document_reply') + 1),
  'get_directory_authorities_reply',
  ...RESPONSE_KINDS.slice(RESPONSE_KINDS.indexOf('get_pki_document_reply') + 1),
  'voucher_mint_reply',
  'voucher_induct_reply',
  'voucher_open_reply',
  'voucher_derive_stream_reply',
];
