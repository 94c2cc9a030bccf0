/**
 * Bench section: the ThinClient against a bare framed ping-pong client, both
 * on the same minimal daemon (minimal-daemon.mjs) in its own process,
 * encryptWrite with a 1 KiB plaintext, one at a time and 32 in flight.
 * Rounds are interleaved (the machine may be busy) and the best of each
 * side is kept. Goals (issue 15): client >= 0.8x bare sequential, >= 0.5x at
 * 32 in flight. clientRate() is also the TypeScript side of python.mjs.
 */
import { randomBytes } from 'node:crypto';
import { dist, require, seconds, asyncRate, fmt, ratio, table, verdict, PIPELINE } from './common.mjs';

/** The least a client can do: handshake, then encrypt_write frames out, reply frames counted, one socket.write per frame. */
export async function barePingPong(address, concurrency, ms) {
  const { wire } = dist();
  const net = require('node:net');
  const tcp = /^(.+):(\d+)$/.exec(address);
  const socket = tcp && !address.startsWith('/') ? net.connect(Number(tcp[2]), tcp[1]) : net.connect(address);
  const decoder = new wire.FrameDecoder();
  const plaintext = randomBytes(1024), writeCap = randomBytes(168), index = randomBytes(104);
  const frame = () => wire.encodeFrame(wire.encodeRequest('encrypt_write', wire.requestBodies.encryptWrite(randomBytes(16), plaintext, writeCap, index)));
  let ready, done, ready_ = false, n = 0, inFlight = 0, end = 0;
  const handshake = new Promise((r) => { ready = r; });
  let finished = new Promise((r) => { done = r; });
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
  // Warm-up: 50 in flight, then drained.
  end = Date.now() + 1e9;
  for (let i = 0; i < 50; i++) { inFlight++; socket.write(frame()); }
  end = 0;
  await finished;
  n = 0;
  finished = new Promise((r) => { done = r; });
  end = Date.now() + ms;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < concurrency; i++) { inFlight++; socket.write(frame()); }
  await finished;
  const r = n / seconds(t0);
  socket.destroy();
  return r;
}

/** Our ThinClient: connect, 50 warm-up calls, then `concurrency` loops of encryptWrite for ms; calls per second. */
export async function clientRate(address, concurrency, ms) {
  const { lib } = dist();
  const client = new lib.ThinClient({ dial: address, reconnect: false });
  try {
    await client.connect();
    const plaintext = randomBytes(1024), writeCap = randomBytes(168), index = randomBytes(104);
    const one = () => client.encryptWrite(plaintext, writeCap, index);
    for (let i = 0; i < 50; i++) await one();
    return await asyncRate(one, concurrency, ms);
  } finally {
    await client.close().catch(() => {});
  }
}

/** Client against bare, interleaved rounds, best of each; prints its table; returns { goals, bare1 } (bare1: the sequential bare rate). */
export async function clientVsBare(address, { quick, overBudget }) {
  const rounds = quick ? 1 : 3;
  const ms = quick ? 300 : 1000;
  const best = { bare1: 0, client1: 0, bareN: 0, clientN: 0 };
  for (let r = 0; r < rounds && (r === 0 || !overBudget()); r++) {
    best.bare1 = Math.max(best.bare1, await barePingPong(address, 1, ms));
    best.client1 = Math.max(best.client1, await clientRate(address, 1, ms));
    best.bareN = Math.max(best.bareN, await barePingPong(address, PIPELINE, ms));
    best.clientN = Math.max(best.clientN, await clientRate(address, PIPELINE, ms));
  }
  const seq = verdict(best.client1 / best.bare1 >= 0.8, '>= 0.80x');
  const par = verdict(best.clientN / best.bareN >= 0.5, '>= 0.50x');
  table(`ThinClient vs a bare framed ping-pong client, same minimal daemon in its own process (encryptWrite, 1 KiB, Unix socket; best of ${rounds} interleaved rounds)`,
    ['measure', 'client', 'bare', 'goal', 'client/bare'], [
      ['client vs bare, sequential', `${fmt(best.client1)}/s`, `${fmt(best.bare1)}/s`, seq.text, ratio(best.client1, best.bare1)],
      [`client vs bare, ${PIPELINE} in flight`, `${fmt(best.clientN)}/s`, `${fmt(best.bareN)}/s`, par.text, ratio(best.clientN, best.bareN)],
    ]);
  return {
    bare1: best.bare1,
    goals: [
      { figure: 'client vs bare ping-pong, sequential', value: ratio(best.client1, best.bare1), ...seq },
      { figure: `client vs bare ping-pong, ${PIPELINE} in flight`, value: ratio(best.clientN, best.bareN), ...par },
    ],
  };
}
