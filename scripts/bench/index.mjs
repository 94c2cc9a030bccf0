#!/usr/bin/env node
/**
 * `npm run bench` (scripts/bench.mjs runs this file): performance claims as
 * ratios measured in one run on one machine, each against a baseline of the
 * same run, so they hold whatever the machine's absolute speed. Every goal
 * of issue 15 is printed with its verdict, "met" or "NOT met" (or why it
 * could not be measured), in its section and in a summary at the end:
 *
 *   codec.mjs           CBOR codec vs JSON (no goal)
 *   emulator.mjs        emulator round trips, TCP vs Unix (no goal);
 *                       ARQ vs local requests on the instant emulator
 *   client-vs-bare.mjs  ThinClient vs a bare ping-pong client, same minimal daemon
 *   python.mjs          ThinClient vs the reference Python binding, same minimal daemon
 *   channel.mjs         10 MB through a persistent channel: time and peak RSS
 *   node-red.mjs        Node-RED flow vs the library
 *   blocked-reads.mjs   1k / 10k / 20k blocked reads: heap and time per start
 *   minimal-daemon.mjs, python_driver.py, common.mjs: the pieces they share
 *
 * Options: --quick (short runs and smaller sizes, for a smoke test; the
 * size-bound goals are then "not judged"); --timings (each section's wall
 * time after its table); --only NAME[,NAME] (only the sections whose names
 * start with one of these, e.g. --only client,channel). Loopback and temp sockets only;
 * a full run stays under about 5 minutes on a 2-core machine. Exits non-zero
 * only when a section fails to run (a goal not met is a result, not an error).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { missingDist, table } from './common.mjs';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const onlyAt = args.indexOf('--only');
const only = onlyAt >= 0 ? String(args[onlyAt + 1] ?? '').toLowerCase().split(',').filter(Boolean) : null;
const wanted = (name) => !only || only.some((o) => name.toLowerCase().startsWith(o));
const started = Date.now();
const BUDGET_MS = quick ? 50_000 : 290_000;
const elapsed = () => Date.now() - started;
const ctx = { quick, overBudget: () => elapsed() > BUDGET_MS * 0.8, remainingMs: () => BUDGET_MS - elapsed() };

async function main() {
  const missing = missingDist();
  if (missing.length) {
    console.error(`bench: ${missing.join(', ')} missing; run npm run build (npm run bench does)`);
    return 1;
  }
  const { codecBench } = await import('./codec.mjs');
  const { transports, arqVsLocal } = await import('./emulator.mjs');
  const { spawnMinimalDaemon } = await import('./minimal-daemon.mjs');
  const { clientVsBare } = await import('./client-vs-bare.mjs');
  const { clientVsPython } = await import('./python.mjs');
  const { channelBench } = await import('./channel.mjs');
  const { nodeRedBench } = await import('./node-red.mjs');
  const { blockedReadsBench } = await import('./blocked-reads.mjs');

  console.log(`bench: node ${process.version}, ${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ${new Date().toISOString()}${quick ? ' (quick)' : ''}`);
  console.log('ratios compare two measurements of this run; absolute numbers depend on the machine.');

  const goals = [];
  const failures = [];
  /** Run one section; a failure is reported, its goals marked, and the bench goes on. */
  async function section(name, figures, fn, always = false) {
    if (!always && !wanted(name)) return;
    const t0 = Date.now();
    try {
      goals.push(...((await fn()) ?? []));
    } catch (e) {
      const msg = String(e && e.stack ? e.stack : e);
      console.log(`\n${name}: FAILED\n  ${msg.split('\n').slice(0, 6).join('\n  ')}`);
      failures.push(name);
      for (const f of figures) goals.push({ figure: f, value: '-', goal: '-', status: `error: ${msg.split('\n')[0].slice(0, 80)}` });
    }
    if (args.includes('--timings')) console.log(`  (${name}: ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  }

  const dir = mkdtempSync(join(tmpdir(), 'kp-bench-'));
  try {
    await section('codec', [], () => codecBench(ctx));
    await section('emulator round trips', [], () => transports(dir, ctx));
    let bare1 = NaN;
    let daemon = null;
    const daemonPath = join(dir, 'minimal.sock');
    if (wanted('client vs bare') || wanted('client vs Python') || wanted('minimal daemon')) {
      await section('minimal daemon', ['client vs bare ping-pong', 'client vs Python binding'], async () => { daemon = await spawnMinimalDaemon(daemonPath); }, true);
    }
    if (daemon) {
      try {
        await section('client vs bare', ['client vs bare ping-pong, sequential', 'client vs bare ping-pong, 32 in flight'], async () => {
          const r = await clientVsBare(daemonPath, ctx);
          bare1 = r.bare1;
          return r.goals;
        });
        await section('client vs Python', ['client vs Python binding, sequential', 'client vs Python binding, 32 in flight'], () => clientVsPython(daemonPath, dir, ctx));
      } finally {
        await daemon.stop().catch(() => {});
      }
    }
    await section('ARQ vs local', ['emulator --instant: ARQ vs local requests'], () => arqVsLocal(ctx, bare1));
    await section('channel', ['10 MB channel send', '10 MB channel receive'], () => channelBench(ctx));
    await section('Node-RED', ['Node-RED flow vs library, sequential'], () => nodeRedBench(ctx));
    await section('blocked reads', ['10k blocked reads: extra heap', 'blocked reads: time per start, 20k vs 1k'], () => blockedReadsBench(ctx));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const count = (p) => goals.filter((g) => p(g.status)).length;
  table(`summary: the goals of issue 15, measured in this run${quick ? ' (--quick: short runs, smaller sizes)' : ''}`, ['goal', 'value', 'target', 'verdict'],
    goals.map((g) => [g.figure, g.value, g.goal, g.status]));
  console.log(`  ${count((s) => s === 'met')} met, ${count((s) => s === 'NOT met')} NOT met, ${count((s) => s !== 'met' && s !== 'NOT met')} not measured or not judged, of ${goals.length}`);
  console.log(`\nbench: done in ${(elapsed() / 1000).toFixed(1)} s`);
  if (failures.length) console.log(`bench: ${failures.length} section(s) failed to run: ${failures.join(', ')}`);
  return failures.length ? 1 : 0;
}

main().then((code) => process.exit(code), (e) => {
  console.error(`bench failed: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
