/**
 * Daemon frames as untrusted input (issue #9 items 2 and 4): every
 * fixed-size byte field of a reply or event is checked on arrival (§0, §4),
 * and the byte strings handed to the application own their memory instead
 * of pinning the frame they were decoded from.
 */
import assert from 'node:assert/strict';
import { runInNewContext } from 'node:vm';
import { setFlagsFromString } from 'node:v8';

import { ThinClient } from '../../src/client/client';
import { ProtocolError } from '../../src/client/errors';
import type { ThinClientEvent } from '../../src/client/events';
import { decodeEnvelope, encodeResponse } from '../../src/wire';
import type { RequestKind, ResponseKind } from '../../src/wire';
import { FakeDaemon, waitFor } from './helpers';
import type { FakeConnection } from './helpers';

const WC = Buffer.alloc(168, 1);
const RC = Buffer.alloc(136, 2);
const IDX = Buffer.alloc(104, 3);
const HASH = Buffer.alloc(32, 4);
const ID16 = Buffer.alloc(16, 5);
const TOKEN = Buffer.alloc(16, 0xa1);

const rejectionOf = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e as Error,
  );

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A call, a success reply for it, and the fixed-size fields of that reply with their §4 sizes. */
interface ReplyCase {
  kind: RequestKind;
  call: (c: ThinClient) => Promise<unknown>;
  good: Record<string, unknown>;
  /** field → size; a list-valued field is named with the index of the element made bad. */
  fields: Record<string, number>;
}

const encryptReply = { message_ciphertext: Buffer.from([1]), envelope_descriptor: Buffer.from([2]), envelope_hash: HASH, next_message_box_index: IDX, error_code: 0 };

const REPLY_CASES: ReplyCase[] = [
  {
    kind: 'new_keypair',
    call: (c) => c.newKeypair(Buffer.alloc(32)),
    good: { write_cap: WC, read_cap: RC, first_message_index: IDX, error_code: 0 },
    fields: { write_cap: 168, read_cap: 136, first_message_index: 104 },
  },
  { kind: 'encrypt_read', call: (c) => c.encryptRead(RC, IDX), good: encryptReply, fields: { envelope_hash: 32, next_message_box_index: 104 } },
  { kind: 'encrypt_write', call: (c) => c.encryptWrite('x', WC, IDX), good: encryptReply, fields: { envelope_hash: 32, next_message_box_index: 104 } },
  {
    kind: 'start_resending_encrypted_message',
    call: (c) => c.startResendingEncryptedMessage({ readCap: RC, messageBoxIndex: IDX, envelopeDescriptor: Buffer.from([1]), messageCiphertext: Buffer.from([2]), envelopeHash: HASH }),
    good: { plaintext: Buffer.from('hi'), error_code: 0, courier_identity_hash: HASH, courier_queue_id: Buffer.from([9]) },
    fields: { courier_identity_hash: 32 },
  },
  { kind: 'next_message_box_index', call: (c) => c.nextMessageBoxIndex(IDX), good: { next_message_box_index: IDX, error_code: 0 }, fields: { next_message_box_index: 104 } },
  {
    kind: 'create_courier_envelopes_from_payload',
    call: (c) => c.createCourierEnvelopesFromPayload('p', WC, IDX, true, true),
    good: { envelopes: [Buffer.from([1])], next_dest_index: IDX, error_code: 0 },
    fields: { next_dest_index: 104 },
  },
  {
    kind: 'create_courier_envelopes_from_multi_payload',
    call: (c) =>
      c.createCourierEnvelopesFromMultiPayload(
        [
          { payload: 'a', writeCap: WC, startIndex: IDX },
          { payload: 'b', writeCap: WC, startIndex: IDX },
        ],
        true,
        true,
      ),
    // A null element is "no index for that destination" and is fine.
    good: { envelopes: [], buffer: null, next_dest_indices: [IDX, null], error_code: 0 },
    fields: { 'next_dest_indices[1]': 104 },
  },
  {
    kind: 'create_courier_envelopes_from_tombstone_range',
    call: (c) => c.createCourierEnvelopesFromTombstoneRange(WC, IDX, 2, true, true),
    good: { envelopes: [], buffer: null, next_dest_index: IDX, error_code: 0 },
    fields: { next_dest_index: 104 },
  },
];

/** The reply `good` with `field` (or one element of a list field, "name[i]") replaced by `bad`. */
function withBadField(good: Record<string, unknown>, field: string, bad: unknown): Record<string, unknown> {
  const m = /^(\w+)\[(\d+)\]$/.exec(field);
  if (!m) return { ...good, [field]: bad };
  const list = [...(good[m[1]] as unknown[])];
  list[Number(m[2])] = bad;
  return { ...good, [m[1]]: list };
}

describe('daemon frames: fixed-size fields and owned byte strings', function () {
  this.timeout(20_000);
  let daemon: FakeDaemon;
  let client: ThinClient | null;

  beforeEach(async () => {
    daemon = await FakeDaemon.start();
    client = null;
  });

  afterEach(async () => {
    await client?.close();
    await daemon.stop();
  });

  async function connected(): Promise<[ThinClient, FakeConnection]> {
    const c = new ThinClient({ dial: daemon.address, reconnectInitialDelayMs: 10, reconnectMaxDelayMs: 40 });
    client = c;
    const p = c.connect();
    const conn = await daemon.accept();
    await conn.handshake({ instanceToken: TOKEN });
    await p;
    return [c, conn];
  }

  describe('reply fields of the wrong size (§0, §4)', () => {
    it('fail only their own call with a ProtocolError naming reply kind, field, expected and actual size; a concurrent call succeeds on the same connection', async () => {
      const [c, conn] = await connected();
      let checked = 0;
      for (const tc of REPLY_CASES) {
        // Control: the well-formed reply is accepted, so a rejection below is the bad field's doing.
        const ok = tc.call(c);
        await conn.reply(tc.kind, tc.good);
        await ok;

        for (const [field, size] of Object.entries(tc.fields)) {
          for (const bad of [Buffer.alloc(5, 0xee), Buffer.alloc(size + 1, 0xee), 'text']) {
            const rejected = rejectionOf(tc.call(c));
            const other = c.getMessageBoxIndexCounter(IDX);
            const badReq = await conn.next(tc.kind);
            const otherReq = await conn.next('get_message_box_index_counter');
            conn.send(`${tc.kind}_reply` as ResponseKind, { query_id: badReq.body.query_id, ...withBadField(tc.good, field, bad) });
            conn.send('get_message_box_index_counter_reply', { query_id: otherReq.body.query_id, counter: 7, error_code: 0 });

            const err = await rejected;
            const got = typeof bad === 'string' ? 'a string' : String(bad.length);
            assert.ok(err instanceof ProtocolError, `${tc.kind}.${field} = ${got}: ${err}`);
            assert.match(err.message, new RegExp(`^${tc.kind}_reply: ${escapeRe(field)}: expected ${size} bytes, got ${got}$`));
            assert.equal(await other, 7n, 'the concurrent call got its reply');
            checked++;
          }
        }
      }
      assert.equal(checked, 12 * 3);
      assert.equal(c.isDaemonConnected(), true);
      assert.equal(daemon.connections.length, 1, 'no reconnect: the connection carried on');
    });

    it('next_dest_indices that is not a list fails its call instead of reading as "no indices"', async () => {
      const [c, conn] = await connected();
      const rejected = rejectionOf(c.createCourierEnvelopesFromMultiPayload([{ payload: 'a', writeCap: WC, startIndex: IDX }], true, true));
      await conn.reply('create_courier_envelopes_from_multi_payload', { envelopes: [], buffer: null, next_dest_indices: IDX, error_code: 0 });
      const err = await rejected;
      assert.ok(err instanceof ProtocolError, String(err));
      assert.match(err.message, /^create_courier_envelopes_from_multi_payload_reply: next_dest_indices: expected a list, got 104 bytes$/);
      assert.equal(c.isDaemonConnected(), true);
    });
  });

  describe('event fields of the wrong size', () => {
    it('are a read error (ProtocolError naming event and field), never published; the client reconnects', async () => {
      const [c, conn] = await connected();
      const published: ThinClientEvent[] = [];
      for (const t of ['messageSent', 'messageReply', 'messageIdGarbageCollected'] as const) c.on(t, (e: ThinClientEvent) => published.push(e));
      const short = Buffer.alloc(5);
      let current = conn;
      for (const [kind, body, why] of [
        ['message_sent_event', { message_id: null, surbid: short, sent_at: 1, reply_eta: 0 }, /^message_sent_event: surbid: expected 16 bytes, got 5$/],
        ['message_sent_event', { message_id: Buffer.alloc(17), surbid: ID16, sent_at: 1, reply_eta: 0 }, /^message_sent_event: message_id: expected 16 bytes, got 17$/],
        ['message_reply_event', { message_id: null, surbid: short, payload: null, error_code: 0 }, /^message_reply_event: surbid: expected 16 bytes, got 5$/],
        ['message_reply_event', { message_id: short, surbid: ID16, payload: null, error_code: 0 }, /^message_reply_event: message_id: expected 16 bytes, got 5$/],
        ['message_id_garbage_collected', { message_id: short }, /^message_id_garbage_collected: message_id: expected 16 bytes, got 5$/],
      ] as [ResponseKind, Record<string, unknown>, RegExp][]) {
        const disc = new Promise<any>((r) => c.once('daemonDisconnected', r));
        current.send(kind, body);
        const e = await disc;
        assert.ok(e.error instanceof ProtocolError, `${kind}: ${e.error}`);
        assert.match(e.error.message, why);
        current = await daemon.accept();
        await current.handshake({ instanceToken: TOKEN, resumed: true });
        await waitFor(() => c.isDaemonConnected());
      }
      assert.deepEqual(published, []);
    });

    it('a session_token_reply with a wrong-size app_id fails the handshake with a ProtocolError', async () => {
      const c = new ThinClient({ dial: daemon.address, reconnect: false });
      client = c;
      const p = rejectionOf(c.connect());
      const conn = await daemon.accept();
      conn.sendStatus({ instanceToken: TOKEN });
      conn.send('new_pki_document_event', { payload: null });
      await conn.next('session_token');
      conn.send('session_token_reply', { app_id: Buffer.alloc(5), resumed: false });
      const err = await p;
      assert.ok(err instanceof ProtocolError, String(err));
      assert.match(err.message, /^session_token_reply: app_id: expected 16 bytes, got 5$/);
      assert.equal(c.appId, null);
    });
  });

  describe('decoded byte strings own their memory', () => {
    it('small fields of a frame that shares its ArrayBuffer are exactly sized copies', () => {
      // A small frame lives in Buffer's shared 8 KiB pool; a large one inside a bigger chunk: views would pin either.
      for (const [what, ciphertextLength] of [['pooled small frame', 100], ['large frame inside a bigger buffer', 64 * 1024]] as const) {
        const body = encodeResponse('encrypt_write_reply', { query_id: ID16, ...encryptReply, message_ciphertext: Buffer.alloc(ciphertextLength, 7) });
        const shared = Buffer.concat([Buffer.alloc(64), body, Buffer.alloc(64)]).subarray(64, 64 + body.length);
        const frame = what === 'pooled small frame' ? Buffer.from(body) : shared;
        assert.notEqual(frame.buffer.byteLength, frame.length, `${what}: the test frame shares its ArrayBuffer`);
        const { body: reply } = decodeEnvelope(frame, ['encrypt_write_reply']);
        for (const field of ['query_id', 'message_ciphertext', 'envelope_descriptor', 'envelope_hash', 'next_message_box_index']) {
          const b = reply[field] as Buffer;
          assert.ok(Buffer.isBuffer(b), `${what}: ${field} is a Buffer`);
          assert.equal(b.buffer.byteLength, b.length, `${what}: ${field} owns exactly its ${b.length} bytes`);
        }
        assert.deepEqual(reply.envelope_hash, HASH);
      }
    });

    it('a large payload that is nearly its whole, unshared frame is not copied a second time, while its small neighbours are', () => {
      const payload = Buffer.alloc(256 * 1024, 9);
      const body = encodeResponse('get_pki_document_reply', { query_id: ID16, payload, epoch: 5, error_code: 0 });
      const frame = Buffer.from(body); // above the pool limit: its own ArrayBuffer, as the frame reader hands it over
      assert.equal(frame.buffer.byteLength, frame.length);
      const { body: reply } = decodeEnvelope(frame, ['get_pki_document_reply']);
      const got = reply.payload as Buffer;
      assert.deepEqual(got, payload);
      // Kept alive: at most the frame (payload + its ~600-byte envelope), never payload + copy.
      assert.ok(got.buffer.byteLength <= frame.length, `payload retains ${got.buffer.byteLength} bytes for ${got.length}`);
      assert.equal((reply.query_id as Buffer).buffer.byteLength, 16);
    });

    it('envelope hashes kept from many large encrypt_write replies retain their 32 bytes, not the frames', async () => {
      const gc = exposeGc();
      const [c, conn] = await connected();
      const FRAMES = 256;
      const CIPHERTEXT = 64 * 1024;
      const run = async (n: number, keep: boolean): Promise<Buffer[]> => {
        const kept: Buffer[] = [];
        for (let i = 0; i < n; i++) {
          const pending = c.encryptWrite('x', WC, IDX);
          await conn.reply('encrypt_write', { ...encryptReply, message_ciphertext: Buffer.alloc(CIPHERTEXT, i), envelope_hash: Buffer.alloc(32, i) });
          const r = await pending;
          // The ciphertext is most of its frame: it may be that frame, but never frame + copy.
          assert.ok(r.messageCiphertext.buffer.byteLength <= CIPHERTEXT + 4096, `ciphertext retains ${r.messageCiphertext.buffer.byteLength} bytes`);
          if (keep) kept.push(r.envelopeHash);
        }
        return kept;
      };
      /** ArrayBuffer memory still held after a run of FRAMES calls, and what it kept. */
      const measure = async (keep: boolean) => {
        await settle(gc);
        const before = process.memoryUsage().arrayBuffers;
        const kept = await run(FRAMES, keep);
        await settle(gc);
        return { retained: process.memoryUsage().arrayBuffers - before, kept };
      };
      await run(4, false); // warm up sockets, pools and code paths
      // The fake daemon logs every request it receives; a run that keeps nothing measures that baseline.
      const baseline = await measure(false);
      const { retained, kept } = await measure(true);
      const retainedPerHash = (retained - baseline.retained) / FRAMES;
      // Before the fix each kept hash pinned its whole ~65 KiB frame.
      assert.ok(retainedPerHash < 1024, `ArrayBuffer memory retained per kept hash: ${Math.round(retainedPerHash)} bytes`);
      for (const [i, h] of kept.entries()) {
        assert.deepEqual(h, Buffer.alloc(32, i % 256));
        assert.equal(h.buffer.byteLength, 32, `hash ${i} owns exactly its 32 bytes`);
      }
    });
  });
});

/** Full collections until freed ArrayBuffers are accounted for (V8 sweeps their memory in the background). */
async function settle(gc: () => void): Promise<void> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
}

/** global.gc, exposed at run time when node was started without --expose-gc. */
function exposeGc(): () => void {
  if (typeof global.gc === 'function') return global.gc as () => void;
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}
