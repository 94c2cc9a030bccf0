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

for (const f of ['dist/index.js', 'dist/client/wire.js', 'dist/emulator/cli.js']) {
  if (!existsSync(join(ROOT, f))) {
    console.error(`bench: ${f} is missing; run npm run build (npm run bench does)`);
    process.exit(1);
  }
}
const lib = require(join(ROOT, 'dist', 'index.js'));
const wire = require(join(ROOT, 'dist', 'client', 'wire.js'));

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
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`\nbench: done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

main().then(() => process.exit(0), (e) => {
  console.error(`bench failed: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
