/**
 * The client library against the real emulator (src/emulator), over TCP and
 * over a Unix socket: every public method, reconnect with replay after a
 * daemon restart, session resume, malformed and oversize frames,
 * cancellation, offline mode, events and shutdown.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { ThinClient } from '../../src/client/client';
import type { EncryptResult } from '../../src/client/client';
import {
  BoxAlreadyExistsError,
  BoxIDNotFoundError,
  CborError,
  DaemonDisconnectedError,
  DaemonError,
  InvalidArgumentError,
  NotEnoughCouriersError,
  OperationCancelledError,
  ProtocolError,
  StartResendingCancelledError,
  ThinClientOfflineError,
  TombstoneError,
  isExpectedOutcome,
} from '../../src/client/errors';
import type {
  DaemonDisconnectedEvent,
  DaemonReconnectedEvent,
  ThinClientEvent,
} from '../../src/client/events';
import { startEmulator } from '../../src/emulator';
import type { Emulator } from '../../src/emulator';
import { TcpProxy, sleep, tempSocketPath, waitFor } from './helpers';

const rejectionOf = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e as Error,
  );

function nextEvent<K extends ThinClientEvent['type']>(c: ThinClient, type: K, ms = 10_000): Promise<Extract<ThinClientEvent, { type: K }>> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${type} event within ${ms} ms`)), ms);
    const onEvent = (e: ThinClientEvent) => {
      if (e.type !== type) return;
      clearTimeout(t);
      c.off('event', onEvent);
      resolve(e as Extract<ThinClientEvent, { type: K }>);
    };
    c.on('event', onEvent);
  });
}

/** Encrypt and send one box write; returns the index after it. */
async function writeBox(c: ThinClient, writeCap: Buffer, idx: Buffer, data: Buffer | string): Promise<Buffer> {
  const enc = await c.encryptWrite(data, writeCap, idx);
  const r = await c.startResendingEncryptedMessage({
    writeCap,
    envelopeDescriptor: enc.envelopeDescriptor,
    messageCiphertext: enc.messageCiphertext,
    envelopeHash: enc.envelopeHash,
  });
  assert.equal(r.plaintext, null);
  return enc.nextMessageBoxIndex;
}

function readParams(readCap: Buffer, idx: Buffer, enc: EncryptResult) {
  return {
    readCap,
    messageBoxIndex: idx,
    envelopeDescriptor: enc.envelopeDescriptor,
    messageCiphertext: enc.messageCiphertext,
    envelopeHash: enc.envelopeHash,
  };
}

async function readBox(c: ThinClient, readCap: Buffer, idx: Buffer): Promise<Buffer> {
  const enc = await c.encryptRead(readCap, idx);
  const r = await c.startResendingEncryptedMessage(readParams(readCap, idx, enc));
  assert.ok(r.plaintext, 'a read returns a plaintext');
  return r.plaintext;
}

for (const transport of ['tcp', 'unix'] as const) {
  describe(`integration with the emulator over ${transport}`, function () {
    this.timeout(30_000);
    let emulator: Emulator;
    let client: ThinClient;
    let logs: string[];
    let socketDir: { path: string; cleanup: () => void } | null = null;
    const others: ThinClient[] = [];

    /** Request kinds the emulator received, from its per-request log lines. */
    const received = (kind: string) => logs.filter((l) => new RegExp(`^conn \\d+: ${kind}$`).test(l)).length;

    beforeEach(async () => {
      logs = [];
      socketDir = transport === 'unix' ? tempSocketPath() : null;
      emulator = await startEmulator({ listen: socketDir ? socketDir.path : '127.0.0.1:0', latency: 'fast', log: (l) => logs.push(l) });
      client = new ThinClient({ dial: emulator.address, reconnectInitialDelayMs: 20, reconnectMaxDelayMs: 200 });
      await client.connect();
    });

    afterEach(async () => {
      await client.close();
      for (const c of others.splice(0)) await c.close();
      await emulator.stop({ graceful: false });
      socketDir?.cleanup();
    });

    it('connects and exposes tokens, geometry, PKI document, services and couriers', async () => {
      assert.equal(client.isDaemonConnected(), true);
      assert.equal(client.isConnected(), true);
      assert.deepEqual(client.instanceToken, emulator.instanceToken);
      assert.equal(client.appId?.length, 16);
      assert.equal(client.resumed, false);
      assert.equal(client.sessionToken.length, 16);
      assert.equal(client.sphinxGeometry().UserForwardPayloadLength, 2000);
      assert.equal(client.pigeonholeGeometry().MaxPlaintextPayloadLength, 1553);
      const doc = client.pkiDocument();
      assert.ok(doc);
      assert.equal(doc.epoch, emulator.epoch);
      assert.equal(client.pkiDocumentForEpoch(doc.epoch), doc);
      assert.ok(doc.storageReplicas.length >= 2);
      assert.equal(client.getServices('echo').length, 3);
      assert.deepEqual(client.getService('echo').recipientQueueId, Buffer.from('+echo'));
      assert.equal(client.getServices('testdest').length, 3);
      const couriers = client.getAllCouriers();
      const hex = (l: { identityHash: Buffer; queueId: Buffer }[]) => l.map((x) => x.identityHash.toString('hex') + x.queueId.toString('hex')).sort();
      assert.deepEqual(hex(couriers), hex(emulator.couriers()));
      const two = client.getDistinctCouriers(2);
      assert.notDeepEqual(two[0].identityHash, two[1].identityHash);
      assert.throws(() => client.getDistinctCouriers(4), NotEnoughCouriersError);
      assert.ok(hex(couriers).includes(hex([client.getCourierDestination()])[0]));
      const raw = await client.getPkiDocumentRaw();
      assert.equal(raw.epoch, BigInt(doc.epoch));
      assert.ok(raw.payload.length > 0);
      const same = await client.getPkiDocumentRaw(doc.epoch);
      assert.deepEqual(same.payload, raw.payload);
      const err = await rejectionOf(client.getPkiDocumentRaw(doc.epoch + 1000));
      assert.ok(err instanceof DaemonError && err.errorCode === 10 && err.operation === 'get_pki_document');
      assert.equal(client.newQueryId().length, 16);
      assert.equal(client.newSurbId().length, 16);
      assert.equal(client.newMessageId().length, 16);
    });

    it('keypairs, indexes, a write and a read, the no-retry and return-box-exists variants, tombstones', async () => {
      const seed = randomBytes(32);
      const kp = await client.newKeypair(seed);
      const again = await client.newKeypair(seed);
      assert.deepEqual(again, kp, 'deterministic');
      assert.equal(kp.writeCap.length, 168);
      assert.deepEqual(kp.readCap, kp.writeCap.subarray(32));
      assert.deepEqual(kp.firstMessageIndex, kp.writeCap.subarray(64));
      const counter = await client.getMessageBoxIndexCounter(kp.firstMessageIndex);
      assert.equal(typeof counter, 'bigint');
      assert.ok(counter > 0n);
      const idx1 = await client.nextMessageBoxIndex(kp.firstMessageIndex);
      assert.equal(await client.getMessageBoxIndexCounter(idx1), counter + 1n);

      const next = await writeBox(client, kp.writeCap, kp.firstMessageIndex, 'hello pigeonhole');
      assert.deepEqual(next, idx1);
      assert.equal((await readBox(client, kp.readCap, kp.firstMessageIndex)).toString(), 'hello pigeonhole');

      // Polling an unwritten box: BoxIDNotFound at once, an expected outcome.
      const encRead = await client.encryptRead(kp.readCap, idx1);
      const notFound = await rejectionOf(client.startResendingEncryptedMessageNoRetry(readParams(kp.readCap, idx1, encRead)));
      assert.ok(notFound instanceof BoxIDNotFoundError);
      assert.ok(isExpectedOutcome(notFound));

      // A different write to an existing box, on the variant that asks.
      const clash = await client.encryptWrite('other content', kp.writeCap, kp.firstMessageIndex);
      const exists = await rejectionOf(
        client.startResendingEncryptedMessageReturnBoxExists({
          writeCap: kp.writeCap,
          envelopeDescriptor: clash.envelopeDescriptor,
          messageCiphertext: clash.messageCiphertext,
          envelopeHash: clash.envelopeHash,
        }),
      );
      assert.ok(exists instanceof BoxAlreadyExistsError);

      // Tombstone the written box; reading it then reports Tombstone.
      const t = await client.tombstoneRange(kp.writeCap, kp.firstMessageIndex, 1);
      assert.equal(t.envelopes.length, 1);
      assert.deepEqual(t.envelopes[0].boxIndex, kp.firstMessageIndex);
      assert.deepEqual(t.next, idx1);
      await client.startResendingEncryptedMessage({ writeCap: kp.writeCap, ...t.envelopes[0] });
      const tombRead = await client.encryptRead(kp.readCap, kp.firstMessageIndex);
      const tomb = await rejectionOf(client.startResendingEncryptedMessage(readParams(kp.readCap, kp.firstMessageIndex, tombRead)));
      assert.ok(tomb instanceof TombstoneError);
      const none = await client.tombstoneRange(kp.writeCap, idx1, 0);
      assert.deepEqual(none, { envelopes: [], next: idx1 });
    });

    it('copies a 4100-byte payload through a temporary stream, pinned to a courier (§1.8)', async () => {
      const dest = await client.newKeypair(randomBytes(32));
      const temp = await client.newKeypair(randomBytes(32));
      const payload = randomBytes(4100);
      const { envelopes, nextDestIndex } = await client.createCourierEnvelopesFromPayload(payload, dest.writeCap, dest.firstMessageIndex, true, true);
      assert.equal(envelopes.length, 4);
      let t = temp.firstMessageIndex;
      for (const element of envelopes) t = await writeBox(client, temp.writeCap, t, element);
      const [courier] = client.getDistinctCouriers(1);
      await client.startResendingCopyCommand(temp.writeCap, { courierIdentityHash: courier.identityHash, courierQueueId: courier.queueId });
      const parts: Buffer[] = [];
      let idx = dest.firstMessageIndex;
      for (let i = 0; i < 3; i++) {
        parts.push(await readBox(client, dest.readCap, idx));
        idx = await client.nextMessageBoxIndex(idx);
      }
      assert.deepEqual(
        parts.map((p) => p.length),
        [1549, 1549, 1002],
      );
      assert.deepEqual(Buffer.concat(parts), payload);
      assert.deepEqual(idx, nextDestIndex);
    });

    it('packs several destinations and tombstones into one copy stream (§1.9)', async () => {
      const a = await client.newKeypair(randomBytes(32));
      const b = await client.newKeypair(randomBytes(32));
      const temp = await client.newKeypair(randomBytes(32));
      const tomb = await client.createCourierEnvelopesFromTombstoneRange(a.writeCap, a.firstMessageIndex, 1, true, false);
      assert.ok(tomb.buffer && tomb.buffer.length > 0, 'a residual buffer when not last');
      const aNext = tomb.nextDestIndex;
      const multi = await client.createCourierEnvelopesFromMultiPayload(
        [
          { payload: 'for a', writeCap: a.writeCap, startIndex: aNext },
          { payload: Buffer.from('for b'), writeCap: b.writeCap, startIndex: b.firstMessageIndex },
        ],
        false,
        true,
        tomb.buffer,
      );
      assert.equal(multi.nextDestIndices.length, 2);
      let t = temp.firstMessageIndex;
      for (const element of [...tomb.envelopes, ...multi.envelopes]) t = await writeBox(client, temp.writeCap, t, element);
      await client.startResendingCopyCommand(temp.writeCap);
      assert.equal((await readBox(client, a.readCap, aNext)).toString(), 'for a');
      assert.equal((await readBox(client, b.readCap, b.firstMessageIndex)).toString(), 'for b');
      const enc = await client.encryptRead(a.readCap, a.firstMessageIndex);
      assert.ok((await rejectionOf(client.startResendingEncryptedMessage(readParams(a.readCap, a.firstMessageIndex, enc)))) instanceof TombstoneError);
    });

    it('legacy sends: sendMessage with its events, sendMessageWithoutReply, blockingSendMessage', async () => {
      const echo = client.getService('echo');
      const surbId = client.newSurbId();
      const sent = nextEvent(client, 'messageSent');
      const reply = nextEvent(client, 'messageReply');
      await client.sendMessage(surbId, 'ping', echo.destinationIdHash, echo.recipientQueueId);
      const s = await sent;
      assert.deepEqual(s.surbId, surbId);
      assert.equal(s.err, null);
      assert.ok(s.sentAt instanceof Date);
      const r = await reply;
      assert.deepEqual(r.surbId, surbId);
      assert.equal(r.errorCode, 0);
      assert.equal(r.payload?.length, client.sphinxGeometry().ForwardPayloadLength, 'zero-padded echo (§10.4)');
      assert.equal(r.payload?.subarray(0, 4).toString(), 'ping');
      await client.sendMessageWithoutReply('silent', echo.destinationIdHash, echo.recipientQueueId);
      const pong = await client.blockingSendMessage(Buffer.from('marco'), echo.destinationIdHash, echo.recipientQueueId, { timeoutMs: 5000 });
      assert.equal(pong.subarray(0, 5).toString(), 'marco');
      assert.ok(pong.subarray(5).every((b) => b === 0));
      assert.equal(received('send_message'), 3);
    });

    it('bad input fails locally, naming the argument, and the connection stays usable', async () => {
      const kp = await client.newKeypair(randomBytes(32));
      const before = logs.length;
      const cases: [Promise<unknown>, string][] = [
        [client.newKeypair(randomBytes(16)), 'seed'],
        [client.encryptWrite(Buffer.alloc(1554), kp.writeCap, kp.firstMessageIndex), 'plaintext'],
        [client.encryptRead(kp.writeCap, kp.firstMessageIndex), 'readCap'],
        [client.encryptWrite('x', kp.readCap, kp.firstMessageIndex), 'writeCap'],
        [client.nextMessageBoxIndex('not bytes' as never), 'index'],
        [client.sendMessageWithoutReply(Buffer.alloc(2001), client.getService('echo').destinationIdHash, Buffer.from('+echo')), 'payload'],
        [client.startResendingCopyCommand(kp.readCap), 'writeCap'],
      ];
      for (const [p, argument] of cases) {
        const err = await rejectionOf(p);
        assert.ok(err instanceof InvalidArgumentError, `${argument}: ${err}`);
        assert.equal(err.argument, argument);
      }
      await sleep(20);
      assert.equal(logs.slice(before).filter((l) => / (new_keypair|encrypt_|next_message|send_message|start_resending)/.test(l)).length, 0, 'nothing reached the daemon');
      assert.equal(emulator.connectionCount(), 1);
      assert.equal((await client.newKeypair(randomBytes(32))).readCap.length, 136);
    });

    it('replays a blocked read after emulator.restart(): a write made after the restart completes it, no duplicates', async () => {
      const kp = await client.newKeypair(randomBytes(32));
      const enc = await client.encryptRead(kp.readCap, kp.firstMessageIndex);
      const read = client.startResendingEncryptedMessage(readParams(kp.readCap, kp.firstMessageIndex, enc));
      await waitFor(() => received('start_resending_encrypted_message') === 1, 5000, 'the read reached the emulator');
      const oldToken = emulator.instanceToken;
      const disconnected = nextEvent(client, 'daemonDisconnected');
      const reconnected = nextEvent(client, 'daemonReconnected');
      await emulator.restart();
      const d: DaemonDisconnectedEvent = await disconnected;
      assert.equal(d.isGraceful, false);
      const r: DaemonReconnectedEvent = await reconnected;
      assert.notDeepEqual(r.instanceToken, oldToken);
      assert.deepEqual(r.instanceToken, emulator.instanceToken);
      assert.deepEqual(client.instanceToken, emulator.instanceToken);
      assert.equal(r.daemonRestarted, true);
      assert.equal(r.resumed, false);
      assert.equal(r.replayed, 1);
      await writeBox(client, kp.writeCap, kp.firstMessageIndex, 'written after the restart');
      const result = await read;
      assert.equal(result.plaintext?.toString(), 'written after the restart');
      // One read before the restart, its replay, and the write: nothing twice.
      assert.equal(received('start_resending_encrypted_message'), 3);
    });

    it('resumes the session with a new client given the old session token after disconnect()', async () => {
      const appId = client.appId;
      const token = client.sessionToken;
      await client.disconnect();
      await waitFor(() => emulator.connectionCount() === 0, 2000, 'the emulator saw the close');
      assert.equal(client.isDaemonConnected(), false);
      const resumed = new ThinClient({ dial: emulator.address, sessionToken: token });
      others.push(resumed);
      await resumed.connect();
      assert.equal(resumed.resumed, true);
      assert.deepEqual(resumed.appId, appId, 're-bound to the old app ID');
      assert.equal((await resumed.newKeypair(randomBytes(32))).writeCap.length, 168);
      // And the disconnected object itself can connect again and resume too.
      await resumed.disconnect();
      await client.connect();
      assert.equal(client.resumed, true);
    });

    it('a malformed frame: daemonDisconnected with a CborError, then an automatic reconnect', async () => {
      const disconnected = nextEvent(client, 'daemonDisconnected');
      const reconnected = nextEvent(client, 'daemonReconnected');
      emulator.injectMalformedFrame();
      const d = await disconnected;
      assert.ok(d.error instanceof CborError, String(d.error));
      assert.equal(d.isGraceful, false);
      const r = await reconnected;
      assert.equal(r.daemonRestarted, false);
      assert.equal(r.resumed, true);
      assert.equal((await client.newKeypair(randomBytes(32))).readCap.length, 136);
    });

    it('an oversize length prefix: daemonDisconnected with a ProtocolError at once, then an automatic reconnect', async () => {
      const disconnected = nextEvent(client, 'daemonDisconnected');
      const reconnected = nextEvent(client, 'daemonReconnected');
      const t0 = Date.now();
      emulator.injectOversizeLengthPrefix();
      const d = await disconnected;
      // The emulator closes after 1 s if the client does not; we must not wait for that.
      assert.ok(Date.now() - t0 < 900, 'the client dropped the connection itself');
      assert.ok(d.error instanceof ProtocolError, String(d.error));
      assert.match(d.error.message, /exceeds the maximum/);
      await reconnected;
      assert.equal(client.isDaemonConnected(), true);
    });

    it('cancels a blocked read from another task (StartResendingCancelledError) and via AbortSignal (the daemon sees the cancel)', async () => {
      const kp = await client.newKeypair(randomBytes(32));
      const enc = await client.encryptRead(kp.readCap, kp.firstMessageIndex);
      const blocked = rejectionOf(client.startResendingEncryptedMessage(readParams(kp.readCap, kp.firstMessageIndex, enc)));
      await waitFor(() => received('start_resending_encrypted_message') === 1, 5000, 'the read reached the emulator');
      await client.cancelResendingEncryptedMessage(enc.envelopeHash);
      assert.ok((await blocked) instanceof StartResendingCancelledError);

      const enc2 = await client.encryptRead(kp.readCap, kp.firstMessageIndex);
      const ac = new AbortController();
      const aborted = rejectionOf(client.startResendingEncryptedMessage(readParams(kp.readCap, kp.firstMessageIndex, enc2), { signal: ac.signal }));
      await waitFor(() => received('start_resending_encrypted_message') === 2, 5000, 'the second read reached the emulator');
      ac.abort();
      assert.ok((await aborted) instanceof OperationCancelledError);
      await waitFor(() => received('cancel_resending_encrypted_message') === 2, 5000, 'the daemon saw the cancel');

      // A copy command cancelled by its write-cap hash.
      const temp = await client.newKeypair(randomBytes(32));
      const copy = rejectionOf(client.startResendingCopyCommand(temp.writeCap));
      await waitFor(() => received('start_resending_copy_command') === 1, 5000, 'the copy reached the emulator');
      await client.cancelResendingCopyCommand(ThinClient.writeCapHash(temp.writeCap));
      assert.ok((await copy) instanceof StartResendingCancelledError);
    });

    it('offline mode: connectionStatus events, legacy sends refused, local requests still served', async () => {
      const off = nextEvent(client, 'connectionStatus');
      emulator.setOnline(false);
      const e = await off;
      assert.equal(e.isConnected, false);
      assert.deepEqual(e.instanceToken, emulator.instanceToken);
      assert.equal(client.isConnected(), false);
      const echo = client.getService('echo');
      assert.ok((await rejectionOf(client.sendMessage(client.newSurbId(), 'x', echo.destinationIdHash, echo.recipientQueueId))) instanceof ThinClientOfflineError);
      assert.ok((await rejectionOf(client.blockingSendMessage('x', echo.destinationIdHash, echo.recipientQueueId))) instanceof ThinClientOfflineError);
      assert.equal((await client.newKeypair(randomBytes(32))).writeCap.length, 168);
      const on = nextEvent(client, 'connectionStatus');
      emulator.setOnline(true);
      assert.equal((await on).isConnected, true);
      const pong = await client.blockingSendMessage('back', echo.destinationIdHash, echo.recipientQueueId);
      assert.equal(pong.subarray(0, 4).toString(), 'back');
    });

    it('the events iterator delivers every event, in the same order as the listeners see them', async () => {
      const viaListener: string[] = [];
      client.on('event', (e) => viaListener.push(e.type));
      const ac = new AbortController();
      const iterator = client.events(ac.signal);
      const echo = client.getService('echo');
      emulator.setOnline(false);
      emulator.setOnline(true);
      emulator.advanceEpoch();
      await client.sendMessage(client.newSurbId(), 'it', echo.destinationIdHash, echo.recipientQueueId);
      const expected = ['connectionStatus', 'connectionStatus', 'newPkiDocument', 'messageSent', 'messageReply'];
      const got: ThinClientEvent[] = [];
      for await (const e of iterator) {
        got.push(e);
        if (got.length === expected.length) ac.abort();
      }
      assert.deepEqual(
        got.map((e) => e.type),
        expected,
      );
      assert.deepEqual(viaListener, expected);
      const doc = got[2];
      assert.ok(doc.type === 'newPkiDocument' && doc.document.epoch === emulator.epoch);
      assert.equal(client.pkiDocument()?.epoch, emulator.epoch);
    });

    it('a graceful stop: shutdown, then daemonDisconnected with isGraceful true', async () => {
      const shutdown = nextEvent(client, 'shutdown');
      const disconnected = nextEvent(client, 'daemonDisconnected');
      await emulator.stop({ graceful: true });
      await shutdown;
      const d = await disconnected;
      assert.equal(d.isGraceful, true);
      assert.equal(client.isDaemonConnected(), false);
    });
  });
}

/**
 * blockingSendMessage when the daemon connection is lost mid-wait (§2.6,
 * §7.5). The emulator, like the pinned daemon, queues a session's frames
 * while it is away and delivers them after session_token_reply on resume.
 * A proxy between client and emulator makes the timing deterministic: the
 * emulator is taken offline (the proxy withholds that status broadcast from
 * the client), so the legacy send waits in the emulator until the test has
 * dropped the connection and brings the mixnet back.
 */
describe('blockingSendMessage across a lost connection to the emulator', function () {
  this.timeout(30_000);
  let emulator: Emulator;
  let proxy: TcpProxy;
  let client: ThinClient;
  let logs: string[];

  async function setUp(sessionGracePeriodMs?: number): Promise<void> {
    logs = [];
    emulator = await startEmulator({ listen: '127.0.0.1:0', latency: 'fast', sessionGracePeriodMs, log: (l) => logs.push(l) });
    proxy = await TcpProxy.start(emulator.address);
    client = new ThinClient({ dial: proxy.address, reconnectInitialDelayMs: 20, reconnectMaxDelayMs: 50 });
    await client.connect();
  }

  afterEach(async () => {
    await client?.close();
    await proxy?.stop();
    await emulator?.stop({ graceful: false });
  });

  /** Start a blocking send that the emulator accepts but cannot answer yet (its mixnet is offline). */
  async function sendWhileMixnetHeld(text: string): Promise<{ reply: Promise<Buffer> }> {
    const echo = client.getService('echo');
    proxy.holdFrames();
    emulator.setOnline(false);
    const reply = client.blockingSendMessage(text, echo.destinationIdHash, echo.recipientQueueId, { timeoutMs: 15_000 });
    reply.catch(() => {}); // observed by the test later
    await waitFor(() => logs.some((l) => /^conn \d+: send_message$/.test(l)), 5000, 'the emulator to receive send_message');
    return { reply }; // wrapped: an async function would otherwise wait for the reply itself
  }

  /** Let the held reconnect through and wait for the client to complete it. */
  async function releaseReconnect(): Promise<DaemonReconnectedEvent> {
    await waitFor(() => proxy.heldConnections() > 0, 5000, 'the client to try reconnecting');
    const reconnected = nextEvent(client, 'daemonReconnected');
    proxy.releaseConnections();
    return reconnected;
  }

  it('a plain socket drop and a resumed session: the reply the emulator queued meanwhile still arrives', async () => {
    await setUp();
    const { reply } = await sendWhileMixnetHeld('across the gap');
    proxy.holdConnections();
    proxy.cut();
    await waitFor(() => emulator.connectionCount() === 0, 5000, 'the emulator to see the drop');
    emulator.setOnline(true);
    // 'fast' answers within a few ms; the session is away, so both frames are queued.
    await sleep(200);
    const r = await releaseReconnect();
    assert.equal(r.resumed, true);
    assert.equal(r.daemonRestarted, false);
    const payload = await reply;
    assert.equal(payload.subarray(0, 14).toString(), 'across the gap');
    assert.ok(logs.some((l) => /session resumed \(2 queued responses delivered\)/.test(l)), 'the reply was queued for the session');
    const kinds = proxy.downstreamKinds[1];
    const at = kinds.indexOf('session_token_reply');
    assert.deepEqual(kinds.slice(at, at + 3), ['session_token_reply', 'message_sent_event', 'message_reply_event']);
  });

  it('a blocked read across a plain socket drop with a resumed session: replayed (the daemon dropped it), completes once', async () => {
    await setUp();
    const starts = () => logs.filter((l) => /^conn \d+: start_resending_encrypted_message$/.test(l)).length;
    const kp = await client.newKeypair(randomBytes(32));
    const enc = await client.encryptRead(kp.readCap, kp.firstMessageIndex);
    const read = client.startResendingEncryptedMessage(readParams(kp.readCap, kp.firstMessageIndex, enc));
    await waitFor(() => starts() === 1, 5000, 'the read to reach the emulator');
    proxy.holdConnections();
    proxy.cut();
    await waitFor(() => emulator.connectionCount() === 0, 5000, 'the emulator to see the drop');
    assert.ok(logs.some((l) => /session away: 1 in-flight ARQ operations dropped/.test(l)), 'the emulator dropped the read, as kpclientd does');
    const r = await releaseReconnect();
    assert.equal(r.resumed, true);
    assert.equal(r.daemonRestarted, false);
    assert.equal(r.replayed, 1);
    await writeBox(client, kp.writeCap, kp.firstMessageIndex, 'written after the resume');
    assert.equal((await read).plaintext?.toString(), 'written after the resume');
    // The read, its one replay, and the write.
    assert.equal(starts(), 3);
  });

  it('emulator.restart(): the waiter rejects as soon as the client is back, not at its timeout', async () => {
    await setUp();
    const t0 = Date.now();
    const { reply } = await sendWhileMixnetHeld('lost');
    proxy.holdConnections();
    const oldToken = emulator.instanceToken;
    await emulator.restart(); // drops the connection and the session with its pending send
    emulator.setOnline(true);
    const r = await releaseReconnect();
    assert.equal(r.daemonRestarted, true);
    assert.notDeepEqual(r.instanceToken, oldToken);
    const err = await rejectionOf(reply);
    assert.ok(err instanceof DaemonDisconnectedError, String(err));
    assert.equal(err.message, 'connection lost: the daemon restarted; the reply cannot arrive');
    assert.ok(Date.now() - t0 < 10_000, 'well before the 15 s timeout');
    assert.equal(client.isDaemonConnected(), true);
  });

  it('a session the emulator no longer keeps (grace period over): the waiter rejects once the client is back', async () => {
    await setUp(50);
    const { reply } = await sendWhileMixnetHeld('forgotten');
    proxy.holdConnections();
    proxy.cut();
    await waitFor(() => emulator.connectionCount() === 0, 5000, 'the emulator to see the drop');
    await waitFor(() => logs.some((l) => /session grace period over/.test(l)), 5000, 'the session to expire');
    emulator.setOnline(true);
    const r = await releaseReconnect();
    assert.equal(r.resumed, false);
    assert.equal(r.daemonRestarted, false);
    const err = await rejectionOf(reply);
    assert.ok(err instanceof DaemonDisconnectedError, String(err));
    assert.equal(err.message, 'connection lost: the daemon did not resume the session; the reply cannot arrive');
  });
});
