/**
 * The operation frame (defineOperationNode) with a node type defined by the
 * test: what setup() builds reaches every run() as ctx.state, per node
 * instance; its close hook runs; a setup that throws fails each message.
 * Aborts: a handler that holds ctx.signal sees it fire and ends with the
 * frame's reason; one that never asks for it has its message completed by
 * the frame at once, and whatever it returns later is dropped (as for
 * katzenpost-encrypt-write, which calls the client without a signal).
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import type { Emulator } from '../../src/emulator';
import type { NodeAPI, NodeDef, OperationNodeDefinition } from '../../src/nodes/shared';
import { DIST_NODES, delay, expectPort, expectSilence, getNode, helper, loadFlow, newEmulator, opFlow, ourNodes } from './support';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const shared = require(path.join(DIST_NODES, 'shared.js')) as {
  defineOperationNode<C extends NodeDef, S>(RED: NodeAPI, def: OperationNodeDefinition<C, S>): void;
};

interface Counter {
  nodeId: string;
  runs: number;
}

describe('node pack: the operation frame', function () {
  let emu: Emulator;
  let closed: string[];
  before(async () => {
    emu = await newEmulator();
  });
  after(async () => {
    await emu?.stop({ graceful: false });
  });
  beforeEach(() => {
    closed = [];
  });
  afterEach(async () => {
    await helper.unload();
  });

  const stateful = (RED: NodeAPI): void =>
    shared.defineOperationNode<NodeDef, Counter>(RED, {
      type: 'test-stateful',
      setup(node) {
        const state: Counter = { nodeId: node.id, runs: 0 };
        return { state, hooks: { onClose: () => void closed.push(state.nodeId) } };
      },
      async run(ctx) {
        ctx.state.runs++;
        ctx.msg.runs = ctx.state.runs;
        ctx.msg.builtFor = ctx.state.nodeId;
        return ctx.msg;
      },
    });

  const broken = (RED: NodeAPI): void =>
    shared.defineOperationNode<NodeDef, Counter>(RED, {
      type: 'test-broken',
      setup() {
        throw new Error('no state today');
      },
      async run() {
        throw new Error('run must not be reached');
      },
    });

  it('run() sees what setup() built for its node, across messages, and the close hook runs', async () => {
    await loadFlow([...ourNodes(), stateful], opFlow(emu, 'test-stateful'));
    const a = await expectPort(1, { payload: 1 }, { outputs: 1 });
    const b = await expectPort(1, { payload: 2 }, { outputs: 1 });
    assert.deepEqual([a.runs, b.runs], [1, 2]);
    assert.equal(a.builtFor, 'op');
    await helper.unload();
    assert.deepEqual(closed, ['op']);
  });

  /** A handler that takes `ms` to answer, with or without asking for the signal. */
  const slow = (RED: NodeAPI): void =>
    shared.defineOperationNode<NodeDef, undefined>(RED, {
      type: 'test-slow',
      async run(ctx) {
        const ms = Number(ctx.msg.ms);
        if (ctx.msg.useSignal) {
          const signal = ctx.signal;
          await new Promise<void>((resolve, reject) => {
            const timer = setTimeout(resolve, ms);
            signal.addEventListener('abort', () => {
              clearTimeout(timer);
              ctx.msg.sawAbort = true;
              reject(new Error('aborted (the handler speaking)'));
            });
          });
        } else {
          await delay(ms);
        }
        ctx.msg.answered = true;
        return ctx.msg;
      },
    });

  it('a timeout completes the message at once when the handler never asked for the signal; its late result is dropped', async () => {
    await loadFlow([...ourNodes(), slow], opFlow(emu, 'test-slow'));
    const started = Date.now();
    const m = await expectPort('catch', { ms: 1500, timeout: 200 }, { outputs: 1 });
    assert.ok(Date.now() - started < 1200, `completed after ${Date.now() - started} ms`);
    assert.equal(m.error.code, 'TIMEOUT');
    assert.match(m.error.message, /^test-slow: timed out after 200 ms \(msg\.timeout\)$/);
    await expectSilence('out1', 1600);
    // The node goes on.
    const ok = await expectPort(1, { ms: 10 }, { outputs: 1 });
    assert.equal(ok.answered, true);
  });

  it("a timeout fires the signal of a handler that holds it, and the message ends with the frame's reason", async () => {
    await loadFlow([...ourNodes(), slow], opFlow(emu, 'test-slow'));
    const m = await expectPort('catch', { ms: 1500, timeout: 200, useSignal: true }, { outputs: 1 });
    assert.equal(m.sawAbort, true);
    assert.match(m.error.message, /^test-slow: timed out after 200 ms \(msg\.timeout\)$/);
  });

  it('closing the node completes a running message without an error, signal or not', async () => {
    await loadFlow([...ourNodes(), slow], opFlow(emu, 'test-slow'));
    const caught = expectSilence('caught', 500);
    getNode('op').receive({ ms: 5000 });
    getNode('op').receive({ ms: 5000, useSignal: true });
    await delay(100);
    const started = Date.now();
    await helper.unload();
    assert.ok(Date.now() - started < 2000, `close took ${Date.now() - started} ms`);
    await caught;
  });

  it('a setup that throws fails every message with its error', async () => {
    await loadFlow([...ourNodes(), broken], opFlow(emu, 'test-broken'));
    const m = await expectPort('catch', { payload: 1 }, { outputs: 1 });
    assert.equal(m.error.message, 'no state today');
  });
});
