/**
 * Every flow under examples/ loads against a real emulator and produces the
 * result its comment node promises. Debug nodes are swapped for helper nodes
 * (same id and place) so the tests can watch what would reach the sidebar;
 * the shared daemon config node is pointed at the test emulator.
 */
import * as assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { EXAMPLES, listExamples } from '../support/examples';
import * as path from 'node:path';
import type { Emulator } from '../../src/emulator';
import { OUR_CONFIG_TYPES, OUR_TYPES, collect, collectUntil, coreModuleFor, coreNodes, expectSilence, getNode, helper, hostPort, newEmulator, nextInput, ourNodes } from './support';

const DAEMON_ID = '4b50000000000001';

type FlowNode = Record<string, any>;


/** Channel examples belong to the channel nodes and are tested with them (test/nodes/channel.test.ts). */
function isChannelExample(rel: string): boolean {
  return readExample(rel).some((n) => typeof n.type === 'string' && n.type.startsWith('katzenpost-channel'));
}

function readExample(rel: string): FlowNode[] {
  return JSON.parse(readFileSync(path.join(EXAMPLES, rel), 'utf8')) as FlowNode[];
}

/** The flow as the test runs it: a tab, the emulator's address, helper nodes instead of debug nodes. */
function prepare(flow: FlowNode[], emu: Emulator): { flow: FlowNode[]; modules: unknown[] } {
  const { host, port } = hostPort(emu.address);
  const tabs = new Set<string>();
  const core = new Set<string>();
  const nodes = flow.map((n) => {
    if (n.z) tabs.add(n.z);
    if (n.type === 'katzenpost-daemon') return { ...n, host, port, requestTimeout: 10, handshakeTimeout: 5 };
    if (n.type === 'debug') return { id: n.id, z: n.z, type: 'helper', name: n.name, wires: [] };
    const m = coreModuleFor(n.type);
    if (m) core.add(m);
    return n;
  });
  const tabNodes = [...tabs].map((id) => ({ id, type: 'tab', label: 'example' }));
  return { flow: [...tabNodes, ...nodes], modules: [...ourNodes(), ...coreNodes(...([...core] as Parameters<typeof coreNodes>))] };
}

/** The id of the node with this name (debug nodes keep their names when swapped). */
function byName(flow: FlowNode[], name: string): string {
  const n = flow.find((x) => x.name === name);
  assert.ok(n, `no node named "${name}"`);
  return n.id;
}

function injectAll(flow: FlowNode[]): void {
  for (const n of flow) if (n.type === 'inject') getNode(n.id).receive({});
}

/** The channel examples and the test file that runs each one (they need seeds, and vouchers a current daemon). */
const CHANNEL_EXAMPLES_RUN_BY: Record<string, string> = {
  'Channels/01 - Two flows talking through a channel.json': 'test/nodes/channel.test.ts',
  'Channels/02 - Two flows introduced by a voucher.json': 'test/nodes/channel-voucher.test.ts',
};

/** What each example must produce; keyed by its path under examples/. */
const EXPECTATIONS: Record<string, (flow: FlowNode[], emu: Emulator) => Promise<void>> = {
  'Basics/01 - Echo ping.json': async (flow) => {
    const reply = nextInput(byName(flow, 'echo reply'));
    injectAll(flow);
    assert.equal((await reply).payload, 'hello mixnet');
  },
  'Basics/02 - Send with reply and fire and forget.json': async (flow) => {
    const reply = nextInput(byName(flow, 'reply'));
    const sent = nextInput(byName(flow, 'sent'));
    const viaDest = nextInput(byName(flow, 'reply via destination'));
    injectAll(flow);
    const r = await reply;
    assert.equal(r.payload, 'ping');
    assert.equal(r.topic, 'request-1');
    assert.ok(Buffer.isBuffer(r.surbId) && r.surbId.length === 16);
    assert.equal(Buffer.from((await sent).payload).toString(), 'one-way');
    assert.equal((await viaDest).payload, 'pong');
  },
  'Basics/03 - PKI lookups.json': async (flow) => {
    const names = ['echo service', 'all couriers', 'two couriers', 'document summary', 'signed document'];
    const waits = names.map((n) => nextInput(byName(flow, n)));
    injectAll(flow);
    const [svc, all, two, summary, raw] = await Promise.all(waits);
    assert.equal(svc.payload.capability, 'echo');
    assert.equal(svc.destination.idHash.length, 32);
    assert.ok(all.payload.length >= 2);
    assert.equal(two.payload.length, 2);
    assert.notDeepEqual(two.payload[0].identityHash, two.payload[1].identityHash);
    assert.deepEqual(summary.payload.capabilities, ['courier', 'echo', 'testdest']);
    assert.ok(Buffer.isBuffer(raw.payload) && raw.payload.length > 0);
    assert.equal(raw.epoch, summary.epoch);
  },
  'Basics/04 - Daemon events.json': async (flow, emu) => {
    // The node starts emitting on deploy: the connection state, then the current document.
    const msgs = await collectUntil(
      byName(flow, 'daemon events'),
      (got) => got.some((m) => m.topic === 'pki') && got.some((m) => m.topic === 'connection' && m.payload.state === 'connected'),
    );
    const pki = msgs.find((m) => m.topic === 'pki')!;
    assert.equal(pki.payload.epoch, emu.epoch);
    assert.deepEqual(pki.payload.capabilities, ['courier', 'echo', 'testdest']);
    assert.ok(msgs.every((m) => m.topic === 'pki' || (m.topic === 'connection' && ['connecting', 'connected'].includes(m.payload.state))));
  },
  'Pigeonhole/01 - Write and read one box.json': async (flow) => {
    const out = nextInput(byName(flow, 'read back'));
    const silence = expectSilence(byName(flow, 'unexpected outcome'), 500);
    injectAll(flow);
    assert.equal((await out).payload, 'Hello, Pigeonhole!');
    await silence;
  },
  'Pigeonhole/02 - Write three messages and read them in order.json': async (flow) => {
    const got = collect(byName(flow, 'received'), 3);
    injectAll(flow);
    assert.deepEqual(
      (await got).map((m) => m.payload),
      ['one', 'two', 'three'],
    );
  },
  'Pigeonhole/03 - Poll an unwritten box.json': async (flow) => {
    const got = nextInput(byName(flow, 'received'), 15_000);
    const written = nextInput(byName(flow, 'written'), 15_000);
    injectAll(flow);
    const m = await got;
    assert.equal(m.payload, 'worth the wait');
    assert.ok(m.attempts >= 1, `expected at least one BoxIDNotFound first, got attempts=${m.attempts}`);
    await written;
  },
  'Pigeonhole/04 - Tombstone.json': async (flow) => {
    const count = nextInput(byName(flow, 'tombstoned'));
    const outcome = nextInput(byName(flow, 'read outcome'));
    injectAll(flow);
    assert.equal((await count).tombstoned, 1);
    const o = await outcome;
    assert.equal(o.outcome, 'Tombstone');
    assert.equal(o.errorCode, 11);
  },
  'Pigeonhole/05 - Large payload through a copy command.json': async (flow) => {
    const copied = nextInput(byName(flow, 'copied'), 20_000);
    const whole = nextInput(byName(flow, 'reassembled'), 20_000);
    injectAll(flow);
    assert.equal((await copied).boxesWritten, 4);
    const text = (await whole).payload as string;
    assert.equal(text.length, 5000);
    assert.ok(text.startsWith('00001.....00002.....'));
    assert.ok(text.endsWith('00500.....'));
  },
  'Pigeonhole/06 - Index arithmetic.json': async (flow) => {
    const out = nextInput(byName(flow, 'counters'));
    injectAll(flow);
    const { first, later } = (await out).payload;
    assert.equal(typeof first, 'string');
    assert.equal(BigInt(later) - BigInt(first), 3n);
  },
  'Pigeonhole/07 - Cancel a waiting read.json': async (flow) => {
    const sent = nextInput(byName(flow, 'cancel sent'));
    const ended = nextInput(byName(flow, 'read ended'));
    injectAll(flow);
    assert.equal((await sent).cancelled, 'message');
    assert.equal((await ended).error.code, 'START_RESENDING_CANCELLED');
  },
  'Pigeonhole/08 - Detect a box that already holds data.json': async (flow) => {
    const out = nextInput(byName(flow, 'second write'));
    injectAll(flow);
    assert.equal((await out).outcome, 'BoxAlreadyExists');
  },
};

describe('node pack: example flows', function () {
  let emu: Emulator;
  before(async () => {
    emu = await newEmulator();
  });
  after(async () => {
    await emu?.stop({ graceful: false });
  });
  afterEach(async () => {
    await helper.unload();
  });

  const files = listExamples().filter((f) => !isChannelExample(f));

  it('every example has an expectation, a comment node, only core nodes and ours, and the shared daemon node', () => {
    assert.deepEqual(files.filter((f) => !(f in EXPECTATIONS)), [], 'examples without a test');
    assert.deepEqual(Object.keys(EXPECTATIONS).filter((f) => !files.includes(f)), [], 'tests without an example');
    // The channel examples are run by the channel node tests; the rules of the flow library hold for them too.
    for (const f of listExamples().filter(isChannelExample)) {
      const runner = CHANNEL_EXAMPLES_RUN_BY[f];
      assert.ok(runner, `${f}: no test runs this channel example`);
      assert.ok(readFileSync(path.resolve(EXAMPLES, '..', runner), 'utf8').includes(path.basename(f)), `${runner} does not load ${f}`);
    }
    const used = new Set<string>();
    for (const f of listExamples()) {
      assert.match(path.basename(f), /^\d\d - .+\.json$/, `${f}: name it "NN - Title.json"`);
      const flow = readExample(f);
      assert.ok(Array.isArray(flow), `${f}: a flat array of nodes`);
      assert.ok(flow.some((n) => n.type === 'comment' && n.info), `${f}: needs a comment node with an explanation`);
      const daemons = flow.filter((n) => n.type === 'katzenpost-daemon');
      assert.equal(daemons.length, 1, `${f}: exactly one daemon config node`);
      assert.equal(daemons[0].id, DAEMON_ID, `${f}: the daemon config node keeps its stable id`);
      assert.equal(`${daemons[0].host}:${daemons[0].port}`, '127.0.0.1:64331');
      assert.ok(!('credentials' in daemons[0]), `${f}: no credentials in examples`);
      for (const n of flow) {
        assert.ok(!('credentials' in n), `${f}: node ${n.id} carries credentials`);
        const ours = (OUR_TYPES as readonly string[]).includes(n.type);
        const core = coreModuleFor(n.type) !== null || ['catch', 'status', 'complete', 'comment', 'debug', 'join'].includes(n.type);
        assert.ok(ours || core, `${f}: node type ${n.type} is neither ours nor core`);
        if (ours && n.type !== 'katzenpost-daemon') {
          // Channel send and receive reach the daemon through their channel config node, which must be in the file.
          const viaChannel = typeof n.channel === 'string' ? flow.find((c) => c.id === n.channel && c.type === 'katzenpost-channel') : n;
          assert.ok(viaChannel, `${f}: ${n.type} ${n.id} refers to a channel config node that is not in the example`);
          assert.equal(viaChannel.daemon, DAEMON_ID, `${f}: ${n.type} uses the shared daemon node`);
          used.add(n.type);
        }
      }
    }
    const palette = OUR_TYPES.filter((t) => !OUR_CONFIG_TYPES.includes(t));
    assert.deepEqual(palette.filter((t) => !used.has(t)), [], 'palette nodes without an example');
  });

  for (const file of files) {
    it(`${file} produces its documented result`, async () => {
      const expectation = EXPECTATIONS[file];
      assert.ok(expectation, `no expectation for ${file}`);
      const { flow, modules } = prepare(readExample(file), emu);
      await helper.load(modules, flow);
      await expectation(flow, emu);
    });
  }
});
