/**
 * The channel send node fed in bursts: a batch of inputs, wait for all their
 * acknowledgements on its output, then the next batch at once. Every message
 * must be acknowledged and reach the channel receive node of another flow in
 * order, exactly once.
 *
 * The runtime delivers messages synchronously here (runtimeSyncDelivery), as
 * a flow that feeds acknowledgements back into the send node without an
 * intervening setImmediate would: the next batch then reaches the store in
 * the same turn as the acknowledgement that released it, the turn in which
 * the send worker finds its queue empty.
 */
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { ThinClient } from '../../src/client/client';
import type { Emulator } from '../../src/emulator';
import { STATUS_MIN_INTERVAL_MS } from '../../src/nodes/lib/status';
import { DIST_NODES, collect, daemonNode, expectSilence, getNode, helper, newEmulator } from './support';

// The same helper singleton as support.ts, for settings(), which its typing leaves out.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const rawHelper = require('node-red-node-test-helper') as { settings(s?: Record<string, unknown>): Record<string, unknown> };

const CHANNEL_TYPES = ['katzenpost-daemon', 'katzenpost-channel', 'katzenpost-channel-send', 'katzenpost-channel-receive'];
const BATCH = 5;
const ROUNDS = 20;

describe('channel nodes: sends in bursts', function () {
  this.timeout(60_000);
  let emu: Emulator;
  let dir: string;
  let previousSettings: Record<string, unknown>;

  before(async () => {
    previousSettings = rawHelper.settings();
    emu = await newEmulator({ latency: 'instant' });
  });
  after(async () => {
    // Later test files must not inherit synchronous delivery.
    rawHelper.settings(previousSettings);
    await emu?.stop({ graceful: false });
  });
  afterEach(async () => {
    await helper.unload();
    rmSync(dir, { recursive: true, force: true });
  });

  it(`acknowledges and delivers ${ROUNDS} batches of ${BATCH}, each sent as soon as the previous batch is acknowledged`, async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'kp-channel-bursts-'));
    rawHelper.settings({ userDir: dir, runtimeSyncDelivery: true });
    const seed = randomBytes(32);
    const client = new ThinClient({ dial: emu.address });
    await client.connect();
    let readCap: Buffer;
    try {
      readCap = (await client.newKeypair(seed)).readCap;
    } finally {
      await client.close();
    }
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const modules = CHANNEL_TYPES.map((t) => require(path.join(DIST_NODES, `${t}.js`)));
    const flow = [
      { id: 'f1', type: 'tab', label: 'writer' },
      { id: 'f2', type: 'tab', label: 'reader' },
      daemonNode(emu),
      { id: 'cw', type: 'katzenpost-channel', name: 'bursts', daemon: 'daemon', mode: 'owned', database: path.join(dir, 'writer.db') },
      { id: 'cr', type: 'katzenpost-channel', name: 'bursts-in', daemon: 'daemon', mode: 'imported', database: path.join(dir, 'reader.db') },
      { id: 'tx', z: 'f1', type: 'katzenpost-channel-send', channel: 'cw', wires: [['acks']], x: 100, y: 40 },
      { id: 'acks', z: 'f1', type: 'helper', x: 300, y: 40 },
      { id: 'rx', z: 'f2', type: 'katzenpost-channel-receive', channel: 'cr', pollInterval: 0.02, maxPollInterval: 0.1, wires: [['got'], ['skipped']], x: 100, y: 80 },
      { id: 'got', z: 'f2', type: 'helper', x: 300, y: 80 },
      { id: 'skipped', z: 'f2', type: 'helper', x: 300, y: 120 },
    ];
    await helper.load(modules, flow, { cw: { seed: seed.toString('hex') }, cr: { readCap: readCap.toString('base64') } });

    const tx = getNode('tx');
    const acks = getNode('acks');
    const sent: string[] = [];
    const acked: Record<string, any>[] = [];
    const received = collect('got', ROUNDS * BATCH, 30_000);
    await new Promise<void>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const sendBatch = (): void => {
        clearTimeout(timer);
        if (acked.length === ROUNDS * BATCH) {
          acks.removeListener('input', onAck);
          resolve();
          return;
        }
        const round = acked.length / BATCH;
        // A batch that is not acknowledged by then is stuck (a healthy one takes milliseconds).
        timer = setTimeout(() => {
          acks.removeListener('input', onAck);
          reject(new Error(`round ${round} not acknowledged within 5 s: ${sent.length} sent, ${acked.length} acknowledged`));
        }, 5000);
        for (let i = 0; i < BATCH; i++) {
          const payload = `round ${round} message ${i}`;
          sent.push(payload);
          tx.receive({ payload, topic: payload });
        }
      };
      // The next batch goes in from the listener of the batch's last acknowledgement.
      const onAck = (msg: Record<string, any>): void => {
        acked.push(msg);
        if (acked.length % BATCH === 0) sendBatch();
      };
      acks.on('input', onAck);
      sendBatch();
    });

    assert.deepEqual(
      acked.map((m) => m.topic),
      sent,
      'acknowledged in order',
    );
    const got = await received;
    assert.deepEqual(
      got.map((m) => m.payload.toString()),
      sent,
      'received in order',
    );
    assert.deepEqual(
      got.map((m) => m.index),
      acked.map((m) => m.index),
    );
    await expectSilence('got', 300);

    // Two queue changes per message, but the status is coalesced (at most one
    // update per STATUS_MIN_INTERVAL_MS) and ends on the idle state.
    await new Promise((r) => setTimeout(r, STATUS_MIN_INTERVAL_MS + 50));
    const statusCalls = (tx as unknown as { status: { callCount: number; lastCall: { args: [Record<string, unknown>] } } }).status;
    assert.ok(statusCalls.callCount < ROUNDS * BATCH / 2, `${statusCalls.callCount} status updates for ${ROUNDS * BATCH} messages`);
    assert.doesNotMatch(String(statusCalls.lastCall.args[0].text), /queued/, 'the last status shown is not a queue');
  });
});
