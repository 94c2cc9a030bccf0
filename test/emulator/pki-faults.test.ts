/**
 * PKI document faults: a daemon that starts without a document (the pinned
 * kpclientd: null in handshake frame 2, PROTOCOL.md §2.1, a document later)
 * and a delayed first document (HEAD kpclientd holds the handshake until it
 * has one, §9.2). The emulator side frame by frame, then our client living
 * through both. (The Python binding's side: python-reference.test.ts; the
 * command-line options and stdin commands: cli.test.ts.)
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { ServiceNotFoundError, ThinClient, ThinClientTimeoutError, type ThinClientEvent } from '../../src';
import { HANDSHAKE_PKI_WAIT_MS, startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator';
import { delay, RawClient } from './helpers';
import { keypair, readBox, resendBody, writeBox } from './raw-flows';

describe('emulator: PKI document faults', function () {
  this.timeout(20_000);
  const emulators: Emulator[] = [];
  const raws: RawClient[] = [];
  const clients: ThinClient[] = [];

  async function emulator(options: EmulatorOptions): Promise<Emulator> {
    const e = await startEmulator({ listen: '127.0.0.1:0', latency: 'fast', ...options });
    emulators.push(e);
    return e;
  }

  async function raw(e: Emulator): Promise<RawClient> {
    const c = await RawClient.connect(e.address);
    raws.push(c);
    return c;
  }

  function client(e: Emulator, options: Record<string, unknown> = {}): ThinClient {
    const c = new ThinClient({ dial: e.address, reconnectInitialDelayMs: 50, reconnectMaxDelayMs: 200, ...options });
    clients.push(c);
    return c;
  }

  afterEach(async () => {
    for (const c of clients.splice(0)) await c.close();
    for (const r of raws.splice(0)) r.close();
    for (const e of emulators.splice(0)) await e.stop({ graceful: false });
  });

  describe('on the wire', () => {
    it('without a document: null in frame 2, error 4 for what needs one, 10 for get_pki_document; local calls work', async () => {
      const e = await emulator({ noPkiDocument: true });
      assert.equal(e.hasPkiDocument(), false);
      const c = await raw(e);
      const { status, pki, reply } = await c.handshake();
      assert.equal(status.kind, 'connection_status_event');
      assert.equal(pki.kind, 'new_pki_document_event');
      assert.equal(pki.body.payload, null, 'null, not an empty byte string (Python decodes any non-null payload)');
      assert.equal(reply.kind, 'session_token_reply');

      const kp = await keypair(c);
      assert.equal(kp.write_cap.length, 168);
      assert.equal((await c.call('next_message_box_index', { message_box_index: kp.first_message_index })).error_code, 0);
      const enc = await c.call('encrypt_write', { plaintext: Buffer.from('x'), write_cap: kp.write_cap, message_box_index: kp.first_message_index });
      assert.deepEqual([enc.error_code, enc.message_ciphertext, enc.envelope_hash], [4, null, null]);
      assert.equal((await c.call('encrypt_read', { read_cap: kp.read_cap, message_box_index: kp.first_message_index })).error_code, 4);
      const env = await c.call('create_courier_envelopes_from_payload', {
        payload: randomBytes(100),
        dest_write_cap: kp.write_cap,
        dest_start_index: kp.first_message_index,
        is_start: true,
        is_last: true,
      });
      assert.deepEqual([env.error_code, env.envelopes], [4, null]);
      const doc = await c.call('get_pki_document', { epoch: 0 });
      assert.deepEqual([doc.error_code, doc.payload], [10, null]);
      const fake = { envelope_descriptor: randomBytes(100), message_ciphertext: randomBytes(100), envelope_hash: randomBytes(32) };
      const resend = await c.call('start_resending_encrypted_message', resendBody({ write_cap: kp.write_cap, enc: fake }));
      assert.deepEqual([resend.error_code, resend.courier_identity_hash], [4, null], 'no document, no courier');
      const copy = await c.call('start_resending_copy_command', { write_cap: kp.write_cap });
      assert.equal(copy.error_code, 4);
      // An epoch passing while there is no document broadcasts nothing.
      e.advanceEpoch();
      await c.expectNone((f) => f.kind === 'new_pki_document_event', 100);

      // The document arrives: broadcast to the connected client, and everything works.
      e.publishPkiDocument();
      assert.equal(e.hasPkiDocument(), true);
      const arrived = await c.take((f) => f.kind === 'new_pki_document_event');
      assert.ok(Buffer.isBuffer(arrived.body.payload) && arrived.body.payload.length > 1000);
      assert.equal((await writeBox(c, kp.write_cap, kp.first_message_index, Buffer.from('now'))).error_code, 0);
      const read = await readBox(c, kp.read_cap, kp.first_message_index);
      assert.equal(read.plaintext.toString(), 'now');
      assert.equal((await c.call('get_pki_document', { epoch: 0 })).error_code, 0);
      // A second publish changes nothing.
      e.publishPkiDocument();
      await c.expectNone((f) => f.kind === 'new_pki_document_event', 100);
      // A new connection gets the document in its handshake.
      assert.ok((await (await raw(e)).handshake()).pki.body.payload.length > 1000);
    });

    it('a delayed first document holds frames 1 and 2 until it arrives; withholding instead releases them with null', async () => {
      const e = await emulator({ pkiDocumentDelayMs: 800 });
      const t0 = Date.now();
      const c = await raw(e);
      const { status, pki } = await c.handshake();
      const waited = Date.now() - t0;
      assert.ok(waited >= 600, `frame 1 came after ${waited} ms`);
      assert.equal(status.kind, 'connection_status_event');
      assert.ok(pki.body.payload.length > 1000, 'the held handshake carries the document');
      assert.equal(e.hasPkiDocument(), true);
      // The held client gets the document once, in its handshake, not again as a broadcast.
      await c.expectNone((f) => f.kind === 'new_pki_document_event', 100);

      // At run time: delay it again, and a new handshake waits; withholding releases it with null.
      e.delayPkiDocument(60_000);
      const held = await raw(e);
      await held.expectNone(() => true, 300);
      e.withholdPkiDocument();
      const h = await held.handshake();
      assert.equal(h.pki.body.payload, null);
      e.publishPkiDocument();
      assert.ok((await held.take((f) => f.kind === 'new_pki_document_event')).body.payload.length > 1000);
      assert.ok(HANDSHAKE_PKI_WAIT_MS >= 30_000, 'HEAD waits up to 30 s before it sends a null document');
    });
  });

  describe('our client', () => {
    it('connects without a document, refuses work that needs one with clear errors, and picks the document up later', async () => {
      const e = await emulator({ noPkiDocument: true });
      const c = client(e);
      const events: ThinClientEvent[] = [];
      c.on('event', (ev: ThinClientEvent) => events.push(ev));
      await c.connect();
      assert.equal(c.pkiDocument(), null);
      assert.equal(c.isConnected(), true);
      assert.throws(() => c.getService('echo'), ServiceNotFoundError);
      assert.deepEqual(c.getAllCouriers(), []);
      const kp = await c.newKeypair(randomBytes(32));
      await assert.rejects(c.encryptWrite('too early', kp.writeCap, kp.firstMessageIndex), (err: any) => err.errorCode === 4);
      await assert.rejects(c.getPkiDocumentRaw(0), (err: any) => err.errorCode === 10);
      assert.ok(!events.some((ev) => ev.type === 'newPkiDocument'));

      const arrived = new Promise<ThinClientEvent>((resolve) => c.on('event', (ev: ThinClientEvent) => ev.type === 'newPkiDocument' && resolve(ev)));
      e.publishPkiDocument();
      await arrived;
      assert.equal(c.pkiDocument()?.epoch, e.epoch);
      assert.equal(c.getServices('echo').length, 3);
      const w = await c.encryptWrite('after the document', kp.writeCap, kp.firstMessageIndex);
      await c.startResendingEncryptedMessage({ writeCap: kp.writeCap, envelopeDescriptor: w.envelopeDescriptor, messageCiphertext: w.messageCiphertext, envelopeHash: w.envelopeHash });
      const r = await c.encryptRead(kp.readCap, kp.firstMessageIndex);
      const got = await c.startResendingEncryptedMessage({
        readCap: kp.readCap,
        messageBoxIndex: kp.firstMessageIndex,
        replyIndex: 0,
        envelopeDescriptor: r.envelopeDescriptor,
        messageCiphertext: r.messageCiphertext,
        envelopeHash: r.envelopeHash,
      });
      assert.equal(got.plaintext?.toString(), 'after the document');
      const echo = c.getService('echo');
      const reply = await c.blockingSendMessage(Buffer.from('ping'), echo.destinationIdHash, echo.recipientQueueId);
      assert.deepEqual(reply.subarray(0, 4), Buffer.from('ping'));
    });

    it('waits through a delayed first document within its handshake deadline, then has the document at once', async () => {
      const e = await emulator({ pkiDocumentDelayMs: 1000 });
      const c = client(e);
      const t0 = Date.now();
      await c.connect();
      assert.ok(Date.now() - t0 >= 800, `connect() returned after ${Date.now() - t0} ms`);
      assert.equal(c.pkiDocument()?.epoch, e.epoch);
      const kp = await c.newKeypair(randomBytes(32));
      const w = await c.encryptWrite('after the delay', kp.writeCap, kp.firstMessageIndex);
      const ack = await c.startResendingEncryptedMessage({ writeCap: kp.writeCap, envelopeDescriptor: w.envelopeDescriptor, messageCiphertext: w.messageCiphertext, envelopeHash: w.envelopeHash });
      assert.equal(ack.courierIdentityHash?.length, 32);
    });

    it('a document delayed past the handshake deadline: connect() times out naming the handshake, a later connect() works', async () => {
      const e = await emulator({ pkiDocumentDelayMs: 1500 });
      const c = client(e, { handshakeTimeoutMs: 400 });
      await assert.rejects(c.connect(), (err: any) => err instanceof ThinClientTimeoutError && /handshake/.test(err.message));
      await delay(1300);
      assert.equal(e.hasPkiDocument(), true);
      await c.connect();
      assert.equal(c.pkiDocument()?.epoch, e.epoch);
      assert.equal((await c.newKeypair(randomBytes(32))).writeCap.length, 168);
    });
  });
});
