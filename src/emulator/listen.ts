/**
 * Listen addresses: parsing the `listen` option (host:port, a socket path
 * or @abstract), formatting a bound TCP address, and clearing the stale
 * socket file a crashed emulator left behind.
 */
import { existsSync, lstatSync, unlinkSync } from 'node:fs';
import * as net from 'node:net';
import { resolve as resolvePath } from 'node:path';
import type { DialConfig } from '../client/config';

export type ListenAddress = { kind: 'tcp'; host: string; port: number } | { kind: 'unix'; path: string };

export function parseListenAddress(listen: string | DialConfig): ListenAddress {
  if (typeof listen !== 'string') {
    if (listen.kind === 'unix') return { kind: 'unix', path: listen.path };
    if (listen.kind === 'ws') throw new RangeError('listen: a WebSocket listener is the wsListen option');
    return { kind: 'tcp', host: listen.host, port: listen.port };
  }
  let s = listen.trim();
  if (/^wss?:/i.test(s)) throw new RangeError(`listen address "${listen}": a WebSocket listener is the wsListen option`);
  if (s.startsWith('unix:')) s = s.slice(5);
  else {
    const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:/@\s]*):(\d+)$/.exec(s);
    if (m) {
      const port = Number(m[2]);
      if (port > 65535) throw new RangeError(`listen address ${listen}: port must be 0-65535`);
      return { kind: 'tcp', host: m[1] || '127.0.0.1', port };
    }
    if (!s.includes('/') && !s.startsWith('@')) throw new RangeError(`listen address "${listen}": expected host:port, a socket path or @name`);
  }
  if (s === '' || s === '@') throw new RangeError(`listen address "${listen}": empty socket path`);
  return { kind: 'unix', path: s.startsWith('@') ? s : resolvePath(s) };
}

export function formatTcp(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Remove a stale socket file left by a crashed emulator, but never steal a live one. */
export async function clearStaleSocket(path: string): Promise<void> {
  if (path.startsWith('@') || !existsSync(path)) return;
  if (!lstatSync(path).isSocket()) throw new Error(`${path} exists and is not a socket`);
  const live = await new Promise<boolean>((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (live) throw new Error(`${path}: another daemon or emulator is listening there`);
  unlinkSync(path);
}
