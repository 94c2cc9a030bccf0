/**
 * Where the real daemon of `npm run mixnet -- start` listens, and a client
 * connected to it. KATZENPOST_MIXNET_ADDRESS overrides the address read from
 * .mixnet/pids.json. A network that is not running fails the suite with the
 * command to start it: these tests never skip.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ThinClient, type ThinClientOptions } from '../../src';

export const ROOT = join(__dirname, '..', '..');
export const STATE_DIR = process.env.KATZENPOST_MIXNET_DIR || join(ROOT, '.mixnet');

/** host:port of the real kpclientd. */
export function daemonAddress(): string {
  if (process.env.KATZENPOST_MIXNET_ADDRESS) return process.env.KATZENPOST_MIXNET_ADDRESS;
  const pids = join(STATE_DIR, 'pids.json');
  if (!existsSync(pids)) {
    throw new Error(`no real network is running (${pids} is missing): run \`npm run mixnet -- start\` first`);
  }
  const state = JSON.parse(readFileSync(pids, 'utf8')) as { clientPort: number };
  return `127.0.0.1:${state.clientPort}`;
}

/** A connected client of the real daemon, with real-network deadlines. */
export async function connectReal(options: ThinClientOptions = {}): Promise<ThinClient> {
  const c = new ThinClient({ dial: daemonAddress(), handshakeTimeoutMs: 40_000, requestTimeoutMs: 60_000, ...options });
  await c.connect();
  if (!c.pkiDocument()) throw new Error('the real kpclientd has no PKI document yet: wait for `npm run mixnet -- start` to say ready');
  return c;
}

/** ws://host:port of the second kpclientd, which serves thin clients over WebSocket. */
export function wsDaemonAddress(): string {
  if (process.env.KATZENPOST_MIXNET_WS_ADDRESS) return process.env.KATZENPOST_MIXNET_WS_ADDRESS;
  const [host, port] = daemonAddress().split(':');
  return `ws://${host}:${Number(port) + 1}`;
}
