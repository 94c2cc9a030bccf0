/**
 * The emulator's WebSocket listener, as kpclientd v0.0.99 [Listen.Ws]
 * (PROTOCOL.md §9.1): an HTTP server upgrading any path to a WebSocket,
 * each connection carrying the ordinary length-prefixed byte stream inside
 * binary messages. The server sees a plain byte stream per connection.
 */
import type { Duplex } from 'node:stream';
import { createWebSocketStream, WebSocketServer } from 'ws';

export interface WebSocketListener {
  /** "ws://host:port", usable as the ThinClient `dial` option as is. */
  readonly address: string;
  close(): Promise<void>;
}

/**
 * Parse "ws://host:port", "host:port" or ":port" (port 0 = any free port)
 * into where to listen.
 */
export function parseWsListen(listen: string): { host: string; port: number } {
  if (/^wss:/i.test(listen.trim())) throw new RangeError(`WebSocket listen address "${listen}": the emulator serves plain ws://, not TLS`);
  const s = listen.trim().replace(/^ws:\/\//i, '').replace(/\/.*$/, '');
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:/\s]*):(\d+)$/.exec(s);
  if (!m || Number(m[2]) > 65535) throw new RangeError(`WebSocket listen address "${listen}": expected ws://host:port`);
  return { host: m[1] || '127.0.0.1', port: Number(m[2]) };
}

export async function listenWebSocket(listen: string, onStream: (stream: Duplex) => void, log: (line: string) => void): Promise<WebSocketListener> {
  const { host, port } = parseWsListen(listen);
  const wss = new WebSocketServer({ host, port, perMessageDeflate: false, maxPayload: 100 * 1024 * 1024 });
  await new Promise<void>((resolve, reject) => {
    wss.once('listening', resolve);
    wss.once('error', reject);
  });
  wss.on('error', (e) => log(`WebSocket listener error: ${e.message}`));
  wss.on('connection', (ws) => {
    const stream = createWebSocketStream(ws);
    // It ends when the client closes the WebSocket but, unlike a socket, never closes by itself.
    stream.on('end', () => stream.destroy());
    onStream(stream);
  });
  const bound = wss.address();
  const boundPort = typeof bound === 'object' && bound ? bound.port : port;
  const address = `ws://${host.includes(':') ? `[${host}]` : host}:${boundPort}`;
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        for (const client of wss.clients) client.terminate();
        wss.close(() => resolve());
      }),
  };
}
