/**
 * PIGEONHOLE.md §4 scenarios S1-S13 against the REAL kpclientd v0.0.99 and
 * a real mixnet (npm run test:mixnet). Where the real network differs from
 * PIGEONHOLE.md or from the emulator (test/emulator/scenarios.test.ts), the
 * real network is right and these tests assert what it does; the comments
 * marked "real:" name each difference.
 *
 * Every scenario runs on its own pair of fresh connections (Alice writes,
 * Bob reads) and fresh random channels, so other users of the network do
 * not matter. The scenarios are independent, so they all start together in
 * `before` and each `it` awaits its own: the daemon's send slots and CTIDH
 * work are the bottleneck, not the round trips of one scenario. Where Bob
 * reads Alice's write, he allows for replication lag the upstream way: a
 * default (blocking) read, or NoRetry polls with a fresh encrypt_read each.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  BACAPDecryptionFailedError,
  BoxAlreadyExistsError,
  BoxIDNotFoundError,
  CopyCommandFailedError,
  DatabaseFailureError,
  InvalidArgumentError,
  isExpectedOutcome,
  MKEMDecryptionFailedError,
  NotEnoughCouriersError,
  StartResendingCancelledError,
  ThinClient,
  ThinClientTimeoutError,
  TombstoneError,
  newSurbId,
  type ServiceDescriptor,
  type ThinClientEvent,
} from '../../src';
import { Peer, rejectsWith } from '../support/peer';
import { Latency } from './latency';
import { RawConnection } from './raw';
import { connectReal } from './support';

const MINUTE = 60_000;
const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** Local calls do CTIDH work in the daemon, served in order per connection: seconds each under load. */
const LOCAL_TIMEOUT_MS = 5 * MINUTE;
/** real: MaxPlaintextPayloadLength is 1549 (PIGEONHOLE §0 and the emulator: 1553), so destination boxes of a copy hold 1545 bytes (docs: 1549). */
const MAX_PLAINTEXT = 1549;
const CHUNK = MAX_PLAINTEXT - 4;
/** Legacy sends have no ARQ; a reply later than ETA + 4.5 s is dropped by the daemon. */
const ECHO_ATTEMPTS = 3;

type Scenario = (alice: Peer, bob: Peer, latency: Latency) => Promise<void>;

/** blockingSendMessage, tried again (up to 3 times) when the reply is lost. */
async function echo(c: ThinClient, service: ServiceDescriptor, payload: string, latency: Latency): Promise<Buffer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await c.blockingSendMessage(payload, service.destinationIdHash, service.recipientQueueId, { timeoutMs: 45_000 });
    } catch (e) {
      if (!(e instanceof ThinClientTimeoutError) || attempt >= ECHO_ATTEMPTS) throw e;
      latency.add('echo reply lost', 45_000);
    }
  }
}

const isTombstone = (o: { error?: Error }) => o.error instanceof TombstoneError;

// ---------------------------------------------------------------- S1-S13
const S1: Scenario = async (alice, _bob, latency) => {
  const c = alice.c;
  const svc = c.getService('echo');
  assert.deepEqual(svc.recipientQueueId, Buffer.from('+echo'));
  const order: string[] = [];
  const rec = (e: ThinClientEvent) => {
    if (e.type === 'messageSent' || e.type === 'messageReply') order.push(e.type);
  };
  c.on('event', rec);
  const reply = await echo(c, svc, 'hello', latency);
  assert.equal(reply.length, c.sphinxGeometry().ForwardPayloadLength, 'a whole Sphinx payload (2574 bytes)');
  assert.deepEqual(reply.subarray(0, 5), Buffer.from('hello'));
  assert.ok(reply.subarray(5).every((b) => b === 0), 'zero padding');
  await delay(100);
  // A lost reply leaves its own sent event: the successful attempt is the last pair.
  assert.deepEqual(order.slice(-2), ['messageSent', 'messageReply']);
  order.length = 0;
  await c.sendMessageWithoutReply(Buffer.from('quiet'), svc.destinationIdHash, svc.recipientQueueId);
  await delay(15_000);
  assert.deepEqual(order, [], 'no events without a SURB');
  c.off('event', rec);
  const testdest = c.getService('testdest');
  assert.deepEqual((await echo(c, testdest, 't', latency)).subarray(0, 2), Buffer.from('t\0'));
  // The offline half of S1 needs the daemon cut off from the mixnet, which this suite may not do
  // to a network others share; the client refuses offline sends by the status it was last given.
  assert.equal(c.isConnected(), true);
};

const S2: Scenario = async (alice) => {
  const seed = randomBytes(32);
  const a = await alice.channel(seed);
  const b = await alice.channel(seed);
  assert.deepEqual(a, b, 'deterministic');
  assert.deepEqual(a.readCap, a.writeCap.subarray(32));
  assert.deepEqual(a.firstMessageIndex, a.writeCap.subarray(64));
  assert.deepEqual(a.firstMessageIndex, a.readCap.subarray(32));
  const c0 = await alice.counter(a.firstMessageIndex);
  assert.notEqual(c0, 0n);
  assert.ok(c0 < 2n ** 63n);
  const n1 = await alice.next(a.firstMessageIndex);
  assert.equal(await alice.counter(n1), c0 + 1n);
  const enc = await alice.c.encryptWrite('m', a.writeCap, a.firstMessageIndex);
  assert.deepEqual(enc.nextMessageBoxIndex, n1);
  const read = await alice.c.encryptRead(a.readCap, a.firstMessageIndex);
  assert.deepEqual(read.nextMessageBoxIndex, n1);
  assert.notDeepEqual((await alice.channel()).writeCap, a.writeCap);
};

const S3: Scenario = async (alice, bob) => {
  const ch = await alice.channel();
  const idx = await alice.indexes(ch.firstMessageIndex, 5);
  const writes = await Promise.all(['m1', 'm2', 'm3'].map((m, i) => alice.write(ch.writeCap, idx[i], m)));
  for (const r of writes) {
    assert.equal(r.plaintext, null);
    assert.equal(r.courierIdentityHash?.length, 32);
  }
  // Bob knows only the read cap (and so the first index).
  const readCap = ch.readCap;
  const first = readCap.subarray(32);
  const bobIdx = await bob.indexes(first, 4);
  const [got, pastEnd] = await Promise.all([
    Promise.all(bobIdx.slice(0, 3).map((i) => bob.read(readCap, i, 'default'))),
    rejectsWith(bob.read(readCap, bobIdx[3]), BoxIDNotFoundError),
  ]);
  assert.deepEqual(
    got.map((b) => b.toString()),
    ['m1', 'm2', 'm3'],
  );
  assert.equal(isExpectedOutcome(pastEnd), true);
  await alice.write(ch.writeCap, idx[3], 'm4');
  const m4 = await bob.poll(readCap, bobIdx[3]);
  assert.equal(m4.plaintext?.toString(), 'm4');
  const r = await bob.next(bobIdx[3]);
  assert.equal((await bob.counter(r)) - (await bob.counter(first)), 4n);
};

const S4: Scenario = async (alice, bob) => {
  const ch = await alice.channel();
  const pending = bob.read(ch.readCap, ch.firstMessageIndex, 'default');
  let settled = false;
  void pending.finally(() => (settled = true)).catch(() => {});
  await delay(5000);
  assert.equal(settled, false, 'still waiting for the box');
  await alice.write(ch.writeCap, ch.firstMessageIndex, 'hi');
  assert.equal((await pending).toString(), 'hi');
};

const S5: Scenario = async (alice, bob) => {
  const ch = await alice.channel();
  const idx = ch.firstMessageIndex;
  await alice.write(ch.writeCap, idx, 'm');
  // Identical content with return-box-exists: idempotent success (and the replica now holds m).
  await alice.write(ch.writeCap, idx, 'm', 'boxExists');
  const r = await alice.write(ch.writeCap, idx, 'm-prime');
  assert.equal(r.plaintext, null, 'a default write of different content reports success');
  const [kept, e] = await Promise.all([
    bob.read(ch.readCap, idx, 'default'),
    rejectsWith(alice.write(ch.writeCap, idx, 'm-prime', 'boxExists'), BoxAlreadyExistsError),
  ]);
  assert.equal(kept.toString(), 'm', 'but the box keeps its content');
  assert.equal(e.errorCode, 10);
  assert.equal(isExpectedOutcome(e), true);
  await alice.write(ch.writeCap, await alice.next(idx), 'fresh', 'boxExists');
};

const S6: Scenario = async (alice, bob) => {
  const ch = await alice.channel();
  const idx = ch.firstMessageIndex;
  const unwritten = await alice.indexAt(idx, 5);
  const preDelete = (async () => {
    // Tombstoning a box that was never written pre-deletes it.
    const pre = (await alice.c.tombstoneRange(ch.writeCap, unwritten, 1)).envelopes[0];
    await alice.c.startResendingEncryptedMessage({ writeCap: ch.writeCap, envelopeDescriptor: pre.envelopeDescriptor, messageCiphertext: pre.messageCiphertext, envelopeHash: pre.envelopeHash });
    await bob.poll(ch.readCap, unwritten, isTombstone);
  })();
  await alice.write(ch.writeCap, idx, 'm');
  assert.equal((await bob.read(ch.readCap, idx, 'default')).toString(), 'm');
  const tr = await alice.c.tombstoneRange(ch.writeCap, idx, 1);
  assert.equal(tr.envelopes.length, 1);
  assert.deepEqual(tr.envelopes[0].boxIndex, idx);
  assert.deepEqual(tr.next, await alice.next(idx));
  const t = tr.envelopes[0];
  await alice.c.startResendingEncryptedMessage({ writeCap: ch.writeCap, envelopeDescriptor: t.envelopeDescriptor, messageCiphertext: t.messageCiphertext, envelopeHash: t.envelopeHash });
  // Bob polls with fresh reads: m until the tombstone has replicated, then TombstoneError.
  const te = await bob.poll(ch.readCap, idx, (o) => {
    if (o.plaintext) assert.equal(o.plaintext.toString(), 'm');
    return isTombstone(o);
  });
  assert.equal(isExpectedOutcome(te.error), true);
  await Promise.all([
    rejectsWith(bob.read(ch.readCap, idx, 'default'), TombstoneError), // a default read does not wait past a tombstone
    rejectsWith(alice.write(ch.writeCap, idx, 'm2', 'boxExists'), BoxAlreadyExistsError, (e) => assert.equal(e.errorCode, 10)),
    preDelete,
  ]);
  assert.deepEqual(await alice.c.tombstoneRange(ch.writeCap, idx, 0), { envelopes: [], next: idx });
};

const S7: Scenario = async (alice, bob) => {
  const ch = await alice.channel();
  const max = alice.c.pigeonholeGeometry().MaxPlaintextPayloadLength;
  assert.equal(max, MAX_PLAINTEXT, 'real: 1549, not the documented 1553');
  const full = randomBytes(max);
  await alice.write(ch.writeCap, ch.firstMessageIndex, full);
  assert.deepEqual(await bob.read(ch.readCap, ch.firstMessageIndex, 'default'), full);
  // The client refuses over-size plaintexts locally ...
  await rejectsWith(alice.c.encryptWrite(randomBytes(max + 1), ch.writeCap, ch.firstMessageIndex), InvalidArgumentError, (e) => assert.equal(e.argument, 'plaintext'));
  const tomb = await alice.c.encryptWrite(Buffer.alloc(0), ch.writeCap, await alice.next(ch.firstMessageIndex));
  assert.equal(tomb.envelopeHash.length, 32, 'an empty plaintext is a tombstone envelope');
  const svc = alice.c.getService('echo');
  await rejectsWith(alice.c.blockingSendMessage(randomBytes(2001), svc.destinationIdHash, svc.recipientQueueId), InvalidArgumentError);
  // ... and here is what the daemon itself answers when they are sent anyway.
  const raw = await RawConnection.open();
  try {
    for (const n of [max + 1, 1553, 1554]) {
      const r = await raw.request('encrypt_write', { plaintext: randomBytes(n), write_cap: ch.writeCap, message_box_index: ch.firstMessageIndex }, LOCAL_TIMEOUT_MS);
      assert.equal(r.error_code, 3, `a ${n}-byte plaintext: InvalidRequest`);
    }
    const surb = newSurbId();
    raw.send('send_message', { id: null, with_surb: true, surbid: surb, destination_id_hash: svc.destinationIdHash, recipient_queue_id: svc.recipientQueueId, payload: randomBytes(2001) });
    const sent = await raw.next((f) => f.kind === 'message_sent_event' && Buffer.isBuffer(f.body.surbid) && f.body.surbid.equals(surb), MINUTE);
    assert.equal(sent.body.err, 'message too large: 2001 > 2000');
    await delay(15_000);
    assert.equal(raw.frames.filter((f) => f.kind === 'message_reply_event').length, 0, 'and no reply ever comes');
  } finally {
    await raw.close();
  }
};

const S8: Scenario = async (alice, bob) => {
  const dest = await alice.channel();
  const body = randomBytes(4096);
  const payload = Buffer.concat([Buffer.alloc(4), body]);
  payload.writeUInt32BE(body.length, 0);
  const env = await alice.c.createCourierEnvelopesFromPayload(payload, dest.writeCap, dest.firstMessageIndex, true, true);
  assert.equal(env.envelopes.length, 4);
  // Temp boxes written at once, then the propagation gate (a default read of the last one), then the copy.
  await alice.copy(env.envelopes, { concurrent: true, gate: true });
  const didx = await bob.indexes(dest.firstMessageIndex, 4);
  const boxes = await Promise.all(didx.slice(0, 3).map((i) => bob.read(dest.readCap, i, 'default')));
  assert.deepEqual(
    boxes.map((b) => b.length),
    [CHUNK, CHUNK, 4100 - 2 * CHUNK],
    'real: 1545, 1545, 1010 (docs and emulator: 1549, 1549, 1002)',
  );
  const joined = Buffer.concat(boxes);
  assert.deepEqual(joined, payload);
  assert.equal(joined.readUInt32BE(0), 4096);
  await rejectsWith(bob.read(dest.readCap, didx[3]), BoxIDNotFoundError);
  assert.equal(await alice.counter(env.nextDestIndex), (await alice.counter(dest.firstMessageIndex)) + 3n);
};

const S9: Scenario = async (alice, bob) => {
  const [ch1, ch2, c1, c2] = await Promise.all([alice.channel(), alice.channel(), alice.channel(), alice.channel()]);
  await Promise.all([
    (async () => {
      const p1 = randomBytes(700);
      const p2 = randomBytes(300);
      const m = await alice.c.createCourierEnvelopesFromMultiPayload(
        [
          { payload: p1, writeCap: ch1.writeCap, startIndex: ch1.firstMessageIndex },
          { payload: p2, writeCap: ch2.writeCap, startIndex: ch2.firstMessageIndex },
        ],
        true,
        true,
      );
      assert.equal(m.buffer, null);
      await alice.copy(m.envelopes, { concurrent: true });
      const [r1, r2] = await Promise.all([bob.read(ch1.readCap, ch1.firstMessageIndex, 'default'), bob.read(ch2.readCap, ch2.firstMessageIndex, 'default')]);
      assert.deepEqual(r1, p1);
      assert.deepEqual(r2, p2);
    })(),
    (async () => {
      const [p1a, p2a, p1b, p2b] = [randomBytes(100), randomBytes(200), randomBytes(300), randomBytes(400)];
      const first = await alice.c.createCourierEnvelopesFromMultiPayload(
        [
          { payload: p1a, writeCap: c1.writeCap, startIndex: c1.firstMessageIndex },
          { payload: p2a, writeCap: c2.writeCap, startIndex: c2.firstMessageIndex },
        ],
        true,
        false,
      );
      assert.ok(first.buffer, 'is_last=false returns a residual buffer');
      const second = await alice.c.createCourierEnvelopesFromMultiPayload(
        [
          { payload: p1b, writeCap: c1.writeCap, startIndex: first.nextDestIndices[0]! },
          { payload: p2b, writeCap: c2.writeCap, startIndex: first.nextDestIndices[1]! },
        ],
        false,
        true,
        first.buffer,
      );
      await alice.copy([...first.envelopes, ...second.envelopes], { concurrent: true });
      const [b1, b2] = await Promise.all([
        bob.readMany(c1.readCap, c1.firstMessageIndex, 2, { variant: 'default', concurrent: true }),
        bob.readMany(c2.readCap, c2.firstMessageIndex, 2, { variant: 'default', concurrent: true }),
      ]);
      assert.deepEqual(b1, [p1a, p1b]);
      assert.deepEqual(b2, [p2a, p2b]);
      assert.deepEqual(second.nextDestIndices[0], await alice.indexAt(c1.firstMessageIndex, 2));
      assert.deepEqual(second.nextDestIndices[1], await alice.indexAt(c2.firstMessageIndex, 2));
    })(),
  ]);
};

const S10: Scenario = async (alice, bob, latency) => {
  await Promise.all([
    // A copy whose first envelope targets an occupied box: (10, 1); the same temp cap again: the cached verdict.
    (async () => {
      const dest = await alice.channel();
      await alice.write(dest.writeCap, dest.firstMessageIndex, 'already here', 'boxExists');
      const env = await alice.c.createCourierEnvelopesFromPayload(randomBytes(200), dest.writeCap, dest.firstMessageIndex, true, true);
      const temp = await alice.channel();
      const e1 = await rejectsWith(alice.copy(env.envelopes, { temp, concurrent: true }), CopyCommandFailedError);
      assert.equal(e1.errorCode, 26);
      assert.deepEqual([e1.replicaErrorCode, e1.failedEnvelopeIndex], [10, 1]);
      const t1 = Date.now();
      const e2 = await rejectsWith(alice.c.startResendingCopyCommand(temp.writeCap), CopyCommandFailedError);
      latency.add('copy command (cached verdict)', Date.now() - t1);
      assert.deepEqual([e2.replicaErrorCode, e2.failedEnvelopeIndex], [10, 1], 'the cached verdict');
      assert.equal((await bob.read(dest.readCap, dest.firstMessageIndex, 'default')).toString(), 'already here');
    })(),
    // A stream cut short fails (temp box missing), and the cached verdict hides a later repair.
    (async () => {
      const d2 = await alice.channel();
      const els = (await alice.c.createCourierEnvelopesFromPayload(randomBytes(3000), d2.writeCap, d2.firstMessageIndex, true, true)).envelopes;
      assert.equal(els.length, 3);
      const cut = await alice.channel();
      const last = await alice.writeMany(cut.writeCap, cut.firstMessageIndex, els.slice(0, -1), { concurrent: true });
      // real: the courier retries the missing temp box (10 times per shard replica, backoff up to 10 s) before it fails.
      const missing = await rejectsWith(alice.c.startResendingCopyCommand(cut.writeCap), CopyCommandFailedError);
      // Envelope 1 (destination box 1) was complete and written; envelope 2 needed the missing third element.
      assert.deepEqual([missing.replicaErrorCode, missing.failedEnvelopeIndex], [1, 2], 'BoxIDNotFound at envelope 2');
      await alice.write(cut.writeCap, last, els[els.length - 1]);
      const still = await rejectsWith(alice.c.startResendingCopyCommand(cut.writeCap), CopyCommandFailedError);
      assert.deepEqual([still.replicaErrorCode, still.failedEnvelopeIndex], [missing.replicaErrorCode, missing.failedEnvelopeIndex]);
      await alice.copy(els, { concurrent: true });
      assert.equal((await bob.readMany(d2.readCap, d2.firstMessageIndex, 2, { variant: 'default', concurrent: true })).length, 2, 'a new temp channel succeeds');
    })(),
    // First envelope to a free box X, second to an occupied box Y: (10, 2), and X stays written.
    (async () => {
      const [x, y] = await Promise.all([alice.channel(), alice.channel()]);
      await alice.write(y.writeCap, y.firstMessageIndex, 'occupied', 'boxExists');
      const px = randomBytes(50);
      const xy = await alice.c.createCourierEnvelopesFromMultiPayload(
        [
          { payload: px, writeCap: x.writeCap, startIndex: x.firstMessageIndex },
          { payload: randomBytes(50), writeCap: y.writeCap, startIndex: y.firstMessageIndex },
        ],
        true,
        true,
      );
      const e3 = await rejectsWith(alice.copy(xy.envelopes, { concurrent: true }), CopyCommandFailedError);
      assert.deepEqual([e3.replicaErrorCode, e3.failedEnvelopeIndex], [10, 2]);
      const [rx, ry] = await Promise.all([bob.read(x.readCap, x.firstMessageIndex, 'default'), bob.read(y.readCap, y.firstMessageIndex, 'default')]);
      assert.deepEqual(rx, px, 'partial writes stay');
      assert.equal(ry.toString(), 'occupied');
    })(),
  ]);
};

const S11: Scenario = async (alice, bob) => {
  const ch = await alice.channel();
  const [idx1, idx2, idx3] = await alice.indexes(ch.firstMessageIndex, 3);
  await Promise.all([alice.write(ch.writeCap, idx1, 'old 1', 'boxExists'), alice.write(ch.writeCap, idx2, 'old 2', 'boxExists')]);
  const tomb = await alice.c.createCourierEnvelopesFromTombstoneRange(ch.writeCap, idx1, 2, true, false);
  assert.deepEqual(tomb.nextDestIndex, idx3);
  assert.ok(tomb.buffer);
  const fresh = randomBytes(2000);
  const multi = await alice.c.createCourierEnvelopesFromMultiPayload([{ payload: fresh, writeCap: ch.writeCap, startIndex: idx3 }], false, true, tomb.buffer);
  await alice.copy([...tomb.envelopes, ...multi.envelopes], { concurrent: true });
  const [, , after] = await Promise.all([
    bob.poll(ch.readCap, idx1, isTombstone),
    bob.poll(ch.readCap, idx2, isTombstone),
    bob.readMany(ch.readCap, idx3, 2, { variant: 'default', concurrent: true }),
  ]);
  assert.deepEqual(
    after.map((b) => b.length),
    [CHUNK, 2000 - CHUNK],
  );
  assert.deepEqual(Buffer.concat(after), fresh);
};

const S12: Scenario = async (alice, bob) => {
  const ch = await alice.channel();
  await Promise.all([
    // A blocked default read, cancelled from another task after 3 s.
    (async () => {
      const enc = await bob.c.encryptRead(ch.readCap, ch.firstMessageIndex);
      const blocked = bob.c.startResendingEncryptedMessage({
        readCap: ch.readCap,
        messageBoxIndex: ch.firstMessageIndex,
        replyIndex: 0,
        envelopeDescriptor: enc.envelopeDescriptor,
        messageCiphertext: enc.messageCiphertext,
        envelopeHash: enc.envelopeHash,
      });
      const caught = rejectsWith(blocked, StartResendingCancelledError, (e) => assert.equal(e.errorCode, 24));
      await delay(3000);
      await bob.c.cancelResendingEncryptedMessage(enc.envelopeHash);
      await caught;
      await bob.c.cancelResendingEncryptedMessage(enc.envelopeHash);
    })(),
    // Copy cancel: a copy of an unwritten temp stream keeps trying until cancelled.
    (async () => {
      const temp = await alice.channel();
      const copying = rejectsWith(alice.c.startResendingCopyCommand(temp.writeCap), StartResendingCancelledError, (e) => assert.equal(e.errorCode, 24));
      await delay(3000);
      await alice.c.cancelResendingCopyCommand(ThinClient.writeCapHash(temp.writeCap));
      await copying;
    })(),
  ]);

  // Wrong inputs on an existing box (Bob first waits until Alice's write is readable).
  const [carol] = await Promise.all([bob.channel(), alice.write(ch.writeCap, ch.firstMessageIndex, 'for bob')]);
  assert.equal((await bob.read(ch.readCap, ch.firstMessageIndex, 'default')).toString(), 'for bob');
  const other = await bob.next(ch.firstMessageIndex);
  const [e1, e2, e3] = await Promise.all([
    bob.c.encryptRead(ch.readCap, ch.firstMessageIndex),
    bob.c.encryptRead(ch.readCap, ch.firstMessageIndex),
    bob.c.encryptRead(ch.readCap, ch.firstMessageIndex),
  ]);
  await Promise.all([
    // Carol's read cap at Alice's index names another box: not found.
    rejectsWith(bob.read(carol.readCap, ch.firstMessageIndex), BoxIDNotFoundError),
    // The index given to start_resending differs from the one given to encrypt_read.
    rejectsWith(
      bob.c.startResendingEncryptedMessageNoRetry({ readCap: ch.readCap, messageBoxIndex: other, envelopeDescriptor: e1.envelopeDescriptor, messageCiphertext: e1.messageCiphertext, envelopeHash: e1.envelopeHash }),
      BACAPDecryptionFailedError,
      (e) => assert.equal(e.errorCode, 23),
    ),
    // The descriptor of another encrypt call.
    rejectsWith(
      bob.c.startResendingEncryptedMessageNoRetry({ readCap: ch.readCap, messageBoxIndex: ch.firstMessageIndex, envelopeDescriptor: e3.envelopeDescriptor, messageCiphertext: e2.messageCiphertext, envelopeHash: e2.envelopeHash }),
      MKEMDecryptionFailedError,
      (e) => assert.equal(e.errorCode, 22),
    ),
  ]);
};

const S13: Scenario = async (alice, bob) => {
  // real: the local network has one service node, so one courier; PIGEONHOLE's two distinct couriers are impossible.
  const all = alice.c.getAllCouriers();
  assert.equal(all.length, 1);
  assert.throws(
    () => alice.c.getDistinctCouriers(2),
    (e: unknown) => e instanceof NotEnoughCouriersError && e.requested === 2 && e.available === 1 && /not enough couriers available/.test(e.message),
  );
  const [a] = alice.c.getDistinctCouriers(1);
  assert.deepEqual(a, all[0]);
  const pinned = { courierIdentityHash: a.identityHash, courierQueueId: a.queueId };
  await Promise.all([
    // The two-layer recipe of §1.10, both layers pinned to the one courier.
    (async () => {
      const payload = randomBytes(2500);
      const d = await alice.channel();
      const inner = await alice.c.createCourierEnvelopesFromPayload(payload, d.writeCap, d.firstMessageIndex, true, true);
      const blob = Buffer.concat(inner.envelopes);
      const i = await alice.channel();
      const outer = await alice.c.createCourierEnvelopesFromPayload(blob, i.writeCap, i.firstMessageIndex, true, true);
      await alice.copy(outer.envelopes, { concurrent: true, ...pinned });
      // Channel I now holds the inner stream's bytes in 1545-byte pieces.
      const iBoxes = await bob.readMany(i.readCap, i.firstMessageIndex, Math.ceil(blob.length / CHUNK), { variant: 'default', concurrent: true });
      assert.deepEqual(Buffer.concat(iBoxes), blob);
      await alice.c.startResendingCopyCommand(i.writeCap, pinned);
      const boxes = await bob.readMany(d.readCap, d.firstMessageIndex, 2, { variant: 'default', concurrent: true });
      assert.deepEqual(Buffer.concat(boxes), payload);
    })(),
    // Pinning a courier that is not in the document is an internal error (4) at the daemon.
    (async () => {
      const t = await alice.channel();
      await rejectsWith(alice.c.startResendingCopyCommand(t.writeCap, { courierIdentityHash: randomBytes(32), courierQueueId: Buffer.from('courier') }), DatabaseFailureError, (e) =>
        assert.equal(e.errorCode, 4),
      );
    })(),
  ]);
};

const SCENARIOS: [string, Scenario][] = [
  ['S1: echo ping — sent event then a zero-padded 2574-byte reply; no events without a SURB; testdest echoes too', S1],
  ['S2: channel basics and index maths, all local', S2],
  ['S3: ordered conversation, polling past the end, index advanced by exactly 4', S3],
  ['S4: a default read blocks until the box is written, with no sleep on the reader side', S4],
  ['S5: duplicate writes — identical is idempotent, different is ignored or BoxAlreadyExists', S5],
  ['S6: tombstone lifecycle, including a tombstone of a never-written box', S6],
  ['S7: size limits — 1549 bytes per box (not 1553); what the daemon answers to over-size requests', S7],
  ['S8: a 4100-byte payload through one copy command lands in boxes of 1545, 1545 and 1010 bytes', S8],
  ['S9: several destinations in one copy, and across calls with the buffer', S9],
  ['S10: copy conflicts report (replica code, envelope position); verdicts are cached; partial writes stay', S10],
  ['S11: atomic retire-and-replace through one copy stream', S11],
  ['S12: cancel from another task (read and copy), and wrong inputs', S12],
  ['S13: one courier only — getDistinctCouriers(2) fails; the nested copy runs twice through that courier', S13],
];

describe('Pigeonhole scenarios S1-S13 against the real kpclientd v0.0.99', function () {
  // Every scenario starts in `before`, so each test's time counts from there.
  this.timeout(45 * MINUTE);
  const latency = new Latency();
  const clients: ThinClient[] = [];
  const running = new Map<string, () => Promise<void>>();

  before(async function () {
    this.timeout(5 * MINUTE);
    const connect = async () => {
      const c = latency.instrument(await connectReal({ requestTimeoutMs: LOCAL_TIMEOUT_MS }));
      clients.push(c);
      return new Peer(c);
    };
    for (const [name, run] of SCENARIOS) {
      const [alice, bob] = await Promise.all([connect(), connect()]);
      const outcome = run(alice, bob, latency).then(
        () => ({ ok: true as const }),
        (error: unknown) => ({ ok: false as const, error }),
      );
      running.set(name, async () => {
        const o = await outcome;
        if (!o.ok) throw o.error;
      });
    }
  });

  after(async function () {
    this.timeout(2 * MINUTE);
    // Closing rejects whatever still waits (a scenario whose test timed out), so nothing outlives the suite.
    for (const c of clients.splice(0)) await c.close();
    await Promise.allSettled([...running.values()].map((f) => f()));
    console.log(latency.report('scenarios.test.ts'));
  });

  for (const [name] of SCENARIOS) {
    it(name, async () => {
      const wait = running.get(name);
      assert.ok(wait, 'the scenario was started');
      await wait();
    });
  }
});
