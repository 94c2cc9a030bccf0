/**
 * The reference frames of ../shared/vectors (PROTOCOL.md §8), recorded from
 * the Python binding 0.0.15 and 0.0.23 against the daemon encoding:
 *  - every client->daemon frame is rebuilt with our request builders and
 *    must match byte for byte;
 *  - every daemon->client frame is decoded and its fields checked, and our
 *    Go-style encoder must reproduce it byte for byte;
 *  - a real ThinClient is driven against a scripted server that answers
 *    with the recorded daemon frames; its requests must equal the reference
 *    client's (same kinds, keys, types and bytes, up to the random IDs).
 */
import assert from 'node:assert/strict';

import { ThinClient } from '../../src/client/client';
import { blake2b256 } from '../../src/client/crypto';
import {
  CopyCommandFailedError,
  StartResendingCancelledError,
  errorForCopyCode,
  errorForResendCode,
} from '../../src/client/errors';
import { findCouriers, findServices, parsePkiDocument } from '../../src/client/pki';
import {
  DEFAULT_PIGEONHOLE_GEOMETRY,
  DEFAULT_SPHINX_GEOMETRY,
  REQUEST_KINDS,
  RESPONSE_KINDS,
  decodeCbor,
  decodeEnvelope,
  encodeFrame,
  encodeRequest,
  encodeResponse,
  requestBodies,
  toBigInt,
  toNumber,
} from '../../src/wire';
import type { RequestKind, ResponseKind } from '../../src/wire';
import { FakeDaemon, loadVectors } from './helpers';
import type { FakeConnection, VectorFrame } from './helpers';

const h = (s: string) => Buffer.from(s, 'hex');
const WC = h(
  '000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8' +
    '0100000000000000' +
    'aa'.repeat(32) +
    'bb'.repeat(32) +
    'cc'.repeat(32),
);
const RC = WC.subarray(32);
const IDX = WC.subarray(64);
const COURIER_HASH = h('cb2f5160fc1f7e05a55ef49d340b48da2e5a78099d53393351cd579dd42503d6');
const CLIENT_TOKEN = h('c0c1c2c3c4c5c6c7c8c9cacbcccdcecf');

/** A CBOR value's type as the §0 notation would name it. */
function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Buffer.isBuffer(v) || v instanceof Uint8Array) return `bstr[${v.length}]`;
  if (typeof v === 'boolean') return 'bool';
  if (typeof v === 'number' || typeof v === 'bigint') return Number.isInteger(Number(v)) && Number(v) >= 0 ? 'uint' : 'number';
  if (typeof v === 'string') return 'tstr';
  if (Array.isArray(v)) return `array[${v.map(typeOf).join(',')}]`;
  if (typeof v === 'object') return `map{${shape(v as Record<string, unknown>).join(',')}}`;
  return typeof v;
}

/** Keys in order with their types: what "same kinds, keys and types" means. */
function shape(body: Record<string, unknown>): string[] {
  return Object.entries(body).map(([k, v]) => `${k}:${typeOf(v)}`);
}

/** Replace every 16-byte byte string `from` (CBOR header 0x50) with `to`. */
function swapId(frame: Buffer, from: Buffer, to: Buffer): Buffer {
  const needle = Buffer.concat([Buffer.from([0x50]), from]);
  const repl = Buffer.concat([Buffer.from([0x50]), to]);
  const parts: Buffer[] = [];
  let pos = 0;
  for (;;) {
    const at = frame.indexOf(needle, pos);
    if (at < 0) break;
    parts.push(frame.subarray(pos, at), repl);
    pos = at + needle.length;
  }
  parts.push(frame.subarray(pos));
  return Buffer.concat(parts);
}

/** Rebuild a client->daemon body with our builders from the values decoded out of the vector. */
function rebuildRequest(kind: RequestKind, b: Record<string, any>): Buffer {
  switch (kind) {
    case 'session_token':
      return encodeRequest(kind, requestBodies.sessionToken(b.client_instance_token));
    case 'thin_close':
      return encodeRequest(kind, requestBodies.thinClose());
    case 'new_keypair':
      return encodeRequest(kind, requestBodies.newKeypair(b.query_id, b.seed));
    case 'encrypt_write':
      return encodeRequest(kind, requestBodies.encryptWrite(b.query_id, b.plaintext, b.write_cap, b.message_box_index));
    case 'encrypt_read':
      return encodeRequest(kind, requestBodies.encryptRead(b.query_id, b.read_cap, b.message_box_index));
    case 'start_resending_encrypted_message':
      return encodeRequest(
        kind,
        requestBodies.startResendingEncryptedMessage({
          queryId: b.query_id,
          readCap: b.read_cap,
          writeCap: b.write_cap,
          messageBoxIndex: b.message_box_index,
          replyIndex: b.reply_index,
          envelopeDescriptor: b.envelope_descriptor,
          messageCiphertext: b.message_ciphertext,
          envelopeHash: b.envelope_hash,
          noRetryOnBoxIdNotFound: b.no_retry_on_box_id_not_found,
          noIdempotentBoxAlreadyExists: b.no_idempotent_box_already_exists,
        }),
      );
    case 'cancel_resending_encrypted_message':
      return encodeRequest(kind, requestBodies.cancelResendingEncryptedMessage(b.query_id, b.envelope_hash));
    case 'start_resending_copy_command':
      return encodeRequest(kind, requestBodies.startResendingCopyCommand(b.query_id, b.write_cap, b.courier_identity_hash, b.courier_queue_id));
    case 'cancel_resending_copy_command':
      return encodeRequest(kind, requestBodies.cancelResendingCopyCommand(b.query_id, b.write_cap_hash));
    case 'get_message_box_index_counter':
      return encodeRequest(kind, requestBodies.getMessageBoxIndexCounter(b.query_id, b.message_box_index));
    case 'next_message_box_index':
      return encodeRequest(kind, requestBodies.nextMessageBoxIndex(b.query_id, b.message_box_index));
    case 'get_pki_document':
      return encodeRequest(kind, requestBodies.getPkiDocument(b.query_id, b.epoch));
    case 'create_courier_envelopes_from_tombstone_range':
      return encodeRequest(
        kind,
        requestBodies.createCourierEnvelopesFromTombstoneRange(
          b.query_id,
          b.dest_write_cap,
          b.dest_start_index,
          toNumber(b.max_count),
          b.is_start,
          b.is_last,
          b.buffer ?? null,
        ),
      );
    case 'send_message':
      return encodeRequest(
        kind,
        requestBodies.sendMessage({
          id: b.id,
          withSurb: b.with_surb,
          surbId: b.surbid,
          destinationIdHash: b.destination_id_hash,
          recipientQueueId: b.recipient_queue_id,
          payload: b.payload,
        }),
      );
    default:
      throw new Error(`no builder exercised for ${kind}: extend this test`);
  }
}

/** The vector's JSON rendering ("h'..'" strings for bytes) as the values cbor gives. */
function fromJson(v: unknown): unknown {
  if (typeof v === 'string') {
    const m = /^h'([0-9a-f]*)'$/.exec(v);
    return m ? Buffer.from(m[1], 'hex') : v;
  }
  if (Array.isArray(v)) return v.map(fromJson);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fromJson(x)]));
  return v;
}

function normaliseInts(v: unknown): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (Buffer.isBuffer(v)) return v;
  if (Array.isArray(v)) return v.map(normaliseInts);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normaliseInts(x)]));
  return v;
}

for (const file of ['python-0.0.15-frames.json', 'python-0.0.23-frames.json']) {
  describe(`vectors: ${file}`, () => {
    const frames: VectorFrame[] = loadVectors(file);
    const toDaemon = frames.filter((f) => f.dir === 'client->daemon');
    const toClient = frames.filter((f) => f.dir === 'daemon->client');
    const body = (f: VectorFrame) => h(f.hex);
    const env = (f: VectorFrame, kinds: readonly string[]) => decodeEnvelope(body(f), kinds);
    const daemonFrame = (kind: string) => {
      const f = toClient.find((x) => env(x, RESPONSE_KINDS).kind === kind);
      assert.ok(f, `vector has a ${kind}`);
      return f;
    };

    it('has a consistent session: declared lengths and JSON renderings match the bytes', () => {
      assert.equal(frames.length, 24);
      for (const f of frames) {
        assert.equal(body(f).length, f.len, `${f.dir} ${Object.keys(f.obj)}`);
        assert.deepEqual(normaliseInts(decodeCbor(body(f))), normaliseInts(fromJson(f.obj)));
      }
    });

    it('every client->daemon frame is reproduced byte for byte by our request builders', () => {
      const kinds = new Set<string>();
      for (const f of toDaemon) {
        const e = env(f, REQUEST_KINDS);
        kinds.add(e.kind);
        const ours = rebuildRequest(e.kind as RequestKind, e.body);
        assert.equal(ours.toString('hex'), f.hex, `${e.kind} differs`);
        // Python's single-key envelope, never the Go 16-key one.
        assert.equal(Object.keys(decodeCbor(ours)).length, 1);
      }
      assert.deepEqual([...kinds].sort(), [
        'cancel_resending_encrypted_message',
        'create_courier_envelopes_from_tombstone_range',
        'encrypt_write',
        'get_message_box_index_counter',
        'new_keypair',
        'send_message',
        'session_token',
        'start_resending_copy_command',
        'start_resending_encrypted_message',
        'thin_close',
      ]);
    });

    it('every daemon->client frame is the full 20-key envelope our Go-style encoder produces', () => {
      for (const f of toClient) {
        const all = decodeCbor(body(f));
        assert.deepEqual(Object.keys(all), [...RESPONSE_KINDS]);
        const e = env(f, RESPONSE_KINDS);
        assert.equal(encodeResponse(e.kind as ResponseKind, e.body).toString('hex'), f.hex, e.kind);
      }
    });

    it('frame 1: connection status with both geometries, exactly the §6.8 keys', () => {
      const e = env(toClient[0], RESPONSE_KINDS);
      assert.equal(e.kind, 'connection_status_event');
      assert.equal(e.body.is_connected, true);
      assert.equal(e.body.err, null);
      assert.deepEqual(e.body.instance_token, h('a0a1a2a3a4a5a6a7a8a9aaabacadaeaf'));
      assert.deepEqual(e.body.sphinx_geometry, DEFAULT_SPHINX_GEOMETRY);
      assert.deepEqual(e.body.pigeonhole_geometry, DEFAULT_PIGEONHOLE_GEOMETRY);
      assert.deepEqual(Object.keys(e.body.sphinx_geometry), Object.keys(DEFAULT_SPHINX_GEOMETRY));
    });

    it('frame 2: the canonical PKI document parses, with the echo and courier services and the cb2f... hash', () => {
      const e = env(toClient[1], RESPONSE_KINDS);
      assert.equal(e.kind, 'new_pki_document_event');
      const doc = parsePkiDocument(e.body.payload);
      assert.equal(doc.epoch, 100);
      assert.equal(doc.genesisEpoch, 1);
      assert.equal(doc.mu, 0.005);
      assert.equal(doc.lambdaG, 0); // encoded as a half float
      assert.equal(doc.lambdaD, 0.0005);
      assert.equal(doc.muMaxDelay, 1000);
      assert.equal(doc.lambdaDMaxDelay, 3000);
      assert.equal(doc.sendRatePerMinute, 0);
      assert.equal(doc.version, 'v1');
      assert.equal(doc.pkiSignatureScheme, 'Ed25519');
      assert.deepEqual(doc.topology, [[], [], []]);
      assert.deepEqual(doc.storageReplicas, []);
      assert.deepEqual(doc.sphinxGeometryHash, Buffer.alloc(32));
      assert.equal(doc.serviceNodes.length, 1);
      const node = doc.serviceNodes[0];
      assert.equal(node.name, 'servicenode1');
      assert.equal(node.epoch, 100);
      assert.deepEqual(node.mixKeys.get(100), h('0202020202020202'));
      assert.deepEqual(node.addresses, { tcp: ['tcp://127.0.0.1:30001'] });
      assert.equal(node.isServiceNode, true);
      assert.equal(node.kaetzchenAdvertizedData?.courier.linkPublicKey, '-----BEGIN ...-----');
      const [echo] = findServices(doc, 'echo');
      assert.deepEqual(echo.recipientQueueId, Buffer.from('+echo'));
      assert.deepEqual(echo.destinationIdHash, COURIER_HASH);
      assert.deepEqual(blake2b256(node.identityKey), COURIER_HASH);
      assert.deepEqual(findCouriers(doc), [{ identityHash: COURIER_HASH, queueId: h('636f7572696572') }]);
    });

    it('reply frames decode to the values the reference binding reports', () => {
      const keypair = env(daemonFrame('new_keypair_reply'), RESPONSE_KINDS).body;
      assert.deepEqual(keypair.write_cap, WC);
      assert.deepEqual(keypair.read_cap, RC);
      assert.deepEqual(keypair.first_message_index, IDX);
      const counter = env(daemonFrame('get_message_box_index_counter_reply'), RESPONSE_KINDS).body;
      assert.equal(toBigInt(counter.counter), 1n);
      const copy = env(daemonFrame('start_resending_copy_command_reply'), RESPONSE_KINDS).body;
      const err = errorForCopyCode(toNumber(copy.error_code), toNumber(copy.replica_error_code), toNumber(copy.failed_envelope_index));
      assert.ok(err instanceof CopyCommandFailedError);
      assert.equal(err.errorCode, 26);
      assert.equal(err.replicaErrorCode, 10);
      assert.equal(err.failedEnvelopeIndex, 3);
      const tomb = env(daemonFrame('create_courier_envelopes_from_tombstone_range_reply'), RESPONSE_KINDS).body;
      assert.deepEqual(tomb.envelopes, [h('01010101')]);
      assert.deepEqual(tomb.buffer, h('020202'));
      const sent = env(daemonFrame('message_sent_event'), RESPONSE_KINDS).body;
      assert.equal(sent.sent_at, 1767225600);
      assert.equal(sent.reply_eta, 2500000000);
      assert.equal('err' in sent, false, 'err omitted when empty');
    });

    it('cancel ordering: the blocked start gets error 24 before the cancel gets 0', () => {
      const i = frames.findIndex((f) => f.dir === 'client->daemon' && env(f, REQUEST_KINDS).kind === 'cancel_resending_encrypted_message');
      const start = env(frames[i - 1], REQUEST_KINDS).body;
      const cancel = env(frames[i], REQUEST_KINDS).body;
      const first = env(frames[i + 1], RESPONSE_KINDS);
      const second = env(frames[i + 2], RESPONSE_KINDS);
      assert.equal(first.kind, 'start_resending_encrypted_message_reply');
      assert.deepEqual(first.body.query_id, start.query_id);
      assert.equal(first.body.error_code, 24);
      assert.ok(errorForResendCode(24) instanceof StartResendingCancelledError);
      assert.equal(second.kind, 'cancel_resending_encrypted_message_reply');
      assert.deepEqual(second.body.query_id, cancel.query_id);
      assert.equal(second.body.error_code, 0);
      assert.deepEqual(cancel.envelope_hash, start.envelope_hash);
    });

    describe('a ThinClient replaying the recorded session against a scripted daemon', () => {
      let daemon: FakeDaemon;
      let client: ThinClient;
      let conn: FakeConnection;
      const daemonRaw = (kind: string) => h(daemonFrame(kind).hex);
      /** The reference request of `kind` (nth occurrence). */
      const reference = (kind: string, nth = 0) => toDaemon.filter((f) => env(f, REQUEST_KINDS).kind === kind)[nth];

      /**
       * Compare our request with the reference one: same kind, keys in the
       * same order, same types, and - once the random IDs are swapped for
       * the recorded ones - the same bytes.
       */
      function assertSameRequest(kind: string, raw: Buffer, nth = 0, idField = 'query_id'): Buffer {
        const ref = reference(kind, nth);
        const refEnv = env(ref, REQUEST_KINDS);
        const ours = decodeEnvelope(raw, REQUEST_KINDS);
        assert.equal(ours.kind, refEnv.kind);
        assert.deepEqual(Object.keys(decodeCbor(raw)), Object.keys(decodeCbor(h(ref.hex))), 'top-level keys');
        assert.deepEqual(shape(ours.body), shape(refEnv.body), `${kind}: keys and types`);
        const ourId: Buffer = ours.body[idField];
        assert.equal(swapId(raw, ourId, refEnv.body[idField]).toString('hex'), ref.hex, `${kind}: bytes`);
        return ourId;
      }

      /** Send a recorded daemon frame with its ID replaced by the one our client chose. */
      function answer(kind: string, ourId: Buffer, nth = 0, idField = 'query_id'): void {
        const f = toClient.filter((x) => env(x, RESPONSE_KINDS).kind === kind)[nth];
        const recordedId: Buffer = env(f, RESPONSE_KINDS).body[idField];
        conn.sendRaw(encodeFrame(swapId(h(f.hex), recordedId, ourId)));
      }

      before(async () => {
        daemon = await FakeDaemon.start();
        client = new ThinClient({ dial: daemon.address, sessionToken: CLIENT_TOKEN, reconnect: false });
        const connected = client.connect();
        conn = await daemon.accept();
        conn.sendRaw(encodeFrame(h(toClient[0].hex)));
        conn.sendRaw(encodeFrame(h(toClient[1].hex)));
        const token = await conn.next('session_token');
        // No random ID in this one: byte-identical to the reference as is.
        assert.equal(token.raw.toString('hex'), reference('session_token').hex);
        conn.sendRaw(encodeFrame(daemonRaw('session_token_reply')));
        await connected;
      });

      after(async () => {
        await client.close();
        await daemon.stop();
      });

      it('took geometry, tokens and the PKI document from the handshake frames', () => {
        assert.deepEqual(client.sphinxGeometry(), DEFAULT_SPHINX_GEOMETRY);
        assert.deepEqual(client.pigeonholeGeometry(), DEFAULT_PIGEONHOLE_GEOMETRY);
        assert.deepEqual(client.instanceToken, h('a0a1a2a3a4a5a6a7a8a9aaabacadaeaf'));
        assert.deepEqual(client.appId, h('b0b1b2b3b4b5b6b7b8b9babbbcbdbebf'));
        assert.equal(client.resumed, false);
        assert.equal(client.isConnected(), true);
        assert.equal(client.pkiDocument()?.epoch, 100);
        assert.deepEqual(client.getService('echo').recipientQueueId, Buffer.from('+echo'));
        assert.deepEqual(client.getCourierDestination(), { identityHash: COURIER_HASH, queueId: Buffer.from('courier') });
      });

      it('new_keypair', async () => {
        const p = client.newKeypair(Buffer.alloc(32, 0x42));
        const req = await conn.next('new_keypair');
        answer('new_keypair_reply', assertSameRequest('new_keypair', req.raw));
        const r = await p;
        assert.deepEqual(r, { writeCap: WC, readCap: RC, firstMessageIndex: IDX });
      });

      it('encrypt_write then start_resending_encrypted_message (write)', async () => {
        const p = client.encryptWrite('hello', WC, IDX);
        answer('encrypt_write_reply', assertSameRequest('encrypt_write', (await conn.next('encrypt_write')).raw));
        const enc = await p;
        assert.deepEqual(enc.envelopeHash, Buffer.alloc(32, 0xe1));
        assert.deepEqual(enc.nextMessageBoxIndex, IDX);
        const s = client.startResendingEncryptedMessage({
          writeCap: WC,
          envelopeDescriptor: enc.envelopeDescriptor,
          messageCiphertext: enc.messageCiphertext,
          envelopeHash: enc.envelopeHash,
        });
        const req = await conn.next('start_resending_encrypted_message');
        answer('start_resending_encrypted_message_reply', assertSameRequest('start_resending_encrypted_message', req.raw, 0));
        assert.deepEqual(await s, { plaintext: null, courierIdentityHash: COURIER_HASH, courierQueueId: Buffer.from('courier') });
      });

      it('get_message_box_index_counter', async () => {
        const p = client.getMessageBoxIndexCounter(IDX);
        answer('get_message_box_index_counter_reply', assertSameRequest('get_message_box_index_counter', (await conn.next('get_message_box_index_counter')).raw));
        assert.equal(await p, 1n);
      });

      it('a blocked read cancelled from another task: StartResendingCancelledError, then the cancel succeeds', async () => {
        const hash = Buffer.alloc(32, 0xe2);
        const read = client.startResendingEncryptedMessage({
          readCap: RC,
          messageBoxIndex: IDX,
          replyIndex: 0,
          envelopeDescriptor: h('d0'),
          messageCiphertext: h('d1'),
          envelopeHash: hash,
        });
        const readOutcome = read.then(
          () => null,
          (e: unknown) => e,
        );
        const startId = assertSameRequest('start_resending_encrypted_message', (await conn.next('start_resending_encrypted_message')).raw, 1);
        const cancel = client.cancelResendingEncryptedMessage(hash);
        const cancelId = assertSameRequest('cancel_resending_encrypted_message', (await conn.next('cancel_resending_encrypted_message')).raw);
        answer('start_resending_encrypted_message_reply', startId, 1);
        answer('cancel_resending_encrypted_message_reply', cancelId);
        assert.ok((await readOutcome) instanceof StartResendingCancelledError);
        await cancel;
      });

      it('start_resending_copy_command pinned to the courier, failing with 26/10/3', async () => {
        const p = client.startResendingCopyCommand(WC, { courierIdentityHash: COURIER_HASH, courierQueueId: Buffer.from('courier') });
        const outcome = p.then(
          () => null,
          (e: unknown) => e,
        );
        answer('start_resending_copy_command_reply', assertSameRequest('start_resending_copy_command', (await conn.next('start_resending_copy_command')).raw));
        const err = await outcome;
        assert.ok(err instanceof CopyCommandFailedError);
        assert.equal(err.replicaErrorCode, 10);
        assert.equal(err.failedEnvelopeIndex, 3);
      });

      it('create_courier_envelopes_from_tombstone_range without a buffer key', async () => {
        const p = client.createCourierEnvelopesFromTombstoneRange(WC, IDX, 2, true, false);
        answer(
          'create_courier_envelopes_from_tombstone_range_reply',
          assertSameRequest('create_courier_envelopes_from_tombstone_range', (await conn.next('create_courier_envelopes_from_tombstone_range')).raw),
        );
        assert.deepEqual(await p, { envelopes: [h('01010101')], buffer: h('020202'), nextDestIndex: IDX });
      });

      it('blocking send to the echo service: send_message, message_sent_event, message_reply_event', async () => {
        const sent: unknown[] = [];
        client.on('messageSent', (e) => sent.push(e));
        const echo = client.getService('echo');
        const p = client.blockingSendMessage('ping', echo.destinationIdHash, echo.recipientQueueId);
        const surb = assertSameRequest('send_message', (await conn.next('send_message')).raw, 0, 'surbid');
        answer('message_sent_event', surb, 0, 'surbid');
        answer('message_reply_event', surb, 0, 'surbid');
        assert.equal((await p).toString(), 'echo:ping');
        assert.equal(sent.length, 1);
        assert.deepEqual(sent[0], {
          type: 'messageSent',
          messageId: null,
          surbId: surb,
          sentAt: new Date('2026-01-01T00:00:00Z'),
          replyEtaMs: 2500,
          err: null,
        });
      });

      it('thin_close on close(), byte for byte', async () => {
        await client.close();
        const req = await conn.next('thin_close');
        assert.equal(req.raw.toString('hex'), reference('thin_close').hex);
      });
    });
  });
}
