/**
 * The client's options resolved once, when it is created: defaults filled
 * in and every value checked, so the other modules read plain settings.
 */
import { randomBytes } from 'node:crypto';

import { loadThinClientConfig, resolveDialConfig } from './config';
import type { DialConfig } from './config';
import { InvalidArgumentError } from './errors';
import { DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_REQUEST_TIMEOUT_MS } from './types';
import type { DaemonProtocol, Logger, ThinClientOptions } from './types';
import { booleanArg, describeValue, exactBytes } from './validate';
import { DEFAULT_FRAME_TIMEOUT_MS, DEFAULT_MAX_FRAME_LENGTH, INSTANCE_TOKEN_LENGTH } from '../wire';

export interface Settings {
  dial: DialConfig;
  handshakeTimeoutMs: number;
  protocol: DaemonProtocol | 'auto';
  requestTimeoutMs: number;
  maxFrameLength: number;
  frameTimeoutMs: number;
  reconnect: boolean;
  reconnectInitialDelayMs: number;
  reconnectMaxDelayMs: number;
  /** This client's session token (client_instance_token). */
  token: Buffer;
  log: Logger;
}

const DEFAULT_DIAL: DialConfig = { kind: 'tcp', host: 'localhost', port: 64331, network: 'tcp' };

const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/**
 * @throws ConfigError for an unusable `dial` / `configFile`;
 *         InvalidArgumentError for a bad option (e.g. a sessionToken that is not 16 bytes).
 */
export function resolveOptions(options: ThinClientOptions): Settings {
  if (options.dial !== undefined && options.configFile !== undefined) {
    throw new InvalidArgumentError('options', 'either dial or configFile, not both');
  }
  let dial: DialConfig;
  if (options.configFile !== undefined) dial = loadThinClientConfig(options.configFile);
  else if (options.dial !== undefined) dial = resolveDialConfig(options.dial);
  else dial = DEFAULT_DIAL;
  const handshakeTimeoutMs = positiveOption('handshakeTimeoutMs', options.handshakeTimeoutMs, DEFAULT_HANDSHAKE_TIMEOUT_MS);
  const protocol = options.daemonProtocol ?? 'auto';
  if (protocol !== 'auto' && protocol !== 'pinned' && protocol !== 'current') {
    throw new InvalidArgumentError('daemonProtocol', '"auto", "pinned" or "current"', describeValue(protocol));
  }
  const requestTimeoutMs = positiveOption('requestTimeoutMs', options.requestTimeoutMs, DEFAULT_REQUEST_TIMEOUT_MS);
  const maxFrameLength = positiveOption('maxFrameLength', options.maxFrameLength, DEFAULT_MAX_FRAME_LENGTH);
  const frameTimeoutMs = positiveOption('frameTimeoutMs', options.frameTimeoutMs, DEFAULT_FRAME_TIMEOUT_MS);
  const reconnectInitialDelayMs = positiveOption('reconnectInitialDelayMs', options.reconnectInitialDelayMs, 1_000);
  const reconnectMaxDelayMs = positiveOption('reconnectMaxDelayMs', options.reconnectMaxDelayMs, 60_000);
  if (options.reconnect !== undefined) booleanArg('reconnect', options.reconnect);
  const token =
    options.sessionToken === undefined
      ? randomBytes(INSTANCE_TOKEN_LENGTH)
      : Buffer.from(exactBytes('sessionToken', options.sessionToken, INSTANCE_TOKEN_LENGTH));
  return {
    dial,
    handshakeTimeoutMs,
    protocol,
    requestTimeoutMs,
    maxFrameLength,
    frameTimeoutMs,
    reconnect: options.reconnect ?? true,
    reconnectInitialDelayMs,
    reconnectMaxDelayMs,
    token,
    log: options.logger ?? silentLogger,
  };
}

function positiveOption(name: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new InvalidArgumentError(name, 'a positive finite number', describeValue(v));
  }
  return v;
}
