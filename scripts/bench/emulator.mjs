/**
 * Bench sections on the emulator (dist/emulator/cli.js --instant, in its own
 * process, as kpclientd would be):
 *   - encryptWrite round trips, TCP against a Unix socket, one at a time and
 *     32 in flight (no goal; kept for comparison);
 *   - ARQ operations (startResendingEncryptedMessage of a write) against local
 *     requests (encryptWrite), sequential, same client, interleaved rounds,
 *     best of each. Goal (issue 15): ARQ >= 0.5x local. The minimal daemon's
 *     bare ping-pong rate (client-vs-bare.mjs) is shown beside it.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { dist, spawnEmulator, asyncRate, fmt, ratio, table, verdict, PIPELINE } from './common.mjs';

async function roundTrips(listenArgs, label, ms, overBudget) {
  const { lib } = dist();
  const emulator = await spawnEmulator(listenArgs);
  const client = new lib.ThinClient({ dial: emulator.address, reconnect: false });
  try {
    await client.connect();
    const { writeCap, firstMessageIndex } = await client.newKeypair(randomBytes(32));
    const plaintext = randomBytes(1024);
    const one = () => client.encryptWrite(plaintext, writeCap, firstMessageIndex);
    for (let i = 0; i < 50; i++) await one();
    const sequential = await asyncRate(one, 1, ms);
    const pipelined = overBudget() ? NaN : await asyncRate(one, PIPELINE, ms);
    return { label, sequential, pipelined };
  } finally {
    await client.close().catch(() => {});
    await emulator.stop().catch(() => {});
  }
}

export async function transports(dir, { quick, overBudget }) {
  const ms = quick ? 500 : 2500;
  const tcp = await roundTrips(['--listen', '127.0.0.1:0'], 'TCP 127.0.0.1', ms, overBudget);
  const unix = await roundTrips(['--unix', join(dir, 'emulator.sock')], 'Unix socket', ms, overBudget);
  table(`encryptWrite round trips against the emulator in its own process (--instant, 1 KiB plaintext, ${(ms / 1000).toFixed(1)} s each)`,
    ['transport', 'sequential', `${PIPELINE} in flight`, 'pipelined/sequential'],
    [tcp, unix].map((r) => [r.label, `${fmt(r.sequential)}/s`, Number.isNaN(r.pipelined) ? 'skipped' : `${fmt(r.pipelined)}/s`, Number.isNaN(r.pipelined) ? '-' : ratio(r.pipelined, r.sequential)]));
  table('transport comparison', ['measure', 'Unix/TCP'], [
    ['sequential requests/s', ratio(unix.sequential, tcp.sequential)],
    [`${PIPELINE} in flight requests/s`, Number.isNaN(unix.pipelined) || Number.isNaN(tcp.pipelined) ? '-' : ratio(unix.pipelined, tcp.pipelined)],
  ]);
  return [];
}

/** ARQ vs local on the instant emulator; `bareRate` is the minimal daemon's sequential bare ping-pong rate (or NaN). */
export async function arqVsLocal({ quick, overBudget }, bareRate) {
  const { lib } = dist();
  const emulator = await spawnEmulator(['--listen', '127.0.0.1:0']);
  const client = new lib.ThinClient({ dial: emulator.address, reconnect: false });
  const rounds = quick ? 1 : 3;
  const ms = quick ? 300 : 700;
  const best = { local: 0, arq: 0 };
  try {
    await client.connect();
    const { writeCap, firstMessageIndex } = await client.newKeypair(randomBytes(32));
    const plaintext = randomBytes(1024);
    const env = await client.encryptWrite(plaintext, writeCap, firstMessageIndex);
    const local = () => client.encryptWrite(plaintext, writeCap, firstMessageIndex);
    const arq = () => client.startResendingEncryptedMessage({ writeCap, envelopeDescriptor: env.envelopeDescriptor, messageCiphertext: env.messageCiphertext, envelopeHash: env.envelopeHash });
    for (let i = 0; i < 20; i++) { await local(); await arq(); }
    for (let r = 0; r < rounds && (r === 0 || !overBudget()); r++) {
      best.local = Math.max(best.local, await asyncRate(local, 1, ms));
      best.arq = Math.max(best.arq, await asyncRate(arq, 1, ms));
    }
  } finally {
    await client.close().catch(() => {});
    await emulator.stop().catch(() => {});
  }
  const v = verdict(best.arq / best.local >= 0.5, '>= 0.50x');
  table(`emulator --instant: ARQ operations vs local requests (sequential, same client; best of ${rounds} interleaved rounds)`,
    ['measure', 'ARQ', 'local', 'minimal daemon, bare', 'goal', 'ARQ/local'], [
      ['startResendingEncryptedMessage vs encryptWrite', `${fmt(best.arq)}/s`, `${fmt(best.local)}/s`, Number.isFinite(bareRate) ? `${fmt(bareRate)}/s` : '-', v.text, ratio(best.arq, best.local)],
    ]);
  return [{ figure: 'emulator --instant: ARQ vs local requests', value: ratio(best.arq, best.local), ...v }];
}
