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

import { MESSAGE_ID_LENGTH, QUERY_ID_LENGTH, SURB_ID_LENGTH } from '../wire';

/** BLAKE2b with a 32-byte digest and no key: envelope hashes, write-cap hashes, destination hashes. */
export function blake2b256(data: Uint8Array): Buffer {
  return Buffer.from(blake2b(data, { dkLen: 32 }));
}

// Query ids come from a pool of random bytes refilled 4 KiB at a time (one
// randomBytes call per 256 ids); each id is copied out, so it owns its memory
// and the pool never appears in a frame or a caller's hands.
const QUERY_ID_POOL_BYTES = 4096;
let queryIdPool = Buffer.alloc(0);
let queryIdOffset = 0;

/** 16 random bytes identifying one request; echoed back in the reply (§3.1). */
export function newQueryId(): Buffer {
  if (queryIdOffset + QUERY_ID_LENGTH > queryIdPool.length) {
    queryIdPool = randomBytes(QUERY_ID_POOL_BYTES);
    queryIdOffset = 0;
  }
  const id = Buffer.allocUnsafeSlow(QUERY_ID_LENGTH);
  queryIdPool.copy(id, 0, queryIdOffset, queryIdOffset + QUERY_ID_LENGTH);
  // Used bytes are wiped, so the pool holds only ids not yet handed out.
  queryIdPool.fill(0, queryIdOffset, queryIdOffset + QUERY_ID_LENGTH);
  queryIdOffset += QUERY_ID_LENGTH;
  return id;
}

/** 16 random bytes naming the SURB of a legacy send; the reply event carries it back (§3.3). */
export function newSurbId(): Buffer {
  return randomBytes(SURB_ID_LENGTH);
}

/** 16 random bytes for the legacy API's optional message ID (§3.3). */
export function newMessageId(): Buffer {
  return randomBytes(MESSAGE_ID_LENGTH);
}
