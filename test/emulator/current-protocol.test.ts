/**
 * The emulator's `current` protocol (kpclientd v0.0.99, PROTOCOL.md §9)
 * frame by frame, next to the `pinned` one: the 25-key envelope, the
 * derived Pigeonhole geometry, the PKI document without the dropped fields,
 * unknown requests dropped instead of fatal, get_directory_authorities,
 * the voucher replies and their failures, courier errors remapped, and a
 * handshake that waits for the PKI document.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { blake2b256 } from '../../src/client/crypto';
import { CURRENT_RESPONSE_KINDS, decodeCbor, decodeCborFaithful, encodeCbor, encodeFrame, RESPONSE_KINDS } from '../../src/wire';
import { CURRENT_PIGEONHOLE_GEOMETRY, DROPPED_DOCUMENT_FIELDS, startEmulator, type Emulator } from '../../src/emulator';
import { parseArgs } from '../../src/emulator/cli';
import { PROFILES } from '../../src/emulator/current';
import { encodeCanonical } from '../../src/emulator/pki';
import { RawClient } from './helpers';

async function connect(emu: Emulator): Promise<RawClient> {
  const c = await RawClient.connect(emu.address);
  await c.handshake();
  return c;
}

describe('emulator: the current protocol (kpclientd v0.0.99)', function () {
  this.timeout(20_000);
  let emu: Emulator;
  let pinned: Emulator;
  const clients: RawClient[] = [];
  const open = async (e: Emulator) => {
    const c = await connect(e);
    clients.push(c);
    return c;
  };

  before(async () => {
    emu = await startEmulator({ listen: '127.0.0.1:0', protocol: 'current', latency: 'instant' });
    pinned = await startEmulator({ listen: '127.0.0.1:0', latency: 'instant' });
  });
  afterEach(() => {
    for (const c of clients.splice(0)) c.close();
  });
  after(async () => {
    await emu?.stop({ graceful: false });
    await pinned?.stop({ graceful: false });
  });

  it('says which protocol it speaks', () => {
    assert.equal(emu.protocol, 'current');
    assert.equal(pinned.protocol, 'pinned');
    assert.equal(emu.wsAddress, null);
  });

  it('sends the 25-key reply envelope in Go order on every frame (the pinned one 20)', async () => {
    const c = await RawClient.connect(emu.address);
    clients.push(c);
    const hs = await c.handshake();
    for (const f of [hs.status, hs.pki, hs.reply]) assert.deepEqual(Object.keys(f.envelope), [...CURRENT_RESPONSE_KINDS]);
    assert.equal(CURRENT_RESPONSE_KINDS.length, 25);
    assert.equal(CURRENT_RESPONSE_KINDS.indexOf('get_directory_authorities_reply'), CURRENT_RESPONSE_KINDS.indexOf('get_pki_document_reply') + 1);
    assert.deepEqual(CURRENT_RESPONSE_KINDS.slice(-4), ['voucher_mint_reply', 'voucher_induct_reply', 'voucher_open_reply', 'voucher_derive_stream_reply']);
    c.send('new_keypair', { query_id: randomBytes(16), seed: randomBytes(32) });
    assert.deepEqual(Object.keys((await c.take((f) => f.kind === 'new_keypair_reply')).envelope), [...CURRENT_RESPONSE_KINDS]);
    const p = await RawClient.connect(pinned.address);
    clients.push(p);
    assert.deepEqual(Object.keys((await p.handshake()).status.envelope), [...RESPONSE_KINDS]);
  });

  it('announces the Pigeonhole geometry v0.0.99 derives (1549-byte boxes) and enforces it', async () => {
    const c = await RawClient.connect(emu.address);
    clients.push(c);
    const { status } = await c.handshake();
    assert.deepEqual(status.body.pigeonhole_geometry, CURRENT_PIGEONHOLE_GEOMETRY);
    const kp = await c.call('new_keypair', { seed: randomBytes(32) });
    const ok = await c.call('encrypt_write', { plaintext: Buffer.alloc(1549, 1), write_cap: kp.write_cap, message_box_index: kp.first_message_index });
    assert.equal(ok.error_code, 0);
    const tooBig = await c.call('encrypt_write', { plaintext: Buffer.alloc(1550, 1), write_cap: kp.write_cap, message_box_index: kp.first_message_index });
    assert.equal(tooBig.error_code, 3);
  });

  it('serves a PKI document without the fields v0.0.99 dropped, in every form', async () => {
    const c = await RawClient.connect(emu.address);
    clients.push(c);
    const { pki } = await c.handshake();
    const handshakeDoc = decodeCborFaithful(pki.body.payload);
    const signed = decodeCborFaithful((await c.call('get_pki_document', { epoch: 0 })).payload);
    const certified = decodeCborFaithful(signed.Certified);
    emu.advanceEpoch();
    const broadcast = decodeCborFaithful((await c.take((f) => f.kind === 'new_pki_document_event')).body.payload);
    for (const [name, doc] of [['handshake', handshakeDoc], ['certified', certified], ['broadcast', broadcast]] as const) {
      for (const f of DROPPED_DOCUMENT_FIELDS) assert.ok(!(f in doc), `${name} document has no ${f}`);
      for (const f of ['Epoch', 'Mu', 'LambdaP', 'Topology', 'ServiceNodes', 'StorageReplicas', 'SphinxGeometryHash', 'PKISignatureScheme']) assert.ok(f in doc, `${name} document has ${f}`);
    }
    const p = await RawClient.connect(pinned.address);
    clients.push(p);
    const pinnedDoc = decodeCborFaithful((await p.handshake()).pki.body.payload);
    for (const f of DROPPED_DOCUMENT_FIELDS) assert.ok(f in pinnedDoc, `the pinned document still has ${f}`);
  });

  it('drops an unknown request or an all-null envelope and keeps serving the connection (a pinned one closes it)', async () => {
    const c = await open(emu);
    c.send('bogus_request', { query_id: randomBytes(16) });
    c.sendRaw(encodeFrame(encodeCbor({ new_keypair: null, voucher_mint: null })));
    const kp = await c.call('new_keypair', { seed: randomBytes(32) });
    assert.equal(kp.error_code, 0);
    assert.equal(c.closed, false);
    await c.expectNone((f) => f.kind !== 'new_keypair_reply', 200);

    const p = await open(pinned);
    p.send('voucher_mint', { query_id: randomBytes(16), message_write_cap: randomBytes(168), display_name: 'x' });
    await p.waitClosed();
  });

  it('get_directory_authorities: the authorities that sign the document', async () => {
    const c = await open(emu);
    const r = await c.call('get_directory_authorities', {});
    assert.equal(r.error_code, 0);
    assert.deepEqual(Object.keys(r), ['query_id', 'authorities', 'error_code']);
    const signed = decodeCborFaithful((await c.call('get_pki_document', { epoch: 0 })).payload);
    const signers = [...(signed.Signatures as Map<Buffer, unknown>).keys()].map((k) => Buffer.from(k).toString('hex')).sort();
    assert.deepEqual(r.authorities.map((a: any) => a.identity_key_hash.toString('hex')).sort(), signers);
    for (const a of r.authorities) {
      assert.deepEqual(Object.keys(a), ['identifier', 'pki_signature_scheme', 'wire_kem_scheme', 'addresses', 'identity_public_key_pem', 'link_public_key_pem', 'identity_key_hash']);
      const raw = Buffer.from(a.identity_public_key_pem.split('\n').slice(1, -2).join(''), 'base64');
      assert.ok(blake2b256(raw).equals(a.identity_key_hash));
    }
  });

  it('voucher replies: the real fields in order, the real sizes, and 3 / 28 / 29 / 30 with null fields', async () => {
    const c = await open(emu);
    const kp = await c.call('new_keypair', { seed: randomBytes(32) });
    const m = await c.call('voucher_mint', { message_write_cap: kp.write_cap, display_name: 'alice' });
    assert.deepEqual(Object.keys(m), ['query_id', 'voucher', 'voucher_payload', 'voucher_write_cap', 'voucher_read_cap', 'voucher_secret_key', 'voucher_public_key', 'error_code']);
    // The sizes kpclientd v0.0.99 gives for the same input.
    assert.deepEqual([m.voucher.length, m.voucher_payload.length, m.voucher_secret_key.length, m.voucher_public_key.length], [32, 457, 162, 160]);
    const ind = await c.call('voucher_induct', { voucher: m.voucher, voucher_payload: m.voucher_payload, who_reply: Buffer.alloc(37, 7) });
    assert.deepEqual(Object.keys(ind), ['query_id', 'display_name', 'mutated_message_read_cap', 'sealed_reply', 'voucher_write_cap', 'voucher_read_cap', 'salt', 'error_code']);
    assert.equal(ind.sealed_reply.length, 394, 'as the real seal of a 37-byte WhoReply');
    const op = await c.call('voucher_open', { voucher_secret_key: m.voucher_secret_key, sealed_reply: ind.sealed_reply, message_write_cap: kp.write_cap });
    assert.deepEqual(Object.keys(op), ['query_id', 'who_reply', 'salt', 'mutated_message_write_cap', 'error_code']);
    const empty = await c.call('voucher_induct', { voucher: m.voucher, voucher_payload: m.voucher_payload, who_reply: Buffer.alloc(0) });
    assert.equal(empty.sealed_reply.length, 356);
    const opened = await c.call('voucher_open', { voucher_secret_key: m.voucher_secret_key, sealed_reply: empty.sealed_reply, message_write_cap: kp.write_cap });
    assert.ok(Buffer.isBuffer(opened.who_reply) && opened.who_reply.length === 0, 'an empty WhoReply comes back as an empty byte string');

    const tampered = Buffer.from(m.voucher_payload);
    tampered[100] ^= 1;
    const e28 = await c.call('voucher_induct', { voucher: m.voucher, voucher_payload: tampered, who_reply: Buffer.alloc(0) });
    assert.deepEqual(e28, {
      query_id: e28.query_id,
      display_name: '',
      mutated_message_read_cap: null,
      sealed_reply: null,
      voucher_write_cap: null,
      voucher_read_cap: null,
      salt: null,
      error_code: 28,
    });
    const vp = decodeCbor(m.voucher_payload);
    const spa = decodeCbor(vp.SignedPleaseAdd);
    const sig = Buffer.from(spa.Signature);
    sig[10] ^= 1;
    const badPayload = encodeCanonical({ SignedPleaseAdd: encodeCanonical({ PleaseAdd: spa.PleaseAdd, Signature: sig }), VoucherPubKey: vp.VoucherPubKey });
    assert.equal((await c.call('voucher_induct', { voucher: blake2b256(badPayload), voucher_payload: badPayload, who_reply: Buffer.alloc(0) })).error_code, 29);
    const garbage = Buffer.from('garbage');
    assert.equal((await c.call('voucher_induct', { voucher: blake2b256(garbage), voucher_payload: garbage, who_reply: Buffer.alloc(0) })).error_code, 3);
    assert.equal((await c.call('voucher_induct', { voucher: randomBytes(31), voucher_payload: garbage, who_reply: Buffer.alloc(0) })).error_code, 3);

    for (const at of [0, 50, ind.sealed_reply.length - 1]) {
      const sealed = Buffer.from(ind.sealed_reply);
      sealed[at] ^= 1;
      const e30 = await c.call('voucher_open', { voucher_secret_key: m.voucher_secret_key, sealed_reply: sealed, message_write_cap: kp.write_cap });
      assert.deepEqual(e30, { query_id: e30.query_id, who_reply: null, salt: null, mutated_message_write_cap: null, error_code: 30 }, `byte ${at} changed`);
    }
    assert.equal((await c.call('voucher_open', { voucher_secret_key: Buffer.alloc(162, 1), sealed_reply: ind.sealed_reply, message_write_cap: kp.write_cap })).error_code, 30);
    assert.equal((await c.call('voucher_open', { voucher_secret_key: Buffer.alloc(161, 1), sealed_reply: ind.sealed_reply, message_write_cap: kp.write_cap })).error_code, 3);
    assert.equal((await c.call('voucher_open', { voucher_secret_key: m.voucher_secret_key, sealed_reply: ind.sealed_reply, message_write_cap: randomBytes(10) })).error_code, 3);
    assert.equal((await c.call('voucher_mint', { message_write_cap: randomBytes(10), display_name: 'x' })).error_code, 3);
    assert.equal((await c.call('voucher_derive_stream', { voucher: randomBytes(5) })).error_code, 3);
  });

  it('a voucher secret key too short to parse gets no reply at all, as kpclientd v0.0.99 (its handler panics)', async () => {
    const c = await open(emu);
    const q = randomBytes(16);
    c.send('voucher_open', { query_id: q, voucher_secret_key: randomBytes(10), sealed_reply: randomBytes(300), message_write_cap: randomBytes(168) });
    await c.expectNone((f) => f.kind === 'voucher_open_reply', 300);
    assert.equal((await c.call('voucher_derive_stream', { voucher: randomBytes(32) })).error_code, 0, 'the connection is unaffected');
  });

  it('reports a courier InvalidEnvelope as 31 (pinned: the raw 1)', async () => {
    for (const [e, want] of [
      [emu, 31],
      [pinned, 1],
    ] as const) {
      const c = await open(e);
      const kp = await c.call('new_keypair', { seed: randomBytes(32) });
      const r = await c.call('start_resending_encrypted_message', {
        write_cap: kp.write_cap,
        envelope_descriptor: randomBytes(100),
        message_ciphertext: randomBytes(1999),
        envelope_hash: randomBytes(32),
      });
      assert.equal(r.error_code, want, `${e.protocol}`);
    }
  });

  it('holds a new handshake while it has no PKI document, and completes it when the document arrives', async () => {
    emu.withholdPkiDocument();
    try {
      const c = await RawClient.connect(emu.address);
      clients.push(c);
      await c.expectNone(() => true, 400);
      emu.publishPkiDocument();
      const { status, pki } = await c.handshake();
      assert.equal(status.kind, 'connection_status_event');
      assert.ok(Buffer.isBuffer(pki.body.payload), 'with the document');
    } finally {
      emu.publishPkiDocument();
    }
  });

  it('defaults to the v0.0.99 session grace period of 10 minutes; sessions resume within it', async () => {
    const token = randomBytes(16);
    const a = await RawClient.connect(emu.address);
    await a.handshake(token);
    a.close();
    await a.closedPromise;
    const b = await RawClient.connect(emu.address);
    clients.push(b);
    const { reply } = await b.handshake(token);
    assert.equal(reply.body.resumed, true);
    assert.equal(PROFILES.current.gracePeriodMs, 10 * 60 * 1000);
    assert.equal(PROFILES.pinned.gracePeriodMs, 30 * 60 * 1000);
  });

  it('the command line takes --protocol and --ws', () => {
    assert.deepEqual(parseArgs(['--protocol', 'current', '--ws', 'ws://127.0.0.1:0']).options, { protocol: 'current', wsListen: 'ws://127.0.0.1:0' });
    assert.deepEqual(parseArgs(['--protocol=pinned']).options, { protocol: 'pinned' });
  });

  it('listens for WebSocket clients beside TCP, and refuses a ws:// address as the TCP listener', async () => {
    const both = await startEmulator({ listen: '127.0.0.1:0', wsListen: 'ws://127.0.0.1:0', protocol: 'current' });
    try {
      assert.match(both.wsAddress!, /^ws:\/\/127\.0\.0\.1:\d+$/);
    } finally {
      await both.stop({ graceful: false });
    }
    await assert.rejects(startEmulator({ listen: 'ws://127.0.0.1:0' }), /wsListen/);
  });
});
