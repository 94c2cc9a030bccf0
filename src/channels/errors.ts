/**
 * Errors raised by the persistent-channel store. They extend the client's
 * KatzenpostError so callers can switch on `.code` in one place. Messages
 * name channels, never capabilities.
 */
import { KatzenpostError } from '../client/errors';

export class ChannelError extends KatzenpostError {}

/** No channel of that name is in the database. */
export class ChannelNotFoundError extends ChannelError {
  constructor(readonly channel: string) {
    super('CHANNEL_NOT_FOUND', `channel "${channel}" not found`);
  }
}

/** createChannel/importChannel for a name already in use. */
export class ChannelExistsError extends ChannelError {
  constructor(readonly channel: string) {
    super('CHANNEL_EXISTS', `channel "${channel}" already exists`);
  }
}

/** A write operation on an imported (read-only) channel. */
export class ChannelReadOnlyError extends ChannelError {
  constructor(readonly channel: string) {
    super('CHANNEL_READ_ONLY', `channel "${channel}" is read-only (imported from a read capability)`);
  }
}

/** The caps supplied at open time are not the ones this database holds for the name (or the reverse). */
export class ChannelCapsMismatchError extends ChannelError {
  constructor(
    readonly channel: string,
    detail: string,
  ) {
    super('CHANNEL_CAPS_MISMATCH', `channel "${channel}": ${detail}`);
  }
}

/** A receive loop is already running for this channel in this store. */
export class ChannelBusyError extends ChannelError {
  constructor(readonly channel: string) {
    super('CHANNEL_BUSY', `channel "${channel}" already has a receiver running`);
  }
}

/** The store was closed, or the channel deleted, before the operation completed. */
export class ChannelClosedError extends ChannelError {
  constructor(message: string) {
    super('CHANNEL_CLOSED', message);
  }
}

/** A tombstone request names messages this store did not send (or not yet acknowledged). */
export class TombstoneRangeError extends ChannelError {
  constructor(message: string) {
    super('TOMBSTONE_RANGE', message);
  }
}

/** moveReader() to a box it cannot reach: before the channel's first box, or too far from any known index. */
export class ChannelPositionError extends ChannelError {
  constructor(message: string) {
    super('READER_POSITION', message);
  }
}
