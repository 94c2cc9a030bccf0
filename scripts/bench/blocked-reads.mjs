/**
 * Bench section: memory and start-up time of many blocked reads. Goals
 * (issue 15): 10,000 blocked reads under 50 MB of extra heap, and the time
 * per operation flat from 1k to 20k (20k's within 1.5x of 1k's).
 *
 * In a child process (node --expose-gc), on the instant emulator in its own
 * process. Envelopes for reads of boxes that were never written (random
 * indices) are made once, by encryptRead on a client of their own, as many
 * as the largest batch needs; they are not timed and stay alive, so they are
 * part of every baseline. Each batch of N then runs on a fresh ThinClient:
 * garbage collected, heap taken; N default startResendingEncryptedMessage
 * reads started (they block: the box never comes), then one local request,
 * whose reply means the daemon has read every one of the N before it. That
 * time over N is the time per operation to start one ("call (client)" is the
 * part spent in the N calls themselves). Garbage is collected again and the
 * heap taken: the increase is what N blocked reads cost the client (V8 heap;
 * off-heap = Buffers and other external memory). Then they are cancelled
 * (their AbortSignal) and the client is closed. The sizes run in
 * interleaved rounds (the machine may be busy): the best time of each is
 * kept, and the most memory it held. A first batch of up to 500, not
 * counted, warms up both processes; the envelopes are reused from batch to
 * batch.
 *
 *   node --expose-gc blocked-reads.mjs --child ADDRESS ROUNDS N1,N2,...
 */
import { randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import { fileURLToPath } from 'node:url';
import { dist, spawnEmulator, runJsonChild, mb, table, verdict, notJudged } from './common.mjs';

function memory() {
  globalThis.gc();
  globalThis.gc();
  const m = process.memoryUsage();
  return { heap: m.heapUsed, external: m.external };
}

/** Envelopes for n reads of boxes nobody writes (random indices), made by encryptRead, 64 in flight. */
async function envelopesFor(address, n) {
  const { lib } = dist();
  const client = new lib.ThinClient({ dial: address, reconnect: false });
  await client.connect();
  try {
    const { readCap, writeCap, firstMessageIndex } = await client.newKeypair(randomBytes(32));
    const envelopes = new Array(n);
    let next = 0;
    await Promise.all(Array.from({ length: 64 }, async () => {
      while (next < n) {
        const i = next++;
        const index = randomBytes(104);
        envelopes[i] = { index, e: await client.encryptRead(readCap, index) };
      }
    }));
    return { readCap, writeCap, firstMessageIndex, envelopes };
  } finally {
    await client.close().catch(() => {});
  }
}

/** n blocked reads on a fresh client: time to start them, and the memory they hold; then cancelled and closed. */
async function batch(address, prepared, n) {
  const { lib } = dist();
  const { readCap, writeCap, firstMessageIndex, envelopes } = prepared;
  const client = new lib.ThinClient({ dial: address, reconnect: false });
  await client.connect();
  try {
    await client.encryptWrite(Buffer.from('warm'), writeCap, firstMessageIndex);
    const ac = new AbortController();
    setMaxListeners(0, ac.signal);
    const before = memory();
    const t0 = process.hrtime.bigint();
    const reads = new Array(n);
    for (let i = 0; i < n; i++) {
      const { index, e } = envelopes[i];
      reads[i] = client.startResendingEncryptedMessage({
        readCap, messageBoxIndex: index, envelopeDescriptor: e.envelopeDescriptor, messageCiphertext: e.messageCiphertext, envelopeHash: e.envelopeHash,
      }, { signal: ac.signal }).then(() => 'finished', () => 'rejected');
    }
    const called = Number(process.hrtime.bigint() - t0) / 1e9;
    // One local round trip after them: its reply means the daemon has read them all.
    await client.encryptWrite(Buffer.from('sync'), writeCap, firstMessageIndex);
    const started = Number(process.hrtime.bigint() - t0) / 1e9;
    const after = memory();
    const early = await Promise.race([Promise.race(reads).then(() => true), new Promise((r) => setTimeout(() => r(false), 20))]);
    if (early) throw new Error('a read of a box that does not exist came back before it was cancelled');
    ac.abort();
    await Promise.race([Promise.all(reads), new Promise((r) => setTimeout(r, 15_000))]);
    return { n, perOpUs: (started * 1e6) / n, callUs: (called * 1e6) / n, heap: after.heap - before.heap, external: after.external - before.external };
  } finally {
    await client.close().catch(() => {});
  }
}

/** `rounds` interleaved rounds over the sizes (after a warm-up batch); the best time of each size, and the most memory it held. */
async function child(address, rounds, sizes) {
  const prepared = await envelopesFor(address, Math.max(...sizes));
  // Warm-up, not counted: the first blocked reads of a process (ours and the emulator's) pay for compiling the code.
  await batch(address, prepared, Math.min(sizes[0], 500));
  const best = {};
  for (let r = 0; r < rounds; r++) {
    for (const n of sizes) {
      const b = await batch(address, prepared, n);
      const prev = best[n];
      best[n] = !prev ? b : {
        ...(b.perOpUs < prev.perOpUs ? b : prev),
        heap: Math.max(b.heap, prev.heap),
        external: Math.max(b.external, prev.external),
      };
    }
  }
  console.log(JSON.stringify({ sizes, rounds, results: sizes.map((n) => best[n]) }));
}

/** Prints the blocked-reads table; returns its goal rows. */
export async function blockedReadsBench({ quick }) {
  const sizes = quick ? [500, 2000] : [1000, 10000, 20000];
  const rounds = quick ? 1 : 2;
  const emulator = await spawnEmulator(['--listen', '127.0.0.1:0']);
  let r;
  try {
    r = await runJsonChild(fileURLToPath(import.meta.url), ['--child', emulator.address, String(rounds), sizes.join(',')], { nodeArgs: ['--expose-gc', '--max-old-space-size=1024'], timeoutMs: 150_000 });
  } finally {
    await emulator.stop().catch(() => {});
  }
  const at = Object.fromEntries(r.results.map((x) => [x.n, x]));
  const first = r.results[0];
  const last = r.results[r.results.length - 1];
  const ten = at[10000];
  const heapGoal = '10k: < 50 MB extra heap';
  const flatGoal = `${last.n / 1000}k per-op time <= 1.50x ${first.n / 1000}k's`;
  const heap = ten ? verdict(ten.heap < 50e6, heapGoal) : notJudged('--quick starts at most 2,000 reads', heapGoal);
  const flatRatio = last.perOpUs / first.perOpUs;
  const flat = quick ? notJudged('--quick compares 0.5k with 2k', '20k per-op time <= 1.50x 1k\'s') : verdict(flatRatio <= 1.5, flatGoal);
  table(`blocked reads (default startResendingEncryptedMessage of boxes never written) on the instant emulator: client memory and time to start (best time of ${rounds} interleaved rounds; the most memory seen)`,
    ['blocked reads', 'extra heap', 'off-heap', 'heap per read', 'off-heap per read', 'call (client)', 'time per start', `vs ${first.n / 1000}k`], r.results.map((x) => [
      x.n.toLocaleString('en-US'), mb(x.heap), mb(x.external), `${(x.heap / x.n / 1024).toFixed(2)} KB`, `${(x.external / x.n / 1024).toFixed(2)} KB`,
      `${x.callUs.toFixed(1)} us`, `${x.perOpUs.toFixed(1)} us`, `${(x.perOpUs / first.perOpUs).toFixed(2)}x`,
    ]));
  table('blocked reads: goals', ['measure', 'value', 'goal', 'ratio'], [
    ['10k blocked reads: extra heap', ten ? mb(ten.heap) : '-', heap.text, ten ? `${(ten.heap / 50e6).toFixed(2)}x of goal` : '-'],
    [`time per start, ${last.n / 1000}k vs ${first.n / 1000}k`, `${last.perOpUs.toFixed(1)} us vs ${first.perOpUs.toFixed(1)} us`, flat.text, `${flatRatio.toFixed(2)}x`],
  ]);
  return [
    { figure: '10k blocked reads: extra heap', value: ten ? `${mb(ten.heap)} (+ ${mb(ten.external)} off-heap)` : '-', ...heap },
    { figure: `blocked reads: time per start, ${last.n / 1000}k vs ${first.n / 1000}k`, value: `${flatRatio.toFixed(2)}x`, ...flat },
  ];
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [mode, address, rounds, sizes] = process.argv.slice(2);
  if (mode !== '--child') {
    console.error('usage: node --expose-gc blocked-reads.mjs --child ADDRESS ROUNDS N1,N2,...');
    process.exit(2);
  }
  child(address, Number(rounds), sizes.split(',').map(Number)).then(() => process.exit(0), (e) => { console.error(e && e.stack ? e.stack : e); process.exit(1); });
}
