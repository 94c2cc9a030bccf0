/**
 * The emulator as a daemon, seen through raw sockets and wire.ts only:
 * handshake, encodings (against the recorded reference frames), request
 * strictness, sessions, the legacy path, copy-stream layout and faults.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  decodeCbor,
  decodeCborFaithful,
  DEFAULT_PIGEONHOLE_GEOMETRY,
  DEFAULT_SPHINX_GEOMETRY,
  encodeCbor,
  encodeFrame,
  encodeRequest,
  PIGEONHOLE_GEOMETRY_KEYS,
  RESPONSE_KINDS,
  SPHINX_GEOMETRY_KEYS,
} from '../../src/wire';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator';
import { blake2b256 } from '../../src/emulator/pki';
import { assertSameShape } from '../support/shape';
import { delay, RawClient, sharedDir, tempSocketDir, type Frame } from './helpers';
import { keypair, readBox, resendBody, writeBox, writeTempStream } from './raw-flows';

interface VectorFrame {
  dir: string;
  len: number;
  hex: string;
  obj: Record<string, any>;
}

const vectors: VectorFrame[] = JSON.parse(readFileSync(join(sharedDir(), 'vectors', 'python-0.0.15-frames.json'), 'utf8'));

function vectorBody(kind: string, pick: (b: any) => boolean = () => true): { envelope: Record<string, any>; body: any } {
  const f = vectors.find((v) => v.dir === 'daemon->client' && v.obj[kind] !== null && v.obj[kind] !== undefined && pick(v.obj[kind]));
  assert.ok(f, `vector for ${kind}`);
  return { envelope: f.obj, body: f.obj[kind] };
}

function assertFullEnvelope(f: Frame): void {
  assert.deepEqual(Object.keys(f.envelope), [...RESPONSE_KINDS], 'all 20 response keys in daemon order');
  const nonNull = Object.entries(f.envelope).filter(([, v]) => v !== null);
  assert.equal(nonNull.length, 1, 'exactly one non-null member');
}

function assertMatchesVector(f: Frame, kind: string, pick?: (b: any) => boolean): void {
  assertFullEnvelope(f);
  assert.equal(f.kind, kind);
  const v = vectorBody(kind, pick);
  assert.deepEqual(Object.keys(f.envelope), Object.keys(v.envelope));
  assertSameShape(f.body, v.body, kind);
}

describe('emulator protocol (raw sockets)', function () {
  this.timeout(20_000);
  const emulators: Emulator[] = [];
  const clients: RawClient[] = [];

  async function emulator(options: EmulatorOptions = {}): Promise<Emulator> {
    const emu = await startEmulator({ listen: '127.0.0.1:0', latency: 'fast', ...options });
    emulators.push(emu);
    return emu;
  }

  async function client(emu: Emulator): Promise<RawClient> {
    const c = await RawClient.connect(emu.address);
    clients.push(c);
    return c;
  }

  async function ready(emu: Emulator, token?: Buffer): Promise<RawClient> {
    const c = await client(emu);
    await c.handshake(token);
    return c;
  }

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const e of emulators.splice(0)) await e.stop({ graceful: false });
  });

  // ---------------------------------------------------------------- handshake
  describe('handshake', () => {
    it('sends status, PKI document, then session_token_reply as frames 1, 2 and 4, each a full 20-key envelope', async () => {
      const emu = await emulator();
      const c = await client(emu);
      const { status, pki, reply } = await c.handshake();
      assert.equal(status.kind, 'connection_status_event');
      assert.equal(pki.kind, 'new_pki_document_event');
      assert.equal(reply.kind, 'session_token_reply');
      for (const f of [status, pki, reply]) assertFullEnvelope(f);
      assert.deepEqual(Object.keys(status.body), ['is_connected', 'err', 'instance_token', 'sphinx_geometry', 'pigeonhole_geometry']);
      assert.equal(status.body.is_connected, true);
      assert.equal(status.body.err, null);
      assert.deepEqual(status.body.instance_token, emu.instanceToken);
      assert.deepEqual(Object.keys(status.body.sphinx_geometry), [...SPHINX_GEOMETRY_KEYS]);
      assert.deepEqual(Object.keys(status.body.pigeonhole_geometry), [...PIGEONHOLE_GEOMETRY_KEYS]);
      assert.deepEqual(status.body.sphinx_geometry, { ...DEFAULT_SPHINX_GEOMETRY });
      assert.deepEqual(status.body.pigeonhole_geometry, { ...DEFAULT_PIGEONHOLE_GEOMETRY });
      assert.deepEqual(Object.keys(reply.body), ['app_id', 'resumed']);
      assert.equal(reply.body.app_id.length, 16);
      assert.equal(reply.body.resumed, false);
      assertMatchesVector(status, 'connection_status_event');
      assertMatchesVector(pki, 'new_pki_document_event');
      assertMatchesVector(reply, 'session_token_reply');
    });

    it('gives every connection a fresh app ID and every emulator a fresh instance token', async () => {
      const a = await emulator();
      const b = await emulator();
      assert.notDeepEqual(a.instanceToken, b.instanceToken);
      const c1 = await client(a);
      const c2 = await client(a);
      const h1 = await c1.handshake();
      const h2 = await c2.handshake();
      assert.notDeepEqual(h1.reply.body.app_id, h2.reply.body.app_id);
      assert.equal(a.connectionCount(), 2);
    });

    it('holds broadcasts until session_token_reply has been sent (§10.1)', async () => {
      const emu = await emulator();
      const c = await client(emu);
      await c.next();
      await c.next();
      emu.setOnline(false);
      emu.advanceEpoch();
      await delay(50);
      assert.equal(c.buffered.length, 0, 'nothing between frame 2 and the session token');
      c.send('session_token', { client_instance_token: randomBytes(16) });
      assert.equal((await c.next()).kind, 'session_token_reply');
      const later = [await c.next(), await c.next()].map((f) => f.kind).sort();
      assert.deepEqual(later, ['connection_status_event', 'new_pki_document_event']);
    });

    it('serves a Unix socket path and an abstract socket, with the address usable as a dial string', async () => {
      const dir = tempSocketDir();
      try {
        for (const listen of [dir.path('d.sock'), `@kp-emu-test-${process.pid}-${Date.now()}`]) {
          const emu = await emulator({ listen });
          assert.equal(emu.address, listen);
          const c = await client(emu);
          const { reply } = await c.handshake();
          assert.equal(reply.kind, 'session_token_reply');
          c.close();
          await emu.stop();
        }
      } finally {
        dir.cleanup();
      }
    });
  });

  // ---------------------------------------------------------------- PKI
  describe('PKI document', () => {
    it('has the §6.1 structure with nested descriptors, couriers, echo services and 5 replicas', async () => {
      const emu = await emulator();
      const c = await client(emu);
      const { pki } = await c.handshake();
      const raw: Buffer = pki.body.payload;
      const doc = decodeCborFaithful(raw);
      // Canonical encoding in the handshake: keys sorted length-first, then bytewise.
      const keys = Object.keys(doc);
      const sorted = [...keys].sort((a, b) => a.length - b.length || Buffer.compare(Buffer.from(a), Buffer.from(b)));
      assert.deepEqual(keys, sorted);
      const vectorDoc = decodeCborFaithful(Buffer.from(vectorBody('new_pki_document_event').body.payload.slice(2, -1), 'hex'));
      for (const k of Object.keys(vectorDoc)) assert.ok(k in doc, `document has ${k}`);
      for (const k of ['ReplicaEnvelopeKeys', 'ConfiguredReplicaIDs', 'StorageReplicas', 'SphinxGeometryHash']) assert.ok(k in doc);
      assert.equal(Number(doc.Epoch), emu.epoch);
      const expectedEpoch = Math.floor((Date.now() - Date.UTC(2017, 5, 1)) / (20 * 60 * 1000));
      assert.ok(Math.abs(Number(doc.Epoch) - expectedEpoch) <= 1, 'epoch from the real formula');
      assert.equal(doc.Version, 'v1');
      assert.equal(doc.PKISignatureScheme, 'Ed25519');
      assert.equal(doc.Topology.length, 3);
      assert.equal(doc.GatewayNodes.length, 1);
      assert.equal(doc.ServiceNodes.length, 3);
      for (const b of [...doc.ServiceNodes, ...doc.GatewayNodes, ...doc.Topology.flat()]) assert.ok(Buffer.isBuffer(b), 'descriptors are byte strings');
      const sn = decodeCborFaithful(doc.ServiceNodes[0]);
      assert.deepEqual(Object.keys(sn).sort(), Object.keys(decodeCborFaithful(vectorDoc.ServiceNodes[0])).sort());
      assert.equal(sn.IsServiceNode, true);
      assert.deepEqual(sn.Kaetzchen, { courier: { endpoint: 'courier' }, echo: { endpoint: '+echo' }, testdest: { endpoint: '+testdest' } });
      assert.equal(sn.IdentityKey.length, 32);
      assert.ok(sn.MixKeys instanceof Map && sn.MixKeys.size > 0, 'MixKeys keyed by epoch');
      assert.equal(doc.StorageReplicas.length, 5);
      for (const r of doc.StorageReplicas) {
        assert.deepEqual(Object.keys(r).sort(), ['Addresses', 'EnvelopeKeys', 'Epoch', 'IdentityKey', 'LinkKey', 'Name', 'ReplicaID']);
        assert.ok(r.EnvelopeKeys instanceof Map);
      }
      const hashes = emu.couriers().map((x) => x.identityHash.toString('hex'));
      assert.deepEqual(
        doc.ServiceNodes.map((b: Buffer) => blake2b256(decodeCborFaithful(b).IdentityKey).toString('hex')),
        hashes,
      );
    });

    it('returns a signed certificate for get_pki_document, epoch 0 = current, unknown epoch -> 10 with the epoch echoed', async () => {
      const emu = await emulator();
      const c = await ready(emu);
      const r = await c.call('get_pki_document', { epoch: 0 });
      assert.deepEqual(Object.keys(r), ['query_id', 'payload', 'epoch', 'error_code']);
      assert.equal(r.error_code, 0);
      assert.equal(Number(r.epoch), emu.epoch);
      const cert = decodeCborFaithful(r.payload);
      assert.deepEqual(Object.keys(cert).sort(), ['Certified', 'Expiration', 'KeyType', 'Signatures', 'Version']);
      assert.equal(Number(cert.Expiration), emu.epoch + 5);
      assert.equal(cert.KeyType, 'Ed25519');
      assert.ok(cert.Signatures instanceof Map && cert.Signatures.size >= 1);
      for (const [k, sig] of cert.Signatures) {
        assert.equal(k.length, 32);
        assert.deepEqual(sig.PublicKeySum256, k);
        assert.equal(sig.Payload.length, 64);
      }
      const certified = decodeCborFaithful(cert.Certified);
      assert.equal(Number(certified.Epoch), emu.epoch);
      assert.equal(certified.Version, 'v1');
      const same = await c.call('get_pki_document', { epoch: emu.epoch });
      assert.equal(same.error_code, 0);
      const bad = await c.call('get_pki_document', { epoch: emu.epoch + 100 });
      assert.equal(bad.error_code, 10);
      assert.equal(bad.payload, null);
      assert.equal(Number(bad.epoch), emu.epoch + 100);
    });

    it('broadcasts a new document (declaration order) on each epoch, by timer and by advanceEpoch', async () => {
      const emu = await emulator({ epochPeriodMs: 400 });
      const c = await client(emu);
      // The handshake's document, not emu.epoch afterwards: an epoch may turn during the handshake (its broadcast is held until then).
      const first = Number(decodeCborFaithful((await c.handshake()).pki.body.payload).Epoch);
      const ev = await c.take((f) => f.kind === 'new_pki_document_event', 3000);
      const doc = decodeCborFaithful(ev.body.payload);
      assert.ok(Number(doc.Epoch) > first);
      assert.deepEqual(Object.keys(doc).slice(0, 4), ['Epoch', 'GenesisEpoch', 'SendRatePerMinute', 'Mu'], 'Go declaration order');
      const before = emu.epoch;
      emu.advanceEpoch();
      const ev2 = await c.take((f) => f.kind === 'new_pki_document_event' && Number(decodeCborFaithful(f.body.payload).Epoch) === before + 1, 3000);
      assert.ok(ev2);
      const prev = await c.call('get_pki_document', { epoch: before });
      assert.equal(prev.error_code, 0, 'the previous epoch stays available');
    });
  });

  // ---------------------------------------------------------------- encodings vs the vectors
  describe('encodings match the reference daemon frames', () => {
    it('answers every recorded reference request unchanged, with frames shaped like the recorded replies', async () => {
      const emu = await emulator();
      const c = await client(emu);
      await c.next();
      await c.next();
      const requests = vectors.filter((v) => v.dir === 'client->daemon');
      const expectKind: Record<string, string> = {
        session_token: 'session_token_reply',
        new_keypair: 'new_keypair_reply',
        encrypt_write: 'encrypt_write_reply',
        get_message_box_index_counter: 'get_message_box_index_counter_reply',
        create_courier_envelopes_from_tombstone_range: 'create_courier_envelopes_from_tombstone_range_reply',
        send_message: 'message_sent_event',
      };
      for (const v of requests) {
        const kind = Object.keys(v.obj)[0];
        if (!(kind in expectKind)) continue;
        c.sendRaw(encodeFrame(Buffer.from(v.hex, 'hex')));
        const f = await c.take((x) => x.kind === expectKind[kind], 3000, expectKind[kind]);
        assertMatchesVector(f, expectKind[kind]);
        if (kind === 'get_message_box_index_counter') assert.equal(f.body.counter, 1, 'counter read little-endian from the index');
        if (kind === 'create_courier_envelopes_from_tombstone_range') {
          assert.ok(f.body.envelopes.length >= 1);
          assert.ok(Buffer.isBuffer(f.body.buffer), 'is_last=false keeps a residual buffer');
        }
      }
      // The recorded send_message names a destination this network does not have: sent, but no reply.
      await c.expectNone((f) => f.kind === 'message_reply_event', 100);
      // thin_close: no reply at all, the connection stays usable until the client closes it.
      c.sendRaw(encodeFrame(Buffer.from(vectors.find((v) => v.obj.thin_close)!.hex, 'hex')));
      await c.expectNone(() => true, 100);
    });

    it('shapes pigeonhole replies, cancels, copy failures and legacy events like the recorded frames', async () => {
      const emu = await emulator();
      const c = await ready(emu);
      const kp = await keypair(c);
      const q = randomBytes(16);
      c.send('new_keypair', { query_id: q, seed: randomBytes(32) });
      assertMatchesVector(await c.reply('new_keypair_reply', q), 'new_keypair_reply');

      const wq = randomBytes(16);
      c.send('encrypt_write', { query_id: wq, plaintext: Buffer.from('hello'), write_cap: kp.write_cap, message_box_index: kp.first_message_index });
      const ew = await c.reply('encrypt_write_reply', wq);
      assertMatchesVector(ew, 'encrypt_write_reply');
      const sq = randomBytes(16);
      c.send('start_resending_encrypted_message', { query_id: sq, ...resendBody({ write_cap: kp.write_cap, enc: ew.body }) });
      assertMatchesVector(await c.reply('start_resending_encrypted_message_reply', sq), 'start_resending_encrypted_message_reply', (b) => b.error_code === 0);

      const cq = randomBytes(16);
      c.send('get_message_box_index_counter', { query_id: cq, message_box_index: kp.first_message_index });
      assertMatchesVector(await c.reply('get_message_box_index_counter_reply', cq), 'get_message_box_index_counter_reply');

      // A blocked read cancelled: first the read's reply (24), then the cancel's (0).
      const next = (await c.call('next_message_box_index', { message_box_index: kp.first_message_index })).next_message_box_index;
      const er = await c.call('encrypt_read', { read_cap: kp.read_cap, message_box_index: next });
      const rq = randomBytes(16);
      c.send('start_resending_encrypted_message', { query_id: rq, ...resendBody({ read_cap: kp.read_cap, message_box_index: next, enc: er }) });
      await delay(50);
      const kq = randomBytes(16);
      c.send('cancel_resending_encrypted_message', { query_id: kq, envelope_hash: er.envelope_hash });
      const f1 = await c.take((f) => f.kind.endsWith('_reply'));
      const f2 = await c.take((f) => f.kind.endsWith('_reply'));
      assert.deepEqual(f1.body.query_id, rq);
      assert.equal(f1.body.error_code, 24);
      assertMatchesVector(f1, 'start_resending_encrypted_message_reply', (b) => b.error_code === 24);
      assert.deepEqual(f2.body.query_id, kq);
      assertMatchesVector(f2, 'cancel_resending_encrypted_message_reply');

      // A copy that fails on an occupied box: 26 with replica_error_code and failed_envelope_index present.
      const dest = await keypair(c);
      assert.equal((await writeBox(c, dest.write_cap, dest.first_message_index, Buffer.from('occupied'))).error_code, 0);
      const temp = await keypair(c);
      const env = await c.call('create_courier_envelopes_from_payload', {
        payload: randomBytes(100),
        dest_write_cap: dest.write_cap,
        dest_start_index: dest.first_message_index,
        is_start: true,
        is_last: true,
      });
      await writeTempStream(c, temp, env.envelopes);
      const pq = randomBytes(16);
      c.send('start_resending_copy_command', { query_id: pq, write_cap: temp.write_cap });
      const copy = await c.reply('start_resending_copy_command_reply', pq, 5000);
      assert.equal(copy.body.error_code, 26);
      assert.equal(copy.body.replica_error_code, 10);
      assert.equal(copy.body.failed_envelope_index, 1);
      assertMatchesVector(copy, 'start_resending_copy_command_reply');

      // Legacy echo: message_sent_event (no err key) then message_reply_event (no reply_index key).
      const echo = emu.couriers()[0].identityHash;
      const surb = randomBytes(16);
      c.send('send_message', { id: null, with_surb: true, surbid: surb, destination_id_hash: echo, recipient_queue_id: Buffer.from('+echo'), payload: Buffer.from('ping') });
      const sent = await c.take((f) => f.kind === 'message_sent_event');
      assertMatchesVector(sent, 'message_sent_event');
      const rep = await c.take((f) => f.kind === 'message_reply_event');
      assertMatchesVector(rep, 'message_reply_event');
    });
  });

  // ---------------------------------------------------------------- strictness and robustness
  describe('bad requests close only that connection', () => {
    const cases: [string, (c: RawClient) => void][] = [
      ['undecodable CBOR', (c) => c.sendRaw(encodeFrame(Buffer.from('a26b6d616c666f726d6564', 'hex')))],
      ['a frame that is not a map', (c) => c.sendRaw(encodeFrame(encodeCbor([1, 2, 3])))],
      ['an unknown request kind', (c) => c.send('frobnicate', { query_id: randomBytes(16) })],
      ['an all-null envelope', (c) => c.sendRaw(encodeFrame(encodeCbor({ new_keypair: null, encrypt_read: null })))],
      ['an empty envelope', (c) => c.sendRaw(encodeFrame(encodeCbor({})))],
      ['a write cap of the wrong length', (c) => c.send('encrypt_write', { query_id: randomBytes(16), plaintext: Buffer.from('x'), write_cap: randomBytes(100), message_box_index: randomBytes(104) })],
      ['a read cap of the wrong length', (c) => c.send('encrypt_read', { query_id: randomBytes(16), read_cap: randomBytes(135), message_box_index: randomBytes(104) })],
      ['an index of the wrong length', (c) => c.send('next_message_box_index', { query_id: randomBytes(16), message_box_index: randomBytes(103) })],
      ['a text string where bytes are due', (c) => c.send('new_keypair', { query_id: randomBytes(16), seed: 'not bytes' })],
      ['an oversize length prefix', (c) => c.sendRaw(Buffer.from([0x7f, 0xff, 0xff, 0xff]))],
    ];
    for (const [name, act] of cases) {
      it(`closes on ${name}, without an error frame, and keeps serving others`, async () => {
        const emu = await emulator();
        const bystander = await ready(emu);
        const c = await ready(emu);
        act(c);
        await c.waitClosed();
        assert.equal(c.buffered.length, 0, 'no error frame');
        const kp = await bystander.call('new_keypair', { seed: randomBytes(32) });
        assert.equal(kp.error_code, 0);
        const again = await ready(emu);
        assert.equal((await again.call('new_keypair', { seed: randomBytes(32) })).error_code, 0);
      });
    }

    it('is lenient like the daemon: short IDs padded, keys matched case-insensitively, unknown keys ignored', async () => {
      const emu = await emulator();
      const c = await ready(emu);
      const q = Buffer.from('0102030405060708', 'hex');
      c.send('new_keypair', { query_id: q, Seed: randomBytes(32), extra_key: 'ignored' });
      const f = await c.take((x) => x.kind === 'new_keypair_reply');
      assert.equal(f.body.error_code, 0);
      assert.deepEqual(f.body.query_id, Buffer.concat([q, Buffer.alloc(8)]));
    });

    it('keeps local replies in request order', async () => {
      const emu = await emulator();
      const c = await ready(emu);
      const kp = await keypair(c);
      const sent: Buffer[] = [];
      for (let i = 0; i < 30; i++) {
        const q = randomBytes(16);
        sent.push(q);
        const which = i % 3;
        if (which === 0) c.send('new_keypair', { query_id: q, seed: randomBytes(32) });
        else if (which === 1) c.send('encrypt_write', { query_id: q, plaintext: randomBytes(50), write_cap: kp.write_cap, message_box_index: kp.first_message_index });
        else c.send('get_pki_document', { query_id: q, epoch: 0 });
      }
      const got: Buffer[] = [];
      while (got.length < sent.length) got.push((await c.next()).body.query_id);
      assert.deepEqual(got, sent);
    });

    it('bounds each connection\'s send queue: a client that stops reading is dropped, others are unaffected', async () => {
      const emu = await emulator({ maxSendQueueBytes: 256 * 1024 });
      const bystander = await ready(emu);
      const c = await ready(emu);
      c.socket.pause();
      const request = encodeFrame(encodeCbor({ get_pki_document: { query_id: randomBytes(16), epoch: 0 } }));
      const burst = Buffer.concat(Array.from({ length: 200 }, () => request));
      const deadline = Date.now() + 10_000;
      while (!c.closed && Date.now() < deadline) {
        c.sendRaw(burst);
        await delay(20);
      }
      assert.ok(c.closed, 'the non-reading client was disconnected');
      assert.equal((await bystander.call('new_keypair', { seed: randomBytes(32) })).error_code, 0);
      assert.equal(emu.connectionCount(), 1);
    });
  });

  // ---------------------------------------------------------------- resource bounds
  describe('resource bounds', () => {
    function lengthPrefix(length: number): Buffer {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(length, 0);
      return b;
    }

    /** Connection IDs from the emulator log, in accept order. */
    function acceptedIds(logs: string[]): number[] {
      return logs.flatMap((l) => {
        const m = /^conn (\d+): accepted/.exec(l);
        return m ? [Number(m[1])] : [];
      });
    }

    const stalls: [string, Buffer, RegExp][] = [
      ['request frame', Buffer.concat([lengthPrefix(1024 * 1024), Buffer.alloc(1000)]), /declared length 1048576 bytes incomplete after 200 ms: 1000 bytes of its body received/],
      ['length prefix', Buffer.from([0, 0]), /length prefix incomplete after 200 ms: 2 of 4 bytes received/],
    ];
    for (const [what, partial, logged] of stalls) {
      it(`closes a connection whose ${what} stalls past frameTimeoutMs and logs why; an idle connection stays`, async () => {
        const logs: string[] = [];
        const emu = await emulator({ frameTimeoutMs: 200, log: (l) => logs.push(l) });
        const idle = await ready(emu);
        const c = await ready(emu);
        c.sendRaw(partial);
        await c.waitClosed(3000);
        assert.ok(logs.some((l) => logged.test(l)), `a log line matches ${logged}:\n${logs.join('\n')}`);
        // `idle` sent nothing for at least the bound: silence between frames is not a stall.
        assert.equal((await idle.call('new_keypair', { seed: randomBytes(32) })).error_code, 0);
      });
    }

    it('drops the connection holding the most when partial frames across connections pass maxBufferedBytes', async () => {
      const logs: string[] = [];
      const emu = await emulator({ maxBufferedBytes: 1024 * 1024, log: (l) => logs.push(l) });
      // Any two of these fit under the cap; all three do not, whatever order they arrive in.
      const queries = [0, 1, 2].map(() => randomBytes(16));
      const frames = [400, 500, 300].map((kib, i) =>
        encodeFrame(encodeRequest('new_keypair', { query_id: queries[i], seed: randomBytes(32), padding: Buffer.alloc(kib * 1024) })),
      );
      const clients: RawClient[] = [];
      for (let i = 0; i < frames.length; i++) clients.push(await ready(emu));
      const ids = acceptedIds(logs);
      // Everything but the last byte: each connection now holds a partial frame.
      clients.forEach((c, i) => c.sendRaw(frames[i].subarray(0, frames[i].length - 1)));
      await clients[1].waitClosed(3000);
      const drops = logs.filter((l) => /over the cap/.test(l));
      assert.equal(drops.length, 1, drops.join('\n'));
      assert.match(drops[0], new RegExp(`^conn ${ids[1]}: `));
      assert.match(drops[0], /cap of 1048576 bytes/);
      assert.match(drops[0], new RegExp(`${frames[1].length - 4} bytes for a partial request frame`), 'names what the dropped connection held');
      for (const i of [0, 2]) {
        clients[i].sendRaw(frames[i].subarray(frames[i].length - 1));
        assert.equal((await clients[i].reply('new_keypair_reply', queries[i])).body.error_code, 0);
      }
    });

    it('drops the non-reading connection with the most queued replies when the total passes maxBufferedBytes; other non-readers keep theirs', async () => {
      const logs: string[] = [];
      const emu = await emulator({ maxBufferedBytes: 512 * 1024, log: (l) => logs.push(l) });
      const bystander = await ready(emu);
      const quiet = [await ready(emu), await ready(emu)];
      const heavy = await ready(emu);
      const heavyId = acceptedIds(logs).at(-1);
      const quietQueries = quiet.map((c) => {
        c.socket.pause();
        const q = randomBytes(16);
        c.send('get_pki_document', { query_id: q, epoch: 0 });
        return q;
      });
      heavy.socket.pause();
      const request = encodeFrame(encodeCbor({ get_pki_document: { query_id: randomBytes(16), epoch: 0 } }));
      const burst = Buffer.concat(Array.from({ length: 200 }, () => request));
      const deadline = Date.now() + 10_000;
      while (!heavy.closed && Date.now() < deadline) {
        heavy.sendRaw(burst);
        await delay(20);
      }
      assert.ok(heavy.closed, 'the heaviest non-reader was disconnected');
      const drops = logs.filter((l) => /over the cap/.test(l));
      assert.equal(drops.length, 1, drops.join('\n'));
      assert.match(drops[0], new RegExp(`^conn ${heavyId}: `));
      assert.match(drops[0], /cap of 524288 bytes/);
      assert.match(drops[0], /holds the most: [1-9]\d* bytes of queued unsent replies/);
      for (const [i, c] of quiet.entries()) {
        c.socket.resume();
        assert.equal((await c.reply('get_pki_document_reply', quietQueries[i])).body.error_code, 0);
        assert.equal(c.closed, false);
      }
      assert.equal((await bystander.call('new_keypair', { seed: randomBytes(32) })).error_code, 0);
    });
  });

  // ---------------------------------------------------------------- sessions
  describe('sessions', () => {
    it('resumes within the grace period: same app ID, resumed true; the ARQ operation was dropped (as kpclientd), its re-send completes', async () => {
      const emu = await emulator();
      const token = randomBytes(16);
      const a = await client(emu);
      const h = await a.handshake(token);
      const kp = await keypair(a);
      const er = await a.call('encrypt_read', { read_cap: kp.read_cap, message_box_index: kp.first_message_index });
      const rq = randomBytes(16);
      a.send('start_resending_encrypted_message', { query_id: rq, ...resendBody({ read_cap: kp.read_cap, message_box_index: kp.first_message_index, enc: er }) });
      await delay(30);
      a.close();
      await a.waitClosed();
      // Another client writes the box while the reader is away.
      const w = await ready(emu);
      assert.equal((await writeBox(w, kp.write_cap, kp.first_message_index, Buffer.from('while you were out'))).error_code, 0);
      await delay(100);
      const b = await client(emu);
      const again = await b.handshake(token);
      assert.equal(again.reply.kind, 'session_token_reply', 'frame 4 is session_token_reply');
      assert.equal(again.reply.body.resumed, true);
      assert.deepEqual(again.reply.body.app_id, h.reply.body.app_id);
      // kpclientd drops a disconnected client's Pigeonhole results: nothing arrives for the old query...
      await delay(100);
      assert.equal(b.buffered.filter((f) => f.kind === 'start_resending_encrypted_message_reply').length, 0, 'no reply for the dropped read');
      // ...until the client re-sends it, as ours does on every reconnect.
      b.send('start_resending_encrypted_message', { query_id: rq, ...resendBody({ read_cap: kp.read_cap, message_box_index: kp.first_message_index, enc: er }) });
      const r = await b.reply('start_resending_encrypted_message_reply', rq);
      assert.equal(r.body.error_code, 0);
      assert.equal(r.body.plaintext.toString(), 'while you were out');
    });

    it('queues legacy replies for a disconnected session and delivers them after session_token_reply', async () => {
      const emu = await emulator({ latency: 'fast' });
      const token = randomBytes(16);
      const a = await client(emu);
      await a.handshake(token);
      const surb = randomBytes(16);
      a.send('send_message', { id: null, with_surb: true, surbid: surb, destination_id_hash: emu.couriers()[1].identityHash, recipient_queue_id: Buffer.from('+echo'), payload: Buffer.from('queued') });
      a.close();
      await delay(100);
      const b = await client(emu);
      const h = await b.handshake(token);
      assert.equal(h.reply.body.resumed, true);
      const rep = await b.take((f) => f.kind === 'message_reply_event');
      assert.deepEqual(rep.body.surbid, surb);
      assert.equal(rep.body.payload.subarray(0, 6).toString(), 'queued');
    });

    it('thin_close destroys the session and cancels its operations; the grace period expires', async () => {
      const emu = await emulator({ sessionGracePeriodMs: 150 });
      const token = randomBytes(16);
      const a = await client(emu);
      await a.handshake(token);
      const kp = await keypair(a);
      const er = await a.call('encrypt_read', { read_cap: kp.read_cap, message_box_index: kp.first_message_index });
      const rq = randomBytes(16);
      a.send('start_resending_encrypted_message', { query_id: rq, ...resendBody({ read_cap: kp.read_cap, message_box_index: kp.first_message_index, enc: er }) });
      await delay(30);
      a.send('thin_close', {});
      await delay(30);
      a.close();
      const w = await ready(emu);
      await writeBox(w, kp.write_cap, kp.first_message_index, Buffer.from('too late'));
      const b = await client(emu);
      const h = await b.handshake(token);
      assert.equal(h.reply.body.resumed, false, 'thin_close forgot the token');
      await b.expectNone((f) => f.kind === 'start_resending_encrypted_message_reply', 150);

      const t2 = randomBytes(16);
      const c = await client(emu);
      await c.handshake(t2);
      c.close();
      await delay(300);
      const d = await client(emu);
      assert.equal((await d.handshake(t2)).reply.body.resumed, false, 'grace period over');
    });

    it('lets a new connection take over a session that is still connected', async () => {
      const emu = await emulator();
      const token = randomBytes(16);
      const a = await client(emu);
      const h1 = await a.handshake(token);
      const b = await client(emu);
      const h2 = await b.handshake(token);
      assert.equal(h2.reply.body.resumed, true);
      assert.deepEqual(h2.reply.body.app_id, h1.reply.body.app_id);
      assert.equal((await a.call('new_keypair', { seed: randomBytes(32) })).error_code, 0, 'the old connection still answers');
    });
  });

  // ---------------------------------------------------------------- legacy API
  describe('legacy send', () => {
    it('echo and testdest reply with the payload zero-padded to ForwardPayloadLength', async () => {
      const emu = await emulator();
      const c = await ready(emu);
      const node = emu.couriers()[2].identityHash;
      for (const queue of ['+echo', '+testdest']) {
        const surb = randomBytes(16);
        const id = randomBytes(16);
        c.send('send_message', { id, with_surb: true, surbid: surb, destination_id_hash: node, recipient_queue_id: Buffer.from(queue), payload: Buffer.from('hello') });
        const sent = await c.take((f) => f.kind === 'message_sent_event');
        assert.deepEqual(sent.body.surbid, surb);
        assert.deepEqual(sent.body.message_id, id);
        assert.ok(Math.abs(sent.body.sent_at - Date.now() / 1000) < 5, 'sent_at in Unix seconds');
        assert.ok((typeof sent.body.reply_eta === 'bigint' || Number.isInteger(sent.body.reply_eta)) && sent.body.reply_eta > 0, 'reply_eta: integer nanoseconds');
        assert.equal('err' in sent.body, false);
        const rep = await c.take((f) => f.kind === 'message_reply_event');
        assert.deepEqual(Object.keys(rep.body), ['message_id', 'surbid', 'payload', 'error_code']);
        assert.equal(rep.body.payload.length, DEFAULT_SPHINX_GEOMETRY.ForwardPayloadLength);
        assert.deepEqual(rep.body.payload, Buffer.concat([Buffer.from('hello'), Buffer.alloc(2574 - 5)]));
      }
    });

    it('sends nothing back without a SURB, reports oversize payloads in err, and is silent for unknown destinations', async () => {
      const emu = await emulator();
      const c = await ready(emu);
      const node = emu.couriers()[0].identityHash;
      c.send('send_message', { id: null, with_surb: false, surbid: null, destination_id_hash: node, recipient_queue_id: Buffer.from('+echo'), payload: Buffer.from('x') });
      await c.expectNone(() => true, 100);
      const surb = randomBytes(16);
      c.send('send_message', { id: null, with_surb: true, surbid: surb, destination_id_hash: node, recipient_queue_id: Buffer.from('+echo'), payload: randomBytes(2001) });
      const sent = await c.take((f) => f.kind === 'message_sent_event');
      assert.equal(typeof sent.body.err, 'string');
      c.send('send_message', { id: null, with_surb: true, surbid: randomBytes(16), destination_id_hash: randomBytes(32), recipient_queue_id: Buffer.from('+echo'), payload: Buffer.from('x') });
      await c.take((f) => f.kind === 'message_sent_event');
      await c.expectNone((f) => f.kind === 'message_reply_event', 150);
    });
  });

  // ---------------------------------------------------------------- pigeonhole blobs
  describe('pigeonhole blobs', () => {
    it('derives keypairs deterministically with the real layouts and index arithmetic', async () => {
      const emu = await emulator();
      const c = await ready(emu);
      const seed = randomBytes(32);
      const a = await keypair(c, seed);
      const b = await keypair(c, seed);
      assert.deepEqual([a.write_cap, a.read_cap, a.first_message_index], [b.write_cap, b.read_cap, b.first_message_index]);
      assert.equal(a.write_cap.length, 168);
      assert.deepEqual(a.read_cap, a.write_cap.subarray(32));
      assert.deepEqual(a.first_message_index, a.write_cap.subarray(64));
      const counter = BigInt((await c.call('get_message_box_index_counter', { message_box_index: a.first_message_index })).counter);
      assert.ok(counter > 0n && counter < 1n << 63n);
      assert.equal(counter, a.first_message_index.readBigUInt64LE(0));
      const next = (await c.call('next_message_box_index', { message_box_index: a.first_message_index })).next_message_box_index;
      assert.equal(BigInt((await c.call('get_message_box_index_counter', { message_box_index: next })).counter), counter + 1n);
      assert.equal((await c.call('new_keypair', { seed: randomBytes(31) })).error_code, 3);
      // kpclientd seeds ChaCha20 with it, which takes exactly 32 bytes (the real v0.0.99 answers 40 bytes with 3).
      assert.equal((await c.call('new_keypair', { seed: randomBytes(40) })).error_code, 3, 'longer seeds are refused');
      assert.equal((await c.call('new_keypair', { seed: null })).error_code, 3);
    });

    it('makes fresh envelopes every call, fixed-size ciphertexts and descriptors holding the ephemeral key', async () => {
      const emu = await emulator();
      const c = await ready(emu);
      const kp = await keypair(c);
      const args = { plaintext: Buffer.from('same'), write_cap: kp.write_cap, message_box_index: kp.first_message_index };
      const w1 = await c.call('encrypt_write', args);
      const w2 = await c.call('encrypt_write', args);
      const r1 = await c.call('encrypt_read', { read_cap: kp.read_cap, message_box_index: kp.first_message_index });
      assert.notDeepEqual(w1.envelope_hash, w2.envelope_hash);
      assert.equal(w1.envelope_hash.length, 32);
      assert.equal(w1.message_ciphertext.length, r1.message_ciphertext.length, 'reads and writes have one wire size');
      assert.deepEqual(w1.next_message_box_index, r1.next_message_box_index);
      const desc = decodeCbor(w1.envelope_descriptor);
      assert.deepEqual(Object.keys(desc), ['Epoch', 'ReplicaNums', 'EnvelopeKey']);
      assert.equal(desc.ReplicaNums.length, 2);
      assert.equal((await c.call('encrypt_write', { ...args, plaintext: randomBytes(1553) })).error_code, 0);
      assert.equal((await c.call('encrypt_write', { ...args, plaintext: randomBytes(1554) })).error_code, 3);
      assert.equal((await c.call('encrypt_write', { ...args, plaintext: null })).error_code, 3);
      const tomb = await c.call('encrypt_write', { ...args, plaintext: Buffer.alloc(0) });
      assert.equal(tomb.error_code, 0);
      assert.equal(tomb.message_ciphertext.length, w1.message_ciphertext.length);
    });

    it('rejects malformed start_resending requests with 3 (no courier) and a read without its index with 23', async () => {
      const emu = await emulator();
      const c = await ready(emu);
      const kp = await keypair(c);
      const enc = await c.call('encrypt_read', { read_cap: kp.read_cap, message_box_index: kp.first_message_index });
      const start = (b: Record<string, unknown>) => c.call('start_resending_encrypted_message', b);
      for (const body of [
        resendBody({ read_cap: kp.read_cap, write_cap: kp.write_cap, message_box_index: kp.first_message_index, enc }),
        resendBody({ enc }),
        resendBody({ read_cap: kp.read_cap, message_box_index: kp.first_message_index, enc: { ...enc, message_ciphertext: Buffer.alloc(0) } }),
        resendBody({ read_cap: kp.read_cap, message_box_index: kp.first_message_index, enc: { ...enc, envelope_descriptor: Buffer.alloc(0) } }),
      ]) {
        const r = await start(body);
        assert.equal(r.error_code, 3);
        assert.equal(r.courier_identity_hash, null);
      }
      const noIndex = await start(resendBody({ read_cap: kp.read_cap, enc }));
      assert.equal(noIndex.error_code, 23);
      assert.equal(noIndex.courier_identity_hash.length, 32);
      assert.equal((await c.call('cancel_resending_encrypted_message', { envelope_hash: randomBytes(32) })).error_code, 0);
      assert.equal((await c.call('cancel_resending_copy_command', { write_cap_hash: randomBytes(32) })).error_code, 0);
    });

    it('lays out copy-stream elements as §10.5: 4100 bytes -> 4 elements, 3 records of 1999-byte envelopes', async () => {
      const emu = await emulator();
      const c = await ready(emu);
      const dest = await keypair(c);
      const r = await c.call('create_courier_envelopes_from_payload', {
        payload: randomBytes(4100),
        dest_write_cap: dest.write_cap,
        dest_start_index: dest.first_message_index,
        is_start: true,
        is_last: true,
      });
      assert.deepEqual(Object.keys(r), ['query_id', 'envelopes', 'next_dest_index', 'error_code']);
      const els: Buffer[] = r.envelopes;
      assert.equal(els.length, 4);
      assert.deepEqual(els.map((e) => e[0]), [1, 0, 0, 2]);
      for (const e of els) {
        assert.ok(e.length <= 1553);
        assert.equal(e.readUInt32BE(1), e.length - 5);
      }
      const stream = Buffer.concat(els.map((e) => e.subarray(5)));
      assert.equal(stream.length, 3 * (4 + 1999));
      for (let off = 0; off < stream.length; off += 2003) assert.equal(stream.readUInt32BE(off), 1999);
      const counter = async (i: Buffer) => BigInt((await c.call('get_message_box_index_counter', { message_box_index: i })).counter);
      assert.equal(await counter(r.next_dest_index), (await counter(dest.first_message_index)) + 3n);

      const big = await c.call('create_courier_envelopes_from_payload', {
        payload: Buffer.alloc(10 * 1024 * 1024 + 1),
        dest_write_cap: dest.write_cap,
        dest_start_index: dest.first_message_index,
        is_start: true,
        is_last: true,
      });
      assert.equal(big.error_code, 3);
      assert.equal((await c.call('create_courier_envelopes_from_multi_payload', { destinations: [], is_start: true, is_last: true })).error_code, 3);
      const none = await c.call('create_courier_envelopes_from_tombstone_range', {
        dest_write_cap: dest.write_cap,
        dest_start_index: dest.first_message_index,
        max_count: 0,
        is_start: true,
        is_last: true,
      });
      assert.deepEqual(
        { envelopes: none.envelopes, buffer: none.buffer, next: none.next_dest_index, code: none.error_code },
        { envelopes: null, buffer: null, next: dest.first_message_index, code: 0 },
      );
      const multi = await c.call('create_courier_envelopes_from_multi_payload', {
        destinations: [{ payload: randomBytes(10), write_cap: dest.write_cap, start_index: dest.first_message_index }],
        is_start: true,
        is_last: false,
      });
      assert.deepEqual(Object.keys(multi), ['query_id', 'envelopes', 'buffer', 'next_dest_indices', 'error_code']);
      assert.equal(multi.envelopes.length, 1, 'one full element, the rest held back');
      assert.ok(Buffer.isBuffer(multi.buffer));
      assert.equal(multi.next_dest_indices.length, 1);
    });
  });

  // ---------------------------------------------------------------- latency
  describe('latency modes', () => {
    it('instant answers ARQ operations at once; realistic takes mixnet-like seconds (§2.7)', async function () {
      this.timeout(30_000);
      const fast = await emulator({ latency: 'instant' });
      const c = await ready(fast);
      const kp = await keypair(c);
      let t0 = Date.now();
      await writeBox(c, kp.write_cap, kp.first_message_index, Buffer.from('now'));
      assert.equal((await readBox(c, kp.read_cap, kp.first_message_index)).plaintext.toString(), 'now');
      assert.ok(Date.now() - t0 < 2000, 'no modelled latency');

      const slow = await emulator({ latency: 'realistic' });
      const d = await ready(slow);
      const kp2 = await keypair(d);
      t0 = Date.now();
      const w = await writeBox(d, kp2.write_cap, kp2.first_message_index, Buffer.from('later'));
      const took = Date.now() - t0;
      assert.equal(w.error_code, 0);
      assert.ok(took >= 300 && took < 20_000, `a realistic write took ${took} ms`);
    });
  });

  // ---------------------------------------------------------------- faults
  describe('faults', () => {
    it('restart drops connections and changes the instance token; boxes survive unless fresh', async () => {
      const emu = await emulator();
      const c = await ready(emu);
      const kp = await keypair(c);
      assert.equal((await writeBox(c, kp.write_cap, kp.first_message_index, Buffer.from('persist'))).error_code, 0);
      const t1 = emu.instanceToken;
      await emu.restart();
      await c.waitClosed();
      assert.notDeepEqual(emu.instanceToken, t1);
      const d = await client(emu);
      const h = await d.handshake();
      assert.deepEqual(h.status.body.instance_token, emu.instanceToken);
      assert.equal((await readBox(d, kp.read_cap, kp.first_message_index)).plaintext.toString(), 'persist');
      await emu.restart({ keepState: false });
      await d.waitClosed();
      const e = await ready(emu);
      assert.equal((await readBox(e, kp.read_cap, kp.first_message_index)).error_code, 1, 'fresh state forgot the box');
    });

    it('offline/online broadcasts status events and holds mixnet-bound requests until online', async () => {
      const emu = await emulator();
      const c = await ready(emu);
      emu.setOnline(false);
      const off = await c.take((f) => f.kind === 'connection_status_event');
      assert.equal(off.body.is_connected, false);
      assert.deepEqual(off.body.instance_token, emu.instanceToken);
      const late = await client(emu);
      assert.equal((await late.handshake()).status.body.is_connected, false);
      assert.equal((await c.call('new_keypair', { seed: randomBytes(32) })).error_code, 0, 'local requests still work offline');
      c.send('send_message', { id: null, with_surb: true, surbid: randomBytes(16), destination_id_hash: emu.couriers()[0].identityHash, recipient_queue_id: Buffer.from('+echo'), payload: Buffer.from('wait') });
      await c.expectNone((f) => f.kind === 'message_sent_event', 150);
      emu.setOnline(true);
      const on = await c.take((f) => f.kind === 'connection_status_event');
      assert.equal(on.body.is_connected, true);
      await c.take((f) => f.kind === 'message_sent_event');
      await c.take((f) => f.kind === 'message_reply_event');
    });

    it('injects a malformed frame (connection stays up) and an oversize prefix (connection closed)', async () => {
      const emu = await emulator();
      const c = await ready(emu);
      emu.injectMalformedFrame();
      const bad = await c.next();
      assert.equal(bad.kind, 'malformed');
      assert.equal((await c.call('new_keypair', { seed: randomBytes(32) })).error_code, 0);
      emu.injectOversizeLengthPrefix();
      const over = await c.take((f) => f.kind === 'oversize');
      assert.ok(over.body > 40 * 1024 * 1024);
      await c.waitClosed(3000);
    });

    it('stalls every outgoing frame for the given time', async () => {
      const emu = await emulator();
      const c = await ready(emu);
      emu.stallReplies(300);
      const t0 = Date.now();
      const q1 = randomBytes(16);
      const q2 = randomBytes(16);
      c.send('new_keypair', { query_id: q1, seed: randomBytes(32) });
      c.send('get_pki_document', { query_id: q2, epoch: 0 });
      const f1 = await c.next(2000);
      assert.ok(Date.now() - t0 >= 280, 'held for the stall');
      assert.deepEqual(f1.body.query_id, q1, 'order kept');
      assert.deepEqual((await c.next()).body.query_id, q2);
    });

    it('graceful stop sends shutdown_event, then closes; a hard stop just closes', async () => {
      const emu = await emulator();
      const c = await ready(emu);
      const stopping = emu.stop();
      const f = await c.next();
      assert.equal(f.kind, 'shutdown_event');
      assert.deepEqual(f.body, {});
      assertFullEnvelope(f);
      await c.waitClosed();
      await stopping;
      const emu2 = await emulator();
      const d = await ready(emu2);
      await emu2.stop({ graceful: false });
      await d.waitClosed();
      assert.equal(d.buffered.length, 0);
    });
  });
});
