#!/usr/bin/env node
// `npm run bench`: performance claims as ratios measured in one run on one
// machine, so they hold whatever the machine's absolute speed.
//   1. our CBOR codec (frame encode / envelope decode) against a JSON baseline
//      carrying the same fields (bytes as base64, as JSON needs);
//   2. encryptWrite round trips against the emulator (its own process, no
//      simulated latency): TCP against a Unix socket, and N requests in
//      flight against one at a time.
// Loopback and temp sockets only; bounded to well under 60 s.
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(ROOT, 'package.json'));
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const CODEC_MS = quick ? 300 : 1500;
const RTT_MS = quick ? 500 : 2500;
const PIPELINE = 32;
const started = Date.now();
const BUDGET_MS = 55_000;

for (const f of ['dist/index.js', 'dist/wire/index.js', 'dist/emulator/cli.js']) {
  if (!existsSync(join(ROOT, f))) {
    console.error(`bench: ${f} is missing; run npm run build (npm run bench does)`);
    process.exit(1);
  }
}
const lib = require(join(ROOT, 'dist', 'index.js'));
const wire = require(join(ROOT, 'dist', 'wire', 'index.js'));

// --------------------------------------------------------- minimal daemon
// `bench.mjs --minimal-daemon PATH`: the least a kpclientd can do, in its own
// process: the §2.1 handshake, then every encrypt_write answered at once with
// a canned reply (its query_id patched in). Replies to one read are written
// together, so the daemon costs as little as possible and the client side is
// what gets measured.
function minimalDaemon(path) {
  const net = require('node:net');
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
          env.body.query_id.copy(reply, at);
          out.push(reply);
        } else if (env.kind === 'thin_close') {
          socket.end();
        }
      }
      if (out.length) socket.write(out.length === 1 ? out[0] : Buffer.concat(out));
    });
  });
  server.listen(path, () => console.log(`listening on ${path}`));
}

function overBudget() {
  return Date.now() - started > BUDGET_MS;
}

/** Run fn repeatedly for ms (after a short warm-up); ops per second. */
function rate(fn, ms) {
  const warm = Date.now() + Math.min(200, ms / 5);
  while (Date.now() < warm) fn();
  let n = 0;
  const t0 = process.hrtime.bigint();
  const end = Date.now() + ms;
  // Check the clock every 64 calls so timing costs little.
  while (Date.now() < end) for (let i = 0; i < 64; i++) { fn(); n++; }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  return n / s;
}

const fmt = (x) => (x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(1));
const ratio = (a, b) => `${(a / b).toFixed(2)}x`;

// ----------------------------------------------------------- codec vs JSON
function codecBench() {
  const queryId = randomBytes(16);
  const plaintext = randomBytes(1024);
  const writeCap = randomBytes(168);
  const index = randomBytes(104);
  const body = wire.requestBodies.encryptWrite(queryId, plaintext, writeCap, index);
  // The same request as a JSON protocol would carry it: bytes as base64.
  const b64 = (b) => Buffer.from(b).toString('base64');
  const jsonBody = () => ({ encrypt_write: { query_id: b64(queryId), plaintext: b64(plaintext), write_cap: b64(writeCap), message_box_index: b64(index) } });

  const encodeCbor = () => wire.encodeFrame(wire.encodeRequest('encrypt_write', body));
  const encodeJson = () => {
    const text = Buffer.from(JSON.stringify(jsonBody()));
    const out = Buffer.allocUnsafe(4 + text.length);
    out.writeUInt32BE(text.length, 0);
    text.copy(out, 4);
    return out;
  };

  // A daemon reply: the Go daemon's full envelope with every other key null.
  const replyBody = {
    query_id: queryId, message_ciphertext: randomBytes(1200), envelope_descriptor: randomBytes(180),
    envelope_hash: randomBytes(32), next_message_box_index: randomBytes(104), error_code: 0,
  };
  const cborReply = wire.encodeResponse('encrypt_write_reply', replyBody);
  const jsonEnvelope = {};
  for (const k of wire.RESPONSE_KINDS) jsonEnvelope[k] = null;
  jsonEnvelope.encrypt_write_reply = Object.fromEntries(Object.entries(replyBody).map(([k, v]) => [k, Buffer.isBuffer(v) ? b64(v) : v]));
  const jsonReply = Buffer.from(JSON.stringify(jsonEnvelope));
  const decodeCbor = () => wire.decodeEnvelope(cborReply, wire.RESPONSE_KINDS);
  const decodeJson = () => {
    const v = JSON.parse(jsonReply.toString('utf8'));
    for (const [k, b] of Object.entries(v)) {
      if (b === null) continue;
      // Restore the byte fields, as a JSON client would have to.
      for (const f of ['query_id', 'message_ciphertext', 'envelope_descriptor', 'envelope_hash', 'next_message_box_index']) b[f] = Buffer.from(b[f], 'base64');
      return { kind: k, body: b };
    }
    return null;
  };
  // Same content both ways before timing anything.
  const a = decodeCbor();
  const b = decodeJson();
  if (a.kind !== b.kind || !Buffer.from(a.body.message_ciphertext).equals(b.body.message_ciphertext)) throw new Error('codec baseline mismatch');

  const encC = rate(encodeCbor, CODEC_MS);
  const encJ = rate(encodeJson, CODEC_MS);
  const decC = rate(decodeCbor, CODEC_MS);
  const decJ = rate(decodeJson, CODEC_MS);
  return {
    rows: [
      ['encode encrypt_write frame (1 KiB plaintext)', `${fmt(encC)}/s`, `${fmt(encJ)}/s`, ratio(encC, encJ)],
      ['decode encrypt_write_reply (20-key envelope)', `${fmt(decC)}/s`, `${fmt(decJ)}/s`, ratio(decC, decJ)],
      ['request frame size (smaller is better)', `${encodeCbor().length} B`, `${encodeJson().length} B`, ratio(encodeJson().length, encodeCbor().length)],
      ['reply size (smaller is better)', `${cborReply.length} B`, `${jsonReply.length} B`, ratio(jsonReply.length, cborReply.length)],
    ],
  };
}

// ---------------------------------------------- round trips to the emulator
// The emulator runs in its own process, as kpclientd does, so the client's
// pipelining is measured rather than two parties sharing one event loop.
function spawnEmulator(listenArgs) {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [join(ROOT, 'dist', 'emulator', 'cli.js'), ...listenArgs, '--instant'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); rej(new Error(`emulator did not start: ${out}`)); }, 15_000);
    const onData = (c) => {
      out += c;
      const m = /listening on (\S+)/.exec(out);
      if (!m) return;
      clearTimeout(timer);
      child.stdout.off('data', onData);
      child.stdout.resume();
      res({
        address: m[1],
        stop: () => new Promise((r) => {
          if (child.exitCode !== null) return r();
          const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
          child.once('exit', () => { clearTimeout(kill); r(); });
          child.kill('SIGTERM');
        }),
      });
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', onData);
    child.stderr.on('data', (c) => { out += c; });
    child.once('exit', (code) => { clearTimeout(timer); rej(new Error(`emulator exited (${code}): ${out}`)); });
  });
}

async function roundTrips(listenArgs, label) {
  const emulator = await spawnEmulator(listenArgs);
  const client = new lib.ThinClient({ dial: emulator.address, reconnect: false });
  try {
    await client.connect();
    const { writeCap, firstMessageIndex } = await client.newKeypair(randomBytes(32));
    const plaintext = randomBytes(1024);
    const one = () => client.encryptWrite(plaintext, writeCap, firstMessageIndex);
    for (let i = 0; i < 50; i++) await one();

    async function measure(concurrency) {
      let n = 0;
      const end = Date.now() + RTT_MS;
      const t0 = process.hrtime.bigint();
      await Promise.all(Array.from({ length: concurrency }, async () => {
        while (Date.now() < end) { await one(); n++; }
      }));
      return n / (Number(process.hrtime.bigint() - t0) / 1e9);
    }
    const sequential = await measure(1);
    const pipelined = overBudget() ? NaN : await measure(PIPELINE);
    return { label, sequential, pipelined };
  } finally {
    await client.close().catch(() => {});
    await emulator.stop().catch(() => {});
  }
}

// ------------------------------------- client vs bare ping-pong, one daemon
function spawnMinimalDaemon(path) {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--minimal-daemon', path], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); rej(new Error(`minimal daemon did not start: ${out}`)); }, 15_000);
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (c) => {
      out += c;
      if (!/listening on/.test(out)) return;
      clearTimeout(timer);
      res({ stop: () => new Promise((r) => { if (child.exitCode !== null) return r(); child.once('exit', () => r()); child.kill('SIGTERM'); }) });
    });
    child.stderr.on('data', (c) => { out += c; });
    child.once('exit', (code) => { clearTimeout(timer); rej(new Error(`minimal daemon exited (${code}): ${out}`)); });
  });
}

/** The least a client can do: handshake, then encrypt_write frames out, reply frames counted, one socket.write per frame. */
async function barePingPong(path, concurrency, ms) {
  const net = require('node:net');
  const socket = net.connect(path);
  const decoder = new wire.FrameDecoder();
  const plaintext = randomBytes(1024), writeCap = randomBytes(168), index = randomBytes(104);
  const frame = () => wire.encodeFrame(wire.encodeRequest('encrypt_write', wire.requestBodies.encryptWrite(randomBytes(16), plaintext, writeCap, index)));
  let ready, done, ready_ = false, n = 0, inFlight = 0, end = 0;
  const handshake = new Promise((r) => { ready = r; });
  const finished = new Promise((r) => { done = r; });
  socket.on('error', () => {});
  socket.on('data', (chunk) => {
    for (const raw of decoder.push(chunk)) {
      if (!ready_) {
        const kind = wire.decodeEnvelope(raw, wire.RESPONSE_KINDS).kind;
        if (kind === 'connection_status_event') socket.write(wire.encodeFrame(wire.encodeRequest('session_token', wire.requestBodies.sessionToken(randomBytes(16)))));
        if (kind === 'session_token_reply') { ready_ = true; ready(); }
        continue;
      }
      n++;
      inFlight--;
      if (Date.now() < end) { inFlight++; socket.write(frame()); } else if (inFlight === 0) done();
    }
  });
  await handshake;
  for (let i = 0; i < 50; i++) { inFlight++; end = Date.now() + 1e9; socket.write(frame()); }
  end = 0;
  await finished;
  n = 0;
  const finished2 = new Promise((r) => { done = r; });
  end = Date.now() + ms;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < concurrency; i++) { inFlight++; socket.write(frame()); }
  await finished2;
  const rate = n / (Number(process.hrtime.bigint() - t0) / 1e9);
  socket.destroy();
  return rate;
}

async function clientRate(path, concurrency, ms) {
  const client = new lib.ThinClient({ dial: path, reconnect: false });
  try {
    await client.connect();
    const plaintext = randomBytes(1024), writeCap = randomBytes(168), index = randomBytes(104);
    for (let i = 0; i < 50; i++) await client.encryptWrite(plaintext, writeCap, index);
    let n = 0;
    const end = Date.now() + ms;
    const t0 = process.hrtime.bigint();
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (Date.now() < end) { await client.encryptWrite(plaintext, writeCap, index); n++; }
    }));
    return n / (Number(process.hrtime.bigint() - t0) / 1e9);
  } finally {
    await client.close().catch(() => {});
  }
}

/** Client against bare, interleaved rounds (the machine may be busy), best of each. */
async function clientVsBare(dir) {
  const path = join(dir, 'minimal.sock');
  const daemon = await spawnMinimalDaemon(path);
  const rounds = quick ? 1 : 3;
  const ms = quick ? 300 : 1000;
  const best = { bare1: 0, client1: 0, bareN: 0, clientN: 0 };
  try {
    for (let r = 0; r < rounds && !overBudget(); r++) {
      best.bare1 = Math.max(best.bare1, await barePingPong(path, 1, ms));
      best.client1 = Math.max(best.client1, await clientRate(path, 1, ms));
      best.bareN = Math.max(best.bareN, await barePingPong(path, PIPELINE, ms));
      best.clientN = Math.max(best.clientN, await clientRate(path, PIPELINE, ms));
    }
  } finally {
    await daemon.stop().catch(() => {});
  }
  return best;
}

// ------------------------------------------ emulator: ARQ vs local requests
async function arqVsLocal() {
  const emulator = await spawnEmulator(['--listen', '127.0.0.1:0']);
  const client = new lib.ThinClient({ dial: emulator.address, reconnect: false });
  const ms = quick ? 300 : 1500;
  try {
    await client.connect();
    const { writeCap, firstMessageIndex } = await client.newKeypair(randomBytes(32));
    const plaintext = randomBytes(1024);
    const env = await client.encryptWrite(plaintext, writeCap, firstMessageIndex);
    const local = () => client.encryptWrite(plaintext, writeCap, firstMessageIndex);
    const arq = () => client.startResendingEncryptedMessage({ writeCap, envelopeDescriptor: env.envelopeDescriptor, messageCiphertext: env.messageCiphertext, envelopeHash: env.envelopeHash });
    for (let i = 0; i < 20; i++) { await local(); await arq(); }
    const measure = async (fn) => {
      let n = 0;
      const end = Date.now() + ms;
      const t0 = process.hrtime.bigint();
      while (Date.now() < end) { await fn(); n++; }
      return n / (Number(process.hrtime.bigint() - t0) / 1e9);
    };
    const localRate = await measure(local);
    const arqRate = await measure(arq);
    return { localRate, arqRate };
  } finally {
    await client.close().catch(() => {});
    await emulator.stop().catch(() => {});
  }
}

function table(title, head, rows) {
  const all = [head, ...rows];
  const widths = head.map((_, i) => Math.max(...all.map((r) => String(r[i]).length)));
  const line = (r) => `  ${r.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('   ')}`;
  console.log(`\n${title}`);
  console.log(line(head));
  console.log(`  ${widths.map((w) => '-'.repeat(w)).join('   ')}`);
  for (const r of rows) console.log(line(r));
}

async function main() {
  const md = args.indexOf('--minimal-daemon');
  if (md >= 0) return minimalDaemon(args[md + 1]);
  console.log(`bench: node ${process.version}, ${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}${quick ? ' (quick)' : ''}`);
  console.log('ratios compare two measurements of this run; absolute numbers depend on the machine.');

  const codec = codecBench();
  table('CBOR codec (ours, cbor-x) vs JSON with base64 bytes', ['operation', 'CBOR', 'JSON', 'CBOR/JSON'], codec.rows);

  const dir = mkdtempSync(join(tmpdir(), 'kp-bench-'));
  try {
    const tcp = await roundTrips(['--listen', '127.0.0.1:0'], 'TCP 127.0.0.1');
    const unix = await roundTrips(['--unix', join(dir, 'emulator.sock')], 'Unix socket');
    table(`encryptWrite round trips against the emulator in its own process (--instant, 1 KiB plaintext, ${(RTT_MS / 1000).toFixed(1)} s each)`,
      ['transport', 'sequential', `${PIPELINE} in flight`, 'pipelined/sequential'],
      [tcp, unix].map((r) => [r.label, `${fmt(r.sequential)}/s`, Number.isNaN(r.pipelined) ? 'skipped' : `${fmt(r.pipelined)}/s`, Number.isNaN(r.pipelined) ? '-' : ratio(r.pipelined, r.sequential)]));
    table('transport comparison', ['measure', 'Unix/TCP'], [
      ['sequential requests/s', ratio(unix.sequential, tcp.sequential)],
      [`${PIPELINE} in flight requests/s`, Number.isNaN(unix.pipelined) || Number.isNaN(tcp.pipelined) ? '-' : ratio(unix.pipelined, tcp.pipelined)],
    ]);
    const cb = await clientVsBare(dir);
    const goal = (r, g) => `${r >= g ? 'met' : 'NOT met'} (goal >= ${g.toFixed(1)}x)`;
    table('ThinClient vs a bare framed ping-pong client, same minimal daemon in its own process (encryptWrite, 1 KiB, Unix socket)',
      ['measure', 'client', 'bare', 'goal', 'client/bare'], [
        ['client vs bare, sequential', `${fmt(cb.client1)}/s`, `${fmt(cb.bare1)}/s`, goal(cb.client1 / cb.bare1, 0.8), ratio(cb.client1, cb.bare1)],
        [`client vs bare, ${PIPELINE} in flight`, `${fmt(cb.clientN)}/s`, `${fmt(cb.bareN)}/s`, goal(cb.clientN / cb.bareN, 0.5), ratio(cb.clientN, cb.bareN)],
      ]);
    const al = await arqVsLocal();
    table('emulator --instant: ARQ operations vs local requests (sequential, same client)',
      ['measure', 'ARQ', 'local', 'goal', 'ARQ/local'], [
        ['startResendingEncryptedMessage vs encryptWrite', `${fmt(al.arqRate)}/s`, `${fmt(al.localRate)}/s`, goal(al.arqRate / al.localRate, 0.5), ratio(al.arqRate, al.localRate)],
      ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`\nbench: done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

main().then(() => { if (!args.includes('--minimal-daemon')) process.exit(0); }, (e) => {
  console.error(`bench failed: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
