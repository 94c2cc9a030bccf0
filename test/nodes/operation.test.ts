/**
 * The operation frame (defineOperationNode) with a node type defined by the
 * test: what setup() builds reaches every run() as ctx.state, per node
 * instance; its close hook runs; a setup that throws fails each message.
 */
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import type { Emulator } from '../../src/emulator';
import type { NodeAPI, NodeDef, OperationNodeDefinition } from '../../src/nodes/shared';
import { DIST_NODES, expectPort, helper, loadFlow, newEmulator, opFlow, ourNodes } from './support';

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

  it('a setup that throws fails every message with its error', async () => {
    await loadFlow([...ourNodes(), broken], opFlow(emu, 'test-broken'));
    const m = await expectPort('catch', { payload: 1 }, { outputs: 1 });
    assert.equal(m.error.message, 'no state today');
  });
});
