/**
 * ThinClient behaviour against a scripted fake daemon over real sockets:
 * the handshake edge cases, argument validation, request routing, ARQ
 * cancellation, events, and reconnect/replay (§2.6) where the test decides
 * exactly which frame arrives when.
 */
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';

import { ThinClient } from '../../src/client/client';
import type { ThinClientOptions } from '../../src/client/client';
import { blake2b256 } from '../../src/client/crypto';
import {
  CborError,
  DaemonDisconnectedError,
  DaemonError,
  InvalidArgumentError,
  KatzenpostError,
  NotEnoughCouriersError,
  OperationCancelledError,
  ProtocolError,
  ServiceNotFoundError,
  StartResendingCancelledError,
  ThinClientOfflineError,
  ThinClientTimeoutError,
} from '../../src/client/errors';
import type { ThinClientEvent } from '../../src/client/events';
import { DEFAULT_PIGEONHOLE_GEOMETRY, DEFAULT_SPHINX_GEOMETRY, encodeCbor, encodeFrame, u64 } from '../../src/wire';
import { FakeDaemon, sleep, tempSocketPath, waitFor } from './helpers';
import type { FakeConnection } from './helpers';

const WC = Buffer.alloc(168, 1);
const RC = Buffer.alloc(136, 2);
const IDX = Buffer.alloc(104, 3);
const HASH = Buffer.alloc(32, 4);
const TOKEN_A = Buffer.alloc(16, 0xa1);
const TOKEN_B = Buffer.alloc(16, 0xb2);

/** A tiny PKI document with three courier/echo service nodes. */
function pkiPayload(epoch = 100, couriers = 3): Buffer {
  const nodes = [];
  for (let i = 0; i < couriers; i++) {
    nodes.push(
      encodeCbor({
        Name: `svc${i}`,
        Epoch: epoch,
        IdentityKey: Buffer.alloc(32, i + 1),
        LinkKey: Buffer.from([1]),
        MixKeys: new Map([[epoch, Buffer.from([2])]]),
        Addresses: {},
        Kaetzchen: { courier: { endpoint: 'courier' }, echo: { endpoint: '+echo' } },
        KaetzchenAdvertizedData: null,
        IsGatewayNode: false,
        IsServiceNode: true,
        LoadWeight: 0,
        AuthenticationType: '',
        Version: 'v0',
      }),
    );
  }
  return encodeCbor({ Epoch: epoch, GenesisEpoch: 1, Mu: 0.005, Topology: [], GatewayNodes: [], ServiceNodes: nodes, StorageReplicas: [], Version: 'v1' });
}

const rejectionOf = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e as Error,
  );

describe('ThinClient against a scripted daemon', function () {
  this.timeout(10_000);
  let daemon: FakeDaemon;
  let client: ThinClient | null;
  const extra: ThinClient[] = [];

  beforeEach(async () => {
    daemon = await FakeDaemon.start();
    client = null;
  });

  afterEach(async () => {
    for (const c of [client, ...extra.splice(0)]) await c?.close();
    await daemon.stop();
  });

  function newClient(opts: Partial<ThinClientOptions> = {}): ThinClient {
    const c = new ThinClient({ dial: daemon.address, reconnectInitialDelayMs: 10, reconnectMaxDelayMs: 40, ...opts });
    if (!client) client = c;
    else extra.push(c);
    return c;
  }

  async function connected(opts: Partial<ThinClientOptions> = {}, hs: Parameters<FakeConnection['handshake']>[0] = {}): Promise<[ThinClient, FakeConnection]> {
    const c = newClient(opts);
    const p = c.connect();
    const conn = await daemon.accept();
    await conn.handshake({ instanceToken: TOKEN_A, pki: pkiPayload(), ...hs });
    await p;
    return [c, conn];
  }

  // ------------------------------------------------------------------ handshake
  describe('handshake (§2.1, §10.1)', () => {
    it('sends session_token after frames 1 and 2 and exposes what the daemon announced', async () => {
      const token = Buffer.alloc(16, 0x77);
      const c = newClient({ sessionToken: token });
      const p = c.connect();
      const conn = await daemon.accept();
      const tok = await conn.handshake({ instanceToken: TOKEN_A, pki: pkiPayload(), resumed: true });
      await p;
      assert.deepEqual(tok.body, { client_instance_token: token });
      assert.deepEqual(c.sessionToken, token);
      assert.deepEqual(c.instanceToken, TOKEN_A);
      assert.deepEqual(c.appId, Buffer.alloc(16, 0xb0));
      assert.equal(c.resumed, true);
      assert.equal(c.isDaemonConnected(), true);
      assert.equal(c.isConnected(), true);
      assert.deepEqual(c.sphinxGeometry(), DEFAULT_SPHINX_GEOMETRY);
      assert.deepEqual(c.pigeonholeGeometry(), DEFAULT_PIGEONHOLE_GEOMETRY);
      assert.equal(c.pkiDocument()?.epoch, 100);
      assert.equal(conn.requests.length, 1, 'nothing but the session token');
    });

    it('makes a random 16-byte session token per client object', () => {
      const a = new ThinClient({ dial: daemon.address });
      const b = new ThinClient({ dial: daemon.address });
      assert.equal(a.sessionToken.length, 16);
      assert.notDeepEqual(a.sessionToken, b.sessionToken);
      assert.throws(() => new ThinClient({ dial: daemon.address, sessionToken: Buffer.alloc(15) }), (e: unknown) => e instanceof InvalidArgumentError && e.argument === 'sessionToken');
      assert.throws(() => a.sphinxGeometry(), ProtocolError);
    });

    it('rejects a first frame other than connection_status_event with ProtocolError and closes the socket', async () => {
      const c = newClient();
      const p = rejectionOf(c.connect());
      const conn = await daemon.accept();
      conn.send('new_pki_document_event', { payload: null });
      const err = await p;
      assert.ok(err instanceof ProtocolError, String(err));
      assert.match(err.message, /connection_status_event/);
      await waitFor(() => conn.closed, 2000, 'socket closed');
      assert.equal(c.isDaemonConnected(), false);
    });

    it('rejects a geometry missing a listed key, naming it, but tolerates extra keys', async () => {
      const c = newClient();
      const p = rejectionOf(c.connect());
      const conn = await daemon.accept();
      const { SURBLength: _drop, ...partial } = DEFAULT_SPHINX_GEOMETRY;
      conn.sendStatus({ sphinx: partial });
      const err = await p;
      assert.ok(err instanceof ProtocolError);
      assert.match(err.message, /sphinx_geometry\.SURBLength/);

      const c2 = newClient();
      const p2 = c2.connect();
      const conn2 = await daemon.accept();
      await conn2.handshake({ pki: null, ...{} });
      await p2;
      // and with extras: a HEAD-style daemon adding keys must not be refused
      const c3 = newClient();
      const p3 = c3.connect();
      const conn3 = await daemon.accept();
      conn3.sendStatus({ sphinx: { ...DEFAULT_SPHINX_GEOMETRY, FutureKey: 1 }, pigeonhole: { ...DEFAULT_PIGEONHOLE_GEOMETRY, Other: 'x' } });
      conn3.send('new_pki_document_event', { payload: null });
      await conn3.next('session_token');
      conn3.send('session_token_reply', { app_id: Buffer.alloc(16), resumed: false });
      await p3;
      assert.deepEqual(c3.sphinxGeometry(), DEFAULT_SPHINX_GEOMETRY);
      assert.equal(c2.pkiDocument(), null, 'a null payload means no document yet');
    });

    it('rejects a null geometry ("incompatible daemon")', async () => {
      const c = newClient();
      const p = rejectionOf(c.connect());
      const conn = await daemon.accept();
      conn.sendStatus({ pigeonhole: null });
      const err = await p;
      assert.ok(err instanceof ProtocolError);
      assert.match(err.message, /pigeonhole_geometry is missing/);
    });

    it('rejects a geometry number that is a fraction or beyond 2^53 with ProtocolError naming it', async () => {
      for (const [value, why] of [
        [1.5, /sphinx_geometry\.SURBLength: expected an integer, got 1\.5/],
        [1n << 60n, /sphinx_geometry\.SURBLength 1152921504606846976 does not fit/],
      ] as const) {
        const c = newClient();
        const p = rejectionOf(c.connect());
        const conn = await daemon.accept();
        conn.sendStatus({ sphinx: { ...DEFAULT_SPHINX_GEOMETRY, SURBLength: value } });
        const err = await p;
        assert.ok(err instanceof ProtocolError, String(err));
        assert.match(err.message, /^connection_status_event: /);
        assert.match(err.message, why);
      }
    });

    it('processes status, PKI and queued frames that arrive before session_token_reply', async () => {
      const c = newClient();
      const seen: string[] = [];
      c.on('event', (e) => seen.push(e.type));
      const replies: Buffer[] = [];
      c.on('messageReply', (e) => replies.push(e.surbId));
      const p = c.connect();
      const conn = await daemon.accept();
      conn.sendStatus({ instanceToken: TOKEN_A });
      // The pinned race of §2.1: a status broadcast between frames 1 and 2.
      conn.sendStatus({ instanceToken: TOKEN_A, isConnected: false });
      conn.send('new_pki_document_event', { payload: null });
      await conn.next('session_token');
      conn.send('new_pki_document_event', { payload: pkiPayload(101) });
      conn.send('message_reply_event', { message_id: null, surbid: Buffer.alloc(16, 9), payload: Buffer.from('queued'), error_code: 0 });
      conn.sendStatus({ instanceToken: TOKEN_A, isConnected: true });
      conn.send('session_token_reply', { app_id: Buffer.alloc(16), resumed: true });
      await p;
      assert.deepEqual(seen, ['connectionStatus', 'connectionStatus', 'newPkiDocument', 'messageReply', 'connectionStatus']);
      assert.deepEqual(replies, [Buffer.alloc(16, 9)]);
      assert.equal(c.pkiDocument()?.epoch, 101);
      assert.equal(c.isConnected(), true);
      assert.equal(c.resumed, true);
    });

    it('times out a stalled handshake with ThinClientTimeoutError and destroys the socket', async () => {
      const c = newClient({ handshakeTimeoutMs: 150 });
      const p = rejectionOf(c.connect());
      const conn = await daemon.accept();
      conn.sendStatus();
      const err = await p;
      assert.ok(err instanceof ThinClientTimeoutError);
      assert.match(err.message, /handshake/);
      await waitFor(() => conn.closed, 2000, 'socket closed');
    });

    it('fails with DaemonDisconnectedError when nothing listens, and can connect later', async () => {
      const { path: sock, cleanup } = tempSocketPath();
      try {
        const c = newClient({ dial: sock });
        const err = await rejectionOf(c.connect());
        assert.ok(err instanceof DaemonDisconnectedError);
        assert.match(err.message, /cannot connect/);
        const late = await FakeDaemon.start({ path: sock });
        try {
          const p = c.connect();
          const conn = await late.accept();
          await conn.handshake();
          await p;
          assert.equal(c.isDaemonConnected(), true);
          await c.close();
        } finally {
          await late.stop();
        }
      } finally {
        cleanup();
      }
    });

    it('dials tcp4 / tcp6 as IPv4 / IPv6 only', async () => {
      const port = Number(daemon.address.split(':')[1]);
      // The fake daemon listens on 127.0.0.1 only.
      const v4 = newClient({ dial: { kind: 'tcp', host: 'localhost', port, network: 'tcp4' } });
      const p = v4.connect();
      await (await daemon.accept()).handshake();
      await p;
      assert.equal(v4.isDaemonConnected(), true);
      const v6 = newClient({ dial: { kind: 'tcp', host: 'localhost', port, network: 'tcp6' } });
      const err = await rejectionOf(v6.connect());
      assert.ok(err instanceof DaemonDisconnectedError, String(err));
    });

    it('speaks over Unix sockets and Linux abstract sockets (@name)', async () => {
      const name = `@kp-client-test-${process.pid}-${Date.now()}`;
      const abstractDaemon = await FakeDaemon.start({ path: `\0${name.slice(1)}` });
      try {
        const c = newClient({ dial: name });
        const p = c.connect();
        const conn = await abstractDaemon.accept();
        await conn.handshake({ pki: pkiPayload() });
        await p;
        const k = c.newKeypair(Buffer.alloc(32));
        await conn.reply('new_keypair', { write_cap: WC, read_cap: RC, first_message_index: IDX, error_code: 0 });
        assert.deepEqual((await k).readCap, RC);
        await c.close();
      } finally {
        await abstractDaemon.stop();
      }
    });
  });

  // ------------------------------------------------------------------ validation
  describe('local argument validation', () => {
    /** Every bad call must fail locally, naming the argument, and write nothing. */
    async function expectBad(conn: FakeConnection, call: () => Promise<unknown>, argument: string, actual?: RegExp): Promise<void> {
      const before = conn.requests.length;
      const err = await rejectionOf(call());
      assert.ok(err instanceof InvalidArgumentError, `${argument}: got ${err}`);
      assert.equal(err.argument, argument);
      if (actual) assert.match(err.message, actual);
      await sleep(5);
      assert.equal(conn.requests.length, before, `${argument}: nothing sent`);
    }

    it('names the argument, sends nothing, and keeps the connection usable', async () => {
      const [c, conn] = await connected();
      const d = { envelopeDescriptor: Buffer.from([1]), messageCiphertext: Buffer.from([2]), envelopeHash: HASH };
      await expectBad(conn, () => c.newKeypair(Buffer.alloc(31)), 'seed', /32 bytes, got 31 bytes/);
      await expectBad(conn, () => c.newKeypair('x'.repeat(32) as never), 'seed', /got a string/);
      await expectBad(conn, () => c.nextMessageBoxIndex(Buffer.alloc(103)), 'index');
      await expectBad(conn, () => c.getMessageBoxIndexCounter(null as never), 'index', /got null/);
      await expectBad(conn, () => c.encryptRead(WC, IDX), 'readCap', /136 bytes, got 168 bytes/);
      await expectBad(conn, () => c.encryptRead(RC, Buffer.alloc(12)), 'index', /got 12 bytes/);
      await expectBad(conn, () => c.encryptWrite(Buffer.alloc(1554), WC, IDX), 'plaintext', /at most 1553 bytes/);
      await expectBad(conn, () => c.encryptWrite('é'.repeat(777), WC, IDX), 'plaintext', /1554 bytes/);
      await expectBad(conn, () => c.encryptWrite(5 as never, WC, IDX), 'plaintext');
      await expectBad(conn, () => c.encryptWrite('hi', RC, IDX), 'writeCap');
      await expectBad(conn, () => c.startResendingEncryptedMessage({ ...d }), 'readCap', /neither/);
      await expectBad(conn, () => c.startResendingEncryptedMessage({ ...d, readCap: RC, writeCap: WC, messageBoxIndex: IDX }), 'readCap', /both/);
      await expectBad(conn, () => c.startResendingEncryptedMessage({ ...d, readCap: RC }), 'messageBoxIndex');
      await expectBad(conn, () => c.startResendingEncryptedMessage({ ...d, writeCap: WC, envelopeHash: Buffer.alloc(31) }), 'envelopeHash');
      await expectBad(conn, () => c.startResendingEncryptedMessage({ ...d, writeCap: WC, messageCiphertext: Buffer.alloc(0) }), 'messageCiphertext');
      await expectBad(conn, () => c.startResendingEncryptedMessage({ ...d, writeCap: WC, envelopeDescriptor: 'x' as never }), 'envelopeDescriptor');
      await expectBad(conn, () => c.startResendingEncryptedMessage({ ...d, writeCap: WC, replyIndex: 256 }), 'replyIndex');
      await expectBad(conn, () => c.startResendingEncryptedMessage({ ...d, writeCap: WC }, { timeoutMs: -1 }), 'timeoutMs');
      await expectBad(conn, () => c.startResendingEncryptedMessageNoRetry(null as never), 'params');
      await expectBad(conn, () => c.cancelResendingEncryptedMessage(Buffer.alloc(16)), 'envelopeHash');
      await expectBad(conn, () => c.cancelResendingCopyCommand(WC), 'writeCapHash');
      await expectBad(conn, () => c.tombstoneRange(WC, IDX, -1), 'maxCount');
      await expectBad(conn, () => c.tombstoneRange(WC, IDX, 2 ** 32), 'maxCount');
      await expectBad(conn, () => c.tombstoneRange(WC, IDX, 1.5), 'maxCount');
      await expectBad(conn, () => c.createCourierEnvelopesFromPayload(Buffer.alloc(10 * 1024 * 1024 + 1), WC, IDX, true, true), 'payload', /10485760/);
      await expectBad(conn, () => c.createCourierEnvelopesFromPayload('x', WC, RC, true, true), 'destStartIndex');
      await expectBad(conn, () => c.createCourierEnvelopesFromPayload('x', WC, IDX, 'yes' as never, true), 'isStart');
      await expectBad(conn, () => c.createCourierEnvelopesFromMultiPayload([], true, true), 'destinations');
      await expectBad(conn, () => c.createCourierEnvelopesFromMultiPayload([{ payload: 'a', writeCap: WC, startIndex: IDX }, { payload: 'b', writeCap: RC, startIndex: IDX }], true, true), 'destinations[1].writeCap');
      await expectBad(conn, () => c.createCourierEnvelopesFromMultiPayload([{ payload: 'a', writeCap: WC, startIndex: IDX }], true, false, 'buf' as never), 'buffer');
      await expectBad(conn, () => c.createCourierEnvelopesFromTombstoneRange(WC, IDX, -3, true, true), 'maxCount');
      await expectBad(conn, () => c.startResendingCopyCommand(RC), 'writeCap');
      await expectBad(conn, () => c.startResendingCopyCommand(WC, { courierIdentityHash: HASH }), 'courierQueueId');
      await expectBad(conn, () => c.startResendingCopyCommand(WC, { courierQueueId: Buffer.from('courier') }), 'courierIdentityHash');
      await expectBad(conn, () => c.sendMessage(Buffer.alloc(15), 'x', HASH, Buffer.from('+echo')), 'surbId');
      await expectBad(conn, () => c.sendMessageWithoutReply(Buffer.alloc(2001), HASH, Buffer.from('+echo')), 'payload', /at most 2000 bytes/);
      await expectBad(conn, () => c.sendMessageWithoutReply('x', Buffer.alloc(16), Buffer.from('+echo')), 'destNode');
      await expectBad(conn, () => c.blockingSendMessage('x', HASH, Buffer.alloc(0)), 'destQueue');
      await expectBad(conn, () => c.getPkiDocumentRaw(-1), 'epoch');
      await expectBad(conn, () => c.newKeypair(Buffer.alloc(32), { signal: 'no' as never }), 'signal');
      assert.throws(() => c.getDistinctCouriers(0), (e: unknown) => e instanceof InvalidArgumentError && e.argument === 'n');
      assert.throws(() => c.getDistinctCouriers(4), (e: unknown) => e instanceof NotEnoughCouriersError && e.available === 3);
      assert.throws(() => c.getServices(''), InvalidArgumentError);
      assert.throws(() => ThinClient.writeCapHash(RC), (e: unknown) => e instanceof InvalidArgumentError && e.argument === 'writeCap');
      // Caps never appear in error messages.
      const err = await rejectionOf(c.encryptRead(Buffer.alloc(168, 0xab), IDX));
      assert.doesNotMatch(err.message, /abab/);
      // The connection is still up and serves requests.
      assert.equal(c.isDaemonConnected(), true);
      const k = c.newKeypair(Buffer.alloc(32, 5));
      const req = await conn.reply('new_keypair', { write_cap: WC, read_cap: RC, first_message_index: IDX, error_code: 0 });
      assert.deepEqual(req.body.seed, Buffer.alloc(32, 5));
      assert.deepEqual((await k).writeCap, WC);
    });

    it('refuses to write a frame above maxFrameLength, blaming the large argument', async () => {
      // Large enough for the 1186-byte status frame, too small for a 1200-byte plaintext write.
      const [c, conn] = await connected({ maxFrameLength: 1300 }, { pki: null });
      await c.encryptWrite(Buffer.alloc(800), WC, IDX, { timeoutMs: 20 }).catch(() => undefined);
      const err = await rejectionOf(c.encryptWrite(Buffer.alloc(1200), WC, IDX));
      assert.ok(err instanceof InvalidArgumentError);
      assert.equal(err.argument, 'plaintext');
      assert.match(err.message, /maximum frame length of 1300/);
      const err2 = await rejectionOf(c.createCourierEnvelopesFromPayload(Buffer.alloc(2000), WC, IDX, true, true));
      assert.equal((err2 as InvalidArgumentError).argument, 'payload');
      await sleep(5);
      assert.deepEqual(
        conn.requests.map((r) => r.kind),
        ['session_token', 'encrypt_write'],
        'only the request that fitted',
      );
      assert.equal(c.isDaemonConnected(), true);
    });

    it('never mutates caller buffers and accepts plain Uint8Arrays', async () => {
      const [c, conn] = await connected();
      const wc = new Uint8Array(WC);
      const idx = new Uint8Array(IDX);
      const p = c.encryptWrite('hello', wc, idx);
      const req = await conn.reply('encrypt_write', {
        message_ciphertext: Buffer.from([1]),
        envelope_descriptor: Buffer.from([2]),
        envelope_hash: HASH,
        next_message_box_index: Buffer.alloc(104, 9),
        error_code: 0,
      });
      await p;
      assert.deepEqual(Buffer.from(wc), WC);
      assert.deepEqual(Buffer.from(idx), IDX);
      assert.deepEqual(req.body.plaintext, Buffer.from('hello'));
      assert.deepEqual(req.body.write_cap, WC);
    });
  });

  // ------------------------------------------------------------------ requests
  describe('requests and replies', () => {
    it('routes replies by query_id in any order and ignores strays, HEAD kinds and unknown kinds', async () => {
      const [c, conn] = await connected();
      const a = c.nextMessageBoxIndex(IDX);
      const b = c.getMessageBoxIndexCounter(IDX);
      const ra = await conn.next('next_message_box_index');
      const rb = await conn.next('get_message_box_index_counter');
      // Noise first: a reply nobody waits for, a reply of the wrong kind for a live query, HEAD and unknown kinds.
      conn.send('new_keypair_reply', { query_id: Buffer.alloc(16, 0xee), error_code: 0 });
      conn.send('encrypt_read_reply', { query_id: ra.body.query_id, error_code: 0 });
      conn.sendRaw(encodeFrame(encodeCbor({ voucher_mint_reply: { query_id: ra.body.query_id, error_code: 0 } })));
      conn.sendRaw(encodeFrame(encodeCbor({ some_future_event: { x: 1 }, session_token_reply: null })));
      // Counters near 2^62 stay exact.
      conn.send('get_message_box_index_counter_reply', { query_id: rb.body.query_id, counter: u64((1n << 62n) + 5n), error_code: 0 });
      conn.send('next_message_box_index_reply', { query_id: ra.body.query_id, next_message_box_index: Buffer.alloc(104, 7), error_code: 0 });
      assert.equal(await b, (1n << 62n) + 5n);
      assert.deepEqual(await a, Buffer.alloc(104, 7));
      assert.equal(c.isDaemonConnected(), true);
    });

    it('maps reply error codes: generic DaemonError, get_pki_document 10, success replies missing blobs', async () => {
      const [c, conn] = await connected();
      const raw = c.getPkiDocumentRaw(5);
      const req = await conn.reply('get_pki_document', { payload: null, epoch: 5, error_code: 10 });
      assert.equal(req.body.epoch, 5);
      const err = await rejectionOf(raw);
      assert.ok(err instanceof DaemonError);
      assert.equal(err.operation, 'get_pki_document');
      assert.equal(err.errorCode, 10);
      assert.match(err.message, /get_pki_document failed: Service unavailable/);

      const ok = c.getPkiDocumentRaw();
      const req0 = await conn.reply('get_pki_document', { payload: Buffer.from('signed'), epoch: 100, error_code: 0 });
      assert.equal(req0.body.epoch, 0);
      assert.deepEqual(await ok, { payload: Buffer.from('signed'), epoch: 100n });

      const kp = c.newKeypair(Buffer.alloc(32));
      await conn.reply('new_keypair', { write_cap: null, read_cap: null, first_message_index: null, error_code: 3 });
      const kerr = await rejectionOf(kp);
      assert.ok(kerr instanceof DaemonError && kerr.errorCode === 3 && kerr.operation === 'new_keypair');

      const broken = c.encryptRead(RC, IDX);
      await conn.reply('encrypt_read', { message_ciphertext: null, envelope_descriptor: null, envelope_hash: null, next_message_box_index: null, error_code: 0 });
      assert.ok((await rejectionOf(broken)) instanceof ProtocolError);
    });

    it('a malformed numeric reply field is a ProtocolError naming the reply kind and the field; the connection stays up', async () => {
      const [c, conn] = await connected();
      const expectProtocolError = async (p: Promise<unknown>, kind: string, reply: Record<string, unknown>, message: RegExp) => {
        const rejected = rejectionOf(p);
        await conn.reply(kind, reply);
        const err = await rejected;
        assert.ok(err instanceof ProtocolError, `${kind}: ${err}`);
        assert.match(err.message, message);
      };
      await expectProtocolError(c.nextMessageBoxIndex(IDX), 'next_message_box_index', { next_message_box_index: IDX, error_code: 'x' }, /^next_message_box_index_reply: error_code: expected an integer, got string$/);
      await expectProtocolError(c.newKeypair(Buffer.alloc(32)), 'new_keypair', { write_cap: WC, read_cap: RC, first_message_index: IDX, error_code: 1.5 }, /^new_keypair_reply: error_code: expected an integer, got 1\.5$/);
      // A u64 that is text or a fraction is not 0n, nor a RangeError from BigInt().
      await expectProtocolError(c.getMessageBoxIndexCounter(IDX), 'get_message_box_index_counter', { counter: '42', error_code: 0 }, /^get_message_box_index_counter_reply: counter: expected an integer, got string$/);
      await expectProtocolError(c.getMessageBoxIndexCounter(IDX), 'get_message_box_index_counter', { counter: 2.5, error_code: 0 }, /^get_message_box_index_counter_reply: counter: expected an integer, got 2\.5$/);
      await expectProtocolError(c.getPkiDocumentRaw(), 'get_pki_document', { payload: Buffer.from('signed'), epoch: 'now', error_code: 0 }, /^get_pki_document_reply: epoch: expected an integer, got string$/);
      await expectProtocolError(c.startResendingCopyCommand(WC), 'start_resending_copy_command', { error_code: 0, replica_error_code: [1], failed_envelope_index: 0 }, /^start_resending_copy_command_reply: replica_error_code: expected an integer, got object$/);
      await expectProtocolError(
        c.startResendingEncryptedMessage({ writeCap: WC, envelopeDescriptor: Buffer.from([1]), messageCiphertext: Buffer.from([2]), envelopeHash: HASH }),
        'start_resending_encrypted_message',
        { plaintext: null, error_code: u64(1n << 60n), courier_identity_hash: null, courier_queue_id: null },
        /^start_resending_encrypted_message_reply: error_code 1152921504606846976 does not fit/,
      );
      assert.equal(c.isDaemonConnected(), true);
      const ok = c.getMessageBoxIndexCounter(IDX);
      await conn.reply('get_message_box_index_counter', { counter: u64((1n << 62n) + 3n), error_code: 0 });
      assert.equal(await ok, (1n << 62n) + 3n);
    });

    it('times out a local request with ThinClientTimeoutError naming the operation', async () => {
      const [c] = await connected({ requestTimeoutMs: 80 });
      const err = await rejectionOf(c.encryptRead(RC, IDX));
      assert.ok(err instanceof ThinClientTimeoutError);
      assert.match(err.message, /^encryptRead timed out after 80 ms/);
      const err2 = await rejectionOf(c.nextMessageBoxIndex(IDX, { timeoutMs: 30 }));
      assert.match(err2.message, /^nextMessageBoxIndex timed out after 30 ms/);
    });

    it('one deadline timer serves every call, and is no longer referenced once no call waits (an idle client keeps no process alive)', async () => {
      const [c, conn] = await connected({ requestTimeoutMs: 60_000 });
      const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
      const idle = timers();
      const calls = Array.from({ length: 20 }, () => c.nextMessageBoxIndex(IDX));
      assert.equal(timers(), idle + 1, 'one referenced timer for 20 deadlines');
      for (let i = 0; i < 20; i++) await conn.reply('next_message_box_index', { next_message_box_index: IDX, error_code: 0 });
      await Promise.all(calls);
      assert.equal(timers(), idle, 'no referenced timer once every call settled');
      // One call after another re-uses that timer; a shorter deadline still fires on time.
      const again = c.nextMessageBoxIndex(IDX);
      assert.equal(timers(), idle + 1);
      await conn.reply('next_message_box_index', { next_message_box_index: IDX, error_code: 0 });
      await again;
      assert.equal(timers(), idle);
      const t0 = Date.now();
      const err = await rejectionOf(c.nextMessageBoxIndex(IDX, { timeoutMs: 40 }));
      assert.ok(err instanceof ThinClientTimeoutError);
      assert.ok(Date.now() - t0 < 5_000, 'the short deadline fired, not the long one');
    });

    it('calls sharing one AbortSignal hold one listener on it; its abort rejects them all, in call order', async () => {
      const [c, conn] = await connected();
      const ac = new AbortController();
      const listeners = () => getEventListeners(ac.signal, 'abort').length;
      const order: number[] = [];
      const reads = Array.from({ length: 50 }, (_, i) =>
        rejectionOf(
          c.startResendingEncryptedMessage(
            { readCap: RC, messageBoxIndex: IDX, envelopeDescriptor: Buffer.from([1]), messageCiphertext: Buffer.from([2]), envelopeHash: Buffer.alloc(32, i) },
            { signal: ac.signal },
          ),
        ).then((e) => {
          order.push(i);
          return e;
        }),
      );
      const local = c.nextMessageBoxIndex(IDX, { signal: ac.signal });
      assert.equal(listeners(), 1);
      await conn.reply('next_message_box_index', { next_message_box_index: IDX, error_code: 0 });
      await local;
      assert.equal(listeners(), 1, 'still there for the reads');
      ac.abort();
      for (const e of await Promise.all(reads)) assert.ok(e instanceof OperationCancelledError, String(e));
      assert.deepEqual(order, Array.from({ length: 50 }, (_, i) => i));
      assert.equal(listeners(), 0);
      // Calls that all settle normally leave no listener either.
      const ac2 = new AbortController();
      const two = [c.nextMessageBoxIndex(IDX, { signal: ac2.signal }), c.nextMessageBoxIndex(IDX, { signal: ac2.signal })];
      assert.equal(getEventListeners(ac2.signal, 'abort').length, 1);
      for (let i = 0; i < 2; i++) await conn.reply('next_message_box_index', { next_message_box_index: IDX, error_code: 0 });
      await Promise.all(two);
      assert.equal(getEventListeners(ac2.signal, 'abort').length, 0);
    });

    it('tombstoneRange: maxCount 0 sends nothing; otherwise chained encrypt_write with an empty plaintext', async () => {
      const [c, conn] = await connected();
      const none = await c.tombstoneRange(WC, IDX, 0);
      assert.deepEqual(none, { envelopes: [], next: IDX });
      assert.equal(conn.requests.length, 1);
      const p = c.tombstoneRange(WC, IDX, 2);
      const indexes = [IDX, Buffer.alloc(104, 0x11), Buffer.alloc(104, 0x22)];
      for (let i = 0; i < 2; i++) {
        const req = await conn.reply('encrypt_write', {
          message_ciphertext: Buffer.from([i]),
          envelope_descriptor: Buffer.from([0xd0 + i]),
          envelope_hash: Buffer.alloc(32, 0xe0 + i),
          next_message_box_index: indexes[i + 1],
          error_code: 0,
        });
        assert.ok(Buffer.isBuffer(req.body.plaintext) && req.body.plaintext.length === 0, 'h"" not null');
        assert.deepEqual(req.body.message_box_index, indexes[i]);
      }
      const r = await p;
      assert.equal(r.envelopes.length, 2);
      assert.deepEqual(r.envelopes[1].boxIndex, indexes[1]);
      assert.deepEqual(r.envelopes[1].envelopeHash, Buffer.alloc(32, 0xe1));
      assert.deepEqual(r.next, indexes[2]);
    });

    it('copy-stream constructors pass buffers through and map the replies', async () => {
      const [c, conn] = await connected();
      const multi = c.createCourierEnvelopesFromMultiPayload([{ payload: 'a', writeCap: WC, startIndex: IDX }], true, false, Buffer.from([7]));
      const req = await conn.reply('create_courier_envelopes_from_multi_payload', {
        envelopes: [Buffer.from([1]), Buffer.from([2])],
        buffer: Buffer.from([3]),
        next_dest_indices: [Buffer.alloc(104, 5)],
        error_code: 0,
      });
      assert.deepEqual(req.body.destinations, [{ payload: Buffer.from('a'), write_cap: WC, start_index: IDX }]);
      assert.deepEqual(req.body.buffer, Buffer.from([7]));
      assert.deepEqual(await multi, { envelopes: [Buffer.from([1]), Buffer.from([2])], buffer: Buffer.from([3]), nextDestIndices: [Buffer.alloc(104, 5)] });
      const single = c.createCourierEnvelopesFromPayload(Buffer.alloc(0), WC, IDX, false, true);
      const sreq = await conn.reply('create_courier_envelopes_from_payload', { envelopes: null, next_dest_index: IDX, error_code: 0 });
      assert.deepEqual(sreq.body.payload, Buffer.alloc(0));
      assert.deepEqual(await single, { envelopes: [], nextDestIndex: IDX });
    });
  });

  // ------------------------------------------------------------------ ARQ
  describe('blocking ARQ calls and cancellation (§3.7-§3.10, §7.4)', () => {
    const write = { writeCap: WC, envelopeDescriptor: Buffer.from([1]), messageCiphertext: Buffer.from([2]), envelopeHash: HASH };

    it('sends the Python-compatible body: explicit nulls and false flags, variants set theirs', async () => {
      const [c, conn] = await connected();
      const p = c.startResendingEncryptedMessageReturnBoxExists(write);
      const req = await conn.next('start_resending_encrypted_message');
      assert.equal(req.body.read_cap, null);
      assert.equal(req.body.message_box_index, null);
      assert.equal(req.body.reply_index, null);
      assert.equal(req.body.no_retry_on_box_id_not_found, false);
      assert.equal(req.body.no_idempotent_box_already_exists, true);
      conn.send('start_resending_encrypted_message_reply', { query_id: req.body.query_id, plaintext: null, error_code: 10, courier_identity_hash: null, courier_queue_id: null });
      const err = await rejectionOf(p);
      assert.equal((err as KatzenpostError).code, 'BOX_ALREADY_EXISTS');
      const r = c.startResendingEncryptedMessageNoRetry({ readCap: RC, messageBoxIndex: IDX, envelopeDescriptor: Buffer.from([1]), messageCiphertext: Buffer.from([2]), envelopeHash: Buffer.alloc(32, 9) });
      const rreq = await conn.next('start_resending_encrypted_message');
      assert.equal(rreq.body.no_retry_on_box_id_not_found, true);
      assert.deepEqual(rreq.body.message_box_index, IDX);
      conn.send('start_resending_encrypted_message_reply', { query_id: rreq.body.query_id, plaintext: Buffer.from('data'), error_code: 0, courier_identity_hash: HASH, courier_queue_id: Buffer.from('courier') });
      assert.deepEqual(await r, { plaintext: Buffer.from('data'), courierIdentityHash: HASH, courierQueueId: Buffer.from('courier') });
    });

    it('an AbortSignal rejects with OperationCancelledError and sends the cancel to the daemon', async () => {
      const [c, conn] = await connected();
      const ac = new AbortController();
      const p = c.startResendingEncryptedMessage(write, { signal: ac.signal });
      const start = await conn.next('start_resending_encrypted_message');
      ac.abort();
      const err = await rejectionOf(p);
      assert.ok(err instanceof OperationCancelledError);
      const cancel = await conn.next('cancel_resending_encrypted_message');
      assert.deepEqual(cancel.body.envelope_hash, HASH);
      // The daemon's late answers (24 to the start, 0 to the cancel) are harmless.
      conn.send('start_resending_encrypted_message_reply', { query_id: start.body.query_id, plaintext: null, error_code: 24, courier_identity_hash: null, courier_queue_id: null });
      conn.send('cancel_resending_encrypted_message_reply', { query_id: cancel.body.query_id, error_code: 0 });
      // Aborted before the call: nothing is sent.
      const before = conn.requests.length;
      assert.ok((await rejectionOf(c.startResendingEncryptedMessage(write, { signal: AbortSignal.abort() }))) instanceof OperationCancelledError);
      await sleep(5);
      assert.equal(conn.requests.length, before);
    });

    it('timeoutMs rejects with ThinClientTimeoutError and cancels a copy command by write-cap hash', async () => {
      const [c, conn] = await connected();
      const p = c.startResendingCopyCommand(WC, { timeoutMs: 50 });
      const start = await conn.next('start_resending_copy_command');
      assert.deepEqual(Object.keys(start.body), ['query_id', 'write_cap'], 'no courier keys when not pinned');
      const err = await rejectionOf(p);
      assert.ok(err instanceof ThinClientTimeoutError);
      const cancel = await conn.next('cancel_resending_copy_command');
      assert.deepEqual(cancel.body.write_cap_hash, blake2b256(WC));
      assert.deepEqual(cancel.body.write_cap_hash, ThinClient.writeCapHash(WC));
    });

    it('a cancel from another task releases the blocked call even if the daemon knew nothing of it', async () => {
      const [c, conn] = await connected();
      const p = rejectionOf(c.startResendingCopyCommand(WC));
      await conn.next('start_resending_copy_command');
      const cancel = c.cancelResendingCopyCommand(ThinClient.writeCapHash(WC));
      // The daemon had not dequeued the start (§7.4): it answers only the cancel.
      await conn.reply('cancel_resending_copy_command', { error_code: 0 });
      await cancel;
      assert.ok((await p) instanceof StartResendingCancelledError);
      // Cancelling an unknown operation succeeds.
      const other = c.cancelResendingEncryptedMessage(Buffer.alloc(32, 0x55));
      await conn.reply('cancel_resending_encrypted_message', { error_code: 0 });
      await other;
    });

    it('refuses a second in-flight operation with the same identity', async () => {
      const [c, conn] = await connected();
      const first = c.startResendingEncryptedMessage(write);
      const start = await conn.next('start_resending_encrypted_message');
      const err = await rejectionOf(c.startResendingEncryptedMessage(write));
      assert.ok(err instanceof InvalidArgumentError && err.argument === 'envelopeHash');
      conn.send('start_resending_encrypted_message_reply', { query_id: start.body.query_id, plaintext: null, error_code: 0, courier_identity_hash: HASH, courier_queue_id: Buffer.from('courier') });
      await first;
      // Once settled, the same identity may run again.
      const again = c.startResendingEncryptedMessage(write);
      const s2 = await conn.next('start_resending_encrypted_message');
      conn.send('start_resending_encrypted_message_reply', { query_id: s2.body.query_id, plaintext: null, error_code: 11, courier_identity_hash: null, courier_queue_id: null });
      assert.equal((await rejectionOf(again) as KatzenpostError).code, 'TOMBSTONE');
    });
  });

  // ------------------------------------------------------------------ legacy
  describe('legacy sends (§3.3, §7.5)', () => {
    it('refuses to send while the daemon is offline, and accepts again when it is back', async () => {
      const [c, conn] = await connected({}, { isConnected: false });
      const statuses: boolean[] = [];
      c.on('connectionStatus', (e) => statuses.push(e.isConnected));
      assert.equal(c.isConnected(), false);
      assert.ok((await rejectionOf(c.sendMessageWithoutReply('x', HASH, Buffer.from('+echo')))) instanceof ThinClientOfflineError);
      assert.ok((await rejectionOf(c.sendMessage(Buffer.alloc(16), 'x', HASH, Buffer.from('+echo')))) instanceof ThinClientOfflineError);
      assert.ok((await rejectionOf(c.blockingSendMessage('x', HASH, Buffer.from('+echo')))) instanceof ThinClientOfflineError);
      conn.sendStatus({ instanceToken: TOKEN_A, isConnected: true });
      await waitFor(() => c.isConnected());
      await c.sendMessageWithoutReply('x', HASH, Buffer.from('+echo'));
      const req = await conn.next('send_message');
      assert.equal(req.body.with_surb, false);
      assert.equal(req.body.surbid, null);
      assert.equal(req.body.id, null);
      assert.deepEqual(statuses, [true]);
    });

    it('blockingSendMessage: timeout, abort, "connection lost", and an err in message_sent_event', async () => {
      const [c, conn] = await connected();
      const echo = c.getService('echo');
      const t = await rejectionOf(c.blockingSendMessage('a', echo.destinationIdHash, echo.recipientQueueId, { timeoutMs: 40 }));
      assert.ok(t instanceof ThinClientTimeoutError);

      const ac = new AbortController();
      const ab = rejectionOf(c.blockingSendMessage('b', echo.destinationIdHash, echo.recipientQueueId, { signal: ac.signal }));
      await conn.next('send_message');
      await conn.next('send_message');
      ac.abort();
      assert.ok((await ab) instanceof OperationCancelledError);

      const lost = rejectionOf(c.blockingSendMessage('c', echo.destinationIdHash, echo.recipientQueueId));
      await conn.next('send_message');
      conn.sendStatus({ instanceToken: TOKEN_A, isConnected: false });
      const e = await lost;
      assert.ok(e instanceof DaemonDisconnectedError);
      assert.match(e.message, /connection lost/);
      conn.sendStatus({ instanceToken: TOKEN_A, isConnected: true });
      await waitFor(() => c.isConnected());

      const failed = rejectionOf(c.blockingSendMessage(Buffer.from('d'), echo.destinationIdHash, echo.recipientQueueId));
      const req = await conn.next('send_message');
      conn.send('message_sent_event', { message_id: null, surbid: req.body.surbid, sent_at: 1, reply_eta: 0, err: 'payload too large' });
      const f = await failed;
      assert.ok(f instanceof KatzenpostError);
      assert.match(f.message, /payload too large/);

      const ok = c.blockingSendMessage('e', echo.destinationIdHash, echo.recipientQueueId);
      const r = await conn.next('send_message');
      assert.equal(r.body.surbid.length, 16);
      conn.send('message_reply_event', { message_id: null, surbid: r.body.surbid, payload: Buffer.from('e\0\0'), error_code: 0 });
      assert.deepEqual(await ok, Buffer.from('e\0\0'));
    });

    it('sendMessageAwaitingReply: the reply with its SURB ID, the sent event details and its error code; blockingSendMessage throws that code', async () => {
      const [c, conn] = await connected();
      const echo = c.getService('echo');
      const sentEvents: ThinClientEvent[] = [];
      c.on('messageSent', (e) => sentEvents.push(e));
      const detailed = c.sendMessageAwaitingReply('f', echo.destinationIdHash, echo.recipientQueueId, { timeoutMs: 5000 });
      const req = await conn.next('send_message');
      conn.send('message_sent_event', { message_id: null, surbid: req.body.surbid, sent_at: 5, reply_eta: 1_500_000, err: null });
      conn.send('message_reply_event', { message_id: null, surbid: req.body.surbid, payload: Buffer.from('f\0'), error_code: 3 });
      const reply = await detailed;
      const sent = sentEvents[0];
      assert.ok(sent.type === 'messageSent');
      assert.deepEqual(reply, { payload: Buffer.from('f\0'), surbId: req.body.surbid, sentAt: sent.sentAt, replyEtaMs: sent.replyEtaMs, errorCode: 3 });
      assert.equal(reply.replyEtaMs, 1.5);

      // No sent event before the reply: the details are null, the empty reply an empty Buffer.
      const bare = c.sendMessageAwaitingReply('g', echo.destinationIdHash, echo.recipientQueueId);
      const req2 = await conn.next('send_message');
      conn.send('message_reply_event', { message_id: null, surbid: req2.body.surbid, payload: null, error_code: 0 });
      assert.deepEqual(await bare, { payload: Buffer.alloc(0), surbId: req2.body.surbid, sentAt: null, replyEtaMs: null, errorCode: 0 });

      const t = await rejectionOf(c.sendMessageAwaitingReply('h', echo.destinationIdHash, echo.recipientQueueId, { timeoutMs: 40 }));
      assert.ok(t instanceof ThinClientTimeoutError);
      assert.match(t.message, /^sendMessageAwaitingReply: no reply within 40 ms$/);

      const coded = rejectionOf(c.blockingSendMessage('i', echo.destinationIdHash, echo.recipientQueueId));
      await conn.next('send_message');
      const req3 = await conn.next('send_message');
      conn.send('message_reply_event', { message_id: null, surbid: req3.body.surbid, payload: null, error_code: 3 });
      const err = await coded;
      assert.ok(err instanceof DaemonError);
      assert.equal((err as DaemonError).errorCode, 3);
    });
  });

  // ------------------------------------------------------------------ events
  describe('events', () => {
    it('delivers every event to typed listeners, "event" listeners and iterators, despite throwing listeners', async () => {
      const [c, conn] = await connected();
      const it = c.events();
      const typed: string[] = [];
      const all: string[] = [];
      c.on('connectionStatus', () => {
        throw new Error('listener bug');
      });
      c.on('newPkiDocument', async () => {
        throw new Error('async listener bug');
      });
      c.on('connectionStatus', (e) => typed.push(`status:${e.isConnected}`));
      c.on('newPkiDocument', (e) => typed.push(`pki:${e.document.epoch}`));
      c.once('messageSent', (e) => typed.push(`sent:${e.replyEtaMs}`));
      c.on('event', (e) => all.push(e.type));
      conn.sendStatus({ instanceToken: TOKEN_A, isConnected: false });
      conn.send('new_pki_document_event', { payload: pkiPayload(102) });
      conn.send('message_sent_event', { message_id: null, surbid: Buffer.alloc(16), sent_at: 5, reply_eta: 1_500_000 });
      conn.send('message_sent_event', { message_id: null, surbid: Buffer.alloc(16), sent_at: 5, reply_eta: 1_500_000 });
      conn.send('message_id_garbage_collected', { message_id: Buffer.alloc(16, 1) });
      conn.send('message_reply_event', { message_id: null, surbid: Buffer.alloc(16, 2), payload: null, reply_index: 1, error_code: 0 });
      const got: ThinClientEvent[] = [];
      for await (const e of it) {
        got.push(e);
        if (got.length === 6) break;
      }
      assert.deepEqual(
        got.map((e) => e.type),
        ['connectionStatus', 'newPkiDocument', 'messageSent', 'messageSent', 'messageIdGarbageCollected', 'messageReply'],
      );
      assert.deepEqual(typed, ['status:false', 'pki:102', 'sent:1.5']);
      assert.deepEqual(all, got.map((e) => e.type));
      const reply = got[5];
      assert.ok(reply.type === 'messageReply' && reply.replyIndex === 1 && reply.payload === null);
      assert.equal(c.isDaemonConnected(), true, 'the read loop survived the throwing listeners');
    });

    it('a malformed numeric event field is a ProtocolError naming the event and the field (a read error, then a reconnect)', async () => {
      const [c, conn] = await connected();
      const sent: ThinClientEvent[] = [];
      c.on('messageSent', (e) => sent.push(e));
      let current = conn;
      for (const [frame, why] of [
        [['message_sent_event', { message_id: null, surbid: Buffer.alloc(16), sent_at: 'yesterday', reply_eta: 0, err: null }], /^message_sent_event: sent_at: expected an integer, got string$/],
        [['message_sent_event', { message_id: null, surbid: Buffer.alloc(16), sent_at: 1, reply_eta: 0.5, err: null }], /^message_sent_event: reply_eta: expected an integer, got 0\.5$/],
        [['message_reply_event', { message_id: null, surbid: Buffer.alloc(16), payload: null, reply_index: null, error_code: 'x' }], /^message_reply_event: error_code: expected an integer, got string$/],
        [['message_reply_event', { message_id: null, surbid: Buffer.alloc(16), payload: null, reply_index: 1.25, error_code: 0 }], /^message_reply_event: reply_index: expected an integer, got 1\.25$/],
      ] as [Parameters<FakeConnection['send']>, RegExp][]) {
        const disc = new Promise<any>((r) => c.once('daemonDisconnected', r));
        current.send(...frame);
        const e = await disc;
        assert.ok(e.error instanceof ProtocolError, String(e.error));
        assert.match(e.error.message, why);
        current = await daemon.accept();
        await current.handshake({ instanceToken: TOKEN_A, resumed: true });
        await waitFor(() => c.isDaemonConnected());
      }
      assert.deepEqual(sent, [], 'no event with an invented value (sent_at 0 = 1970) was published');
    });

    it('iterators buffer without limit, end on abort, and end when the client closes', async () => {
      const [c, conn] = await connected();
      const ac = new AbortController();
      const slow = c.events(ac.signal);
      const closing = c.events();
      let gcSeen = 0;
      c.on('messageIdGarbageCollected', () => gcSeen++);
      for (let i = 0; i < 500; i++) conn.send('message_id_garbage_collected', { message_id: Buffer.alloc(16, i % 256) });
      // Let all 500 arrive before anyone consumes: the iterators must hold them all.
      await waitFor(() => gcSeen === 500, 5000, 'all events received');
      let n = 0;
      for await (const e of slow) {
        assert.equal(e.type, 'messageIdGarbageCollected');
        if (++n === 500) ac.abort();
      }
      assert.equal(n, 500, 'every queued event, then the end');
      await c.close();
      let m = 0;
      for await (const _ of closing) m++;
      assert.equal(m, 500, 'buffered events are still delivered after close');
      const after = c.events();
      assert.deepEqual(await after.next(), { value: undefined, done: true });
    });

    it('keeps the PKI documents of the last 5 epochs', async () => {
      const [c, conn] = await connected();
      for (let e = 101; e <= 106; e++) conn.send('new_pki_document_event', { payload: pkiPayload(e) });
      await waitFor(() => c.pkiDocument()?.epoch === 106);
      assert.equal(c.pkiDocumentForEpoch(100), null);
      assert.equal(c.pkiDocumentForEpoch(101), null);
      assert.equal(c.pkiDocumentForEpoch(102)?.epoch, 102);
      assert.equal(c.pkiDocumentForEpoch(106n)?.epoch, 106);
      // A document that does not parse is skipped, the connection stays.
      conn.send('new_pki_document_event', { payload: Buffer.from([0xff]) });
      conn.send('new_pki_document_event', { payload: encodeCbor({ Epoch: 107, ServiceNodes: [] }) });
      await waitFor(() => c.pkiDocument()?.epoch === 107);
      assert.throws(() => c.getService('echo'), ServiceNotFoundError);
      assert.throws(() => c.getCourierDestination(), ServiceNotFoundError);
      assert.deepEqual(c.getAllCouriers(), []);
    });
  });

  // ------------------------------------------------------------------ reconnect
  describe('reconnect and replay (§2.6)', () => {
    const write = { writeCap: WC, envelopeDescriptor: Buffer.from([1]), messageCiphertext: Buffer.from([2]), envelopeHash: HASH };

    it('replays in-flight ARQ requests verbatim to a restarted daemon and re-sends in-flight local requests', async () => {
      const [c, conn] = await connected();
      const events: ThinClientEvent[] = [];
      c.on('event', (e) => events.push(e));
      const arq = c.startResendingEncryptedMessage(write);
      const copy = c.startResendingCopyCommand(WC);
      const local = c.encryptRead(RC, IDX);
      const s1 = await conn.next('start_resending_encrypted_message');
      const c1 = await conn.next('start_resending_copy_command');
      const l1 = await conn.next('encrypt_read');
      conn.destroy();
      const conn2 = await daemon.accept();
      await conn2.handshake({ instanceToken: TOKEN_B, pki: pkiPayload() });
      const s2 = await conn2.next('start_resending_encrypted_message');
      const c2 = await conn2.next('start_resending_copy_command');
      const l2 = await conn2.next('encrypt_read');
      assert.deepEqual(s2.raw, s1.raw, 'the same bytes, the same query_id');
      assert.deepEqual(c2.raw, c1.raw);
      assert.deepEqual(l2.raw, l1.raw);
      conn2.send('encrypt_read_reply', { query_id: l2.body.query_id, message_ciphertext: Buffer.from([1]), envelope_descriptor: Buffer.from([2]), envelope_hash: HASH, next_message_box_index: IDX, error_code: 0 });
      conn2.send('start_resending_encrypted_message_reply', { query_id: s2.body.query_id, plaintext: null, error_code: 0, courier_identity_hash: HASH, courier_queue_id: Buffer.from('courier') });
      conn2.send('start_resending_copy_command_reply', { query_id: c2.body.query_id, error_code: 0 });
      await Promise.all([arq, copy, local]);
      const disc = events.find((e) => e.type === 'daemonDisconnected');
      const rec = events.find((e) => e.type === 'daemonReconnected');
      assert.deepEqual(disc, { type: 'daemonDisconnected', isGraceful: false, error: null });
      assert.deepEqual(rec, { type: 'daemonReconnected', instanceToken: TOKEN_B, resumed: false, daemonRestarted: true, replayed: 2 });
      await sleep(20);
      assert.equal(conn2.requests.filter((r) => r.kind === 'start_resending_encrypted_message').length, 1, 'no duplicates');
    });

    it('replays in-flight ARQ requests to a daemon that resumed the session (kpclientd dropped them), and re-sends local requests', async () => {
      const [c, conn] = await connected();
      const arq = c.startResendingEncryptedMessage(write);
      const local = c.nextMessageBoxIndex(IDX);
      const s1 = await conn.next('start_resending_encrypted_message');
      await conn.next('next_message_box_index');
      const reconnected = new Promise<ThinClientEvent>((r) => c.once('daemonReconnected', r));
      conn.shutdown();
      await sleep(20);
      conn.destroy();
      const conn2 = await daemon.accept();
      const tok = await conn2.handshake({ instanceToken: TOKEN_A, resumed: true });
      assert.deepEqual(tok.body.client_instance_token, c.sessionToken, 'the same session token');
      const replay = await conn2.next('start_resending_encrypted_message');
      assert.ok(replay.raw.equals(s1.raw), 'the replay is byte-for-byte the original frame');
      const l2 = await conn2.next('next_message_box_index');
      conn2.send('next_message_box_index_reply', { query_id: l2.body.query_id, next_message_box_index: IDX, error_code: 0 });
      await local;
      assert.deepEqual(await reconnected, { type: 'daemonReconnected', instanceToken: TOKEN_A, resumed: true, daemonRestarted: false, replayed: 1 });
      // Answered once; a second answer for the same query (the daemon kept the first attempt too) is dropped.
      const reply = { query_id: s1.body.query_id, plaintext: null, error_code: 0, courier_identity_hash: null, courier_queue_id: null };
      conn2.send('start_resending_encrypted_message_reply', reply);
      conn2.send('start_resending_encrypted_message_reply', reply);
      await arq;
      await sleep(30);
      assert.equal(conn2.requests.filter((r) => r.kind === 'start_resending_encrypted_message').length, 1, 'replayed exactly once');
    });

    it('an ARQ call aborted or timed out while the socket is down is cancelled on the resumed session, before a new start of the same identity', async () => {
      const [c, conn] = await connected({ requestTimeoutMs: 100 });
      const ac = new AbortController();
      const aborted = rejectionOf(c.startResendingEncryptedMessage(write, { signal: ac.signal }));
      const timedOut = rejectionOf(c.startResendingCopyCommand(WC, { timeoutMs: 150 }));
      await conn.next('start_resending_encrypted_message');
      await conn.next('start_resending_copy_command');
      const down = new Promise((r) => c.once('daemonDisconnected', r));
      conn.destroy();
      await down;
      ac.abort();
      assert.ok((await aborted) instanceof OperationCancelledError);
      const t = await timedOut;
      assert.ok(t instanceof ThinClientTimeoutError);
      assert.match(t.message, /the daemon connection is down/);
      // The caller retries the same write while still disconnected.
      const again = c.startResendingEncryptedMessage(write);
      const conn2 = await daemon.accept();
      // A reconnect longer than requestTimeoutMs: the queued cancels' deadline starts at their write.
      await sleep(250);
      await conn2.handshake({ instanceToken: TOKEN_A, resumed: true });
      const cancel = await conn2.next('cancel_resending_encrypted_message');
      assert.deepEqual(cancel.body.envelope_hash, HASH);
      const copyCancel = await conn2.next('cancel_resending_copy_command');
      assert.deepEqual(copyCancel.body.write_cap_hash, ThinClient.writeCapHash(WC));
      const restart = await conn2.next('start_resending_encrypted_message');
      const kinds = conn2.requests.map((r) => r.kind);
      assert.ok(kinds.indexOf('cancel_resending_encrypted_message') < kinds.indexOf('start_resending_encrypted_message'), `order: ${kinds}`);
      // The resumed daemon answers the old start (24), both cancels and the new start.
      conn2.send('cancel_resending_encrypted_message_reply', { query_id: cancel.body.query_id, error_code: 0 });
      conn2.send('cancel_resending_copy_command_reply', { query_id: copyCancel.body.query_id, error_code: 0 });
      conn2.send('start_resending_encrypted_message_reply', { query_id: restart.body.query_id, plaintext: null, error_code: 0, courier_identity_hash: null, courier_queue_id: null });
      await again;
      await sleep(20);
      assert.deepEqual(
        conn2.requests.map((r) => r.kind).filter((k) => k !== 'session_token'),
        ['cancel_resending_encrypted_message', 'cancel_resending_copy_command', 'start_resending_encrypted_message'],
        'the abandoned operations were not replayed',
      );
    });

    it('a cancel queued while reconnecting is dropped quietly by close()', async () => {
      const debug: string[] = [];
      const logger = { debug: (m: string) => debug.push(m), info() {}, warn() {}, error() {} };
      const [c, conn] = await connected({ logger, reconnectInitialDelayMs: 5000, reconnectMaxDelayMs: 5000 });
      const ac = new AbortController();
      const aborted = rejectionOf(c.startResendingEncryptedMessage(write, { signal: ac.signal }));
      await conn.next('start_resending_encrypted_message');
      const down = new Promise((r) => c.once('daemonDisconnected', r));
      conn.destroy();
      await down;
      ac.abort();
      assert.ok((await aborted) instanceof OperationCancelledError);
      await c.close();
      await waitFor(() => debug.some((m) => /startResendingEncryptedMessage: daemon-side cancel failed: the client was closed/.test(m)), 2000, 'the queued cancel to be dropped');
      assert.equal(daemon.connections.length, 1, 'no reconnect after close()');
    });

    it('blockingSendMessage keeps waiting across a resumed reconnect: the reply the daemon queued arrives', async () => {
      const [c, conn] = await connected();
      const echo = c.getService('echo');
      const reply = c.blockingSendMessage('q', echo.destinationIdHash, echo.recipientQueueId, { timeoutMs: 5000 });
      const req = await conn.next('send_message');
      conn.destroy();
      const conn2 = await daemon.accept();
      await conn2.handshake({ instanceToken: TOKEN_A, resumed: true });
      // Frames the daemon queued for the session follow session_token_reply.
      conn2.send('message_reply_event', { message_id: null, surbid: req.body.surbid, payload: Buffer.from('q\0'), error_code: 0 });
      assert.deepEqual(await reply, Buffer.from('q\0'));
    });

    it('blockingSendMessage rejects at once when the reconnect finds a restarted daemon or an unresumed session', async () => {
      const [c, conn] = await connected();
      const echo = c.getService('echo');
      const cases = [
        { hs: { instanceToken: TOKEN_B, resumed: false }, why: /^connection lost: the daemon restarted; the reply cannot arrive$/ },
        { hs: { instanceToken: TOKEN_B, resumed: false }, why: /^connection lost: the daemon did not resume the session; the reply cannot arrive$/ },
      ];
      let current = conn;
      for (const { hs, why } of cases) {
        const t0 = Date.now();
        const lost = rejectionOf(c.blockingSendMessage('q', echo.destinationIdHash, echo.recipientQueueId, { timeoutMs: 5000 }));
        await current.next('send_message');
        current.destroy();
        current = await daemon.accept();
        // First a new instance token (a restart), then the same token without a resumed session.
        await current.handshake(hs);
        const err = await lost;
        assert.ok(err instanceof DaemonDisconnectedError, String(err));
        assert.match(err.message, why);
        assert.ok(Date.now() - t0 < 2000, 'not at the 5 s timeout');
      }
    });

    it('reports a disconnect after shutdown_event as graceful', async () => {
      const [c, conn] = await connected();
      const disc = new Promise<ThinClientEvent>((r) => c.once('daemonDisconnected', r));
      const shut = new Promise<ThinClientEvent>((r) => c.once('shutdown', r));
      // Event and close in one go: the flag must be set before EOF is seen.
      conn.shutdown();
      conn.socket.end();
      assert.deepEqual(await shut, { type: 'shutdown' });
      assert.deepEqual(await disc, { type: 'daemonDisconnected', isGraceful: true, error: null });
      assert.equal(c.isConnected(), false);
      assert.equal(c.isDaemonConnected(), false);
      const conn2 = await daemon.accept();
      await conn2.handshake({ instanceToken: TOKEN_A });
      await waitFor(() => c.isDaemonConnected());
    });

    it('requests made while disconnected wait for the reconnect; local ones time out naming the operation', async () => {
      const [c, conn] = await connected({ requestTimeoutMs: 300 });
      const down = new Promise((r) => c.once('daemonDisconnected', r));
      conn.destroy();
      await down;
      const timedOut = rejectionOf(c.newKeypair(Buffer.alloc(32), { timeoutMs: 40 }));
      const waiting = c.getMessageBoxIndexCounter(IDX);
      const arq = c.startResendingEncryptedMessage(write);
      const err = await timedOut;
      assert.ok(err instanceof ThinClientTimeoutError);
      assert.match(err.message, /^newKeypair timed out after 40 ms \(the daemon connection is down\)/);
      const conn2 = await daemon.accept();
      await conn2.handshake({ instanceToken: TOKEN_A, resumed: true });
      const q = await conn2.reply('get_message_box_index_counter', { counter: 42, error_code: 0 });
      assert.equal(await waiting, 42n);
      const s = await conn2.next('start_resending_encrypted_message');
      conn2.send('start_resending_encrypted_message_reply', { query_id: s.body.query_id, plaintext: null, error_code: 0, courier_identity_hash: null, courier_queue_id: null });
      await arq;
      assert.ok(!conn2.requests.some((r) => r.kind === 'new_keypair'), 'the timed-out request was never sent');
      // The waiting requests went out on the new connection only after its handshake, unchanged.
      assert.deepEqual(q.body.message_box_index, IDX);
      assert.deepEqual(
        conn2.requests.map((r) => r.kind),
        ['session_token', 'get_message_box_index_counter', 'start_resending_encrypted_message'],
      );
      assert.ok(!conn.requests.some((r) => r.kind === 'get_message_box_index_counter'), 'nothing was written to the dead connection');
    });

    it('treats an undecodable frame as a read error: daemonDisconnected with CborError, then reconnects', async () => {
      const [c, conn] = await connected();
      const disc = new Promise<any>((r) => c.once('daemonDisconnected', r));
      conn.sendRaw(encodeFrame(Buffer.from('a26b6d616c666f726d6564', 'hex')));
      const e = await disc;
      assert.equal(e.isGraceful, false);
      assert.ok(e.error instanceof CborError, String(e.error));
      await waitFor(() => conn.closed, 2000, 'client dropped the socket');
      const conn2 = await daemon.accept();
      await conn2.handshake({ instanceToken: TOKEN_A });
      await waitFor(() => c.isDaemonConnected());
    });

    it('treats an oversize length prefix as a read error without waiting for the body, then reconnects', async () => {
      const [c, conn] = await connected();
      const disc = new Promise<any>((r) => c.once('daemonDisconnected', r));
      conn.sendRaw(Buffer.from([0xff, 0xff, 0xff, 0xf0]));
      const e = await disc;
      assert.ok(e.error instanceof ProtocolError);
      assert.match(e.error.message, /exceeds the maximum/);
      const conn2 = await daemon.accept();
      await conn2.handshake({ instanceToken: TOKEN_A });
      await waitFor(() => c.isDaemonConnected());
    });

    it('drops a frame still incomplete after frameTimeoutMs, naming declared length, bytes received and bound, then reconnects', async () => {
      const [c, conn] = await connected({ frameTimeoutMs: 300 });
      const disc = new Promise<any>((r) => c.once('daemonDisconnected', r));
      const rec = new Promise<any>((r) => c.once('daemonReconnected', r));
      const declared = 40 * 1024 * 1024 - 16;
      const prefix = Buffer.alloc(4);
      prefix.writeUInt32BE(declared, 0);
      conn.sendRaw(prefix);
      // Keep the frame moving: the bound is on the whole frame, not on silence.
      let sent = 0;
      const drip = setInterval(() => {
        if (conn.closed) return;
        conn.sendRaw(Buffer.alloc(4096, 0x41));
        sent += 4096;
      }, 20);
      try {
        const e = await disc;
        assert.equal(e.isGraceful, false);
        assert.ok(e.error instanceof ThinClientTimeoutError, String(e.error));
        assert.match(e.error.message, new RegExp(`declared length ${declared} bytes`));
        assert.match(e.error.message, /300 ms/);
        const received = Number(/(\d+) bytes of its body received/.exec(e.error.message)?.[1]);
        assert.ok(received > 0 && received <= sent, `received ${received} of ${sent} sent`);
        assert.equal(c.isDaemonConnected(), false);
      } finally {
        clearInterval(drip);
      }
      await waitFor(() => conn.closed, 2000, 'client dropped the socket');
      const conn2 = await daemon.accept();
      await conn2.handshake({ instanceToken: TOKEN_A, resumed: true });
      const r = await rec;
      assert.equal(r.resumed, true);
      assert.equal(c.isDaemonConnected(), true);
    });

    it('backs off exponentially up to the cap between failed attempts', async () => {
      const [c, conn] = await connected({ reconnectInitialDelayMs: 40, reconnectMaxDelayMs: 160 });
      const times: number[] = [];
      daemon.server.on('connection', (s) => {
        times.push(Date.now());
        s.destroy(); // every attempt fails its handshake
      });
      conn.destroy();
      await waitFor(() => times.length >= 5, 5000, 'five attempts');
      const gaps = times.slice(1).map((t, i) => t - times[i]);
      // ~80, then capped at ~160 (±20 % jitter). Uncapped doubling would give 320 and 640;
      // the upper bounds leave room for a loaded machine firing timers late.
      assert.ok(gaps[0] >= 60 && gaps[0] < 300, `first gap ${gaps[0]} in ${gaps}`);
      for (const g of gaps.slice(1)) assert.ok(g >= 120 && g < 300, `gap ${g} in ${gaps}`);
      await c.close();
    });

    it('with reconnect disabled, pending calls reject with DaemonDisconnectedError and connect() works again', async () => {
      const [c, conn] = await connected({ reconnect: false });
      const p = rejectionOf(c.encryptRead(RC, IDX));
      const arq = rejectionOf(c.startResendingEncryptedMessage(write));
      await conn.next('start_resending_encrypted_message');
      conn.destroy();
      assert.ok((await p) instanceof DaemonDisconnectedError);
      assert.ok((await arq) instanceof DaemonDisconnectedError);
      assert.ok((await rejectionOf(c.newKeypair(Buffer.alloc(32)))) instanceof DaemonDisconnectedError);
      const again = c.connect();
      const conn2 = await daemon.accept();
      await conn2.handshake({ instanceToken: TOKEN_A, resumed: true });
      await again;
      assert.equal(c.isDaemonConnected(), true);
    });
  });

  // ------------------------------------------------------------------ close
  describe('close and disconnect (§2.3)', () => {
    it('close() sends thin_close, rejects pending calls with OperationCancelledError, and is idempotent', async () => {
      const [c, conn] = await connected();
      const p = rejectionOf(c.startResendingEncryptedMessage({ writeCap: WC, envelopeDescriptor: Buffer.from([1]), messageCiphertext: Buffer.from([2]), envelopeHash: HASH }));
      const q = rejectionOf(c.encryptRead(RC, IDX));
      await conn.next('encrypt_read');
      let disconnects = 0;
      c.on('daemonDisconnected', () => disconnects++);
      await Promise.all([c.close(), c.close()]);
      await c.close();
      assert.ok((await p) instanceof OperationCancelledError);
      assert.ok((await q) instanceof OperationCancelledError);
      const bye = await conn.next('thin_close');
      assert.deepEqual(bye.body, {});
      await waitFor(() => conn.closed, 2000, 'socket closed');
      assert.equal(disconnects, 0, 'a close we asked for is not a daemon disconnect');
      assert.ok((await rejectionOf(c.connect())) instanceof DaemonDisconnectedError);
      assert.ok((await rejectionOf(c.newKeypair(Buffer.alloc(32)))) instanceof DaemonDisconnectedError);
    });

    it('disconnect() closes without thin_close; a new client with the same session token resumes', async () => {
      const [c, conn] = await connected();
      await c.disconnect();
      await c.disconnect();
      await waitFor(() => conn.closed, 2000, 'socket closed');
      assert.ok(!conn.requests.some((r) => r.kind === 'thin_close'));
      const resumed = newClient({ sessionToken: c.sessionToken });
      const p = resumed.connect();
      const conn2 = await daemon.accept();
      const tok = await conn2.handshake({ instanceToken: TOKEN_A, resumed: true });
      await p;
      assert.deepEqual(tok.body.client_instance_token, c.sessionToken);
      assert.equal(resumed.resumed, true);
      await c.close(); // closing a disconnected client sends nothing and does not throw
    });

    it('close() while connecting or reconnecting stops everything without throwing', async () => {
      const c = newClient();
      const p = rejectionOf(c.connect());
      await daemon.accept();
      await c.close();
      assert.ok((await p) instanceof OperationCancelledError);
      const [c2, conn2] = await connected();
      conn2.destroy();
      await new Promise((r) => c2.once('daemonDisconnected', r));
      const w = rejectionOf(c2.connect());
      await c2.close();
      assert.ok((await w) instanceof OperationCancelledError);
      const before = daemon.connections.length;
      await sleep(100);
      assert.ok(daemon.connections.length <= before + 1, 'no reconnect loop after close');
    });
  });
});
