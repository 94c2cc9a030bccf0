/**
 * A raw thin-client socket for emulator tests: wire.ts only, no client
 * library, so protocol details can be checked frame by frame.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { unixSocketPath } from '../../src/client/config';
import {
  decodeCbor,
  decodeEnvelope,
  encodeFrame,
  encodeRequest,
  FrameDecoder,
  FrameTooLargeError,
  RESPONSE_KINDS,
  type AnyRequestKind,
  type RequestKind,
} from '../../src/wire';

export interface Frame {
  /** Response kind, or 'malformed' / 'oversize' for frames that could not be read. */
  kind: string;
  body: any;
  /** The whole decoded envelope (all keys), for structure checks. */
  envelope: any;
  raw: Buffer;
}

export class RawClient {
  private readonly frames: Frame[] = [];
  private waiters: (() => void)[] = [];
  private readonly decoder = new FrameDecoder();
  closed = false;
  readonly closedPromise: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    this.closedPromise = new Promise((res) => socket.once('close', () => res()));
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => {});
  }

  static connect(address: string): Promise<RawClient> {
    return new Promise((res, rej) => {
      const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(address);
      const s = m ? net.connect(Number(m[3]), m[1] ?? m[2]) : net.connect(unixSocketPath(address));
      s.once('connect', () => res(new RawClient(s)));
      s.once('error', rej);
    });
  }

  private onData(chunk: Buffer): void {
    let bodies: Buffer[];
    try {
      bodies = this.decoder.push(chunk);
    } catch (e) {
      if (e instanceof FrameTooLargeError) this.frames.push({ kind: 'oversize', body: e.declaredLength, envelope: null, raw: chunk });
      this.socket.pause();
      this.wake();
      return;
    }
    for (const raw of bodies) {
      try {
        const envelope = decodeCbor(raw);
        const { kind, body } = decodeEnvelope(raw, RESPONSE_KINDS);
        this.frames.push({ kind, body, envelope, raw });
      } catch {
        this.frames.push({ kind: 'malformed', body: null, envelope: null, raw });
      }
    }
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const fn of w) fn();
  }

  /** Frames received but not yet taken. */
  get buffered(): readonly Frame[] {
    return this.frames;
  }

  /** The next frame, in arrival order. */
  async next(timeoutMs = 3000): Promise<Frame> {
    return this.take(() => true, timeoutMs, 'any frame');
  }

  /** The first frame matching `pred` (earlier non-matching frames stay buffered). */
  async take(pred: (f: Frame) => boolean, timeoutMs = 3000, what = 'a matching frame'): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex(pred);
      if (i >= 0) return this.frames.splice(i, 1)[0];
      if (this.closed) throw new Error(`connection closed while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; buffered: ${this.frames.map((f) => f.kind).join(', ')}`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        this.waiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
  }

  /** The reply of `kind` carrying `queryId`. */
  reply(kind: string, queryId: Buffer, timeoutMs = 3000): Promise<Frame> {
    return this.take((f) => f.kind === kind && Buffer.isBuffer(f.body?.query_id) && f.body.query_id.equals(queryId), timeoutMs, `${kind}`);
  }

  /** Nothing matching arrives within ms. */
  async expectNone(pred: (f: Frame) => boolean, ms: number): Promise<void> {
    await new Promise((r) => setTimeout(r, ms));
    const f = this.frames.find(pred);
    if (f) throw new Error(`unexpected frame ${f.kind}`);
  }

  send(kind: RequestKind | string, body: Record<string, unknown>): void {
    this.socket.write(encodeFrame(encodeRequest(kind as RequestKind, body)));
  }

  sendRaw(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Send a request with a fresh query_id and wait for its reply body. */
  async call(kind: AnyRequestKind, body: Record<string, unknown>, timeoutMs = 3000): Promise<any> {
    const query_id = randomBytes(16);
    this.send(kind, { query_id, ...body });
    return (await this.reply(`${kind}_reply`, query_id, timeoutMs)).body;
  }

  /** Frames 1-4 of §2.1. */
  async handshake(token: Buffer = randomBytes(16)): Promise<{ status: Frame; pki: Frame; reply: Frame; token: Buffer }> {
    const status = await this.next();
    const pki = await this.next();
    this.send('session_token', { client_instance_token: token });
    const reply = await this.next();
    return { status, pki, reply, token };
  }

  waitClosed(timeoutMs = 3000): Promise<void> {
    return Promise.race([
      this.closedPromise,
      new Promise<void>((_, rej) => setTimeout(() => rej(new Error('connection was not closed')), timeoutMs)),
    ]);
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A fresh directory for Unix socket paths; removed by the returned cleanup. */
export function tempSocketDir(): { path: (name: string) => string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'kp-emu-'));
  return { path: (name) => join(dir, name), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** ../shared relative to the repository root, falling back to /work/shared. */
export function sharedDir(): string {
  const local = resolve(__dirname, '..', '..', '..', 'shared');
  return existsSync(join(local, 'vectors')) ? local : '/work/shared';
}

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
