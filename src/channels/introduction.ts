/**
 * Introducing two channel holders with a Contact Voucher instead of pasted
 * capabilities (kpclientd v0.0.99+): both sides' steps as a resumable state
 * machine that saves its progress after every step.
 *
 * The inviting side owns an outgoing channel. It mints a voucher from that
 * channel's write cap, shows the 32-byte voucher (text or QR code), publishes
 * the voucher payload in box 0 of the voucher stream and waits for box 1.
 * The joining side types the voucher in, derives the voucher stream, reads
 * box 0, inducts (which yields the inviter's re-seeded read cap) and writes
 * the sealed reply, carrying the read cap of its own outgoing channel, to
 * box 1. The inviter opens it and from then on writes with the re-seeded
 * write cap. Each side ends with a write cap to send with and the other's
 * read cap to receive from.
 *
 * Induct draws a fresh salt on every call, so the sealed reply must be saved
 * before it is written: a restart between the two then writes the same reply
 * and both sides agree on the re-seeded caps.
 */
import { BoxIDNotFoundError, InvalidArgumentError } from '../client/errors';
import { READ_CAP_LENGTH, WRITE_CAP_LENGTH } from '../wire';
import { Backoff } from '../util/backoff';
import { abortReason, pause } from '../util/deadline';
import type { ChannelClient, ChannelEncryptResult, ChannelResendParams } from './types';

export const VOUCHER_LENGTH = 32;

/** What the introduction needs from the thin client: the channel subset plus the voucher calls. */
export interface IntroductionClient extends Pick<ChannelClient, 'encryptWrite' | 'encryptRead' | 'startResendingEncryptedMessage' | 'startResendingEncryptedMessageNoRetry'> {
  voucherMint(writeCap: Uint8Array, displayName: string): Promise<{ voucher: Buffer; voucherPayload: Buffer; voucherWriteCap: Buffer; voucherReadCap: Buffer; voucherSecretKey: Buffer }>;
  voucherDeriveStream(voucher: Uint8Array): Promise<{ voucherWriteCap: Buffer; voucherReadCap: Buffer }>;
  voucherInduct(voucher: Uint8Array, payload: Uint8Array, whoReply: Uint8Array | string): Promise<{ displayName: string; mutatedMessageReadCap: Buffer; sealedReply: Buffer }>;
  voucherOpen(secretKey: Uint8Array, sealedReply: Uint8Array, writeCap: Uint8Array): Promise<{ whoReply: Buffer; mutatedMessageWriteCap: Buffer }>;
}

export type IntroductionRole = 'invite' | 'join';

/**
 * How far an introduction got. invite: minted -> published -> done;
 * join: started -> inducted -> done. Buffers are capabilities and keys:
 * store them like the channel's own caps, never log them.
 */
export interface IntroductionState {
  role: IntroductionRole;
  step: 'minted' | 'published' | 'started' | 'inducted' | 'done';
  voucher: Buffer;
  /** Our outgoing channel: its write cap (invite: minted from it; replaced by the re-seeded one when done). */
  writeCap: Buffer;
  /** Our outgoing channel's read cap, the one the join side hands over in its sealed reply. */
  readCap: Buffer;
  /** Invite: what the joiner will see as our name. */
  displayName?: string;
  voucherPayload?: Buffer;
  voucherWriteCap?: Buffer;
  voucherReadCap?: Buffer;
  voucherSecretKey?: Buffer;
  /** Box 1 of the voucher stream, learnt from writing or reading box 0. */
  replyIndex?: Buffer;
  /** Join: the sealed reply, saved before it is written. */
  sealedReply?: Buffer;
  /** Done: the other side's read cap, to receive from. */
  peerReadCap?: Buffer;
  /** Join: the inviter's display name from the voucher payload. */
  peerName?: string;
}

export interface IntroductionOptions {
  /** Saves the state after every step (the channel database). */
  save(state: IntroductionState): void;
  signal?: AbortSignal;
  /** Polling a box that is not written yet: first and longest delay (default 1 s, 30 s). */
  pollInitialMs?: number;
  pollMaxMs?: number;
  /** Called when a step completes, for status reporting. */
  onStep?(state: IntroductionState): void;
}

/** The voucher as people exchange it: 64 hex digits in groups of 8. */
export function formatVoucher(voucher: Uint8Array): string {
  const hex = Buffer.from(voucher).toString('hex');
  return hex.match(/.{1,8}/g)!.join('-');
}

/** Reads a voucher typed or pasted: hex digits, any spaces or dashes between them. */
export function parseVoucher(text: unknown): Buffer {
  const digits = typeof text === 'string' ? text.replace(/[\s-]/g, '').toLowerCase() : '';
  if (!/^[0-9a-f]{64}$/.test(digits)) {
    // Never the text itself: a voucher with a typo is still nearly the secret.
    const got =
      typeof text !== 'string' ? typeof text : /^[0-9a-f]*$/.test(digits) ? `${digits.length} hex digits` : `${digits.length} characters, not all hex digits`;
    throw new InvalidArgumentError('voucher', `${VOUCHER_LENGTH} bytes as 64 hex digits (dashes and spaces allowed)`, got);
  }
  return Buffer.from(digits, 'hex');
}

/** A fresh invitation: mints the voucher from our outgoing channel's write cap (first step, saved). */
export async function startInvitation(
  client: IntroductionClient,
  channel: { writeCap: Buffer; readCap: Buffer },
  displayName: string,
  save: (s: IntroductionState) => void,
): Promise<IntroductionState> {
  const m = await client.voucherMint(channel.writeCap, displayName);
  const state: IntroductionState = {
    role: 'invite',
    step: 'minted',
    voucher: m.voucher,
    writeCap: Buffer.from(channel.writeCap),
    readCap: Buffer.from(channel.readCap),
    displayName,
    voucherPayload: m.voucherPayload,
    voucherWriteCap: m.voucherWriteCap,
    voucherReadCap: m.voucherReadCap,
    voucherSecretKey: m.voucherSecretKey,
  };
  save(state);
  return state;
}

/** A fresh join with the voucher we were given (nothing is sent until run). */
export function startJoin(voucher: Buffer, channel: { writeCap: Buffer; readCap: Buffer }): IntroductionState {
  if (voucher.length !== VOUCHER_LENGTH) throw new InvalidArgumentError('voucher', `${VOUCHER_LENGTH} bytes`, `${voucher.length} bytes`);
  return { role: 'join', step: 'started', voucher: Buffer.from(voucher), writeCap: Buffer.from(channel.writeCap), readCap: Buffer.from(channel.readCap) };
}

/**
 * Runs the introduction from wherever `state` stands to 'done', saving after
 * every step; returns the final state (peerReadCap set; invite: writeCap
 * re-seeded). Safe to call again after a crash with the last saved state.
 */
export async function runIntroduction(client: IntroductionClient, initial: IntroductionState, options: IntroductionOptions): Promise<IntroductionState> {
  let state = { ...initial };
  const advance = (next: Partial<IntroductionState>): void => {
    state = { ...state, ...next };
    options.save(state);
    options.onStep?.(state);
  };
  const poll = { initial: options.pollInitialMs ?? 1000, max: options.pollMaxMs ?? 30_000 };
  if (state.role === 'invite') {
    const vw = need(state.voucherWriteCap, 'voucherWriteCap');
    const vr = need(state.voucherReadCap, 'voucherReadCap');
    if (state.step === 'minted') {
      const box0 = firstIndexOf(vw);
      const enc = await client.encryptWrite(need(state.voucherPayload, 'voucherPayload'), vw, box0);
      // A write of a box that exists already counts as done (default idempotence), so a resumed publish is harmless.
      await client.startResendingEncryptedMessage(writeParams(vw, enc), { signal: options.signal });
      advance({ step: 'published', replyIndex: enc.nextMessageBoxIndex });
    }
    if (state.step === 'published') {
      const sealed = await readWhenWritten(client, vr, need(state.replyIndex, 'replyIndex'), poll, options.signal);
      const opened = await client.voucherOpen(need(state.voucherSecretKey, 'voucherSecretKey'), sealed, state.writeCap);
      const peerReadCap = checkReadCap(opened.whoReply);
      advance({ step: 'done', writeCap: opened.mutatedMessageWriteCap, peerReadCap });
    }
    return state;
  }
  if (state.step === 'started') {
    const stream = await client.voucherDeriveStream(state.voucher);
    const box0 = firstIndexOf(stream.voucherReadCap);
    const { plaintext: payload, next } = await readWhenWrittenWithNext(client, stream.voucherReadCap, box0, poll, options.signal);
    const ind = await client.voucherInduct(state.voucher, payload, state.readCap);
    advance({
      step: 'inducted',
      voucherWriteCap: stream.voucherWriteCap,
      voucherReadCap: stream.voucherReadCap,
      replyIndex: next,
      sealedReply: ind.sealedReply,
      peerReadCap: ind.mutatedMessageReadCap,
      peerName: ind.displayName,
    });
  }
  if (state.step === 'inducted') {
    const vw = need(state.voucherWriteCap, 'voucherWriteCap');
    const enc = await client.encryptWrite(need(state.sealedReply, 'sealedReply'), vw, need(state.replyIndex, 'replyIndex'));
    await client.startResendingEncryptedMessage(writeParams(vw, enc), { signal: options.signal });
    advance({ step: 'done' });
  }
  return state;
}

function need<T>(value: T | undefined, field: string): T {
  if (value === undefined || value === null) throw new InvalidArgumentError(`introduction.${field}`, 'a saved value', 'nothing (the saved introduction is incomplete)');
  return value;
}

function firstIndexOf(cap: Buffer): Buffer {
  return Buffer.from(cap.subarray(cap.length - 104));
}

function checkReadCap(whoReply: Buffer): Buffer {
  if (whoReply.length !== READ_CAP_LENGTH) {
    throw new InvalidArgumentError('whoReply', `the other side's ${READ_CAP_LENGTH}-byte read cap`, `${whoReply.length} bytes`);
  }
  return Buffer.from(whoReply);
}

function writeParams(writeCap: Buffer, enc: ChannelEncryptResult): ChannelResendParams {
  if (writeCap.length !== WRITE_CAP_LENGTH) throw new InvalidArgumentError('writeCap', `${WRITE_CAP_LENGTH} bytes`, `${writeCap.length} bytes`);
  return { writeCap, messageCiphertext: enc.messageCiphertext, envelopeDescriptor: enc.envelopeDescriptor, envelopeHash: enc.envelopeHash };
}

async function readWhenWritten(
  client: IntroductionClient,
  readCap: Buffer,
  index: Buffer,
  poll: { initial: number; max: number },
  signal?: AbortSignal,
): Promise<Buffer> {
  return (await readWhenWrittenWithNext(client, readCap, index, poll, signal)).plaintext;
}

/**
 * Reads one box, polling while it does not exist. Each poll is a fresh
 * encrypt_read with no retry: the real courier answers a re-sent envelope
 * from its cache, so a default read of a box written later can stall for
 * minutes (README, real network).
 */
async function readWhenWrittenWithNext(
  client: IntroductionClient,
  readCap: Buffer,
  index: Buffer,
  poll: { initial: number; max: number },
  signal?: AbortSignal,
): Promise<{ plaintext: Buffer; next: Buffer }> {
  const backoff = new Backoff(poll.initial, poll.max);
  for (;;) {
    if (signal?.aborted) throw abortReason(signal);
    const enc = await client.encryptRead(readCap, index);
    try {
      const reply = await client.startResendingEncryptedMessageNoRetry(
        { readCap, messageBoxIndex: index, messageCiphertext: enc.messageCiphertext, envelopeDescriptor: enc.envelopeDescriptor, envelopeHash: enc.envelopeHash },
        { signal },
      );
      if (reply.plaintext) return { plaintext: reply.plaintext, next: enc.nextMessageBoxIndex };
    } catch (e) {
      if (!(e instanceof BoxIDNotFoundError)) throw e;
    }
    await pause(backoff.next(), signal).promise;
  }
}
