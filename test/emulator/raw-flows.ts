/**
 * Pigeonhole call sequences over a RawClient (no client library), shared by
 * the emulator's protocol tests.
 */
import { randomBytes } from 'node:crypto';
import type { RawClient } from './helpers';

export interface RawKeypair {
  write_cap: Buffer;
  read_cap: Buffer;
  first_message_index: Buffer;
}

export async function keypair(c: RawClient, seed: Buffer = randomBytes(32)): Promise<RawKeypair> {
  const r = await c.call('new_keypair', { seed });
  if (r.error_code !== 0) throw new Error(`new_keypair failed with ${r.error_code}`);
  return r;
}

export function resendBody(p: {
  read_cap?: Buffer | null;
  write_cap?: Buffer | null;
  message_box_index?: Buffer | null;
  enc: { envelope_descriptor: Buffer; message_ciphertext: Buffer; envelope_hash: Buffer };
  noRetry?: boolean;
  noIdempotent?: boolean;
}): Record<string, unknown> {
  // Python 0.0.15 key order, null/false fields sent explicitly.
  return {
    read_cap: p.read_cap ?? null,
    write_cap: p.write_cap ?? null,
    message_box_index: p.message_box_index ?? null,
    reply_index: p.read_cap ? 0 : null,
    envelope_descriptor: p.enc.envelope_descriptor,
    message_ciphertext: p.enc.message_ciphertext,
    envelope_hash: p.enc.envelope_hash,
    no_retry_on_box_id_not_found: p.noRetry ?? false,
    no_idempotent_box_already_exists: p.noIdempotent ?? false,
  };
}

/** encrypt_write + start_resending (write); returns the start reply body. */
export async function writeBox(c: RawClient, writeCap: Buffer, index: Buffer, plaintext: Buffer, noIdempotent = false): Promise<any> {
  const enc = await c.call('encrypt_write', { plaintext, write_cap: writeCap, message_box_index: index });
  if (enc.error_code !== 0) throw new Error(`encrypt_write failed with ${enc.error_code}`);
  return c.call('start_resending_encrypted_message', resendBody({ write_cap: writeCap, enc, noIdempotent }), 10_000);
}

/** encrypt_read + start_resending (read); returns the start reply body. */
export async function readBox(c: RawClient, readCap: Buffer, index: Buffer, noRetry = true, timeoutMs = 10_000): Promise<any> {
  const enc = await c.call('encrypt_read', { read_cap: readCap, message_box_index: index });
  if (enc.error_code !== 0) throw new Error(`encrypt_read failed with ${enc.error_code}`);
  return c.call('start_resending_encrypted_message', resendBody({ read_cap: readCap, message_box_index: index, enc, noRetry }), timeoutMs);
}

/** Write copy-stream elements into consecutive boxes of a temp channel from its first index. */
export async function writeTempStream(c: RawClient, temp: RawKeypair, elements: Buffer[]): Promise<void> {
  let idx = temp.first_message_index;
  for (const el of elements) {
    const r = await writeBox(c, temp.write_cap, idx, el);
    if (r.error_code !== 0) throw new Error(`temp write failed with ${r.error_code}`);
    idx = (await c.call('next_message_box_index', { message_box_index: idx })).next_message_box_index;
  }
}
