/**
 * A bare connection to the real kpclientd that sends hand-built frames,
 * for what the library refuses to send (over-size plaintexts and legacy
 * payloads are checked locally): the daemon's own answer can only be seen
 * this way. Used by the real-network tests, never by the library.
 */
import net from 'node:net';
import { newQueryId } from '../../src';
import { FrameDecoder, HEAD_RESPONSE_KINDS, REQUEST_KINDS, RESPONSE_KINDS, decodeEnvelope, encodeFrame, encodeRequest, requestBodies, type RequestKind } from '../../src/wire';
import { daemonAddress } from './support';

export interface RawFrame {
  kind: string;
  body: Record<string, any>;
  at: number;
}

const KNOWN = [...RESPONSE_KINDS, ...HEAD_RESPONSE_KINDS] as readonly string[];
const REQUEST_KINDS_ALL = [...REQUEST_KINDS] as readonly string[];

export class RawConnection {
  readonly frames: RawFrame[] = [];
  private waiters: { pred: (f: RawFrame) => boolean; resolve: (f: RawFrame) => void }[] = [];
  private constructor(private readonly socket: net.Socket) {}

  /** Connects and, unless told otherwise, completes the handshake with a fresh session token. */
  static async open(opts: { sessionToken?: Buffer; handshake?: boolean } = {}): Promise<RawConnection> {
    const [host, port] = splitAddress(daemonAddress());
    const socket = net.connect({ host, port });
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const raw = new RawConnection(socket);
    const decoder = new FrameDecoder();
    socket.on('data', (chunk) => {
      for (const f of decoder.push(chunk)) {
        const env = decodeEnvelope(f, KNOWN);
        const frame = { kind: env.kind, body: env.body, at: Date.now() };
        raw.frames.push(frame);
        for (const w of [...raw.waiters]) {
          if (w.pred(frame)) {
            raw.waiters.splice(raw.waiters.indexOf(w), 1);
            w.resolve(frame);
          }
        }
      }
    });
    socket.on('error', () => {});
    if (opts.handshake !== false) {
      await raw.next((f) => f.kind === 'new_pki_document_event', 60_000);
      raw.send('session_token', requestBodies.sessionToken(opts.sessionToken ?? newQueryId()));
      await raw.next((f) => f.kind === 'session_token_reply', 60_000);
    }
    return raw;
  }

  send(kind: RequestKind, body: Record<string, unknown>): void {
    this.socket.write(encodeFrame(encodeRequest(kind, body)));
  }

  /** The first frame (already received or still to come) that matches. */
  next(pred: (f: RawFrame) => boolean, timeoutMs: number): Promise<RawFrame> {
    const seen = this.frames.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve: (f: RawFrame) => (clearTimeout(t), resolve(f)) };
      const t = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`raw connection: no matching frame within ${timeoutMs} ms (got ${this.frames.map((f) => f.kind).join(', ')})`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  /** Send a request with a fresh query ID and wait for its reply. */
  async request(kind: RequestKind, body: Record<string, unknown>, timeoutMs = 60_000): Promise<Record<string, any>> {
    const queryId = newQueryId();
    this.send(kind, { query_id: queryId, ...body });
    const f = await this.next((x) => x.kind === `${kind}_reply` && Buffer.isBuffer(x.body.query_id) && x.body.query_id.equals(queryId), timeoutMs);
    return f.body;
  }

  /** Polite end: thin_close, then close the socket. */
  async close(): Promise<void> {
    if (!this.socket.destroyed) this.send('thin_close', {});
    await new Promise<void>((r) => {
      this.socket.once('close', () => r());
      this.socket.end();
      setTimeout(() => {
        this.socket.destroy();
        r();
      }, 1000);
    });
  }
}

function splitAddress(a: string): [string, number] {
  const i = a.lastIndexOf(':');
  return [a.slice(0, i).replace(/^\[|\]$/g, ''), Number(a.slice(i + 1))];
}

/** One frame seen by the proxy, decoded. */
export interface ProxiedFrame {
  dir: 'client->daemon' | 'daemon->client';
  /** Which client connection (1, 2, … in accept order). */
  conn: number;
  kind: string;
  body: Record<string, any>;
}

export interface DroppingProxy {
  address: string;
  frames: ProxiedFrame[];
  /** Cut every current connection (both sides), as a network failure would; new ones are still accepted. */
  drop(): void;
  close(): Promise<void>;
}

/**
 * A TCP proxy in front of the real daemon that decodes every frame in both
 * directions and can cut its connections on demand: a socket loss without
 * touching the daemon, and a witness of exactly what the client sent.
 */
export async function startProxy(): Promise<DroppingProxy> {
  const [host, port] = splitAddress(daemonAddress());
  const frames: ProxiedFrame[] = [];
  const pairs = new Set<[net.Socket, net.Socket]>();
  let counter = 0;
  const decoderFor = (dir: ProxiedFrame['dir'], conn: number) => {
    const decoder = new FrameDecoder();
    return (chunk: Buffer) => {
      try {
        for (const f of decoder.push(chunk)) {
          const env = decodeEnvelope(f, dir === 'client->daemon' ? REQUEST_KINDS_ALL : KNOWN);
          frames.push({ dir, conn, kind: env.kind, body: env.body });
        }
      } catch {
        /* not ours to judge: the client and the daemon see the bytes unchanged */
      }
    };
  };
  const server = net.createServer((client) => {
    const conn = ++counter;
    const daemon = net.connect({ host, port });
    const pair: [net.Socket, net.Socket] = [client, daemon];
    pairs.add(pair);
    const up = decoderFor('client->daemon', conn);
    const down = decoderFor('daemon->client', conn);
    client.on('data', (c) => {
      up(c);
      daemon.write(c);
    });
    daemon.on('data', (c) => {
      down(c);
      client.write(c);
    });
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      daemon.destroy();
    };
    client.on('close', end).on('error', end);
    daemon.on('close', end).on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port: proxyPort } = server.address() as net.AddressInfo;
  return {
    address: `127.0.0.1:${proxyPort}`,
    frames,
    drop: () => {
      for (const [a, b] of [...pairs]) {
        a.destroy();
        b.destroy();
      }
      pairs.clear();
    },
    close: async () => {
      for (const [a, b] of pairs) {
        a.destroy();
        b.destroy();
      }
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
