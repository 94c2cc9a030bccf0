/**
 * Reading the katzenpost-daemon config node's editor fields.
 */
import { describeDial, loadThinClientConfig, type DialConfig } from '../../client/config';
import type { NodeDef } from '../types';

export interface DaemonDef extends NodeDef {
  transport?: 'tcp' | 'unix' | 'config';
  host?: string;
  port?: string | number;
  socketPath?: string;
  configFile?: string;
  handshakeTimeout?: string | number;
  requestTimeout?: string | number;
}

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 64331;

/** Where to dial, from the editor's fields, plus a short address for messages. */
export function dialFromConfig(def: DaemonDef): { dial?: DialConfig; configFile?: string; address: string } {
  const transport = def.transport ?? 'tcp';
  if (transport === 'unix') {
    const path = String(def.socketPath ?? '').trim();
    return { dial: { kind: 'unix', path }, address: `unix:${path}` };
  }
  if (transport === 'config') {
    const file = String(def.configFile ?? '').trim();
    let address = file;
    try {
      address = `${describeDial(loadThinClientConfig(file))} (${file})`;
    } catch {
      // The client reports the file's problem when it is created; keep the path for messages.
    }
    return { configFile: file, address };
  }
  const host = String(def.host ?? '').trim() || DEFAULT_HOST;
  const portNum = Number(String(def.port ?? '').trim() || DEFAULT_PORT);
  return {
    dial: { kind: 'tcp', host, port: portNum, network: 'tcp' },
    address: `${host.includes(':') ? `[${host}]` : host}:${portNum}`,
  };
}

