/**
 * Bench section: a 10 MB payload through a persistent channel
 * (ChannelStore from dist/channels, its public API) on the instant emulator.
 * Goals (issue 15): under 10 s each way, peak RSS under 3x the payload.
 *
 * The emulator runs in its own process. The send and the receive each run
 * in a child process of their own (node --expose-gc), so that their RSS is
 * theirs alone: each sends or receives a small warm-up message first, then
 * collects garbage, takes the RSS as its baseline, and samples
 * process.memoryUsage().rss every 5 ms (and at every progress event) while
 * the 10 MB message goes: `send()` until it is acknowledged, `receive()`
 * until the handler has the whole payload (checked against the sender's
 * SHA-256). Peak RSS is reported as the increase over the baseline and as a
 * ratio to the payload. The payload buffer itself is allocated before the
 * baseline. The databases live in the OS temp directory, as a user's would
 * live on disk. Each child has a deadline; a send that misses it is reported
 * with how far it got, and the receive then cannot be measured.
 *
 *   node --expose-gc channel.mjs --send ADDRESS BYTES DEADLINE_MS
 *   node --expose-gc channel.mjs --receive ADDRESS READCAP_HEX BYTES SHA256 DEADLINE_MS
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { dist, spawnEmulator, runJsonChild, mb, table, verdict, notJudged, unavailable } from './common.mjs';

const NAME = 'bench';

function rssSampler() {
  globalThis.gc?.();
  globalThis.gc?.();
  const base = process.memoryUsage.rss();
  let peak = base;
  let sampledAt = 0;
  const read = () => { const r = process.memoryUsage.rss(); if (r > peak) peak = r; };
  // Progress events come every few hundred microseconds; reading RSS at each
  // (a /proc read) would slow the very send it measures, so at most one a millisecond.
  const sample = () => { const now = performance.now(); if (now - sampledAt >= 1) { sampledAt = now; read(); } };
  const timer = setInterval(read, 5);
  return { sample, stop: () => { clearInterval(timer); read(); return { baseRss: base, peakRss: peak, extraRss: peak - base }; } };
}

const deadline = (ms) => new Promise((r) => setTimeout(() => r('deadline'), ms).unref());

async function open(address, file) {
  const { lib, channels } = dist();
  const client = new lib.ThinClient({ dial: address, reconnect: false });
  await client.connect();
  const dir = mkdtempSync(join(tmpdir(), 'kp-bench-channel-'));
  const store = new channels.ChannelStore({ path: join(dir, file), client });
  return { client, store, dir };
}

async function sendChild(address, bytes, deadlineMs) {
  const { client, store, dir } = await open(address, 'writer.db');
  await store.createChannel(NAME);
  await store.send(NAME, 'warm-up');
  const payload = randomBytes(bytes);
  const sha256 = createHash('sha256').update(payload).digest('hex');
  let progress = { acked: 0, elements: 0 };
  const rss = rssSampler();
  store.on('progress', (p) => {
    rss.sample();
    if (p.stage === 'element-acked') progress = { acked: p.element + 1, elements: p.elements };
  });
  const t0 = process.hrtime.bigint();
  const outcome = await Promise.race([store.send(NAME, payload), deadline(deadlineMs)]);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const mem = rss.stop();
  const finished = outcome !== 'deadline';
  console.log(JSON.stringify({ finished, seconds, ...mem, progress, boxes: finished ? outcome.boxes : null, readCap: store.shareReadCap(NAME).toString('hex'), sha256 }));
  await Promise.race([store.close().catch(() => {}), deadline(2000)]);
  await client.close().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
}

async function receiveChild(address, readCapHex, bytes, sha256, deadlineMs) {
  const { client, store, dir } = await open(address, 'reader.db');
  store.importChannel(NAME, Buffer.from(readCapHex, 'hex'));
  const warm = new AbortController();
  await store.receive(NAME, () => warm.abort(), { signal: warm.signal }).catch(() => {});
  const rss = rssSampler();
  store.on('progress', () => rss.sample());
  const ac = new AbortController();
  let got = null;
  const t0 = process.hrtime.bigint();
  const receiving = store.receive(NAME, (item) => {
    if (item.kind !== 'message') return;
    got = { seconds: Number(process.hrtime.bigint() - t0) / 1e9, length: item.payload.length, intact: createHash('sha256').update(item.payload).digest('hex') === sha256 };
    rss.sample();
    ac.abort();
  }, { signal: ac.signal }).catch((e) => e);
  await Promise.race([receiving, deadline(deadlineMs)]);
  const mem = rss.stop();
  const seconds = got ? got.seconds : Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(JSON.stringify({ finished: !!got, seconds, ...mem, length: got?.length ?? 0, intact: got?.intact ?? false, expected: bytes }));
  ac.abort();
  await Promise.race([store.close().catch(() => {}), deadline(2000)]);
  await client.close().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
}

const TIME_GOAL_S = 10;
const RSS_GOAL = 3;

/** Prints the channel table; returns its goal rows. */
export async function channelBench({ quick, remainingMs }) {
  const bytes = quick ? 500_000 : 10_000_000;
  const label = quick ? '0.5 MB (--quick)' : '10 MB';
  // Generous deadlines (a multiple of the goal), bounded by what the bench's
  // budget leaves after the sections still to come (about 90 s of them).
  const sendMs = quick ? Math.max(5_000, Math.min(12_000, remainingMs() - 20_000)) : Math.max(15_000, Math.min(90_000, remainingMs() - 90_000));
  const receiveMs = quick ? 10_000 : 45_000;
  const self = fileURLToPath(import.meta.url);
  const judge = (ok, goal) => (quick ? notJudged('--quick sends 0.5 MB, the goal is for 10 MB', goal) : verdict(ok, goal));
  const emulator = await spawnEmulator(['--listen', '127.0.0.1:0']);
  let send, recv;
  try {
    send = await runJsonChild(self, ['--send', emulator.address, String(bytes), String(sendMs)], { nodeArgs: ['--expose-gc'], timeoutMs: sendMs + 30_000 });
    if (send.finished) {
      recv = await runJsonChild(self, ['--receive', emulator.address, send.readCap, String(bytes), send.sha256, String(receiveMs)], { nodeArgs: ['--expose-gc'], timeoutMs: receiveMs + 30_000 });
    }
  } finally {
    await emulator.stop().catch(() => {});
  }
  const timeGoal = `< ${TIME_GOAL_S} s`;
  const rssGoal = `< ${RSS_GOAL.toFixed(1)}x payload`;
  const rows = [];
  const goals = [];
  const add = (what, r, phase) => {
    const t = r.finished ? judge(r.seconds < TIME_GOAL_S, timeGoal) : quick ? judge(false, timeGoal) : verdict(false, timeGoal);
    const under = r.extraRss / bytes < RSS_GOAL;
    // Under the bound but unfinished proves nothing: the peak may still have been to come.
    const m = !r.finished && under ? notJudged(`the ${what.split(' ')[0]} did not finish`, rssGoal) : judge(under, rssGoal);
    const time = r.finished ? `${r.seconds.toFixed(1)} s` : `> ${r.seconds.toFixed(0)} s (deadline)`;
    rows.push([`${what}: time`, r.finished ? time : `${time}: ${phase}`, t.text, r.finished ? `${(r.seconds / TIME_GOAL_S).toFixed(2)}x of goal` : '-']);
    rows.push([`${what}: peak RSS increase`, `${mb(r.extraRss)} over ${mb(r.baseRss)}`, m.text, `${(r.extraRss / bytes).toFixed(2)}x payload`]);
    goals.push({ figure: `${label} channel ${what}, time`, value: time, ...t });
    goals.push({ figure: `${label} channel ${what}, peak RSS / payload`, value: `${(r.extraRss / bytes).toFixed(2)}x`, ...m });
  };
  add('send (until acknowledged)', send, `${send.progress.acked} of ${send.progress.elements || '?'} copy elements acknowledged`);
  if (recv) {
    if (recv.finished && (!recv.intact || recv.length !== bytes)) throw new Error(`the channel delivered ${recv.length} bytes that do not match the ${bytes} sent`);
    add('receive (until delivered)', recv, 'the message did not arrive');
  } else {
    const why = 'the send did not finish, so there is nothing to receive';
    for (const [row, figure, goal] of [['time', 'time', timeGoal], ['peak RSS increase', 'peak RSS / payload', rssGoal]]) {
      const u = unavailable(why, goal);
      rows.push([`receive (until delivered): ${row}`, 'not measured', u.text, '-']);
      goals.push({ figure: `${label} channel receive (until delivered), ${figure}`, value: '-', ...u });
    }
  }
  table(`${label} through a persistent channel on the instant emulator (ChannelStore, SQLite in ${tmpdir()}; send and receive each in a child process)`,
    ['measure', 'value', 'goal', 'ratio'], rows);
  return goals;
}

const argv = process.argv.slice(2);
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const run = argv[0] === '--send'
    ? sendChild(argv[1], Number(argv[2]), Number(argv[3]))
    : argv[0] === '--receive'
      ? receiveChild(argv[1], argv[2], Number(argv[3]), argv[4], Number(argv[5]))
      : Promise.reject(new Error('usage: channel.mjs --send ADDRESS BYTES DEADLINE_MS | --receive ADDRESS READCAP BYTES SHA256 DEADLINE_MS'));
  run.then(() => process.exit(0), (e) => { console.error(e && e.stack ? e.stack : e); process.exit(1); });
}
