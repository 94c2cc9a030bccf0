/**
 * Protocol levels of the emulated daemon: 'pinned' (kpclientd v0.0.76,
 * PROTOCOL.md §1-8) or 'current' (kpclientd v0.0.99, §9), and everything
 * the current level adds: the 25-key reply envelope, the request kinds it
 * knows (get_directory_authorities and the Contact Voucher), the PKI
 * document without the fields v0.0.99 dropped, the Pigeonhole geometry it
 * derives from its Sphinx geometry, the 10-minute session grace period,
 * unknown requests dropped instead of fatal and remapped courier errors.
 *
 * server.ts asks this module what a level does; it never tests the level itself.
 */
import { blake2b256 } from '../client/crypto';
import {
  CURRENT_RESPONSE_KINDS,
  DEFAULT_PIGEONHOLE_GEOMETRY,
  RESPONSE_KINDS,
  type PigeonholeGeometry,
} from '../wire';
import type { Network } from './pki';
import { PINNED_SCHEMAS, type RequestBody, type RequestSchemas } from './requests';
import { NO_REPLY, VOUCHER_SCHEMAS, voucherDeriveStream, voucherInduct, voucherMint, voucherOpen } from './vouchers';

export const PROTOCOL_LEVELS = ['pinned', 'current'] as const;
export type ProtocolLevel = (typeof PROTOCOL_LEVELS)[number];

/**
 * The Pigeonhole geometry kpclientd v0.0.99 announces on the docker test
 * network's Sphinx geometry (derived, §9.6; recorded in
 * test/fixtures/kpclientd-v0.0.99-frames.json).
 */
export const CURRENT_PIGEONHOLE_GEOMETRY: PigeonholeGeometry = {
  MaxPlaintextPayloadLength: 1549,
  CourierQueryReadLength: 2000,
  CourierQueryWriteLength: 2000,
  CourierQueryReplyReadLength: 1718,
  CourierQueryReplyWriteLength: 1718,
  NIKEName: 'CTIDH1024-X25519',
  SignatureSchemeName: 'Ed25519',
};

/** PKI document fields kpclientd v0.0.99 no longer has (§9.5). */
export const DROPPED_DOCUMENT_FIELDS: readonly string[] = [
  'SendRatePerMinute',
  'MuMaxDelay',
  'LambdaD',
  'LambdaPMaxDelay',
  'LambdaLMaxDelay',
  'LambdaDMaxDelay',
  'LambdaMMaxDelay',
  'LambdaGMaxDelay',
  'LambdaRMaxDelay',
  'ReplicaEnvelopeKeys',
];

/** What one protocol level does differently. */
export interface ProtocolProfile {
  level: ProtocolLevel;
  /** Every key of the reply envelope, in Go order. */
  responseKinds: readonly string[];
  /** The request kinds it knows, with their field types. */
  requestSchemas: RequestSchemas;
  pigeonhole: PigeonholeGeometry;
  /** Default session grace period (§2.3, §9.2). */
  gracePeriodMs: number;
  /** An unknown or all-null request: dropped (current) or the end of the connection (pinned). */
  dropUnknownRequests: boolean;
  droppedDocumentFields: readonly string[];
  /** What a courier's InvalidEnvelope (1) becomes in start_resending_encrypted_message_reply (§9.4: 31). */
  courierInvalidEnvelopeCode: number;
  /** Without a PKI document, a new connection's handshake waits for one (at most 30 s, §9.2). */
  handshakeWaitsForDocument: boolean;
}

const CURRENT_SCHEMAS: RequestSchemas = {
  ...PINNED_SCHEMAS,
  get_directory_authorities: { query_id: 'id16' },
  ...VOUCHER_SCHEMAS,
};

export const PROFILES: Readonly<Record<ProtocolLevel, ProtocolProfile>> = {
  pinned: {
    level: 'pinned',
    responseKinds: RESPONSE_KINDS,
    requestSchemas: PINNED_SCHEMAS,
    pigeonhole: DEFAULT_PIGEONHOLE_GEOMETRY,
    gracePeriodMs: 30 * 60 * 1000,
    dropUnknownRequests: false,
    droppedDocumentFields: [],
    courierInvalidEnvelopeCode: 1,
    handshakeWaitsForDocument: false,
  },
  current: {
    level: 'current',
    responseKinds: CURRENT_RESPONSE_KINDS,
    requestSchemas: CURRENT_SCHEMAS,
    pigeonhole: CURRENT_PIGEONHOLE_GEOMETRY,
    gracePeriodMs: 10 * 60 * 1000,
    dropUnknownRequests: true,
    droppedDocumentFields: DROPPED_DOCUMENT_FIELDS,
    courierInvalidEnvelopeCode: 31,
    handshakeWaitsForDocument: true,
  },
};

export function profileFor(level: ProtocolLevel | undefined): ProtocolProfile {
  const p = PROFILES[level ?? 'pinned'];
  if (!p) throw new RangeError(`protocol must be one of ${PROTOCOL_LEVELS.join(', ')}`);
  return p;
}

// ------------------------------------------------------------ directory authorities
/** Size of an X-Wing public key, the real authorities' link key. */
const XWING_PUBLIC_KEY_LENGTH = 1216;

function pem(type: string, key: Uint8Array): string {
  const b64 = Buffer.from(key).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${type} PUBLIC KEY-----\n${lines.join('\n')}\n-----END ${type} PUBLIC KEY-----\n`;
}

/** Deterministic filler of any length from a seed (the emulator's stand-in link keys). */
function expand(seed: Uint8Array, length: number): Buffer {
  const out: Buffer[] = [];
  for (let i = 0; out.length * 32 < length; i++) out.push(blake2b256(Buffer.concat([seed, Buffer.from(`link key ${i}`)])));
  return Buffer.concat(out).subarray(0, length);
}

/**
 * The get_directory_authorities reply: the emulated network's authorities
 * in the real map shape; identity_key_hash is the key of each one's entry
 * in the Signatures map of the signed document.
 */
export function directoryAuthoritiesReply(net: Network, b: RequestBody): Record<string, unknown> {
  if (net.authorities.length === 0) return { query_id: b.query_id, authorities: null, error_code: 10 };
  return {
    query_id: b.query_id,
    authorities: net.authorities.map((a, i) => ({
      identifier: a.name,
      pki_signature_scheme: 'Ed25519',
      wire_kem_scheme: 'xwing',
      addresses: [`tcp://127.0.0.1:${40001 + 2 * i}`],
      identity_public_key_pem: pem('ED25519', a.key.publicRaw),
      link_public_key_pem: pem('XWING', expand(a.key.publicRaw, XWING_PUBLIC_KEY_LENGTH)),
      identity_key_hash: blake2b256(a.key.publicRaw),
    })),
    error_code: 0,
  };
}

// ------------------------------------------------------------ dispatch
/**
 * A request only the current level knows: its reply kind and body, or null
 * when the daemon sends nothing (a voucher secret key too short to parse
 * makes the real handler panic; the panic is contained and nobody answers).
 * undefined: not one of these kinds.
 */
export function handleCurrentRequest(net: Network, kind: string, b: RequestBody): { kind: string; body: Record<string, unknown> } | null | undefined {
  const reply = (body: Record<string, unknown> | typeof NO_REPLY) => (body === NO_REPLY ? null : { kind: `${kind}_reply`, body });
  switch (kind) {
    case 'get_directory_authorities':
      return reply(directoryAuthoritiesReply(net, b));
    case 'voucher_mint':
      return reply(voucherMint(b));
    case 'voucher_induct':
      return reply(voucherInduct(b));
    case 'voucher_open':
      return reply(voucherOpen(b));
    case 'voucher_derive_stream':
      return reply(voucherDeriveStream(b));
    default:
      return undefined;
  }
}
