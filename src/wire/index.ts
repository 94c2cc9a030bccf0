/**
 * The thin client wire format (PROTOCOL.md §0, §1, §3, §4), one entry point
 * for the modules that hold it: sizes, kinds, geometries, CBOR codec
 * settings, length-prefixed framing, envelopes and request bodies.
 *
 * Shared by the client, the emulator and the channels so all speak exactly
 * one dialect; both ends are additionally tested against the recorded
 * reference frames.
 */
export * from './sizes';
export * from './kinds';
export * from './geometry';
export * from './cbor';
export * from './framing';
export * from './envelope';
export * from './bodies';
