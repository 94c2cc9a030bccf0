/**
 * Shared pieces of the bench (scripts/bench/*.mjs): where the package is,
 * its compiled modules (dist/, from `npm run build`), rate measurement,
 * number and ratio formatting, the table printer, goal verdicts, and child
 * processes (the emulator CLI and bench sections that need a process of
 * their own, which print one JSON line as their result).
 */
import { existsSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BENCH_DIR = join(ROOT, 'scripts', 'bench');
export const require = createRequire(join(ROOT, 'package.json'));
export const PIPELINE = 32;

const NEEDED = ['dist/index.js', 'dist/wire/index.js', 'dist/channels/index.js', 'dist/emulator/cli.js', 'dist/nodes/katzenpost-encrypt-write.js'];

/** The files of dist/ the bench needs that are missing (empty when all are there). */
export function missingDist() {
  return NEEDED.filter((f) => !existsSync(join(ROOT, f)));
}

let cached = null;
/** The compiled package: { lib, wire, channels }. */
export function dist() {
  if (!cached) {
    cached = {
      lib: require(join(ROOT, 'dist', 'index.js')),
      wire: require(join(ROOT, 'dist', 'wire', 'index.js')),
      channels: require(join(ROOT, 'dist', 'channels', 'index.js')),
    };
  }
  return cached;
}

export const seconds = (t0) => Number(process.hrtime.bigint() - t0) / 1e9;

/** Run a synchronous fn repeatedly for ms (after a short warm-up); ops per second. */
export function rate(fn, ms) {
  const warm = Date.now() + Math.min(200, ms / 5);
  while (Date.now() < warm) fn();
  let n = 0;
  const t0 = process.hrtime.bigint();
  const end = Date.now() + ms;
  // Check the clock every 64 calls so timing costs little.
  while (Date.now() < end) for (let i = 0; i < 64; i++) { fn(); n++; }
  return n / seconds(t0);
}

/** `concurrency` loops awaiting fn() one after another for ms; completed calls per second. */
export async function asyncRate(fn, concurrency, ms) {
  let n = 0;
  const end = Date.now() + ms;
  const t0 = process.hrtime.bigint();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (Date.now() < end) { await fn(); n++; }
  }));
  return n / seconds(t0);
}

export const fmt = (x) => (!Number.isFinite(x) ? '-' : x >= 100 ? Math.round(x).toLocaleString('en-US') : x.toFixed(1));
export const ratio = (a, b) => `${(a / b).toFixed(2)}x`;
export const mb = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;

/** A goal's verdict: { status: 'met' | 'NOT met' | 'unavailable: …' | 'not judged: …', text }. */
export function verdict(ok, goalText) {
  const status = ok ? 'met' : 'NOT met';
  return { status, goal: goalText, text: `${status} (goal ${goalText})` };
}
export const unavailable = (reason, goalText) => ({ status: `unavailable: ${reason}`, goal: goalText, text: `unavailable (goal ${goalText})` });
export const notJudged = (reason, goalText) => ({ status: `not judged: ${reason}`, goal: goalText, text: `not judged (goal ${goalText})` });

/** Print a table: first column left-aligned, the others right-aligned. */
export function table(title, head, rows) {
  const all = [head, ...rows];
  const widths = head.map((_, i) => Math.max(...all.map((r) => String(r[i]).length)));
  const line = (r) => `  ${r.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('   ')}`;
  console.log(`\n${title}`);
  console.log(line(head));
  console.log(`  ${widths.map((w) => '-'.repeat(w)).join('   ')}`);
  for (const r of rows) console.log(line(r));
}

/** Stop a child: SIGTERM, SIGKILL after graceMs; resolves when it has exited. */
export function stopChild(child, graceMs = 5000) {
  return new Promise((r) => {
    if (child.exitCode !== null || child.signalCode !== null) return r();
    const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => { clearTimeout(kill); r(); });
    child.kill('SIGTERM');
  });
}

/**
 * Spawn a process and wait until its output matches `ready` (a RegExp with
 * one group, the address). Resolves { address, child, stop }.
 */
export function spawnReady(cmd, argv, ready, what, opts = {}) {
  return new Promise((res, rej) => {
    const child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
    let out = '';
    const timer = setTimeout(() => { child.kill('SIGKILL'); rej(new Error(`${what} did not start: ${out}`)); }, 15_000);
    const onData = (c) => {
      out += c;
      const m = ready.exec(out);
      if (!m) return;
      clearTimeout(timer);
      child.stdout.off('data', onData);
      child.stdout.resume();
      child.removeAllListeners('exit');
      res({ address: m[1], child, stop: () => stopChild(child) });
    };
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', onData);
    child.stderr.on('data', (c) => { out += c; });
    child.once('exit', (code) => { clearTimeout(timer); rej(new Error(`${what} exited (${code}): ${out}`)); });
  });
}

/** The emulator CLI (dist/emulator/cli.js) in its own process, --instant. */
export function spawnEmulator(listenArgs) {
  return spawnReady(process.execPath, [join(ROOT, 'dist', 'emulator', 'cli.js'), ...listenArgs, '--instant'], /listening on (\S+)/, 'emulator');
}

/**
 * Run `node [nodeArgs] script args` and resolve the JSON object of its last
 * stdout line that parses. Killed after timeoutMs (then rejects, with the
 * output so far). Its stderr is kept for the error message.
 */
export function runJsonChild(script, args, { nodeArgs = [], timeoutMs = 120_000, cmd = process.execPath, env } = {}) {
  return new Promise((res, rej) => {
    const argv = cmd === process.execPath ? [...nodeArgs, script, ...args] : [script, ...args];
    const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    let out = '';
    let err = '';
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (c) => { out += c; });
    child.stderr.on('data', (c) => { err += c; });
    child.once('error', (e) => { clearTimeout(timer); rej(e); });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const lines = out.trim().split('\n').reverse();
      for (const l of lines) {
        try {
          const v = JSON.parse(l);
          if (v && typeof v === 'object') return res({ ...v, exitCode: code });
        } catch { /* not the result line */ }
      }
      const why = timedOut ? `killed after ${timeoutMs / 1000} s` : `exited (${signal ?? code})`;
      rej(new Error(`${script} ${why} without a result:\n${out.slice(-2000)}\n${err.slice(-2000)}`));
    });
  });
}
