/**
 * Hashing and random identifiers used by the thin client (PROTOCOL.md §0, §6.5).
 */
import { randomBytes } from 'node:crypto';
// @noble/hashes v2 is ESM-only. Node >= 20.19 can require() it, and our CommonJS
// output does exactly that; the type-only import with resolution-mode keeps
// the compiler happy under `module: node16`, which otherwise rejects the
// ESM types in a CommonJS file. (Node's own crypto has no BLAKE2b-256: its
// blake2b512 cannot be shortened, a 256-bit digest uses a different IV.)
import type { blake2b as Blake2b } from '@noble/hashes/blake2.js' with { 'resolution-mode': 'import' };
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { blake2b } = require('@noble/hashes/blake2.js') as { blake2b: typeof Blake2b };

import { MESSAGE_ID_LENGTH, QUERY_ID_LENGTH, SURB_ID_LENGTH } from './wire';

/** BLAKE2b with a 32-byte digest and no key: envelope hashes, write-cap hashes, destination hashes. */
export function blake2b256(data: Uint8Array): Buffer {
  return Buffer.from(blake2b(data, { dkLen: 32 }));
}

/** 16 random bytes identifying one request; echoed back in the reply (§3.1). */
export function newQueryId(): Buffer {
  return randomBytes(QUERY_ID_LENGTH);
}

/** 16 random bytes naming the SURB of a legacy send; the reply event carries it back (§3.3). */
export function newSurbId(): Buffer {
  return randomBytes(SURB_ID_LENGTH);
}

/** 16 random bytes for the legacy API's optional message ID (§3.3). */
export function newMessageId(): Buffer {
  return randomBytes(MESSAGE_ID_LENGTH);
}
