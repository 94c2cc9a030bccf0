/**
 * Local argument checks for the client API. Every check runs before any
 * frame is written, so bad input never reaches the daemon (which would close
 * the connection on a wrongly sized capability, §1.3) and the connection
 * stays usable. Errors name the argument and never echo its bytes (caps are
 * secrets).
 */
import { InvalidArgumentError } from './errors';

/** What a rejected value looked like, without revealing its content. */
export function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v === 'string') return 'a string';
  if (v instanceof Uint8Array) return `${v.length} bytes`;
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'number') return Number.isInteger(v) ? `the number ${v}` : `the non-integer ${v}`;
  if (typeof v === 'bigint') return `the bigint ${v}`;
  return `a ${typeof v}`;
}

function asBuffer(v: Uint8Array): Buffer {
  return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

/** A byte string of exactly `length` bytes (a cap, an index, a hash, an ID). */
export function exactBytes(name: string, v: unknown, length: number): Buffer {
  if (!(v instanceof Uint8Array) || v.length !== length) {
    throw new InvalidArgumentError(name, `a Buffer/Uint8Array of ${length} bytes`, describeValue(v));
  }
  return asBuffer(v);
}

/** Like exactBytes, but null/undefined is allowed and returned as null. */
export function optionalExactBytes(name: string, v: unknown, length: number): Buffer | null {
  return v === null || v === undefined ? null : exactBytes(name, v, length);
}

/** A non-empty byte string of any length (ciphertexts, descriptors, queue IDs). */
export function nonEmptyBytes(name: string, v: unknown): Buffer {
  if (!(v instanceof Uint8Array) || v.length === 0) {
    throw new InvalidArgumentError(name, 'a non-empty Buffer/Uint8Array', describeValue(v));
  }
  return asBuffer(v);
}

/** A byte string of any length, possibly empty. */
export function anyBytes(name: string, v: unknown): Buffer {
  if (!(v instanceof Uint8Array)) throw new InvalidArgumentError(name, 'a Buffer/Uint8Array', describeValue(v));
  return asBuffer(v);
}

/**
 * A payload given as bytes or as a string (taken as UTF-8), at most `max`
 * bytes long. `limitName` says where the limit comes from.
 */
export function payloadBytes(name: string, v: unknown, max: number | undefined, limitName: string): Buffer {
  let b: Buffer;
  if (typeof v === 'string') b = Buffer.from(v, 'utf8');
  else if (v instanceof Uint8Array) b = asBuffer(v);
  else throw new InvalidArgumentError(name, 'a Buffer/Uint8Array or a string', describeValue(v));
  if (max !== undefined && b.length > max) {
    throw new InvalidArgumentError(name, `at most ${max} bytes (${limitName})`, `${b.length} bytes`);
  }
  return b;
}

/** An integer in [min, max]. */
export function integerInRange(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new InvalidArgumentError(name, `an integer from ${min} to ${max}`, describeValue(v));
  }
  return v;
}

/** A u64 given as number or bigint. */
export function u64Arg(name: string, v: unknown): bigint {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  if (typeof v === 'bigint' && v >= 0n && v < 1n << 64n) return v;
  throw new InvalidArgumentError(name, 'a non-negative integer below 2^64 (number or bigint)', describeValue(v));
}

export function booleanArg(name: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw new InvalidArgumentError(name, 'a boolean', describeValue(v));
  return v;
}

/** A timeout in milliseconds, or undefined for "none". */
export function optionalTimeout(name: string, v: unknown): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) {
    throw new InvalidArgumentError(name, 'a positive finite number of milliseconds', describeValue(v));
  }
  return v;
}

export function optionalSignal(name: string, v: unknown): AbortSignal | undefined {
  if (v === undefined || v === null) return undefined;
  if (!(v instanceof AbortSignal)) throw new InvalidArgumentError(name, 'an AbortSignal', describeValue(v));
  return v;
}
