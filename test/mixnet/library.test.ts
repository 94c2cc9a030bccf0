/**
 * Every public ThinClient method against the REAL kpclientd v0.0.99 and a
 * real mixnet (npm run test:mixnet). Where the real daemon differs from
 * PROTOCOL.md / PIGEONHOLE.md, these tests assert what it does.
 *
 * The network-heavy groups (Pigeonhole ARQ, copy commands) are started
 * together in `before`, each on its own connection (the daemon's send
 * scheduler goes round-robin over connections), and each `it` awaits its
 * own group: the file takes as long as the slowest group, not their sum.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BoxAlreadyExistsError,
  BoxIDNotFoundError,
  DaemonDisconnectedError,
  DaemonError,
  InvalidArgumentError,
  NotEnoughCouriersError,
  OperationCancelledError,
  ProtocolError,
  ServiceNotFoundError,
  StartResendingCancelledError,
  ThinClient,
  ThinClientTimeoutError,
  TombstoneError,
  VoucherHashMismatchError,
  VoucherSealOpenFailedError,
  blake2b256,
  isExpectedOutcome,
  parsePkiDocument,
  type CourierDescriptor,
  type ServiceDescriptor,
  type ThinClientEvent,
} from '../../src';
import { decodeCborFaithful } from '../../src/wire';
import { Peer, rejectsWith, waitFor } from '../support/peer';
import { Latency } from './latency';
import { connectReal, daemonAddress } from './support';

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const MINUTE = 60_000;
/**
 * Deadline of local calls. They need no mixnet, but encrypt_* and the
 * envelope helpers do CTIDH-1024 work in the daemon (seconds each on a
 * loaded machine) and one connection's local requests are served in order.
 */
const LOCAL_TIMEOUT_MS = 5 * MINUTE;
/** Legacy sends have no ARQ: a reply later than the ETA + 4.5 s is dropped by the daemon, so a round trip is tried up to 3 times. */
const ECHO_ATTEMPTS = 3;
const ECHO_TIMEOUT_MS = 45_000;
/** Katzenpost epochs count 2-minute periods (warped) from 2017-06-01T00:00:00Z. */
const clockEpoch = () => Math.floor((Date.now() - Date.UTC(2017, 5, 1)) / 120_000);

/** A promise started now whose failure is reported only where it is awaited. */
function background<T>(f: () => Promise<T>): () => Promise<T> {
  const outcome = f().then(
    (value) => ({ value }),
    (error: unknown) => ({ error }),
  );
  return async () => {
    const o = await outcome;
    if ('error' in o) throw o.error;
    return o.value;
  };
}

/** blockingSendMessage, tried again when the reply is lost (recorded as such). */
async function echoRoundTrip(c: ThinClient, service: ServiceDescriptor, payload: string, latency?: Latency): Promise<Buffer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await c.blockingSendMessage(payload, service.destinationIdHash, service.recipientQueueId, { timeoutMs: ECHO_TIMEOUT_MS });
    } catch (e) {
      if (!(e instanceof ThinClientTimeoutError) || attempt >= ECHO_ATTEMPTS) throw e;
      latency?.add('echo reply lost (blockingSendMessage)', ECHO_TIMEOUT_MS);
    }
  }
}

/** The geometries the real v0.0.99 daemon announced when the fixtures were recorded (PROTOCOL §6.8 has other Pigeonhole numbers). */
const RECORDED_STATUS = (
  JSON.parse(readFileSync(join(__dirname, '..', 'fixtures', 'kpclientd-v0.0.99-frames.json'), 'utf8')) as { frames: { obj: Record<string, any> }[] }
).frames.find((f) => f.obj.connection_status_event)!.obj.connection_status_event;
const REAL_SPHINX_GEOMETRY = RECORDED_STATUS.sphinx_geometry;
const REAL_PIGEONHOLE_GEOMETRY = RECORDED_STATUS.pigeonhole_geometry;

/**
 * Pigeonhole ARQ calls on one channel: write/read, ReturnBoxExists,
 * NoRetry, cancel, client-side deadline and abort, tombstones.
 */
async function arqGroup(p: Peer, courier: CourierDescriptor): Promise<void> {
  const c = p.c;
  const ch = await p.channel();
  const [i0, i1, i2, i3, i4] = await p.indexes(ch.firstMessageIndex, 5);

  // Phase 1: everything that needs no earlier write, at once.
  await Promise.all([
    (async () => {
      const enc = await c.encryptWrite('first', ch.writeCap, i0);
      const r = await c.startResendingEncryptedMessage({ writeCap: ch.writeCap, ...enc });
      assert.equal(r.plaintext, null, 'a write returns no plaintext');
      assert.deepEqual(r.courierIdentityHash, courier.identityHash, 'the reply names the only courier');
      assert.deepEqual(r.courierQueueId, courier.queueId);
    })(),
    // An empty box with return-box-exists: plain success.
    p.write(ch.writeCap, i1, 'second', 'boxExists').then((r) => assert.equal(r.plaintext, null)),
    rejectsWith(p.read(ch.readCap, i4, 'noRetry'), BoxIDNotFoundError, (e) => {
      assert.equal(e.errorCode, 1);
      assert.equal(isExpectedOutcome(e), true);
    }),
    // A default read of an unwritten box blocks until cancelled from elsewhere.
    (async () => {
      const enc = await c.encryptRead(ch.readCap, i3);
      const blocked = c.startResendingEncryptedMessage({ readCap: ch.readCap, messageBoxIndex: i3, ...enc });
      const caught = rejectsWith(blocked, StartResendingCancelledError, (e) => assert.equal(e.errorCode, 24));
      await delay(5000);
      await c.cancelResendingEncryptedMessage(enc.envelopeHash);
      await caught;
      await c.cancelResendingEncryptedMessage(enc.envelopeHash); // again: still OK
      await c.cancelResendingEncryptedMessage(randomBytes(32)); // unknown hash: OK
    })(),
    // Client-side deadline and abort of a blocking read (both also cancel on the daemon).
    rejectsWith(p.read(ch.readCap, i3, 'default', { timeoutMs: 8000 }), ThinClientTimeoutError),
    (async () => {
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 4000);
      await rejectsWith(p.read(ch.readCap, i3, 'default', { signal: ac.signal }), OperationCancelledError);
    })(),
  ]);

  // Phase 2: reads of what phase 1 wrote, conflicts, and tombstones of never-written boxes (S6 covers tombstones over data).
  await Promise.all([
    p.read(ch.readCap, i0, 'default').then((b) => assert.equal(b.toString(), 'first')),
    p.read(ch.readCap, i1, 'default').then((b) => assert.equal(b.toString(), 'second')),
    rejectsWith(p.write(ch.writeCap, i0, 'other', 'boxExists'), BoxAlreadyExistsError, (e) => {
      assert.equal(e.errorCode, 10);
      assert.equal(isExpectedOutcome(e), true);
    }),
    p.write(ch.writeCap, i0, 'first', 'boxExists').then((r) => assert.equal(r.plaintext, null, 'identical content is idempotent')),
    (async () => {
      // Two never-written boxes (i3 only ever had reads): tombstones pre-delete them.
      assert.deepEqual(await c.tombstoneRange(ch.writeCap, i2, 0), { envelopes: [], next: i2 });
      const tr = await c.tombstoneRange(ch.writeCap, i2, 2);
      assert.deepEqual(
        tr.envelopes.map((e) => e.boxIndex),
        [i2, i3],
      );
      assert.deepEqual(tr.next, i4);
      await Promise.all(tr.envelopes.map((t) => c.startResendingEncryptedMessage({ writeCap: ch.writeCap, envelopeDescriptor: t.envelopeDescriptor, messageCiphertext: t.messageCiphertext, envelopeHash: t.envelopeHash })));
      await p.poll(ch.readCap, i2, (o) => o.error instanceof TombstoneError);
    })(),
  ]);
}

/** Copy commands: unpinned (one destination) and pinned (several destinations and tombstones in one stream), cancel. */
async function copyGroup(p: Peer, courier: CourierDescriptor): Promise<void> {
  const c = p.c;
  const pinned = { courierIdentityHash: courier.identityHash, courierQueueId: courier.queueId };
  const [dA, dB1, dB2, dC, tempD] = await Promise.all([p.channel(), p.channel(), p.channel(), p.channel(), p.channel()]);
  await Promise.all([
    // A: one destination, courier chosen by the daemon.
    (async () => {
      const pA = randomBytes(3000);
      const env = await c.createCourierEnvelopesFromPayload(pA, dA.writeCap, dA.firstMessageIndex, true, true);
      assert.deepEqual(
        env.envelopes.map((e) => e.length),
        [1549, 1549, 923],
      );
      assert.equal(await p.counter(env.nextDestIndex), (await p.counter(dA.firstMessageIndex)) + 2n);
      await p.copy(env.envelopes, { concurrent: true });
      const boxes = await p.readMany(dA.readCap, dA.firstMessageIndex, 2, { variant: 'default', concurrent: true });
      assert.deepEqual(
        boxes.map((b) => b.length),
        [1545, 1455],
        'destination boxes hold MaxPlaintextPayloadLength - 4 = 1545 bytes each',
      );
      assert.deepEqual(Buffer.concat(boxes), pA);
    })(),
    // B: one pinned stream that retires box 0 of dC (tombstone range, keeping a buffer) and writes
    // dB1, dB2 and box 1 of dC (multi payload continuing that buffer).
    (async () => {
      const [c0, c1, c2] = await p.indexes(dC.firstMessageIndex, 3);
      await p.write(dC.writeCap, c0, 'old', 'boxExists');
      const t = await c.createCourierEnvelopesFromTombstoneRange(dC.writeCap, c0, 1, true, false);
      assert.ok(t.buffer && t.buffer.length > 0, 'is_last=false keeps a residual buffer');
      assert.deepEqual(t.nextDestIndex, c1);
      const [pB1, pB2, pC] = [randomBytes(600), randomBytes(300), randomBytes(1000)];
      const m = await c.createCourierEnvelopesFromMultiPayload(
        [
          { payload: pB1, writeCap: dB1.writeCap, startIndex: dB1.firstMessageIndex },
          { payload: pB2, writeCap: dB2.writeCap, startIndex: dB2.firstMessageIndex },
          { payload: pC, writeCap: dC.writeCap, startIndex: c1 },
        ],
        false,
        true,
        t.buffer,
      );
      assert.equal(m.buffer, null, 'is_last flushes everything');
      assert.deepEqual(m.nextDestIndices, [await p.next(dB1.firstMessageIndex), await p.next(dB2.firstMessageIndex), c2]);
      await p.copy([...t.envelopes, ...m.envelopes], { concurrent: true, ...pinned });
      const [b1, b2, bc] = await Promise.all([
        p.read(dB1.readCap, dB1.firstMessageIndex, 'default'),
        p.read(dB2.readCap, dB2.firstMessageIndex, 'default'),
        p.read(dC.readCap, c1, 'default'),
        p.poll(dC.readCap, c0, (o) => o.error instanceof TombstoneError),
      ]);
      assert.deepEqual(b1, pB1);
      assert.deepEqual(b2, pB2);
      assert.deepEqual(bc, pC);
    })(),
    // D: a copy of a temp stream that was never written keeps going until cancelled.
    (async () => {
      const copying = rejectsWith(c.startResendingCopyCommand(tempD.writeCap), StartResendingCancelledError, (e) => assert.equal(e.errorCode, 24));
      await delay(5000);
      await c.cancelResendingCopyCommand(ThinClient.writeCapHash(tempD.writeCap));
      await copying;
      await c.cancelResendingCopyCommand(ThinClient.writeCapHash(tempD.writeCap)); // again: OK
    })(),
  ]);
}

/**
 * The Contact Voucher (kpclientd v0.0.99 only) end to end over the mixnet:
 * the joiner mints a voucher and writes its payload to box 0 of the voucher
 * stream; the inductor derives the stream from the voucher alone, reads box
 * 0, inducts and writes the sealed reply to box 1; the joiner reads and opens
 * it; a message written with the joiner's re-seeded write cap is read with
 * the inductor's re-seeded read cap.
 */
async function voucherGroup(joiner: Peer, inductor: Peer): Promise<void> {
  const j = joiner.c;
  const i = inductor.c;
  const own = await joiner.channel();
  const mint = await j.voucherMint(own.writeCap, 'joiner on the real network');
  assert.equal(mint.voucher.length, 32);
  assert.equal(mint.voucherWriteCap.length, 168);
  assert.ok(mint.voucherPayload.length <= j.pigeonholeGeometry().MaxPlaintextPayloadLength, `the payload (${mint.voucherPayload.length} bytes) fits one box`);
  const box0 = ThinClient.firstMessageIndexOf(mint.voucherWriteCap);
  const box1 = await joiner.next(box0);
  await joiner.write(mint.voucherWriteCap, box0, mint.voucherPayload);

  const stream = await i.voucherDeriveStream(mint.voucher);
  assert.deepEqual(stream, { voucherWriteCap: mint.voucherWriteCap, voucherReadCap: mint.voucherReadCap }, 'the voucher alone gives the same stream');
  const payload = await inductor.read(stream.voucherReadCap, ThinClient.firstMessageIndexOf(stream.voucherReadCap), 'default');
  assert.deepEqual(payload, mint.voucherPayload);
  const who = Buffer.from('the group meets at box 7');
  const induct = await i.voucherInduct(mint.voucher, payload, who);
  assert.equal(induct.displayName, 'joiner on the real network');
  assert.equal(induct.salt.length, 32);
  await rejectsWith(i.voucherInduct(randomBytes(32), payload, who), VoucherHashMismatchError, (e) => assert.equal(e.errorCode, 28));
  await inductor.write(stream.voucherWriteCap, await inductor.next(ThinClient.firstMessageIndexOf(stream.voucherWriteCap)), induct.sealedReply);

  const sealed = await joiner.read(mint.voucherReadCap, box1, 'default');
  assert.deepEqual(sealed, induct.sealedReply);
  const opened = await j.voucherOpen(mint.voucherSecretKey, sealed, own.writeCap);
  assert.deepEqual(opened.whoReply, who);
  assert.deepEqual(opened.salt, induct.salt);
  assert.deepEqual(opened.mutatedMessageWriteCap.subarray(32), induct.mutatedMessageReadCap, 'the re-seeded caps are a pair');
  const tampered = Buffer.from(sealed);
  tampered[tampered.length - 1] ^= 1;
  await rejectsWith(j.voucherOpen(mint.voucherSecretKey, tampered, own.writeCap), VoucherSealOpenFailedError, (e) => assert.equal(e.errorCode, 30));

  const first = ThinClient.firstMessageIndexOf(opened.mutatedMessageWriteCap);
  await joiner.write(opened.mutatedMessageWriteCap, first, 'hello, group');
  assert.equal((await inductor.read(induct.mutatedMessageReadCap, ThinClient.firstMessageIndexOf(induct.mutatedMessageReadCap), 'default')).toString(), 'hello, group');
}

/** The events() iterator over a legacy round trip (tried again when the echo reply is lost), then its end. */
async function eventsGroup(e: ThinClient): Promise<void> {
  const echo = e.getService('echo');
  const iter = e.events();
  const aborted = new AbortController();
  const early = e.events(aborted.signal);
  aborted.abort();
  assert.equal((await early.next()).done, true, 'an aborted iterator ends');
  const got: string[] = [];
  let pending = iter.next();
  let done = false;
  for (let attempt = 1; !done; attempt++) {
    assert.ok(attempt <= ECHO_ATTEMPTS, `no echo reply in ${ECHO_ATTEMPTS} attempts`);
    const surb = e.newSurbId();
    await e.sendMessage(surb, 'iterate', echo.destinationIdHash, echo.recipientQueueId);
    const until = Date.now() + MINUTE;
    for (;;) {
      const r = await Promise.race([pending, delay(Math.max(0, until - Date.now())).then(() => Symbol('timeout'))]);
      if (typeof r === 'symbol') break; // lost reply: `pending` still waits for the next event
      pending = iter.next();
      assert.equal(r.done, false);
      const ev = r.value;
      if ((ev.type === 'messageSent' || ev.type === 'messageReply') && ev.surbId?.equals(surb)) got.push(`${ev.type}#${attempt}`);
      if (ev.type === 'messageReply' && ev.surbId.equals(surb)) {
        done = true;
        assert.deepEqual(got.slice(-2), [`messageSent#${attempt}`, `messageReply#${attempt}`], 'the sent event first, then the reply');
        break;
      }
    }
  }
  const after = e.events();
  const ending = after.next();
  await e.close();
  assert.equal((await ending).done, true, 'close() ends the iterators');
  assert.equal((await e.events().next()).done, true, 'a closed client gives ended iterators');
}

describe('ThinClient: every public method against the real kpclientd v0.0.99', function () {
  this.timeout(10 * MINUTE);
  const latency = new Latency();
  const clients: ThinClient[] = [];
  let c: ThinClient;
  let courier: CourierDescriptor;
  let arq: () => Promise<void>;
  let copy: () => Promise<void>;
  let events: () => Promise<void>;
  let voucher: () => Promise<void>;

  async function client(): Promise<ThinClient> {
    const x = latency.instrument(await connectReal({ requestTimeoutMs: LOCAL_TIMEOUT_MS }));
    clients.push(x);
    return x;
  }

  before(async function () {
    this.timeout(3 * MINUTE);
    c = await client();
    courier = c.getAllCouriers()[0];
    assert.ok(courier, 'the PKI document names a courier');
    const [ca, cc, ce, cj, ci] = await Promise.all([client(), client(), client(), client(), client()]);
    arq = background(() => arqGroup(new Peer(ca), courier));
    copy = background(() => copyGroup(new Peer(cc), courier));
    events = background(() => eventsGroup(ce));
    voucher = background(() => voucherGroup(new Peer(cj), new Peer(ci)));
  });

  after(async () => {
    // Closing rejects whatever a background group still waits for (its test may have timed out).
    for (const x of clients.splice(0)) await x.close();
    await Promise.allSettled([arq?.(), copy?.(), events?.(), voucher?.()]);
    console.log(latency.report('library.test.ts'));
  });

  it('connect(): the handshake gives the status, both geometries, a PKI document and a fresh session', async () => {
    const h = new ThinClient({ dial: daemonAddress(), handshakeTimeoutMs: 40_000 });
    assert.equal(h.isDaemonConnected(), false);
    assert.equal(h.isConnected(), false);
    assert.throws(() => h.sphinxGeometry(), ProtocolError);
    assert.throws(() => h.pigeonholeGeometry(), ProtocolError);
    const seen: ThinClientEvent[] = [];
    h.on('event', (e) => seen.push(e));
    clients.push(h);
    await h.connect();
    assert.equal(h.isDaemonConnected(), true);
    assert.equal(h.isConnected(), true, 'the daemon is on the mixnet');
    assert.equal(h.resumed, false);
    assert.equal(h.appId?.length, 16);
    assert.equal(h.sessionToken.length, 16);
    assert.equal(h.instanceToken?.length, 16);
    assert.deepEqual(h.instanceToken, c.instanceToken, 'one daemon process, one instance token');
    assert.notDeepEqual(h.appId, c.appId, 'every connection gets its own app ID');
    assert.deepEqual(h.sphinxGeometry(), REAL_SPHINX_GEOMETRY);
    assert.deepEqual(h.pigeonholeGeometry(), REAL_PIGEONHOLE_GEOMETRY);
    assert.deepEqual(
      seen.slice(0, 2).map((e) => e.type),
      ['connectionStatus', 'newPkiDocument'],
    );
    const status = seen[0];
    assert.ok(status.type === 'connectionStatus' && status.isConnected && status.instanceToken.equals(h.instanceToken!));
    const pki = seen[1];
    assert.ok(pki.type === 'newPkiDocument' && pki.document.epoch === h.pkiDocument()!.epoch);
    await h.connect(); // already connected: resolves at once
    assert.equal(h.address, daemonAddress());
  });

  it('pkiDocument(), pkiDocumentForEpoch() and getPkiDocumentRaw()', async () => {
    const doc = c.pkiDocument();
    assert.ok(doc);
    assert.ok(Math.abs(doc.epoch - clockEpoch()) <= 1, `document epoch ${doc.epoch} vs clock epoch ${clockEpoch()}`);
    assert.equal(doc.version, 'v1');
    assert.equal(doc.pkiSignatureScheme, 'Ed25519');
    assert.deepEqual(
      doc.topology.map((layer) => layer.length),
      [1, 1, 1],
    );
    assert.equal(doc.gatewayNodes.length, 1);
    assert.equal(doc.serviceNodes.length, 1);
    assert.equal(doc.storageReplicas.length, 2);
    // §9.5: the v0.0.99 document drops these fields.
    assert.equal(doc.replicaEnvelopeKeys, undefined);
    assert.equal(doc.muMaxDelay, undefined);
    assert.equal(doc.sendRatePerMinute, undefined);
    assert.ok(doc.storageReplicas.every((r) => r.envelopeKeys.size > 0), 'every replica publishes an envelope key');

    assert.equal(c.pkiDocumentForEpoch(doc.epoch), doc);
    assert.equal(c.pkiDocumentForEpoch(BigInt(doc.epoch)), doc);
    assert.equal(c.pkiDocumentForEpoch(doc.epoch + 1000), null);
    assert.throws(() => c.pkiDocumentForEpoch(-1), InvalidArgumentError);

    const raw = await c.getPkiDocumentRaw();
    const epoch = Number(raw.epoch);
    assert.ok(Math.abs(epoch - doc.epoch) <= 1, `raw epoch ${epoch} vs pushed ${doc.epoch}`);
    const cert = decodeCborFaithful(raw.payload) as Record<string, unknown>;
    assert.deepEqual(Object.keys(cert), ['KeyType', 'Version', 'Certified', 'Expiration', 'Signatures'], 'canonical key order');
    assert.equal(cert.KeyType, 'Ed25519');
    assert.equal(Number(cert.Version), 0);
    assert.equal(Number(cert.Expiration), epoch + 5);
    const sigs = cert.Signatures instanceof Map ? [...cert.Signatures.keys()] : Object.keys(cert.Signatures as object);
    assert.equal(sigs.length, 3, 'signed by the three directory authorities');
    const certified = parsePkiDocument(cert.Certified as Buffer);
    assert.equal(certified.epoch, epoch);
    assert.deepEqual(
      certified.storageReplicas.map((r) => r.name),
      doc.storageReplicas.map((r) => r.name),
    );
    const prev = await c.getPkiDocumentRaw(epoch - 1);
    assert.equal(prev.epoch, BigInt(epoch - 1));
    await rejectsWith(c.getPkiDocumentRaw(epoch + 1000), DaemonError, (e) => {
      assert.equal(e.errorCode, 10);
      assert.match(e.message, /get_pki_document failed: Service unavailable/);
    });
  });

  it('getService(), getServices(), getAllCouriers(), getDistinctCouriers(), getCourierDestination()', () => {
    const node = c.pkiDocument()!.serviceNodes[0];
    const echo = c.getService('echo');
    assert.equal(echo.capability, 'echo');
    assert.equal(echo.name, node.name);
    assert.deepEqual(echo.recipientQueueId, Buffer.from('+echo'));
    assert.deepEqual(echo.destinationIdHash, blake2b256(node.identityKey));
    assert.equal(c.getServices('echo').length, 1);
    assert.deepEqual(c.getServices('testdest')[0].recipientQueueId, Buffer.from('+testdest'));
    assert.deepEqual(c.getServices('courier')[0].recipientQueueId, Buffer.from('courier'));
    assert.deepEqual(
      Object.keys(node.kaetzchen ?? {}).sort(),
      ['courier', 'echo', 'http', 'testdest'],
    );
    assert.throws(() => c.getServices('no-such-service'), ServiceNotFoundError);
    assert.throws(() => c.getServices(''), InvalidArgumentError);

    const all = c.getAllCouriers();
    assert.equal(all.length, 1, 'the local network has one service node, so one courier');
    assert.deepEqual(all[0].identityHash, echo.destinationIdHash);
    assert.deepEqual(all[0].queueId, Buffer.from('courier'));
    assert.deepEqual(c.getDistinctCouriers(1), all);
    assert.throws(
      () => c.getDistinctCouriers(2),
      (e: unknown) => e instanceof NotEnoughCouriersError && e.requested === 2 && e.available === 1 && /not enough couriers available/.test(e.message),
    );
    assert.throws(() => c.getDistinctCouriers(0), InvalidArgumentError);
    assert.deepEqual(c.getCourierDestination(), all[0]);
  });

  it('legacy: sendMessage with messageSent then messageReply, sendMessageWithoutReply (silent), blockingSendMessage to echo and testdest', async () => {
    const echo = c.getService('echo');
    const testdest = c.getService('testdest');
    const forward = c.sphinxGeometry().ForwardPayloadLength;
    const paddedEcho = (reply: Buffer, sent: string) => {
      assert.equal(reply.length, forward, 'the reply fills a whole Sphinx payload');
      assert.equal(reply.subarray(0, sent.length).toString(), sent);
      assert.ok(reply.subarray(sent.length).every((b) => b === 0), 'zero padding');
    };
    const quiet = await client();
    const quietEvents: string[] = [];
    quiet.on('event', (e) => {
      if (e.type === 'messageSent' || e.type === 'messageReply') quietEvents.push(e.type);
    });
    await Promise.all([
      (async () => {
        // sendMessage returns once written; the events carry its SURB ID.
        for (let attempt = 1; ; attempt++) {
          const surb = c.newSurbId();
          const order: string[] = [];
          const onEvent = (e: ThinClientEvent) => {
            if ((e.type === 'messageSent' || e.type === 'messageReply') && e.surbId?.equals(surb)) order.push(e.type);
          };
          c.on('event', onEvent);
          const sent = waitFor(c, (e) => e.type === 'messageSent' && !!e.surbId?.equals(surb), MINUTE);
          const reply = waitFor(c, (e) => e.type === 'messageReply' && e.surbId.equals(surb), MINUTE + ECHO_TIMEOUT_MS);
          reply.catch(() => {});
          const t0 = Date.now();
          await c.sendMessage(surb, 'ping', echo.destinationIdHash, echo.recipientQueueId);
          const s = await sent;
          assert.ok(s.type === 'messageSent');
          assert.equal(s.err, null);
          assert.ok(s.replyEtaMs > 0, 'a reply ETA');
          assert.ok(s.sentAt && Math.abs(s.sentAt.getTime() - Date.now()) < MINUTE, 'sent_at is the send time (whole seconds)');
          let r: ThinClientEvent;
          try {
            r = await reply;
          } catch (e) {
            c.off('event', onEvent);
            latency.add('echo reply lost (sendMessage)', Date.now() - t0);
            if (attempt >= ECHO_ATTEMPTS) throw new Error(`no echo reply in ${ECHO_ATTEMPTS} attempts: ${(e as Error).message}`);
            continue;
          }
          latency.add('echo round trip (sendMessage)', Date.now() - t0);
          assert.ok(r.type === 'messageReply');
          assert.equal(r.errorCode, 0);
          paddedEcho(r.payload!, 'ping');
          c.off('event', onEvent);
          assert.deepEqual(order, ['messageSent', 'messageReply']);
          return;
        }
      })(),
      echoRoundTrip(c, echo, 'hello', latency).then((r) => paddedEcho(r, 'hello')),
      echoRoundTrip(c, testdest, 'dest', latency).then((r) => paddedEcho(r, 'dest')),
      (async () => {
        await quiet.sendMessageWithoutReply('quiet', echo.destinationIdHash, echo.recipientQueueId);
        await delay(20_000);
        assert.deepEqual(quietEvents, [], 'without a SURB neither a sent event nor a reply');
      })(),
    ]);
    // Checked locally, nothing sent: the daemon would answer message_sent_event.err "message too large: 2001 > 2000".
    await rejectsWith(c.blockingSendMessage(randomBytes(2001), echo.destinationIdHash, echo.recipientQueueId), InvalidArgumentError, (e) => assert.equal(e.argument, 'payload'));
    await rejectsWith(c.sendMessage(randomBytes(8), 'x', echo.destinationIdHash, echo.recipientQueueId), InvalidArgumentError, (e) => assert.equal(e.argument, 'surbId'));
    await rejectsWith(c.sendMessageWithoutReply('x', randomBytes(31), echo.recipientQueueId), InvalidArgumentError, (e) => assert.equal(e.argument, 'destNode'));
  });

  it('newKeypair(), nextMessageBoxIndex(), getMessageBoxIndexCounter(), encryptWrite(), encryptRead() are local and consistent', async () => {
    const seed = randomBytes(32);
    const [a, b] = await Promise.all([c.newKeypair(seed), c.newKeypair(seed)]);
    assert.deepEqual(a, b, 'the same seed gives the same channel');
    assert.equal(a.writeCap.length, 168);
    assert.equal(a.readCap.length, 136);
    assert.equal(a.firstMessageIndex.length, 104);
    assert.deepEqual(a.readCap, a.writeCap.subarray(32));
    assert.deepEqual(a.firstMessageIndex, a.writeCap.subarray(64));
    assert.notDeepEqual((await c.newKeypair(randomBytes(32))).writeCap, a.writeCap);
    await rejectsWith(c.newKeypair(randomBytes(40)), InvalidArgumentError, (e) => assert.equal(e.argument, 'seed'));

    const c0 = await c.getMessageBoxIndexCounter(a.firstMessageIndex);
    assert.equal(typeof c0, 'bigint');
    assert.ok(c0 > 0n && c0 < 2n ** 63n, `the first counter is random, non-zero, below 2^63 (${c0})`);
    assert.equal(c0, a.firstMessageIndex.readBigUInt64LE(0), 'the counter is the little-endian Idx64 at the start of the index');
    const n1 = await c.nextMessageBoxIndex(a.firstMessageIndex);
    assert.equal(await c.getMessageBoxIndexCounter(n1), c0 + 1n);
    assert.deepEqual(await c.nextMessageBoxIndex(a.firstMessageIndex), n1, 'deterministic');

    const max = c.pigeonholeGeometry().MaxPlaintextPayloadLength;
    const [w1, w2, r1, r2, tomb] = await Promise.all([
      c.encryptWrite(randomBytes(max), a.writeCap, a.firstMessageIndex),
      c.encryptWrite('x', a.writeCap, a.firstMessageIndex),
      c.encryptRead(a.readCap, a.firstMessageIndex),
      c.encryptRead(a.readCap, a.firstMessageIndex),
      c.encryptWrite(Buffer.alloc(0), a.writeCap, a.firstMessageIndex),
    ]);
    for (const e of [w1, w2, r1, r2, tomb]) {
      assert.deepEqual(e.nextMessageBoxIndex, n1);
      assert.equal(e.envelopeHash.length, 32);
      assert.equal(e.messageCiphertext.length, 2000, 'every request is padded to the same size');
      assert.equal(e.envelopeDescriptor.length, 201);
    }
    assert.notDeepEqual(r1.envelopeHash, r2.envelopeHash, 'a fresh envelope hash per call');
    // One byte over MaxPlaintextPayloadLength (1549 here) is refused locally; the daemon would answer 3.
    await rejectsWith(c.encryptWrite(randomBytes(max + 1), a.writeCap, a.firstMessageIndex), InvalidArgumentError, (e) => assert.equal(e.argument, 'plaintext'));
    await rejectsWith(c.encryptRead(a.writeCap, a.firstMessageIndex), InvalidArgumentError, (e) => assert.equal(e.argument, 'readCap'));
    await rejectsWith(c.getMessageBoxIndexCounter(randomBytes(10)), InvalidArgumentError, (e) => assert.equal(e.argument, 'index'));
  });

  it('createCourierEnvelopesFromPayload / FromMultiPayload / FromTombstoneRange and ThinClient.writeCapHash (local)', async () => {
    const d = await c.newKeypair(randomBytes(32));
    const first = await c.getMessageBoxIndexCounter(d.firstMessageIndex);
    const env = await c.createCourierEnvelopesFromPayload(randomBytes(4100), d.writeCap, d.firstMessageIndex, true, true);
    assert.deepEqual(
      env.envelopes.map((e) => e.length),
      [1549, 1549, 1549, 1382],
      '4100 bytes: 3 destination boxes, 4 stream elements',
    );
    assert.equal(env.envelopes[0][0] & 1, 1, 'the first element carries the start flag');
    assert.equal(env.envelopes[3][0] & 2, 2, 'the last element carries the final flag');
    assert.equal(await c.getMessageBoxIndexCounter(env.nextDestIndex), first + 3n);
    const small = await c.createCourierEnvelopesFromPayload(randomBytes(100), d.writeCap, d.firstMessageIndex, true, true);
    assert.deepEqual(
      small.envelopes.map((e) => e.length),
      [1549, 464],
      'even one small box takes two elements',
    );
    const empty = await c.createCourierEnvelopesFromPayload(Buffer.alloc(0), d.writeCap, d.firstMessageIndex, true, true);
    assert.deepEqual(empty.envelopes, [], 'an empty payload gives no elements');

    const d2 = await c.newKeypair(randomBytes(32));
    const m1 = await c.createCourierEnvelopesFromMultiPayload(
      [
        { payload: randomBytes(100), writeCap: d.writeCap, startIndex: d.firstMessageIndex },
        { payload: randomBytes(200), writeCap: d2.writeCap, startIndex: d2.firstMessageIndex },
      ],
      true,
      false,
    );
    assert.ok(m1.buffer, 'is_last=false returns a residual buffer');
    assert.deepEqual(m1.nextDestIndices, [await c.nextMessageBoxIndex(d.firstMessageIndex), await c.nextMessageBoxIndex(d2.firstMessageIndex)]);
    const m2 = await c.createCourierEnvelopesFromMultiPayload([{ payload: randomBytes(100), writeCap: d.writeCap, startIndex: m1.nextDestIndices[0]! }], false, true, m1.buffer);
    assert.equal(m2.buffer, null);
    assert.ok(m2.envelopes.length >= 1);
    assert.ok(m2.envelopes[m2.envelopes.length - 1][0] & 2, 'the final flag on the last element');
    await rejectsWith(c.createCourierEnvelopesFromMultiPayload([], true, true), InvalidArgumentError, (e) => assert.equal(e.argument, 'destinations'));

    const t = await c.createCourierEnvelopesFromTombstoneRange(d.writeCap, d.firstMessageIndex, 2, true, false);
    assert.equal(await c.getMessageBoxIndexCounter(t.nextDestIndex), first + 2n);
    assert.ok(t.buffer);
    const none = await c.createCourierEnvelopesFromTombstoneRange(d.writeCap, d.firstMessageIndex, 0, true, true);
    assert.deepEqual(none.envelopes, []);

    assert.deepEqual(ThinClient.writeCapHash(d.writeCap), blake2b256(d.writeCap));
    assert.equal(ThinClient.writeCapHash(d.writeCap).length, 32);
    assert.throws(() => ThinClient.writeCapHash(d.readCap), InvalidArgumentError);
  });

  it('startResendingEncryptedMessage (write, read), ReturnBoxExists, NoRetry, cancelResendingEncryptedMessage, tombstoneRange, deadlines', async () => {
    await arq();
  });

  it('startResendingCopyCommand (random courier and pinned via courierIdentityHash/courierQueueId) and cancelResendingCopyCommand', async () => {
    await copy();
  });

  it('daemonProtocol(), supports() and getDirectoryAuthorities() (v0.0.99 only)', async () => {
    assert.equal(c.daemonProtocol(), 'current', 'the 25-key reply envelope of v0.0.99');
    for (const m of ['getDirectoryAuthorities', 'voucherMint', 'voucherInduct', 'voucherOpen', 'voucherDeriveStream'] as const) assert.equal(c.supports(m), true, m);
    assert.throws(() => c.supports('startResendingCopyCommand' as never), InvalidArgumentError);
    const auths = await c.getDirectoryAuthorities();
    assert.deepEqual(
      auths.map((a) => a.identifier).sort(),
      ['auth1', 'auth2', 'auth3'],
    );
    for (const a of auths) {
      assert.equal(a.pkiSignatureScheme, 'Ed25519');
      assert.equal(a.wireKemScheme, 'xwing');
      assert.equal(a.addresses.length, 1);
      assert.match(a.addresses[0], /^tcp:\/\/127\.0\.0\.1:\d+$/);
      assert.match(a.identityPublicKeyPem, /-----BEGIN ED25519 PUBLIC KEY-----/);
      assert.match(a.linkPublicKeyPem, /-----BEGIN/);
      assert.equal(a.identityKeyHash.length, 32);
    }
    // Their identity key hashes name the signatures of the signed document.
    const cert = decodeCborFaithful((await c.getPkiDocumentRaw()).payload) as Record<string, unknown>;
    const signers = cert.Signatures instanceof Map ? [...cert.Signatures.keys()].map((k) => Buffer.from(k as Uint8Array).toString('hex')) : Object.keys(cert.Signatures as object);
    assert.deepEqual(signers.sort(), auths.map((a) => a.identityKeyHash.toString('hex')).sort());
  });

  it('Contact Voucher: voucherMint, voucherDeriveStream, voucherInduct, voucherOpen, through a real voucher stream (v0.0.99 only)', async () => {
    await voucher();
  });

  it('ThinClient.fromConfigFile(), ThinClient.firstMessageIndexOf() and the ID helpers', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'kp-thinclient-'));
    try {
      const [host, port] = [daemonAddress().slice(0, daemonAddress().lastIndexOf(':')), daemonAddress().slice(daemonAddress().lastIndexOf(':') + 1)];
      const toml = join(dir, 'thinclient.toml');
      writeFileSync(toml, `[Dial]\n  [Dial.Tcp]\n    Address = "${host}:${port}"\n    Network = "tcp"\n`);
      const f = ThinClient.fromConfigFile(toml, { handshakeTimeoutMs: 40_000 });
      clients.push(f);
      assert.equal(f.address, daemonAddress());
      await f.connect();
      assert.ok(Math.abs(f.pkiDocument()!.epoch - c.pkiDocument()!.epoch) <= 1, 'the same daemon, the same document (give or take an epoch boundary)');
      await f.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const k = await c.newKeypair(randomBytes(32));
    assert.deepEqual(ThinClient.firstMessageIndexOf(k.writeCap), k.firstMessageIndex);
    assert.deepEqual(ThinClient.firstMessageIndexOf(k.readCap), k.firstMessageIndex);
    assert.throws(() => ThinClient.firstMessageIndexOf(k.firstMessageIndex), InvalidArgumentError);
    for (const id of [c.newMessageId(), c.newSurbId(), c.newQueryId()]) assert.equal(id.length, 16);
    assert.notDeepEqual(c.newQueryId(), c.newQueryId());
  });

  it('events(): every event in order as an async iterator; it ends on abort and on close()', async () => {
    await events();
  });

  it('disconnect() keeps the daemon session (connect() resumes it); close() ends it for good', async () => {
    const d = latency.instrument(await connectReal({ requestTimeoutMs: LOCAL_TIMEOUT_MS }));
    clients.push(d);
    const appId = d.appId;
    const ch = await d.newKeypair(randomBytes(32));
    const enc = await d.encryptRead(ch.readCap, ch.firstMessageIndex);
    const blocked = rejectsWith(d.startResendingEncryptedMessage({ readCap: ch.readCap, messageBoxIndex: ch.firstMessageIndex, ...enc }), OperationCancelledError);
    await delay(1000);
    await d.disconnect();
    await blocked;
    assert.equal(d.isDaemonConnected(), false);
    assert.equal(d.isConnected(), false);
    await rejectsWith(d.newKeypair(randomBytes(32)), DaemonDisconnectedError);
    await d.disconnect(); // idempotent

    await d.connect();
    assert.equal(d.resumed, true, 'the same session token within the grace period resumes the session');
    assert.deepEqual(d.appId, appId, 'and re-binds the old app ID');
    assert.equal(d.isDaemonConnected(), true);
    assert.equal(d.isConnected(), true);
    // The read above still runs in the daemon's session; thin_close ends it.
    const token = d.sessionToken;
    await d.close();
    assert.equal(d.isDaemonConnected(), false);
    await rejectsWith(d.newKeypair(randomBytes(32)), DaemonDisconnectedError, (e) => assert.match(e.message, /closed/));
    await rejectsWith(d.connect(), DaemonDisconnectedError);
    await d.close(); // idempotent

    // real: the daemon handles thin_close asynchronously; a connection that presents the token within
    // a few milliseconds still resumes the dying session (which the pending clean-up then destroys).
    await delay(2000);
    const again = new ThinClient({ dial: daemonAddress(), handshakeTimeoutMs: 40_000, sessionToken: token });
    clients.push(again);
    await again.connect();
    assert.equal(again.resumed, false, 'after thin_close the daemon has forgotten the token');
    assert.notDeepEqual(again.appId, appId);
  });
});
