/**
 * A TCP proxy between a thin client and kpclientd that records every frame
 * in both directions, in the format of the reference vectors
 * ({dir, len, hex, obj}, byte strings rendered as "h'…'"), so what the real
 * daemon sends can be committed as fixtures and compared key for key.
 */
import net from 'node:net';
import { decodeCborFaithful } from '../../src/wire';

export interface RecordedFrame {
  dir: 'client->daemon' | 'daemon->client';
  len: number;
  hex: string;
  obj: Record<string, unknown>;
}

/** JSON rendering of a decoded CBOR value: byte strings as "h'hex'", maps as objects in their order. */
export function render(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return `h'${Buffer.from(v).toString('hex')}'`;
  if (typeof v === 'bigint') return Number(v);
  if (Array.isArray(v)) return v.map(render);
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [String(k), render(x)]));
  if (typeof v === 'object') return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, render(x)]));
  return v;
}

/** Splits a byte stream into length-prefixed frames. */
class FrameSplitter {
  private buf = Buffer.alloc(0);
  constructor(private readonly onFrame: (body: Buffer) => void) {}
  push(chunk: Buffer): void {
    this.buf = Buffer.concat([this.buf, chunk]);
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (this.buf.length < 4 + len) return;
      this.onFrame(this.buf.subarray(4, 4 + len));
      this.buf = this.buf.subarray(4 + len);
    }
  }
}

export interface RecordingProxy {
  address: string;
  frames: RecordedFrame[];
  close(): Promise<void>;
}

export async function startRecordingProxy(target: { host: string; port: number }): Promise<RecordingProxy> {
  const frames: RecordedFrame[] = [];
  const sockets = new Set<net.Socket>();
  const record = (dir: RecordedFrame['dir']) => (body: Buffer) => {
    let obj: Record<string, unknown>;
    try {
      obj = render(decodeCborFaithful(body)) as Record<string, unknown>;
    } catch (err) {
      obj = { undecodable: String(err) };
    }
    frames.push({ dir, len: body.length, hex: body.toString('hex'), obj });
  };
  const server = net.createServer((client) => {
    const daemon = net.connect(target.port, target.host);
    sockets.add(client).add(daemon);
    const up = new FrameSplitter(record('client->daemon'));
    const down = new FrameSplitter(record('daemon->client'));
    client.on('data', (c) => {
      up.push(c);
      daemon.write(c);
    });
    daemon.on('data', (c) => {
      down.push(c);
      client.write(c);
    });
    const end = () => {
      client.destroy();
      daemon.destroy();
    };
    client.on('close', end).on('error', end);
    daemon.on('close', end).on('error', end);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    frames,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
