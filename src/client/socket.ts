/**
 * The byte stream to the daemon: dialing it (TCP, Unix or WebSocket),
 * writing queued frames in batches, and ending it politely. What flows
 * through it (handshake, frames, reconnects) is connection.ts's job.
 */
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import WebSocket, { createWebSocketStream } from 'ws';

import { unixSocketPath } from './config';
import type { DialConfig } from './config';

const SOCKET_END_GRACE_MS = 1_000;
/** Frames of one tick are concatenated into writes of up to this many bytes; a larger frame is written alone. */
const WRITE_BATCH_BYTES = 64 * 1024;

/**
 * A byte stream to the daemon. WebSocket (kpclientd v0.0.99+ [Listen.Ws],
 * §9.1): the same length-prefixed frames inside binary messages whose
 * boundaries mean nothing, so the stream is read and written exactly like
 * a socket; each frame is one write, hence one message.
 */
export function dialDaemon(d: DialConfig, limits: { handshakeTimeoutMs: number; maxFrameLength: number }): Duplex {
  if (d.kind === 'ws') {
    const ws = new WebSocket(d.url, {
      perMessageDeflate: false,
      handshakeTimeout: limits.handshakeTimeoutMs,
      // A message holds at least one whole frame when the daemon writes one frame per message.
      maxPayload: Math.max(100 * 1024 * 1024, limits.maxFrameLength + 4),
    });
    const stream = createWebSocketStream(ws);
    // It ends when the daemon closes the WebSocket but, unlike a socket, never closes by itself.
    stream.on('end', () => stream.destroy());
    return stream;
  }
  const socket =
    d.kind === 'tcp'
      ? net.connect({ host: d.host, port: d.port, family: d.network === 'tcp4' ? 4 : d.network === 'tcp6' ? 6 : 0 })
      : net.connect({ path: unixSocketPath(d.path) });
  if (d.kind === 'tcp') socket.setNoDelay(true);
  return socket;
}

/** Write `frames` in order: small ones concatenated, a large one on its own (no copy). */
export function writeBatched(socket: Duplex, frames: Buffer[]): void {
  if (frames.length === 1) {
    socket.write(frames[0]);
    return;
  }
  let batch: Buffer[] = [];
  let size = 0;
  const send = (): void => {
    if (batch.length === 1) socket.write(batch[0]);
    else if (batch.length > 1) socket.write(Buffer.concat(batch, size));
    batch = [];
    size = 0;
  };
  for (const f of frames) {
    if (f.length > WRITE_BATCH_BYTES) {
      send();
      socket.write(f);
      continue;
    }
    if (size + f.length > WRITE_BATCH_BYTES) send();
    batch.push(f);
    size += f.length;
  }
  send();
}

/** End a socket politely, destroying it if the peer does not close in time. */
export function endSocket(socket: Duplex): Promise<void> {
  if (socket.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => socket.destroy(), SOCKET_END_GRACE_MS);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.end();
  });
}
