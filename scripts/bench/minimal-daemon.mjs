/**
 * The least a kpclientd can do, for the bench: the §2.1 handshake
 * (connection_status_event with the geometries, a new_pki_document_event,
 * session_token_reply), then every encrypt_write answered at once with a
 * canned reply (its query_id patched in). An encrypt_write is recognised by
 * reading its CBOR only as far as its kind and query_id (findQueryId), not
 * decoded; anything else goes through the wire module's decoder. Replies to
 * one read are written together, in one buffer, so the daemon costs as
 * little as possible and the client side is what gets measured. Every client
 * (ours, the bare ping-pong one, the Python binding) is timed against this
 * same daemon.
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
const ENCRYPT_WRITE = Buffer.from('encrypt_write');
const QUERY_ID = Buffer.from('query_id');

/** The length of a definite CBOR head's argument at f[i] (ai < 28), and the offset after the head; null otherwise. */
function head(f, i) {
  const ai = f[i] & 0x1f;
  if (ai < 24) return { value: ai, next: i + 1 };
  const n = ai === 24 ? 1 : ai === 25 ? 2 : ai === 26 ? 4 : 0;
  if (n === 0 || i + 1 + n > f.length) return null;
  let value = 0;
  for (let k = 1; k <= n; k++) value = value * 256 + f[i + k];
  return { value, next: i + 1 + n };
}

/** Whether f[i, i + b.length) holds the bytes of b. */
function bytesAt(f, i, b) {
  if (i + b.length > f.length) return false;
  for (let k = 0; k < b.length; k++) if (f[i + k] !== b[k]) return false;
  return true;
}

/**
 * Where the 16-byte query_id of an encrypt_write request frame starts, or
 * -1 when the frame is not one (or not in the plain shape every client
 * writes: a one-key map whose body is a definite map of text keys to byte
 * strings, unsigned integers, booleans or null): the caller then decodes it
 * in full.
 */
function findQueryId(f) {
  if (f[0] !== 0xa1 || f[1] !== 0x60 + ENCRYPT_WRITE.length || !bytesAt(f, 2, ENCRYPT_WRITE)) return -1;
  let i = 2 + ENCRYPT_WRITE.length;
  if (f[i] >> 5 !== 5) return -1;
  const map = head(f, i);
  if (!map) return -1;
  i = map.next;
  for (let n = 0; n < map.value; n++) {
    if (i >= f.length || f[i] >> 5 !== 3) return -1;
    const key = head(f, i);
    if (!key) return -1;
    const isQueryId = key.value === QUERY_ID.length && bytesAt(f, key.next, QUERY_ID);
    i = key.next + key.value;
    if (i >= f.length) return -1;
    const major = f[i] >> 5;
    if (major === 7) {
      if (f[i] < 0xf4 || f[i] > 0xf7) return -1;
      i++;
      continue;
    }
    if (major !== 0 && major !== 2) return -1;
    const value = head(f, i);
    if (!value) return -1;
    if (isQueryId) return major === 2 && value.value === 16 && value.next + 16 <= f.length ? value.next : -1;
    i = major === 2 ? value.next + value.value : value.next;
  }
  return -1;
}

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
      const frames = decoder.push(chunk);
      if (frames.length === 0) return;
      // One buffer for the replies of this read: a copy of the template each, its query_id patched in.
      const out = Buffer.allocUnsafe(frames.length * template.length);
      let used = 0;
      let sent = 0;
      const send = () => {
        if (used > sent) socket.write(out.subarray(sent, used));
        sent = used;
      };
      for (const raw of frames) {
        const id = findQueryId(raw);
        if (id >= 0) {
          template.copy(out, used);
          raw.copy(out, used + at, id, id + 16);
          used += template.length;
          continue;
        }
        const env = wire.decodeEnvelope(raw, wire.REQUEST_KINDS);
        if (env.kind === 'encrypt_write') {
          template.copy(out, used);
          Buffer.from(env.body.query_id).copy(out, used + at);
          used += template.length;
        } else if (env.kind === 'session_token') {
          send();
          socket.write(wire.encodeFrame(wire.encodeResponse('session_token_reply', { app_id: Buffer.alloc(16, 0xb0), resumed: false })));
        } else if (env.kind === 'thin_close') {
          send();
          socket.end();
          return;
        }
      }
      send();
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
