/**
 * The least a kpclientd can do, for the bench: the §2.1 handshake
 * (connection_status_event with the geometries, a new_pki_document_event,
 * session_token_reply), then every encrypt_write answered at once with a
 * canned reply (its query_id patched in). Replies to one read are written
 * together, so the daemon costs as little as possible and the client side is
 * what gets measured. Every client (ours, the bare ping-pong one, the Python
 * binding) is timed against this same daemon.
 *
 *   node scripts/bench/minimal-daemon.mjs ADDRESS
 *
 * ADDRESS is a Unix socket path, or host:port for TCP (port 0 = any free
 * port). It prints "listening on ADDRESS" (the real port for TCP) once ready.
 * spawnMinimalDaemon(address) starts it in its own process.
 */
import { fileURLToPath } from 'node:url';
import { dist, require, spawnReady } from './common.mjs';

const TCP = /^(\[[^\]]+\]|[^/:]+):(\d+)$/;

function minimalDaemon(address) {
  const net = require('node:net');
  const { wire } = dist();
  const marker = Buffer.alloc(16, 0xee);
  const template = wire.encodeFrame(wire.encodeResponse('encrypt_write_reply', {
    query_id: marker, message_ciphertext: Buffer.alloc(1200, 1), envelope_descriptor: Buffer.alloc(180, 2),
    envelope_hash: Buffer.alloc(32, 3), next_message_box_index: Buffer.alloc(104, 4), error_code: 0,
  }));
  const at = template.indexOf(marker);
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    socket.on('error', () => {});
    const decoder = new wire.FrameDecoder();
    socket.write(wire.encodeFrame(wire.encodeResponse('connection_status_event', {
      is_connected: true, err: null, instance_token: Buffer.alloc(16, 0xa0),
      sphinx_geometry: wire.DEFAULT_SPHINX_GEOMETRY, pigeonhole_geometry: wire.DEFAULT_PIGEONHOLE_GEOMETRY,
    })));
    socket.write(wire.encodeFrame(wire.encodeResponse('new_pki_document_event', { payload: null })));
    socket.on('data', (chunk) => {
      const out = [];
      for (const raw of decoder.push(chunk)) {
        const env = wire.decodeEnvelope(raw, wire.REQUEST_KINDS);
        if (env.kind === 'session_token') {
          out.push(wire.encodeFrame(wire.encodeResponse('session_token_reply', { app_id: Buffer.alloc(16, 0xb0), resumed: false })));
        } else if (env.kind === 'encrypt_write') {
          const reply = Buffer.from(template);
          Buffer.from(env.body.query_id).copy(reply, at);
          out.push(reply);
        } else if (env.kind === 'thin_close') {
          socket.end();
        }
      }
      if (out.length) socket.write(out.length === 1 ? out[0] : Buffer.concat(out));
    });
  });
  const tcp = TCP.exec(address);
  const announce = () => {
    const a = server.address();
    console.log(`listening on ${typeof a === 'string' ? a : `${a.address}:${a.port}`}`);
  };
  if (tcp) server.listen(Number(tcp[2]), tcp[1].replace(/^\[|\]$/g, ''), announce);
  else server.listen(address, announce);
  const stop = () => process.exit(0);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

/** The minimal daemon in its own process; resolves { address, stop }. */
export function spawnMinimalDaemon(address) {
  return spawnReady(process.execPath, [fileURLToPath(import.meta.url), address], /listening on (\S+)/, 'minimal daemon', { stdio: ['ignore', 'pipe', 'pipe'] });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  if (!process.argv[2]) {
    console.error('usage: node scripts/bench/minimal-daemon.mjs ADDRESS (Unix socket path, or host:port)');
    process.exit(2);
  }
  minimalDaemon(process.argv[2]);
}
