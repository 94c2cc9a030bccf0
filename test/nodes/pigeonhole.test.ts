/**
 * The Pigeonhole nodes against the emulator: success paths, expected
 * outcomes on output 2, chaining without function nodes, credentials,
 * cancellation and timeouts.
 */
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { ThinClient } from '../../src/client/client';
import type { Emulator } from '../../src/emulator';
import {
  collect,
  daemonNode,
  delay,
  directClient,
  expectPort,
  expectSilence,
  getNode,
  helper,
  loadFlow,
  newEmulator,
  nextInput,
  opFlow,
  ourNodes,
  quietConnected,
  readBox,
  roundTrip,
  watchStatus,
  writeBox,
  TEXT,
} from './support';

describe('node pack: Pigeonhole nodes', function () {
  let emu: Emulator;
  let direct: ThinClient;

  /** A fresh channel made by the direct client. */
  async function channel(): Promise<{ writeCap: Buffer; readCap: Buffer; first: Buffer }> {
    const kp = await direct.newKeypair(randomBytes(32));
    return { writeCap: kp.writeCap, readCap: kp.readCap, first: kp.firstMessageIndex };
  }

  before(async () => {
    emu = await newEmulator();
    direct = await directClient(emu);
  });
  after(async () => {
    await direct?.close();
    await emu?.stop({ graceful: false });
  });
  afterEach(async () => {
    await helper.unload();
  });

  describe('katzenpost-new-keypair', () => {
    it('makes a random channel: caps, first index, payload kept', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-new-keypair', { seedFrom: 'random' }));
      const m = await expectPort(1, { payload: 'first message', topic: 't' });
      assert.equal(m.writeCap.length, 168);
      assert.equal(m.readCap.length, 136);
      assert.equal(m.messageBoxIndex.length, 104);
      assert.deepEqual(m.firstMessageIndex, m.messageBoxIndex);
      assert.deepEqual(m.readCap, m.writeCap.subarray(32));
      assert.equal(m.payload, 'first message');
      assert.equal(m.topic, 't');
      assert.ok(!('seed' in m));
      const again = await expectPort(1, {});
      assert.notDeepEqual(again.writeCap, m.writeCap);
    });

    it('is deterministic for a seed in msg.payload, removes the seed from the payload, and outputs it only on request', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-new-keypair', { seedFrom: 'payload', outputSeed: true }));
      const seed = randomBytes(32);
      const seedCopy = Buffer.from(seed);
      const a = await expectPort(1, { payload: seed });
      const b = await expectPort(1, { payload: JSON.parse(JSON.stringify(seed)) });
      assert.deepEqual(a.writeCap, b.writeCap);
      assert.deepEqual(a.firstMessageIndex, b.firstMessageIndex);
      assert.ok(!('payload' in a));
      assert.deepEqual(a.seed, seedCopy);
      assert.deepEqual(seed, seedCopy, 'the incoming Buffer was modified');
    });

    it('a seed of the wrong size reaches Catch naming msg.payload', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-new-keypair', { seedFrom: 'payload' }));
      const m = await expectPort('catch', { payload: Buffer.alloc(31) });
      assert.match(m.error.message, /msg\.payload: expected a Buffer of 32 bytes, got 31 bytes/);
      assert.equal(m.error.code, 'INVALID_ARGUMENT');
      // The node keeps working.
      await expectPort(1, { payload: randomBytes(32) });
    });
  });

  describe('encrypt, resend and chaining', () => {
    it('new-keypair -> encrypt-write -> resend -> encrypt-read -> resend with no function node', async () => {
      await loadFlow(ourNodes(), [
        { id: 'tab', type: 'tab' },
        daemonNode(emu),
        { id: 'kp', z: 'tab', type: 'katzenpost-new-keypair', daemon: 'daemon', seedFrom: 'random', wires: [['ew']] },
        { id: 'ew', z: 'tab', type: 'katzenpost-encrypt-write', daemon: 'daemon', wires: [['rw']] },
        { id: 'rw', z: 'tab', type: 'katzenpost-resend', daemon: 'daemon', variant: 'default', operation: 'auto', advance: true, wires: [['written', 'er'], ['oc']] },
        { id: 'written', z: 'tab', type: 'helper' },
        { id: 'er', z: 'tab', type: 'katzenpost-encrypt-read', daemon: 'daemon', wires: [['rr']] },
        { id: 'rr', z: 'tab', type: 'katzenpost-resend', daemon: 'daemon', variant: 'noRetry', operation: 'auto', advance: true, wires: [['read'], ['oc']] },
        { id: 'read', z: 'tab', type: 'helper' },
        { id: 'oc', z: 'tab', type: 'helper' },
      ]);
      const written = nextInput('written');
      const outcome = nextInput('oc');
      getNode('kp').receive({ payload: 'chained' });
      const w = await written;
      // The write moved the index on, so the read chained straight after it looks at the next, empty box.
      assert.ok(!('envelope' in w));
      assert.notDeepEqual(w.messageBoxIndex, w.firstMessageIndex);
      const o = await outcome;
      assert.equal(o.outcome, 'BoxIDNotFound');
      // The box written is readable.
      assert.deepEqual(await readBox(direct, w.readCap, w.firstMessageIndex), Buffer.from('chained'));
    });

    it('encrypt-write outputs msg.envelope and msg.nextMessageBoxIndex, keeps its inputs, never mutates them', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-encrypt-write'));
      const payload = Buffer.from('hello box');
      const snapshot = [Buffer.from(payload), Buffer.from(ch.writeCap), Buffer.from(ch.first)];
      const m = await expectPort(1, { payload, writeCap: ch.writeCap, messageBoxIndex: ch.first });
      assert.equal(m.envelope.kind, 'write');
      assert.equal(m.envelope.envelopeHash.length, 32);
      assert.ok(m.envelope.messageCiphertext.length > 0 && m.envelope.envelopeDescriptor.length > 0);
      assert.deepEqual(m.nextMessageBoxIndex, await direct.nextMessageBoxIndex(ch.first));
      assert.deepEqual(m.messageBoxIndex, ch.first);
      assert.deepEqual([payload, ch.writeCap, ch.first], snapshot);
    });

    it('encrypt-write accepts JSON-form and Uint8Array blobs', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-encrypt-write'));
      const m = await expectPort(1, {
        payload: new Uint8Array([1, 2, 3]),
        writeCap: JSON.parse(JSON.stringify(ch.writeCap)),
        messageBoxIndex: new Uint8Array(ch.first),
      });
      assert.equal(m.envelope.envelopeHash.length, 32);
    });

    it('an empty payload makes a tombstone envelope', async () => {
      const ch = await channel();
      await writeBox(direct, ch.writeCap, ch.first, 'to delete');
      await loadFlow(ourNodes(), [
        { id: 'tab', type: 'tab' },
        daemonNode(emu),
        { id: 'op', z: 'tab', type: 'katzenpost-encrypt-write', daemon: 'daemon', wires: [['rs']] },
        { id: 'rs', z: 'tab', type: 'katzenpost-resend', daemon: 'daemon', wires: [['out1'], ['out2']] },
        { id: 'out1', z: 'tab', type: 'helper' },
        { id: 'out2', z: 'tab', type: 'helper' },
      ]);
      const done = nextInput('out1');
      getNode('op').receive({ payload: '', writeCap: ch.writeCap, messageBoxIndex: ch.first });
      await done;
      await assert.rejects(readBox(direct, ch.readCap, ch.first), { code: 'TOMBSTONE' });
    });

    it('bad inputs reach Catch with the property and the expected type or size', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-encrypt-write'));
      const cases: [Record<string, unknown>, RegExp][] = [
        [{ payload: 'x', writeCap: ch.writeCap.toString('hex'), messageBoxIndex: ch.first }, /msg\.writeCap: expected a Buffer of 168 bytes, got a string/],
        [{ payload: 'x', writeCap: ch.readCap, messageBoxIndex: ch.first }, /msg\.writeCap: expected a Buffer of 168 bytes, got 136 bytes/],
        [{ payload: 'x', messageBoxIndex: ch.first }, /msg\.writeCap: expected a Buffer of 168 bytes, got undefined \(missing\)/],
        [{ payload: 'x', writeCap: ch.writeCap, messageBoxIndex: 5 }, /msg\.messageBoxIndex: expected a Buffer of 104 bytes, got the number 5/],
        [{ payload: 12345, writeCap: ch.writeCap, messageBoxIndex: ch.first }, /msg\.payload: expected a Buffer or a string, got the number 12345/],
        [{ payload: Buffer.alloc(1554), writeCap: ch.writeCap, messageBoxIndex: ch.first }, /msg\.payload: expected at most 1553 bytes \(one Pigeonhole box; use katzenpost-copy for larger payloads\), got 1554 bytes/],
        [{ payload: 'x', writeCap: ch.writeCap, messageBoxIndex: ch.first, timeout: 'soon' }, /msg\.timeout: expected a number of milliseconds/],
      ];
      for (const [msg, re] of cases) {
        const m = await expectPort('catch', msg);
        assert.match(m.error.message, re);
        assert.doesNotMatch(m.error.message, new RegExp(ch.writeCap.toString('hex').slice(0, 16)), 'an error message shows a cap');
      }
      // 1553 bytes, the box limit, is fine; the node is still running.
      await expectPort(1, { payload: Buffer.alloc(1553, 7), writeCap: ch.writeCap, messageBoxIndex: ch.first });
    });

    it('credential caps (hex or base64) win over msg caps and are needed nowhere in the message', async () => {
      const ch = await channel();
      const other = await channel();
      await loadFlow(
        ourNodes(),
        [
          { id: 'tab', type: 'tab' },
          daemonNode(emu),
          { id: 'ew', z: 'tab', type: 'katzenpost-encrypt-write', daemon: 'daemon', wires: [['rw']] },
          // advance: false keeps msg.messageBoxIndex on the written box for the read that follows.
          { id: 'rw', z: 'tab', type: 'katzenpost-resend', daemon: 'daemon', advance: false, wires: [['er'], ['oc']] },
          { id: 'er', z: 'tab', type: 'katzenpost-encrypt-read', daemon: 'daemon', wires: [['rr']] },
          { id: 'rr', z: 'tab', type: 'katzenpost-resend', daemon: 'daemon', advance: false, payloadAs: 'string', wires: [['read'], ['oc']] },
          { id: 'read', z: 'tab', type: 'helper' },
          { id: 'oc', z: 'tab', type: 'helper' },
        ],
        {
          ew: { writeCap: ch.writeCap.toString('hex') },
          rw: { writeCap: ch.writeCap.toString('base64') },
          er: { readCap: ch.readCap.toString('base64') },
          rr: { readCap: ch.readCap.toString('hex') },
        },
      );
      const read = nextInput('read');
      // A decoy cap in the message must not be used; the read goes back to the box just written.
      getNode('ew').receive({ payload: 'via credentials', writeCap: other.writeCap, messageBoxIndex: ch.first });
      const m = await read;
      assert.equal(m.payload, 'via credentials');
      await assert.rejects(readBox(direct, other.readCap, other.first), { code: 'BOX_ID_NOT_FOUND' });
    });

    it('a credential of the wrong length names the field, never its text', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-encrypt-write'), { op: { writeCap: 'abcdef0123' } });
      const m = await expectPort('catch', { payload: 'x', messageBoxIndex: ch.first });
      assert.match(m.error.message, /katzenpost-encrypt-write credentials: write cap: expected 168 bytes as hex \(336 characters\) or base64 \(224 characters\), got 10 characters/);
      assert.doesNotMatch(m.error.message, /abcdef0123/);
    });

    it('encrypt-write times out on a silent daemon (msg.timeout), drops the late reply, and goes on with its credential', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-encrypt-write'), { op: { writeCap: ch.writeCap.toString('hex') } });
      const first = await expectPort(1, { payload: 'one', messageBoxIndex: ch.first });
      emu.stallReplies(1000);
      const started = Date.now();
      const m = await expectPort('catch', { payload: 'two', messageBoxIndex: first.nextMessageBoxIndex, timeout: 300 });
      assert.ok(Date.now() - started < 900, `timed out after ${Date.now() - started} ms`);
      assert.equal(m.error.code, 'TIMEOUT');
      assert.match(m.error.message, /^katzenpost-encrypt-write: timed out after 300 ms \(msg\.timeout\)$/);
      await expectSilence('out1', 1200);
      const third = await expectPort(1, { payload: 'three', messageBoxIndex: first.nextMessageBoxIndex });
      assert.deepEqual(third.nextMessageBoxIndex, await direct.nextMessageBoxIndex(first.nextMessageBoxIndex));
    });

    it('encrypt-read outputs a read envelope for the same index', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-encrypt-read'));
      const m = await expectPort(1, { readCap: ch.readCap, messageBoxIndex: ch.first });
      assert.equal(m.envelope.kind, 'read');
      assert.deepEqual(m.messageBoxIndex, ch.first);
      assert.equal(m.nextMessageBoxIndex.length, 104);
      const bad = await expectPort('catch', { readCap: ch.writeCap, messageBoxIndex: ch.first });
      assert.match(bad.error.message, /msg\.readCap: expected a Buffer of 136 bytes, got 168 bytes/);
    });
  });

  describe('katzenpost-resend outcomes', () => {
    async function readEnvelope(readCap: Buffer, index: Buffer): Promise<Record<string, unknown>> {
      const e = await direct.encryptRead(readCap, index);
      return { messageCiphertext: e.messageCiphertext, envelopeDescriptor: e.envelopeDescriptor, envelopeHash: e.envelopeHash, kind: 'read' };
    }
    async function writeEnvelope(payload: string, writeCap: Buffer, index: Buffer): Promise<Record<string, unknown>> {
      const e = await direct.encryptWrite(payload, writeCap, index);
      return { messageCiphertext: e.messageCiphertext, envelopeDescriptor: e.envelopeDescriptor, envelopeHash: e.envelopeHash, kind: 'write' };
    }

    it('reads return the plaintext on output 1, keep the index they read and name the next one', async () => {
      const ch = await channel();
      await writeBox(direct, ch.writeCap, ch.first, 'stored');
      const next = await direct.nextMessageBoxIndex(ch.first);
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', { variant: 'default' }, 2));
      const m = await expectPort(1, { envelope: await readEnvelope(ch.readCap, ch.first), readCap: ch.readCap, messageBoxIndex: ch.first, nextMessageBoxIndex: next });
      assert.deepEqual(m.payload, Buffer.from('stored'));
      assert.deepEqual(m.messageBoxIndex, ch.first);
      assert.deepEqual(m.nextMessageBoxIndex, next);
      assert.ok(!('envelope' in m));
      assert.equal(m.courierIdentityHash.length, 32);
    });

    it('"advance" (flows saved with the old default) moves msg.messageBoxIndex on instead', async () => {
      const ch = await channel();
      await writeBox(direct, ch.writeCap, ch.first, 'stored');
      const next = await direct.nextMessageBoxIndex(ch.first);
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', { variant: 'default', advance: true }, 2));
      const m = await expectPort(1, { envelope: await readEnvelope(ch.readCap, ch.first), readCap: ch.readCap, messageBoxIndex: ch.first, nextMessageBoxIndex: next });
      assert.deepEqual(m.payload, Buffer.from('stored'));
      assert.deepEqual(m.messageBoxIndex, next);
      assert.ok(!('nextMessageBoxIndex' in m));
    });

    it('computes msg.nextMessageBoxIndex when the envelope came without it', async () => {
      const ch = await channel();
      await writeBox(direct, ch.writeCap, ch.first, 'stored');
      const next = await direct.nextMessageBoxIndex(ch.first);
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', { variant: 'default' }, 2));
      const m = await expectPort(1, { envelope: await readEnvelope(ch.readCap, ch.first), readCap: ch.readCap, messageBoxIndex: ch.first });
      assert.deepEqual(m.messageBoxIndex, ch.first);
      assert.deepEqual(m.nextMessageBoxIndex, next);
    });

    it('no-retry read of an unwritten box: BoxIDNotFound on output 2, index unchanged', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', { variant: 'noRetry' }, 2));
      const m = await expectPort(2, {
        envelope: await readEnvelope(ch.readCap, ch.first),
        readCap: ch.readCap,
        messageBoxIndex: ch.first,
        nextMessageBoxIndex: await direct.nextMessageBoxIndex(ch.first),
      });
      assert.equal(m.outcome, 'BoxIDNotFound');
      assert.equal(m.errorCode, 1);
      assert.deepEqual(m.messageBoxIndex, ch.first);
    });

    it('return-box-exists write of different data: BoxAlreadyExists on output 2; identical data succeeds', async () => {
      const ch = await channel();
      await writeBox(direct, ch.writeCap, ch.first, 'original');
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', { variant: 'returnBoxExists' }, 2));
      const conflict = await expectPort(2, { envelope: await writeEnvelope('different', ch.writeCap, ch.first), writeCap: ch.writeCap });
      assert.equal(conflict.outcome, 'BoxAlreadyExists');
      assert.equal(conflict.errorCode, 10);
      await expectPort(1, { envelope: await writeEnvelope('original', ch.writeCap, ch.first), writeCap: ch.writeCap });
    });

    it('a read of a tombstoned box: Tombstone on output 2', async () => {
      const ch = await channel();
      await writeBox(direct, ch.writeCap, ch.first, '');
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', { variant: 'default', payloadAs: 'string' }, 2));
      const m = await expectPort(2, { envelope: await readEnvelope(ch.readCap, ch.first), readCap: ch.readCap, messageBoxIndex: ch.first });
      assert.equal(m.outcome, 'Tombstone');
      assert.equal(m.errorCode, 11);
    });

    it('real errors go to Catch: a read checked against another index', async () => {
      const ch = await channel();
      await writeBox(direct, ch.writeCap, ch.first, 'x');
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', {}, 2));
      const wrongIndex = await direct.nextMessageBoxIndex(ch.first);
      const m = await expectPort('catch', { envelope: await readEnvelope(ch.readCap, ch.first), readCap: ch.readCap, messageBoxIndex: wrongIndex });
      assert.equal(m.error.code, 'BACAP_DECRYPTION_FAILED');
    });

    it('an envelope without kind and both caps present is refused, naming msg.envelope.kind', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', { operation: 'auto' }, 2));
      const env = await writeEnvelope('x', ch.writeCap, ch.first);
      delete env.kind;
      const m = await expectPort('catch', { envelope: env, writeCap: ch.writeCap, readCap: ch.readCap });
      assert.match(m.error.message, /msg\.envelope\.kind: expected "read" or "write"/);
      const missing = await expectPort('catch', { writeCap: ch.writeCap });
      assert.match(missing.error.message, /msg\.envelope: expected an object \{messageCiphertext, envelopeDescriptor, envelopeHash\}/);
      // The node's Operation setting resolves it.
    });

    it('a waiting read shows "working", msg.cancel ends it at Catch, and the status returns', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', { variant: 'default' }, 2));
      await quietConnected('op');
      const status = watchStatus('op');
      const answer = roundTrip({ envelope: await readEnvelope(ch.readCap, ch.first), readCap: ch.readCap, messageBoxIndex: ch.first });
      await status.waitFor((s) => s.fill === 'blue' && TEXT.working.test(s.text ?? ''));
      getNode('op').receive({ cancel: true });
      const r = await answer;
      assert.equal(r.port, 'catch');
      assert.equal(r.msg.error.code, 'CANCELLED');
      assert.match(r.msg.error.message, /cancelled by msg\.cancel/);
      await status.waitFor((s) => s.fill === 'red' && s.shape === 'ring');
    });

    it('msg.cancel with an envelope hash cancels only that operation', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', { variant: 'default' }, 2));
      const i2 = await direct.nextMessageBoxIndex(ch.first);
      const e1 = await readEnvelope(ch.readCap, ch.first);
      const e2 = await readEnvelope(ch.readCap, i2);
      const caught = nextInput('caught');
      const data = nextInput('out1');
      getNode('op').receive({ envelope: e1, readCap: ch.readCap, messageBoxIndex: ch.first });
      getNode('op').receive({ envelope: e2, readCap: ch.readCap, messageBoxIndex: i2 });
      await delay(50);
      getNode('op').receive({ cancel: true, envelope: { envelopeHash: e2.envelopeHash } });
      const c = await caught;
      assert.deepEqual(c.envelope.envelopeHash, e2.envelopeHash);
      assert.equal(c.error.code, 'CANCELLED');
      // The other read is still waiting and completes once its box is written.
      await writeBox(direct, ch.writeCap, ch.first, 'first box');
      assert.deepEqual((await data).payload, Buffer.from('first box'));
    });

    it('msg.cancel with a malformed envelope hash cancels nothing and reaches Catch naming the property', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', { variant: 'default' }, 2));
      const i2 = await direct.nextMessageBoxIndex(ch.first);
      const e1 = await readEnvelope(ch.readCap, ch.first);
      const e2 = await readEnvelope(ch.readCap, i2);
      const caught = collect('caught', 2, 5000);
      const data = collect('out1', 2, 10_000);
      getNode('op').receive({ envelope: e1, readCap: ch.readCap, messageBoxIndex: ch.first });
      getNode('op').receive({ envelope: e2, readCap: ch.readCap, messageBoxIndex: i2 });
      await delay(50);
      const hash = e2.envelopeHash as Buffer;
      getNode('op').receive({ cancel: true, envelopeHash: hash.subarray(0, 31) });
      getNode('op').receive({ cancel: true, envelope: { envelopeHash: 'not a hash' } });
      const [c1, c2] = await caught;
      // The cancel messages themselves fail; neither read was aborted.
      assert.equal(c1.cancel, true);
      assert.equal(c1.error.code, 'INVALID_ARGUMENT');
      assert.match(c1.error.message, /msg\.envelopeHash: expected a Buffer of 32 bytes/);
      assert.equal(c2.cancel, true);
      assert.match(c2.error.message, /msg\.envelope\.envelopeHash: expected a Buffer of 32 bytes/);
      await writeBox(direct, ch.writeCap, ch.first, 'first box');
      await writeBox(direct, ch.writeCap, i2, 'second box');
      const got = (await data).map((m) => String(m.payload)).sort();
      assert.deepEqual(got, ['first box', 'second box']);
    });

    it('msg.timeout ends a waiting read with a timeout error naming its source', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', { variant: 'default', timeout: '20' }, 2));
      const started = Date.now();
      const m = await expectPort('catch', { envelope: await readEnvelope(ch.readCap, ch.first), readCap: ch.readCap, messageBoxIndex: ch.first, timeout: 300 });
      assert.equal(m.error.code, 'TIMEOUT');
      assert.match(m.error.message, /katzenpost-resend: timed out after 300 ms \(msg\.timeout\)/);
      assert.ok(Date.now() - started < 5000);
    });

    it('the node timeout (seconds) applies without msg.timeout', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-resend', { variant: 'default', timeout: '0.3' }, 2));
      const m = await expectPort('catch', { envelope: await readEnvelope(ch.readCap, ch.first), readCap: ch.readCap, messageBoxIndex: ch.first });
      assert.match(m.error.message, /timed out after 300 ms \(node timeout\)/);
    });
  });

  describe('katzenpost-cancel', () => {
    it('cancels a waiting read by envelope hash; the read ends at Catch with code 24', async () => {
      const ch = await channel();
      const e = await direct.encryptRead(ch.readCap, ch.first);
      await loadFlow(ourNodes(), [
        { id: 'tab', type: 'tab' },
        daemonNode(emu),
        { id: 'rs', z: 'tab', type: 'katzenpost-resend', daemon: 'daemon', variant: 'default', wires: [['data'], ['data']] },
        { id: 'data', z: 'tab', type: 'helper' },
        { id: 'cx', z: 'tab', type: 'katzenpost-cancel', daemon: 'daemon', target: 'auto', wires: [['cancelled']] },
        { id: 'cancelled', z: 'tab', type: 'helper' },
        { id: 'catch', z: 'tab', type: 'catch', scope: ['rs'], wires: [['caught']] },
        { id: 'caught', z: 'tab', type: 'helper' },
      ]);
      const caught = nextInput('caught');
      const cancelled = nextInput('cancelled');
      const envelope = { messageCiphertext: e.messageCiphertext, envelopeDescriptor: e.envelopeDescriptor, envelopeHash: e.envelopeHash, kind: 'read' };
      getNode('rs').receive({ envelope, readCap: ch.readCap, messageBoxIndex: ch.first });
      await delay(100);
      getNode('cx').receive({ envelope });
      assert.equal((await cancelled).cancelled, 'message');
      const m = await caught;
      assert.equal(m.error.code, 'START_RESENDING_CANCELLED');
    });

    it('cancels a copy command by write cap or its hash, and refuses a message with neither', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-cancel', { target: 'auto' }));
      assert.equal((await expectPort(1, { writeCap: ch.writeCap }, { outputs: 1 })).cancelled, 'copy');
      assert.equal((await expectPort(1, { writeCapHash: randomBytes(32) }, { outputs: 1 })).cancelled, 'copy');
      assert.equal((await expectPort(1, { envelopeHash: randomBytes(32) }, { outputs: 1 })).cancelled, 'message');
      const bad = await expectPort('catch', { payload: 'nothing to cancel' }, { outputs: 1 });
      assert.match(bad.error.message, /msg\.envelopeHash: expected a Buffer of 32 bytes/);
      const short = await expectPort('catch', { envelopeHash: Buffer.alloc(16) }, { outputs: 1 });
      assert.match(short.error.message, /msg\.envelopeHash: expected a Buffer of 32 bytes, got 16 bytes/);
    });
  });

  describe('katzenpost-tombstone', () => {
    it('tombstones the form count of boxes and reports the next index', async () => {
      const ch = await channel();
      const i2 = await direct.nextMessageBoxIndex(ch.first);
      await writeBox(direct, ch.writeCap, ch.first, 'a');
      await writeBox(direct, ch.writeCap, i2, 'b');
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-tombstone', { count: '2', countType: 'num' }));
      const m = await expectPort(1, { writeCap: ch.writeCap, messageBoxIndex: ch.first }, { outputs: 1 });
      assert.equal(m.tombstoned, 2);
      assert.deepEqual(m.nextMessageBoxIndex, await direct.nextMessageBoxIndex(i2));
      await assert.rejects(readBox(direct, ch.readCap, ch.first), { code: 'TOMBSTONE' });
      await assert.rejects(readBox(direct, ch.readCap, i2), { code: 'TOMBSTONE' });
    });

    it('takes msg.count when the form leaves it blank, and checks it', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-tombstone', { count: '', countType: 'num' }));
      const m = await expectPort(1, { writeCap: ch.writeCap, messageBoxIndex: ch.first, count: 3 }, { outputs: 1 });
      assert.equal(m.tombstoned, 3);
      const one = await expectPort(1, { writeCap: ch.writeCap, messageBoxIndex: ch.first }, { outputs: 1 });
      assert.equal(one.tombstoned, 1);
      const bad = await expectPort('catch', { writeCap: ch.writeCap, messageBoxIndex: ch.first, count: 0 }, { outputs: 1 });
      assert.match(bad.error.message, /msg\.count: expected an integer from 1 to 1000, got the number 0/);
    });
  });

  describe('katzenpost-copy', () => {
    it('copies a payload larger than a box to consecutive boxes', async () => {
      const ch = await channel();
      const payload = randomBytes(4000);
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-copy', { gate: true }, 2));
      await quietConnected('op');
      const status = watchStatus('op');
      const m = await expectPort(1, { payload, writeCap: ch.writeCap, messageBoxIndex: ch.first }, { timeoutMs: 20_000 });
      assert.equal(m.boxesWritten, 3);
      assert.ok(m.copyElements >= 3);
      assert.ok(status.history.some((s) => s.fill === 'blue'), 'no working status while copying');
      let idx = ch.first;
      const parts: Buffer[] = [];
      for (let i = 0; i < 3; i++) {
        parts.push(await readBox(direct, ch.readCap, idx));
        idx = await direct.nextMessageBoxIndex(idx);
      }
      assert.deepEqual(Buffer.concat(parts), payload);
      assert.deepEqual(m.nextMessageBoxIndex, idx);
    });

    it('copies to several channels from msg.destinations, pinned to a courier', async () => {
      const a = await channel();
      const b = await channel();
      const courier = emu.couriers()[1];
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-copy', { courier: 'msg', gate: false }, 2));
      const m = await expectPort(
        1,
        {
          destinations: [
            { payload: 'to a', writeCap: a.writeCap, messageBoxIndex: a.first },
            { payload: Buffer.from('to b'), writeCap: b.writeCap, messageBoxIndex: b.first },
          ],
          courier,
        },
        { timeoutMs: 20_000 },
      );
      assert.equal(m.nextDestIndices.length, 2);
      assert.deepEqual(m.boxesWritten, [1, 1]);
      assert.deepEqual(await readBox(direct, a.readCap, a.first), Buffer.from('to a'));
      assert.deepEqual(await readBox(direct, b.readCap, b.first), Buffer.from('to b'));
    });

    it('a partial failure goes to output 2 with the replica error and the failed envelope', async () => {
      const ch = await channel();
      await writeBox(direct, ch.writeCap, ch.first, 'already here');
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-copy', {}, 2));
      const m = await expectPort(2, { payload: 'conflicting', writeCap: ch.writeCap, messageBoxIndex: ch.first }, { timeoutMs: 20_000 });
      assert.equal(m.outcome, 'CopyCommandFailed');
      assert.equal(m.errorCode, 26);
      assert.equal(m.replicaErrorCode, 10);
      assert.equal(m.replicaError, 'BoxAlreadyExists');
      assert.equal(m.failedEnvelopeIndex, 1);
    });

    it('bad inputs: empty payload, a bad destination entry, a missing courier', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-copy', { courier: 'msg' }, 2));
      const courier = emu.couriers()[0];
      const empty = await expectPort('catch', { payload: '', writeCap: ch.writeCap, messageBoxIndex: ch.first, courier });
      assert.match(empty.error.message, /msg\.payload: expected a non-empty Buffer or a string, got an empty value/);
      const dest = await expectPort('catch', { destinations: [{ payload: 'x', writeCap: ch.writeCap }], courier });
      assert.match(dest.error.message, /msg\.destinations\[0\]\.messageBoxIndex: expected a Buffer of 104 bytes/);
      const noCourier = await expectPort('catch', { payload: 'x', writeCap: ch.writeCap, messageBoxIndex: ch.first });
      assert.match(noCourier.error.message, /msg\.courier: expected an object \{identityHash: Buffer\(32\), queueId: Buffer\}/);
    });
  });

  describe('katzenpost-index', () => {
    it('advances msg.messageBoxIndex by the steps and reads counters as decimal strings', async () => {
      const ch = await channel();
      await loadFlow(ourNodes(), [
        { id: 'tab', type: 'tab' },
        daemonNode(emu),
        { id: 'n', z: 'tab', type: 'katzenpost-index', daemon: 'daemon', mode: 'next', steps: 2, wires: [['c']] },
        { id: 'c', z: 'tab', type: 'katzenpost-index', daemon: 'daemon', mode: 'counter', wires: [['out']] },
        { id: 'out', z: 'tab', type: 'helper' },
      ]);
      const got = nextInput('out');
      getNode('n').receive({ messageBoxIndex: ch.first });
      const m = await got;
      const first = await direct.getMessageBoxIndexCounter(ch.first);
      assert.equal(typeof m.counter, 'string');
      assert.equal(BigInt(m.counter), first + 2n);
      assert.deepEqual(m.messageBoxIndex, await direct.nextMessageBoxIndex(await direct.nextMessageBoxIndex(ch.first)));
    });
  });

  describe('katzenpost-pki', () => {
    it('answers every lookup, to msg.payload or another property', async () => {
      await loadFlow(ourNodes(), [
        { id: 'tab', type: 'tab' },
        daemonNode(emu),
        ...['service', 'services', 'courier', 'couriers', 'distinctCouriers', 'document', 'raw'].map((lookup) => ({
          id: lookup,
          z: 'tab',
          type: 'katzenpost-pki',
          daemon: 'daemon',
          lookup,
          capability: lookup === 'services' ? '' : 'echo',
          capabilityType: 'str',
          count: '3',
          countType: 'num',
          property: lookup === 'service' ? 'found' : 'payload',
          wires: [['out']],
        })),
        { id: 'out', z: 'tab', type: 'helper' },
      ]);
      const ask = async (id: string, msg: Record<string, unknown> = {}): Promise<Record<string, any>> => {
        const p = nextInput('out');
        getNode(id).receive(msg);
        return p;
      };
      const svc = await ask('service', { payload: 'kept' });
      assert.equal(svc.payload, 'kept');
      assert.equal(svc.found.capability, 'echo');
      assert.equal(svc.found.endpoint, svc.destination.queueId.toString());
      assert.equal(svc.destination.idHash.length, 32);
      const all = await ask('services', { capability: 'testdest' });
      assert.ok(all.payload.length >= 2 && all.payload.every((s: { capability: string }) => s.capability === 'testdest'));
      const c = await ask('courier');
      assert.deepEqual(c.courier, c.payload);
      assert.equal((await ask('couriers')).payload.length, emu.couriers().length);
      assert.equal((await ask('distinctCouriers')).payload.length, 3);
      const doc = await ask('document');
      assert.equal(doc.payload.epoch, emu.epoch);
      assert.equal(doc.payload.couriers, emu.couriers().length);
      const raw = await ask('raw');
      assert.ok(Buffer.isBuffer(raw.payload));
      assert.equal(raw.epoch, emu.epoch);
    });

    it('lookups that cannot be answered go to Catch', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-pki', { lookup: 'service', capability: '', capabilityType: 'str' }));
      const none = await expectPort('catch', { capability: 'no-such-service' }, { outputs: 1 });
      assert.equal(none.error.code, 'SERVICE_NOT_FOUND');
      const missing = await expectPort('catch', {}, { outputs: 1 });
      assert.match(missing.error.message, /msg\.capability: expected a capability name/);
    });

    it('more distinct couriers than exist is an error', async () => {
      await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-pki', { lookup: 'distinctCouriers', count: '', countType: 'num' }));
      const m = await expectPort('catch', { count: 99 }, { outputs: 1 });
      assert.equal(m.error.code, 'NOT_ENOUGH_COURIERS');
    });
  });

  it('several operations run at once on one node', async () => {
    const ch = await channel();
    await loadFlow(ourNodes(), opFlow(emu, 'katzenpost-encrypt-write'));
    const got = collect('out1', 5);
    for (let i = 0; i < 5; i++) getNode('op').receive({ payload: `m${i}`, writeCap: ch.writeCap, messageBoxIndex: ch.first, n: i });
    const msgs = await got;
    assert.deepEqual(msgs.map((m) => m.n).sort(), [0, 1, 2, 3, 4]);
  });
});
