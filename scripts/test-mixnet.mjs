#!/usr/bin/env node
// `npm run test:mixnet [-- --jobs N] [-- mocha options]`: the real-network
// suite (test/mixnet) against the network of `npm run mixnet -- start`, its
// files run side by side, each in a mocha process of its own, because their
// time is mixnet latency (seconds per round trip), not CPU: one after the
// other they take about 40 minutes, three at a time about 20. restart.test.ts
// kills and restarts kpclientd, so it runs last and alone. Each line of
// output carries the name of its file; the run closes with the one line CI
// sums, "N passed, M failed", over every file. Exits non-zero when a test
// fails or a file's run ends without its result line.
//
// Options: --jobs N (files at a time, default 3); --files a,b (only the test
// files whose names start with these); anything else (e.g. --grep @ci) goes
// to every mocha process.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DIR = join(ROOT, 'test', 'mixnet');
// Run alone, after every other file: it kills the daemon the others use.
const EXCLUSIVE = ['restart.test.ts'];
// Minutes each file took in a whole-suite run, longest first, so the long
// ones start first and the short ones fill the gaps (unknown files count 5).
const EXPECTED_MINUTES = { 'scenarios.test.ts': 16, 'channel.test.ts': 9, 'library.test.ts': 8, 'flows.test.ts': 7, 'current.test.ts': 3, 'recorded.test.ts': 2.5, 'restart.test.ts': 4 };

function parseArgs(argv) {
  const options = { jobs: 3, files: null, mocha: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--jobs') {
      options.jobs = Number(argv[++i]);
      if (!Number.isInteger(options.jobs) || options.jobs < 1) throw new Error(`--jobs: expected a whole number >= 1, got ${argv[i]}`);
    } else if (a === '--files') {
      options.files = String(argv[++i] ?? '').split(',').filter(Boolean);
    } else {
      options.mocha.push(a);
    }
  }
  return options;
}

/** One mocha process over one file; resolves { file, passed, failed, skipped, complete, code }. */
function runFile(file, mochaArgs) {
  return new Promise((done) => {
    const label = file.replace(/\.test\.ts$/, '');
    const child = spawn(process.execPath, [join(ROOT, 'node_modules', 'mocha', 'bin', 'mocha.js'), '--config', join(DIR, '.mocharc.cjs'), ...mochaArgs], {
      cwd: ROOT,
      env: { ...process.env, KATZENPOST_MIXNET_SPEC: join(DIR, file) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let result = null;
    let pending = '';
    const onData = (chunk) => {
      pending += chunk;
      const lines = pending.split('\n');
      pending = lines.pop();
      for (const line of lines) {
        const m = /^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$/.exec(line.trim());
        if (m) result = { passed: Number(m[1]), failed: Number(m[2]), skipped: Number(m[3] ?? 0) };
        else if (line.trim()) console.log(`[${label}] ${line}`);
      }
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', onData);
    child.on('close', (code) => {
      if (pending.trim()) onData('\n');
      const r = result ?? { passed: 0, failed: 0, skipped: 0 };
      console.log(`[${label}] ${result ? `${r.passed} passed, ${r.failed} failed` : `no result line (mocha exited ${code})`}`);
      done({ file, ...r, complete: result !== null, code });
    });
  });
}

/** Run `files` with at most `jobs` at a time, longest expected first. */
async function runPool(files, jobs, mochaArgs) {
  const queue = [...files].sort((a, b) => (EXPECTED_MINUTES[b] ?? 5) - (EXPECTED_MINUTES[a] ?? 5));
  const results = [];
  const worker = async () => {
    for (let file = queue.shift(); file; file = queue.shift()) results.push(await runFile(file, mochaArgs));
  };
  await Promise.all(Array.from({ length: Math.min(jobs, queue.length) }, worker));
  return results;
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  let files = readdirSync(DIR).filter((f) => f.endsWith('.test.ts')).sort();
  if (options.files) files = files.filter((f) => options.files.some((p) => f.startsWith(p)));
  if (files.length === 0) throw new Error(`--files ${options.files}: no test file in test/mixnet matches`);
  const shared = files.filter((f) => !EXCLUSIVE.includes(f));
  const alone = files.filter((f) => EXCLUSIVE.includes(f));
  const t0 = Date.now();
  console.log(`test:mixnet: ${shared.length} file(s), ${options.jobs} at a time${alone.length ? `, then ${alone.join(', ')} alone` : ''}${options.mocha.length ? ` (mocha ${options.mocha.join(' ')})` : ''}`);
  const results = [...(await runPool(shared, options.jobs, options.mocha)), ...(await runPool(alone, 1, options.mocha))];
  const sum = (k) => results.reduce((n, r) => n + r[k], 0);
  const incomplete = results.filter((r) => !r.complete);
  console.log(`\ntest:mixnet: ${((Date.now() - t0) / 60000).toFixed(1)} min; per file: ${results.map((r) => `${r.file.replace(/\.test\.ts$/, '')} ${r.passed}/${r.failed}`).join(', ')}`);
  for (const r of incomplete) console.log(`test:mixnet: ${r.file} ended without a result line (exit ${r.code}): counted as 1 failure`);
  const failed = sum('failed') + incomplete.length;
  const skipped = sum('skipped');
  console.log(`\n${sum('passed')} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  return failed === 0 ? 0 : 1;
}

main().then((code) => process.exit(code), (e) => {
  console.error(`test:mixnet: ${e && e.message ? e.message : e}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
});
