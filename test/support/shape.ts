/**
 * Shape comparison of decoded CBOR values against recorded frames (whose
 * JSON rendering writes byte strings as "h'…'"): the same keys in the same
 * order, with the same type classes, recursively. Values are not compared.
 */
import assert from 'node:assert/strict';

/** Type class of a decoded value or of a recorded frame's JSON rendering. */
export function typeClass(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return 'bytes';
  if (typeof v === 'string') return v.startsWith("h'") ? 'bytes' : 'text';
  if (typeof v === 'number' || typeof v === 'bigint') return 'uint';
  if (typeof v === 'boolean') return 'bool';
  if (Array.isArray(v)) return 'array';
  return 'map';
}

/** Same keys in the same order with the same type classes, recursively. */
export function assertSameShape(ours: any, theirs: any, path: string): void {
  assert.equal(typeClass(ours), typeClass(theirs), `${path}: type`);
  if (typeClass(ours) === 'map') {
    assert.deepEqual(Object.keys(ours), Object.keys(theirs), `${path}: keys and order`);
    for (const k of Object.keys(theirs)) assertSameShape(ours[k], theirs[k], `${path}.${k}`);
  } else if (Array.isArray(ours) && ours.length && theirs.length) {
    assertSameShape(ours[0], theirs[0], `${path}[0]`);
  }
}
