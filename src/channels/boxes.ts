/**
 * Box indexes and the ARQ parameters of one box: the counter of a
 * MessageBoxIndex, and what start_resending_encrypted_message takes to write
 * or read the box an envelope was made for. Shared by the store, the sender
 * and the receiver.
 */
import type { ChannelResendParams } from './types';

/** The box counter (Idx64, little-endian in the first 8 bytes of a MessageBoxIndex), decimal. */
export function indexCounter(index: Uint8Array): string {
  return counterValue(index).toString();
}

/** The box counter of a MessageBoxIndex, as a number to compare and subtract. */
export function counterValue(index: Uint8Array): bigint {
  return Buffer.from(index.buffer, index.byteOffset, 8).readBigUInt64LE(0);
}

/** An encrypt_write / encrypt_read / tombstone_range result, as the ARQ calls take it. */
export interface ArqEnvelope {
  envelopeDescriptor: Uint8Array;
  messageCiphertext: Uint8Array;
  envelopeHash: Uint8Array;
}

/** ARQ parameters of a write of `env` (made for `writeCap`). */
export function writeParams(writeCap: Uint8Array, env: ArqEnvelope): ChannelResendParams {
  return {
    readCap: null,
    writeCap,
    messageBoxIndex: null,
    replyIndex: 0,
    envelopeDescriptor: env.envelopeDescriptor,
    messageCiphertext: env.messageCiphertext,
    envelopeHash: env.envelopeHash,
  };
}

/** ARQ parameters of a read of box `index` (the index `env` was encrypted for). */
export function readParams(readCap: Uint8Array, index: Uint8Array, env: ArqEnvelope): ChannelResendParams {
  return {
    readCap,
    writeCap: null,
    messageBoxIndex: index,
    replyIndex: 0,
    envelopeDescriptor: env.envelopeDescriptor,
    messageCiphertext: env.messageCiphertext,
    envelopeHash: env.envelopeHash,
  };
}
