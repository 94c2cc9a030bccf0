/**
 * Thin client configuration (PROTOCOL.md §1.4, §9.1): where the daemon
 * listens. Loaded from thinclient.toml (validated exactly as the reference
 * bindings do, plus the current daemon's [Dial.Ws]) or given as a plain object.
 */
import { readFileSync } from 'node:fs';
import { parse as parseToml } from 'smol-toml';
import { ConfigError } from './errors';

export type TcpNetwork = 'tcp' | 'tcp4' | 'tcp6';

export type DialConfig =
  | { kind: 'tcp'; host: string; port: number; network: TcpNetwork }
  | { kind: 'unix'; path: string }
  /** kpclientd v0.0.99+ [Listen.Ws]: the same byte stream inside binary WebSocket messages (§9.1). */
  | { kind: 'ws'; url: string };

/** Shape of thinclient.toml, also accepted as a plain object. */
export interface ThinClientTomlShape {
  Dial: { Tcp?: { Address: string; Network?: TcpNetwork }; Unix?: { Address: string }; Ws?: { Address: string } };
}

const DIAL_KINDS = ['Tcp', 'Unix', 'Ws'] as const;

/**
 * Check a WebSocket address "ws://host:port[/path]" (or wss://) and return
 * it unchanged; `where` names the setting in errors.
 */
export function parseWsAddress(address: string, where = 'Address'): string {
  let u: URL;
  try {
    u = new URL(address);
  } catch {
    throw new ConfigError(`${where}: expected a WebSocket URL such as "ws://127.0.0.1:64331", got "${address}"`);
  }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new ConfigError(`${where}: expected a ws:// or wss:// URL, got "${address}"`);
  }
  if (u.hostname === '') throw new ConfigError(`${where}: the URL "${address}" has no host`);
  if (u.username || u.password) throw new ConfigError(`${where}: credentials in the URL are not supported`);
  if (u.hash) throw new ConfigError(`${where}: a fragment (#…) has no meaning in a WebSocket URL`);
  return address;
}

const TCP_NETWORKS: readonly string[] = ['tcp', 'tcp4', 'tcp6'];

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Date);
}

/** Split "host:port" / "[v6]:port"; the port must be 1-65535. */
export function parseHostPort(address: string, where = 'Address'): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:\s]*):(\d+)$/.exec(address);
  if (!m) throw new ConfigError(`${where}: expected "host:port" (IPv6 as "[::1]:64331"), got "${address}"`);
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError(`${where}: port must be 1-65535, got ${m[2]}`);
  return { host: m[1] || 'localhost', port };
}

/** Validate the §1.4 schema; `source` names the file (or "options") in errors. */
export function validateDialConfig(doc: unknown, source = 'options'): DialConfig {
  if (!isPlainObject(doc)) throw new ConfigError(`${source}: expected a table with a [Dial] section`);
  for (const key of Object.keys(doc)) {
    if (key !== 'Dial') throw new ConfigError(`${source}: unknown top-level key "${key}" (only [Dial] is allowed)`);
  }
  const dial = doc.Dial;
  if (!isPlainObject(dial)) throw new ConfigError(`${source}: missing [Dial] table`);
  for (const key of Object.keys(dial)) {
    if (!(DIAL_KINDS as readonly string[]).includes(key)) {
      throw new ConfigError(`${source}: unknown key "Dial.${key}" (expected Dial.Tcp, Dial.Unix or Dial.Ws)`);
    }
  }
  const present = DIAL_KINDS.filter((k) => dial[k] !== undefined);
  if (present.length !== 1) {
    throw new ConfigError(`${source}: [Dial] must contain exactly one of [Dial.Tcp], [Dial.Unix] or [Dial.Ws], found ${present.length}`);
  }
  const kind = present[0];
  const sub = dial[kind];
  if (!isPlainObject(sub)) throw new ConfigError(`${source}: Dial.${kind} must be a table`);
  const allowed = kind === 'Tcp' ? ['Address', 'Network'] : ['Address'];
  for (const key of Object.keys(sub)) {
    if (!allowed.includes(key)) throw new ConfigError(`${source}: unknown key "Dial.${kind}.${key}" (allowed: ${allowed.join(', ')})`);
  }
  if (typeof sub.Address !== 'string' || sub.Address === '') {
    throw new ConfigError(`${source}: Dial.${kind}.Address is required and must be a non-empty string`);
  }
  if (kind === 'Unix') return { kind: 'unix', path: sub.Address };
  if (kind === 'Ws') return { kind: 'ws', url: parseWsAddress(sub.Address, `${source}: Dial.Ws.Address`) };
  const network = sub.Network ?? 'tcp';
  if (typeof network !== 'string' || !TCP_NETWORKS.includes(network)) {
    throw new ConfigError(`${source}: Dial.Tcp.Network must be "tcp", "tcp4" or "tcp6", got ${JSON.stringify(network)}`);
  }
  const { host, port } = parseHostPort(sub.Address, `${source}: Dial.Tcp.Address`);
  return { kind: 'tcp', host, port, network: network as TcpNetwork };
}

/** Parse thinclient.toml text. */
export function parseThinClientToml(text: string, source = 'thinclient.toml'): DialConfig {
  let doc: unknown;
  try {
    doc = parseToml(text);
  } catch (e) {
    throw new ConfigError(`${source}: not valid TOML: ${(e as Error).message}`);
  }
  return validateDialConfig(doc, source);
}

/** Load and validate a thinclient.toml file. */
export function loadThinClientConfig(path: string): DialConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`${path}: cannot read: ${(e as Error).message}`);
  }
  return parseThinClientToml(text, path);
}

/**
 * Accept the forms a caller is likely to have: a DialConfig, the TOML shape
 * as an object, "host:port", "ws://host:port", "unix:/path", "/path" or "@abstract".
 */
export function resolveDialConfig(input: DialConfig | ThinClientTomlShape | string): DialConfig {
  if (typeof input === 'string') {
    if (/^wss?:/i.test(input)) return { kind: 'ws', url: parseWsAddress(input, 'address') };
    if (input.startsWith('unix:')) return { kind: 'unix', path: input.slice(5) };
    if (input.startsWith('/') || input.startsWith('@') || input.startsWith('./')) return { kind: 'unix', path: input };
    const { host, port } = parseHostPort(input, 'address');
    return { kind: 'tcp', host, port, network: 'tcp' };
  }
  if (isPlainObject(input) && 'kind' in input) {
    const d = input as DialConfig;
    if (d.kind === 'unix' && typeof d.path === 'string' && d.path) return d;
    if (d.kind === 'ws' && typeof d.url === 'string') return { kind: 'ws', url: parseWsAddress(d.url, 'options: url') };
    if (d.kind === 'tcp' && typeof d.host === 'string' && Number.isInteger(d.port)) {
      if (d.network !== undefined && !TCP_NETWORKS.includes(d.network)) throw new ConfigError(`options: network must be tcp, tcp4 or tcp6`);
      return { ...d, network: d.network ?? 'tcp' };
    }
    throw new ConfigError('options: expected { kind: "tcp", host, port }, { kind: "unix", path } or { kind: "ws", url }');
  }
  return validateDialConfig(input, 'options');
}

/** Node's connect() path for a Unix address: "@name" is the Linux abstract namespace. */
export function unixSocketPath(path: string): string {
  return path.startsWith('@') ? `\0${path.slice(1)}` : path;
}

export function describeDial(d: DialConfig): string {
  if (d.kind === 'ws') return d.url;
  return d.kind === 'unix' ? `unix:${d.path}` : `${d.host.includes(':') ? `[${d.host}]` : d.host}:${d.port}`;
}
