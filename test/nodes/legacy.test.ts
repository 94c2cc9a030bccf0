/**
 * The legacy send nodes (send, request) against the emulator's echo service.
 */
import * as assert from 'node:assert/strict';
import type { ThinClient } from '../../src/client/client';
import type { Emulator } from '../../src/emulator';
import { collect, delay, directClient, expectPort, expectSilence, getNode, helper, loadFlow, newEmulator, opFlow, ourNodes, roundTrip, waitConnected } from './support';

describe('node pack: legacy send nodes', function () {
  let emu: Emulator;
  let direct: ThinClient;
  before(async () => {
    emu = await newEmulator();
    direct = await directClient(emu);
  });
  after(async () => {
    await direct?.close();
    await emu?.stop({ graceful: false });
  });
  afterEach(async () => {
    emu.setOnline(true);
    await helper.unload();
  });

  describe('katzenpost-blocking-send', () => {
    it('echoes the payload, cut to the request length by default', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-blocking-send', { service: 'echo', serviceType: 'str' }));
      const m = await expectPort(1, { payload: 'hello', topic: 'greeting' }, { outputs: 1 });
      assert.deepEqual(m.payload, Buffer.from('hello'));
      assert.equal(m.topic, 'greeting');
      assert.equal(m.destination.capability, 'echo');
      assert.equal(m.destination.idHash.length, 32);
    });

    it('without cutting, returns the zero-padded reply; as a string when asked', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-blocking-send', { service: 'echo', serviceType: 'str', trim: false }));
      const m = await expectPort(1, { payload: Buffer.from('pad me') }, { outputs: 1 });
      assert.ok(m.payload.length > 6);
      assert.deepEqual(m.payload.subarray(0, 6), Buffer.from('pad me'));
      assert.ok(m.payload.subarray(6).every((b: number) => b === 0));
      await helper.unload();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-blocking-send', { service: 'echo', serviceType: 'str', payloadAs: 'string' }));
      assert.equal((await expectPort(1, { payload: 'text' }, { outputs: 1 })).payload, 'text');
    });

    it('with a blank Service, uses msg.destination, else msg.capability', async () => {
      const svc = direct.getService('testdest');
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-blocking-send', { service: '', serviceType: 'str' }));
      const a = await expectPort(1, { payload: 'a', destination: { idHash: svc.destinationIdHash, queueId: svc.recipientQueueId.toString() } }, { outputs: 1 });
      assert.deepEqual(a.payload, Buffer.from('a'));
      const b = await expectPort(1, { payload: 'b', capability: 'testdest' }, { outputs: 1 });
      assert.equal(b.destination.capability, 'testdest');
      const none = await expectPort('catch', { payload: 'c' }, { outputs: 1 });
      assert.match(none.error.message, /msg\.destination: expected an object \{idHash: Buffer\(32\), queueId: Buffer\}/);
      const bad = await expectPort('catch', { payload: 'c', destination: { idHash: 'abc', queueId: '+echo' } }, { outputs: 1 });
      assert.match(bad.error.message, /msg\.destination\.idHash: expected a Buffer of 32 bytes, got a string/);
    });

    it('the Service field can read a context variable or msg property (TypedInput)', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-blocking-send', { service: 'svc', serviceType: 'msg' }));
      const m = await expectPort(1, { payload: 'x', svc: 'testdest' }, { outputs: 1 });
      assert.equal(m.destination.capability, 'testdest');
      const missing = await expectPort('catch', { payload: 'x' }, { outputs: 1 });
      assert.match(missing.error.message, /msg\.destination/);
    });

    it('errors reach Catch: unknown service, oversize payload, offline daemon', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-blocking-send', { service: 'nonesuch', serviceType: 'str' }));
      const unknown = await expectPort('catch', { payload: 'x' }, { outputs: 1 });
      assert.equal(unknown.error.code, 'SERVICE_NOT_FOUND');
      await helper.unload();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-blocking-send', { service: 'echo', serviceType: 'str' }));
      const big = await expectPort('catch', { payload: Buffer.alloc(2001) }, { outputs: 1 });
      assert.match(big.error.message, /msg\.payload: expected at most 2000 bytes \(legacy message limit\), got 2001 bytes/);
      emu.setOnline(false);
      await delay(100);
      const offline = await expectPort('catch', { payload: 'x' }, { outputs: 1 });
      assert.equal(offline.error.code, 'OFFLINE');
    });

    it('times out with msg.timeout when no reply comes, and msg.cancel stops waiting', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-blocking-send', { service: 'echo', serviceType: 'str' }));
      await waitConnected();
      emu.stallReplies(1000);
      const t = await expectPort('catch', { payload: 'slow', timeout: 200 }, { outputs: 1 });
      assert.equal(t.error.code, 'TIMEOUT');
      const waiting = roundTrip({ payload: 'slow too' }, { outputs: 1 });
      await delay(50);
      getNode('op').receive({ cancel: true });
      const c = await waiting;
      assert.equal(c.port, 'catch');
      assert.equal(c.msg.error.code, 'CANCELLED');
    });
  });

  describe('katzenpost-send', () => {
    it('with reply: each reply comes back as its own original message', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-send', { service: 'echo', serviceType: 'str', mode: 'reply', payloadAs: 'string' }));
      const got = collect('out1', 3);
      for (const n of [1, 2, 3]) getNode('op').receive({ payload: `request ${n}`, topic: `t${n}`, _msgid: `id-${n}`, correlation: n });
      const replies = await got;
      for (const r of replies) {
        assert.equal(r.payload, `request ${r.correlation}`);
        assert.equal(r.topic, `t${r.correlation}`);
        assert.equal(r._msgid, `id-${r.correlation}`);
        assert.ok(Buffer.isBuffer(r.surbId) && r.surbId.length === 16);
        assert.equal(r.replyErrorCode, 0);
        assert.equal(typeof r.replyEtaMs, 'number');
      }
      assert.equal(new Set(replies.map((r) => r.surbId.toString('hex'))).size, 3);
    });

    it('fire and forget passes the message on at once and no reply follows', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-send', { service: 'echo', serviceType: 'str', mode: 'fire' }));
      const m = await expectPort(1, { payload: 'one way' }, { outputs: 1 });
      assert.equal(m.payload, 'one way');
      assert.ok(!('surbId' in m));
      await expectSilence('out1', 300);
    });

    it('a reply that does not come in time is a timeout at Catch; offline is refused', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-send', { service: 'echo', serviceType: 'str', mode: 'reply', timeout: '0.2' }));
      await waitConnected();
      emu.stallReplies(1000);
      const m = await expectPort('catch', { payload: 'late' }, { outputs: 1 });
      assert.equal(m.error.code, 'TIMEOUT');
      assert.match(m.error.message, /no reply within|timed out after/);
      await delay(1100);
      emu.setOnline(false);
      await delay(100);
      const off = await expectPort('catch', { payload: 'x' }, { outputs: 1 });
      assert.equal(off.error.code, 'OFFLINE');
    });
  });
});
