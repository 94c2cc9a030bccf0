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
// randomBytes call per 256 ids). newQueryId copies each id out, so an id
// given to a caller owns its memory, and wipes the used bytes, so the pool
// holds only ids not yet handed out. The request path takes its ids as
// views instead (requestQueryId): they go into a frame and a hex key, never
// to a caller, and cost no ArrayBuffer each.
const QUERY_ID_POOL_BYTES = 4096;
let queryIdPool = Buffer.alloc(0);
let queryIdOffset = 0;

/** The next QUERY_ID_LENGTH bytes of the pool (refilled when used up); where they start. */
function takeFromPool(): number {
  if (queryIdOffset + QUERY_ID_LENGTH > queryIdPool.length) {
    queryIdPool = randomBytes(QUERY_ID_POOL_BYTES);
    queryIdOffset = 0;
  }
  const at = queryIdOffset;
  queryIdOffset += QUERY_ID_LENGTH;
  return at;
}

/** 16 random bytes identifying one request; echoed back in the reply (§3.1). */
export function newQueryId(): Buffer {
  const at = takeFromPool();
  const id = Buffer.allocUnsafeSlow(QUERY_ID_LENGTH);
  queryIdPool.copy(id, 0, at, at + QUERY_ID_LENGTH);
  queryIdPool.fill(0, at, at + QUERY_ID_LENGTH);
  return id;
}

/**
 * A query id for a request this client builds itself: a view of the pool
 * (not copied, not wiped), read only while the request is encoded and
 * registered. Never hand it to a caller: use newQueryId for that.
 */
export function requestQueryId(): Buffer {
  const at = takeFromPool();
  return queryIdPool.subarray(at, at + QUERY_ID_LENGTH);
}

/** 16 random bytes naming the SURB of a legacy send; the reply event carries it back (§3.3). */
export function newSurbId(): Buffer {
  return randomBytes(SURB_ID_LENGTH);
}

/** 16 random bytes for the legacy API's optional message ID (§3.3). */
export function newMessageId(): Buffer {
  return randomBytes(MESSAGE_ID_LENGTH);
}
