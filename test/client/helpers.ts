/**
 * Test support for the client tests: locating the shared vectors, and a
 * scripted fake daemon (a real TCP/Unix server) whose frames the tests
 * control one by one.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import {
  DEFAULT_PIGEONHOLE_GEOMETRY,
  DEFAULT_SPHINX_GEOMETRY,
  FrameDecoder,
  HEAD_RESPONSE_KINDS,
  REQUEST_KINDS,
  RESPONSE_KINDS,
  decodeEnvelope,
  encodeFrame,
  encodeResponse,
} from '../../src/wire';
import type { ResponseKind } from '../../src/wire';

// ------------------------------------------------------------------ vectors
export interface VectorFrame {
  dir: 'daemon->client' | 'client->daemon';
  len: number;
  hex: string;
  obj: Record<string, unknown>;
}

/** ../shared/vectors next to the repository (CI layout), else /work/shared/vectors. */
export function vectorsDir(): string {
  const repoRoot = path.resolve(__dirname, '../..');
  const candidates = [path.resolve(repoRoot, '../shared/vectors'), '/work/shared/vectors'];
  for (const c of candidates) if (existsSync(c)) return c;
  throw new Error(`test vectors not found in ${candidates.join(' or ')}`);
}

export function loadVectors(file: string): VectorFrame[] {
  return JSON.parse(readFileSync(path.join(vectorsDir(), file), 'utf8')) as VectorFrame[];
}

// ------------------------------------------------------------ temp sockets
export function tempSocketPath(): { path: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'kp-client-'));
  return { path: path.join(dir, 'd.sock'), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `cond` until true or fail after `ms`. */
export async function waitFor(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

// ---------------------------------------------------------------- fake daemon
export interface ReceivedRequest {
  kind: string;
  body: Record<string, any>;
  /** The CBOR body exactly as the client wrote it. */
  raw: Buffer;
}

/** One accepted connection of the fake daemon. */
export class FakeConnection {
  readonly requests: ReceivedRequest[] = [];
  /** Chunks exactly as the client wrote them (one socket.write per frame is visible as one chunk mostly). */
  private readonly decoder = new FrameDecoder();
  private waiters: { kind: string | null; resolve: (r: ReceivedRequest) => void }[] = [];
  private consumed = 0;
  closed = false;

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const raw of this.decoder.push(chunk)) {
        const env = decodeEnvelope(raw, REQUEST_KINDS);
        this.requests.push({ kind: env.kind, body: env.body, raw });
        this.wake();
      }
    });
    socket.on('close', () => {
      this.closed = true;
    });
    socket.on('error', () => {});
  }

  private wake(): void {
    for (const w of [...this.waiters]) {
      const idx = this.requests.findIndex((r, i) => i >= this.consumed && (w.kind === null || r.kind === w.kind));
      if (idx >= 0) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        this.consumed = idx + 1;
        w.resolve(this.requests[idx]);
      }
    }
  }

  /** The next request (of `kind`, if given) not yet returned by this method. */
  next(kind: string | null = null, ms = 5000): Promise<ReceivedRequest> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`fake daemon: no ${kind ?? 'request'} within ${ms} ms`)), ms);
      this.waiters.push({
        kind,
        resolve: (r) => {
          clearTimeout(t);
          resolve(r);
        },
      });
      this.wake();
    });
  }

  send(kind: ResponseKind, body: Record<string, unknown>): void {
    this.socket.write(encodeFrame(encodeResponse(kind, body)));
  }

  sendRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  sendStatus(opts: { isConnected?: boolean; instanceToken?: Buffer; sphinx?: unknown; pigeonhole?: unknown } = {}): void {
    this.send('connection_status_event', {
      is_connected: opts.isConnected ?? true,
      err: null,
      instance_token: opts.instanceToken ?? Buffer.alloc(16, 0xa0),
      sphinx_geometry: opts.sphinx === undefined ? DEFAULT_SPHINX_GEOMETRY : opts.sphinx,
      pigeonhole_geometry: opts.pigeonhole === undefined ? DEFAULT_PIGEONHOLE_GEOMETRY : opts.pigeonhole,
    });
  }

  /** Frames 1, 2 and 4 of §2.1 around the client's session_token. */
  async handshake(opts: { isConnected?: boolean; instanceToken?: Buffer; pki?: Buffer | null; resumed?: boolean } = {}): Promise<ReceivedRequest> {
    this.sendStatus(opts);
    this.send('new_pki_document_event', { payload: opts.pki ?? null });
    const tok = await this.next('session_token');
    this.send('session_token_reply', { app_id: Buffer.alloc(16, 0xb0), resumed: opts.resumed ?? false });
    return tok;
  }

  /** Answer the next request of `kind` with `body` (query_id filled in). */
  async reply(kind: string, body: Record<string, unknown>): Promise<ReceivedRequest> {
    const req = await this.next(kind);
    this.send(`${kind}_reply` as ResponseKind, { query_id: req.body.query_id, ...body });
    return req;
  }

  shutdown(): void {
    this.send('shutdown_event', {});
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** A listening server; each accepted socket becomes a FakeConnection. */
export class FakeDaemon {
  readonly connections: FakeConnection[] = [];
  private waiters: ((c: FakeConnection) => void)[] = [];
  private seen = 0;

  private constructor(
    readonly server: net.Server,
    readonly address: string,
  ) {}

  static async start(listen: { port: number; host?: string } | { path: string } = { port: 0, host: '127.0.0.1' }): Promise<FakeDaemon> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(listen, () => resolve());
    });
    const a = server.address();
    const address = typeof a === 'string' ? a : `127.0.0.1:${(a as net.AddressInfo).port}`;
    const d = new FakeDaemon(server, 'path' in listen ? listen.path : address);
    server.on('connection', (s) => {
      if (!('path' in listen)) s.setNoDelay(true);
      const c = new FakeConnection(s);
      d.connections.push(c);
      const w = d.waiters.shift();
      if (w) {
        d.seen++;
        w(c);
      }
    });
    return d;
  }

  /** The next accepted connection not yet returned. */
  accept(ms = 5000): Promise<FakeConnection> {
    if (this.seen < this.connections.length) return Promise.resolve(this.connections[this.seen++]);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`fake daemon: no connection within ${ms} ms`)), ms);
      this.waiters.push((c) => {
        clearTimeout(t);
        resolve(c);
      });
    });
  }

  async stop(): Promise<void> {
    for (const c of this.connections) c.socket.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

// ------------------------------------------------------------------ TCP proxy
/**
 * A TCP proxy in front of a daemon (e.g. the emulator), so a test can drop a
 * connection at a chosen moment, hold the client's reconnect, and hold the
 * daemon's frames. Records the kinds of the frames the daemon sent on each
 * connection.
 */
export class TcpProxy {
  /** Response kinds the daemon sent, one list per proxied connection. */
  readonly downstreamKinds: string[][] = [];
  private readonly pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  private readonly held: net.Socket[] = [];
  private holdingConnections = false;
  private holdingFrames = false;

  private constructor(
    readonly server: net.Server,
    readonly address: string,
    private readonly target: { host: string; port: number },
  ) {}

  static async start(target: string): Promise<TcpProxy> {
    const i = target.lastIndexOf(':');
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port: 0, host: '127.0.0.1' }, () => resolve());
    });
    const proxy = new TcpProxy(server, `127.0.0.1:${(server.address() as net.AddressInfo).port}`, { host: target.slice(0, i), port: Number(target.slice(i + 1)) });
    server.on('connection', (s) => {
      s.on('error', () => {});
      if (proxy.holdingConnections) {
        s.pause();
        proxy.held.push(s);
      } else proxy.forward(s);
    });
    return proxy;
  }

  private forward(client: net.Socket): void {
    const upstream = net.connect(this.target);
    upstream.setNoDelay(true);
    client.setNoDelay(true);
    upstream.on('error', () => {});
    const pair = { client, upstream };
    this.pairs.add(pair);
    const kinds: string[] = [];
    this.downstreamKinds.push(kinds);
    const decoder = new FrameDecoder();
    upstream.on('data', (chunk: Buffer) => {
      // Held frames are dropped with the connection; nothing reaches the client meanwhile.
      if (this.holdingFrames) return;
      for (const raw of decoder.push(chunk)) kinds.push(decodeEnvelope(raw, [...RESPONSE_KINDS, ...HEAD_RESPONSE_KINDS]).kind);
      client.write(chunk);
    });
    client.on('data', (chunk: Buffer) => upstream.write(chunk));
    const end = () => {
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.resume();
  }

  /** Drop every proxied connection, both sides, at once. */
  cut(): void {
    for (const p of [...this.pairs]) {
      p.client.destroy();
      p.upstream.destroy();
    }
    this.pairs.clear();
  }

  /** Stop forwarding the daemon's frames (they are discarded) until the connection is cut. */
  holdFrames(): void {
    this.holdingFrames = true;
  }

  /** Accept new client connections but do not connect them to the daemon until releaseConnections(). */
  holdConnections(): void {
    this.holdingConnections = true;
  }

  releaseConnections(): void {
    this.holdingConnections = false;
    this.holdingFrames = false;
    for (const s of this.held.splice(0)) if (!s.destroyed) this.forward(s);
  }

  heldConnections(): number {
    return this.held.length;
  }

  async stop(): Promise<void> {
    this.cut();
    for (const s of this.held.splice(0)) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
