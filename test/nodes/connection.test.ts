/**
 * The daemon connection as users see it: status on every node through daemon
 * loss and return and mixnet offline, requests that cannot complete failing
 * clearly, operations surviving a daemon restart, and closing in time.
 */
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startEmulator, type Emulator } from '../../src/emulator';
import {
  TEXT,
  collect,
  collectUntil,
  daemonNode,
  daemonState,
  deadAddress,
  delay,
  directClient,
  expectPort,
  expectSilence,
  getNode,
  helper,
  isConnected,
  loadFlow,
  newEmulator,
  nextInput,
  opFlow,
  ourNodes,
  roundTrip,
  until,
  waitConnected,
  watchStatus,
  writeBox,
} from './support';

// "disconnected", or the socket error and the address when known ("ECONNREFUSED 127.0.0.1:64331").
const isDisconnected = (s: { fill?: string; shape?: string; text?: string }): boolean =>
  s.fill === 'red' && s.shape === 'ring' && (s.text === TEXT.disconnected || /^E[A-Z]+ \S+$/.test(s.text ?? ''));

/** Two user nodes and an events node on one daemon. */
function usersFlow(emu: { address: string }): Record<string, unknown>[] {
  return [
    { id: 'tab', type: 'tab' },
    daemonNode(emu),
    { id: 'idx', z: 'tab', type: 'katzenpost-index', daemon: 'daemon', mode: 'counter', wires: [['out1']] },
    { id: 'kp', z: 'tab', type: 'katzenpost-new-keypair', daemon: 'daemon', wires: [['out1']] },
    { id: 'ev', z: 'tab', type: 'katzenpost-events', daemon: 'daemon', pki: true, connection: true, all: false, wires: [['events']] },
    { id: 'out1', z: 'tab', type: 'helper' },
    { id: 'events', z: 'tab', type: 'helper' },
    { id: 'catch', z: 'tab', type: 'catch', scope: null, uncaught: false, wires: [['caught']] },
    { id: 'caught', z: 'tab', type: 'helper' },
  ];
}

describe('node pack: daemon connection', function () {
  afterEach(async () => {
    await helper.unload();
  });

  describe('with an emulator that restarts', () => {
    let emu: Emulator;
    beforeEach(async () => {
      emu = await newEmulator();
    });
    afterEach(async () => {
      await emu?.stop({ graceful: false });
    });

    it('every user node shows disconnected when the daemon goes and connected when it is back; the events node reports both', async () => {
      await loadFlow(ourNodes(), usersFlow(emu));
      await waitConnected();
      await Promise.all(['idx', 'kp', 'ev'].map((id) => watchStatus(id).waitFor(isConnected)));
      const connectionEvents = collect('events', 2, 15_000);
      await emu.restart();
      await Promise.all(['idx', 'kp', 'ev'].map((id) => watchStatus(id).waitFor(isDisconnected)));
      const back = ['idx', 'kp', 'ev'].map((id) => watchStatus(id));
      await Promise.all(back.map((w) => w.waitFor(isConnected, 15_000)));
      const evs = await connectionEvents;
      assert.deepEqual(
        evs.map((e) => [e.topic, e.payload.state]),
        [
          ['connection', 'disconnected'],
          ['connection', 'connected'],
        ],
      );
      // Requests work again.
      await expectPort(1, { payload: randomBytes(32) }, { id: 'kp', outputs: 1 });
    });

    it('mixnet offline shows a yellow dot on every user, and green again when back', async () => {
      await loadFlow(ourNodes(), usersFlow(emu));
      await waitConnected();
      const offlineEvent = nextInput('events');
      emu.setOnline(false);
      await Promise.all(
        ['idx', 'kp'].map((id) => watchStatus(id).waitFor((s) => s.fill === 'yellow' && s.shape === 'dot' && TEXT.offline.test(s.text ?? ''))),
      );
      assert.equal(daemonState(), 'offline');
      const off = await offlineEvent;
      assert.equal(off.payload.state, 'offline');
      assert.equal(off.payload.mixnetConnected, false);
      // Pigeonhole operations are local or queued: a keypair still works offline.
      await expectPort(1, { payload: randomBytes(32) }, { id: 'kp', outputs: 1 });
      emu.setOnline(true);
      await Promise.all(['idx', 'kp'].map((id) => watchStatus(id).waitFor(isConnected)));
    });

    it('a read waiting while the daemon restarts still gets its answer', async () => {
      const setup = await directClient(emu);
      const kp = await setup.newKeypair(randomBytes(32));
      const env = await setup.encryptRead(kp.readCap, kp.firstMessageIndex);
      await setup.close();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', { variant: 'default' }, 2));
      await waitConnected();
      const answer = roundTrip(
        {
          envelope: { messageCiphertext: env.messageCiphertext, envelopeDescriptor: env.envelopeDescriptor, envelopeHash: env.envelopeHash, kind: 'read' },
          readCap: kp.readCap,
          messageBoxIndex: kp.firstMessageIndex,
        },
        { timeoutMs: 20_000 },
      );
      await delay(100);
      await emu.restart({ keepState: true });
      await until(() => daemonState() === 'connected', 15_000, 'the reconnect');
      const writer = await directClient(emu);
      await writeBox(writer, kp.writeCap, kp.firstMessageIndex, 'after the restart');
      await writer.close();
      const r = await answer;
      assert.equal(r.port, 1, r.msg.error?.message);
      assert.deepEqual(r.msg.payload, Buffer.from('after the restart'));
    });

    it('when the daemon stays away, a waiting read fails at its timeout naming the unreachable daemon, and local requests too', async () => {
      const setup = await directClient(emu);
      const kp = await setup.newKeypair(randomBytes(32));
      const env = await setup.encryptRead(kp.readCap, kp.firstMessageIndex);
      await setup.close();
      await loadFlow(ourNodes(), [
        // One Catch node for both (the test helper loads the catch module once per catch node).
        ...opFlow(emu, 'katzenpost-resend', { variant: 'default' }, 2).map((n) => (n.id === 'catch' ? { ...n, scope: ['op', 'idx'] } : n)),
        { id: 'idx', z: 'tab', type: 'katzenpost-index', daemon: 'daemon', mode: 'counter', wires: [['out1']] },
      ]);
      await waitConnected();
      const answer = roundTrip(
        {
          envelope: { messageCiphertext: env.messageCiphertext, envelopeDescriptor: env.envelopeDescriptor, envelopeHash: env.envelopeHash, kind: 'read' },
          readCap: kp.readCap,
          messageBoxIndex: kp.firstMessageIndex,
          timeout: 1500,
        },
        { timeoutMs: 10_000 },
      );
      await delay(100);
      await emu.stop({ graceful: true });
      await watchStatus('op').waitFor(isDisconnected);
      const r = await answer;
      assert.equal(r.port, 'catch');
      assert.equal(r.msg.error.code, 'TIMEOUT');
      assert.match(r.msg.error.message, /katzenpost-resend: timed out after 1500 ms \(msg\.timeout\) while the daemon at 127\.0\.0\.1:\d+ was unreachable/);
      const local = await expectPort('catch', { messageBoxIndex: kp.firstMessageIndex, timeout: 300 }, { id: 'idx', outputs: 1 });
      assert.equal(local.error.code, 'TIMEOUT');
    });
  });

  describe('events and redeploys', () => {
    let emu: Emulator;
    before(async () => {
      emu = await newEmulator();
    });
    after(async () => {
      await emu?.stop({ graceful: false });
    });

    it('the events node reports each new epoch once, and every daemon event when asked', async () => {
      await loadFlow(ourNodes(), [
        { id: 'tab', type: 'tab' },
        daemonNode(emu),
        { id: 'ev', z: 'tab', type: 'katzenpost-events', daemon: 'daemon', pki: true, connection: false, all: true, wires: [['events']] },
        { id: 'events', z: 'tab', type: 'helper' },
        { id: 'req', z: 'tab', type: 'katzenpost-blocking-send', daemon: 'daemon', service: 'echo', serviceType: 'str', wires: [['out1']] },
        { id: 'out1', z: 'tab', type: 'helper' },
        { id: 'catch', z: 'tab', type: 'catch', scope: null, uncaught: false, wires: [['caught']] },
        { id: 'caught', z: 'tab', type: 'helper' },
      ]);
      await waitConnected();
      const epoch = emu.epoch;
      const seen = collectUntil('events', (got) => got.some((m) => m.topic === 'pki' && m.epoch === epoch + 1) && got.some((m) => m.topic === 'messageReply'));
      emu.advanceEpoch();
      await expectPort(1, { payload: 'ping' }, { id: 'req', outputs: 1 });
      const msgs = await seen;
      const topics = new Set(msgs.map((m) => m.topic));
      for (const t of ['pki', 'newPkiDocument', 'messageSent', 'messageReply']) assert.ok(topics.has(t), `no ${t} event in ${[...topics]}`);
      const raw = msgs.find((m) => m.topic === 'newPkiDocument')!;
      assert.ok(Buffer.isBuffer(raw.payload.payload));
      assert.equal(raw.payload.summary.epoch, epoch + 1);
      assert.ok(!('document' in raw.payload));
      // The same epoch is not reported twice.
      assert.equal(msgs.filter((m) => m.topic === 'pki' && m.epoch === epoch + 1).length, 1);
    });

    it('redeploying one user node keeps the others working', async () => {
      const flow = usersFlow(emu);
      await loadFlow(ourNodes(), flow);
      await waitConnected();
      const changed = flow.map((n) => (n.id === 'kp' ? { ...n, name: 'renamed', x: 100, y: 100 } : n.type === 'tab' || n.type === 'katzenpost-daemon' || 'x' in n ? n : { ...n, x: 100, y: 200 }));
      await (helper as unknown as { setFlows(f: unknown[], type: string): Promise<void> }).setFlows(changed, 'nodes');
      await until(() => daemonState() === 'connected', 10_000, 'connected after the redeploy');
      await expectPort(1, { payload: randomBytes(32) }, { id: 'kp', outputs: 1 });
      const first = await direct32();
      await expectPort(1, { messageBoxIndex: first }, { id: 'idx', outputs: 1 });

      async function direct32(): Promise<Buffer> {
        const c = await directClient(emu);
        try {
          return (await c.newKeypair(randomBytes(32))).firstMessageIndex;
        } finally {
          await c.close();
        }
      }
    });
  });

  it('a daemon that is not there yet: requests fail clearly after their timeout, then the nodes connect when it appears', async () => {
    const address = await deadAddress();
    await loadFlow(ourNodes(), usersFlow({ address }));
    await watchStatus('idx').waitFor(isDisconnected);
    assert.equal(daemonState(), 'disconnected');
    const m = await expectPort('catch', { messageBoxIndex: Buffer.alloc(104), timeout: 300 }, { id: 'idx', outputs: 1 });
    assert.equal(m.error.code, 'DAEMON_DISCONNECTED');
    assert.match(m.error.message, new RegExp(`katzenpost daemon at ${address.replace(/\./g, '\\.')} not reachable within 300 ms: .*ECONNREFUSED`));
    // The node keeps running, and the first-connection retry finds the daemon once it listens.
    const emu = await startEmulator({ listen: address, latency: 'fast' });
    try {
      await until(() => daemonState() === 'connected', 20_000, 'the retry to connect');
      await watchStatus('idx').waitFor(isConnected);
      await expectPort(1, { payload: randomBytes(32) }, { id: 'kp', outputs: 1 });
    } finally {
      await helper.unload();
      await emu.stop({ graceful: false });
    }
  });

  it('a bad transport setting shows disconnected and fails requests with the reason', async () => {
    await loadFlow(ourNodes(), [
      ...usersFlow({ address: '127.0.0.1:1' }).filter((n) => n.id !== 'daemon'),
      { ...daemonNode({ address: '127.0.0.1:1' }), transport: 'config', configFile: '/nonexistent/thinclient.toml' },
    ]);
    await watchStatus('idx').waitFor(isDisconnected);
    const m = await expectPort('catch', { messageBoxIndex: Buffer.alloc(104), timeout: 2000 }, { id: 'idx', outputs: 1 });
    assert.match(m.error.message, /nonexistent\/thinclient\.toml: cannot read/);
  });

  describe('closing', () => {
    let emu: Emulator;
    before(async () => {
      emu = await newEmulator();
    });
    after(async () => {
      await emu?.stop({ graceful: false });
    });

    it('stops quickly with a read waiting, completing the message without an error', async () => {
      const setup = await directClient(emu);
      const kp = await setup.newKeypair(randomBytes(32));
      const env = await setup.encryptRead(kp.readCap, kp.firstMessageIndex);
      await setup.close();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', { variant: 'default' }, 2));
      await waitConnected();
      const silence = expectSilence('caught', 1000);
      getNode('op').receive({
        envelope: { messageCiphertext: env.messageCiphertext, envelopeDescriptor: env.envelopeDescriptor, envelopeHash: env.envelopeHash, kind: 'read' },
        readCap: kp.readCap,
        messageBoxIndex: kp.firstMessageIndex,
      });
      await delay(100);
      const started = Date.now();
      const unloading = helper.unload();
      await silence.catch(() => assert.fail('a closing node reported an error'));
      await unloading;
      assert.ok(Date.now() - started < 5000, `close took ${Date.now() - started} ms`);
      await until(() => emu.connectionCount() === 0, 5000, 'the emulator to see the connection closed');
    });

    it('stops quickly when the daemon does not answer and when it was never reachable', async () => {
      await loadFlow(ourNodes(), usersFlow(emu));
      await waitConnected();
      emu.stallReplies(20_000);
      let started = Date.now();
      await helper.unload();
      assert.ok(Date.now() - started < 8000, `close took ${Date.now() - started} ms`);
      const address = await deadAddress();
      await loadFlow(ourNodes(), usersFlow({ address }));
      await watchStatus('idx').waitFor(isDisconnected);
      started = Date.now();
      await helper.unload();
      assert.ok(Date.now() - started < 2000, `close took ${Date.now() - started} ms`);
    });
  });
});
