/**
 * The lazy envelope decoder (src/wire/envelope.ts) against the meaning of a
 * full CBOR decode: for every reply kind, for null versus absent fields,
 * unknown keys, duplicate keys, value types it leaves to cbor-x, and
 * malformed frames, decodeEnvelope must say exactly what decoding the whole
 * frame and picking its member says.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import {
  CURRENT_RESPONSE_KINDS,
  EmptyEnvelopeError,
  REQUEST_KINDS,
  RESPONSE_KINDS,
  decodeCbor,
  decodeEnvelope,
  encodeCbor,
  encodeRequest,
  encodeResponse,
} from '../../src/wire';

const KNOWN: readonly string[] = CURRENT_RESPONSE_KINDS;

/** What a full decode of the frame means: the first known non-null member, else the first unknown one. */
function reference(frame: Uint8Array, known: readonly string[]): { kind: string; body: unknown; keys: string[] } {
  const v = decodeCbor(frame) as Record<string, unknown>;
  const keys = Object.keys(v);
  const members = keys.filter((k) => v[k] !== null && v[k] !== undefined);
  if (members.length === 0) throw new EmptyEnvelopeError();
  const kind = members.find((k) => known.includes(k)) ?? members[0];
  return { kind, body: v[kind], keys };
}

/** decodeEnvelope and the reference agree: kind, body (deeply, Buffers by content), keys in order. */
function assertSameAsFullDecode(frame: Uint8Array, known: readonly string[] = KNOWN): ReturnType<typeof decodeEnvelope> {
  const got = decodeEnvelope(frame, known);
  const want = reference(frame, known);
  assert.equal(got.kind, want.kind);
  assert.deepStrictEqual(plain(got.body), plain(want.body));
  assert.deepEqual(got.keys, want.keys);
  return got;
}

/** Buffers as their bytes, so views and copies compare by content. */
function plain(v: unknown): unknown {
  if (v instanceof Uint8Array) return { bytes: Buffer.from(v).toString('hex') };
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === 'object') {
    const o: Record<string, unknown> = {};
    for (const k of Object.keys(v)) o[k] = plain((v as Record<string, unknown>)[k]);
    return o;
  }
  return v;
}

/** A body of every value type a reply can carry. */
function richBody(i: number): Record<string, unknown> {
  return {
    query_id: randomBytes(16),
    error_code: i,
    small: 23,
    one_byte: 24,
    two_bytes: 0x1234,
    four_bytes: 0xfffffffe,
    u64: 2n ** 62n + BigInt(i),
    negative: -1,
    negative_wide: -0x10000,
    empty_bytes: Buffer.alloc(0),
    ciphertext: randomBytes(1200),
    yes: true,
    no: false,
    nothing: null,
    text: `err ${i} ✓`,
    float: 1.5,
    list: [randomBytes(104), null, 7],
    nested: { a: 1, b: Buffer.from([1, 2]) },
  };
}

describe('wire: the lazy envelope decoder', () => {
  it('decodes every reply kind, pinned and current envelopes, as a full decode does', () => {
    for (const envelopeKinds of [RESPONSE_KINDS, CURRENT_RESPONSE_KINDS]) {
      envelopeKinds.forEach((kind, i) => {
        const env = assertSameAsFullDecode(encodeResponse(kind, richBody(i), envelopeKinds));
        assert.equal(env.kind, kind);
        // The lazy walk answered (a full decode lists the keys at once; the walk reads them when asked).
        assert.ok(!Object.hasOwn(env, 'keys'), `${kind}: decoded by the lazy walk`);
        assert.equal(env.keys.length, envelopeKinds.length);
        assert.equal(env.body.u64, 2n ** 62n + BigInt(i), 'an 8-byte integer stays a bigint');
        assert.equal(typeof env.body.four_bytes, 'number');
      });
    }
  });

  it('decodes every request kind as a full decode does (the emulator reads requests with it)', () => {
    for (const kind of REQUEST_KINDS) assertSameAsFullDecode(encodeRequest(kind, richBody(1)), REQUEST_KINDS);
  });

  it('keeps a field that is null distinct from one that is absent', () => {
    const env = assertSameAsFullDecode(encodeResponse('encrypt_write_reply', { query_id: Buffer.alloc(16), message_ciphertext: null, error_code: 0 }));
    assert.ok('message_ciphertext' in env.body);
    assert.equal(env.body.message_ciphertext, null);
    assert.ok(!('envelope_hash' in env.body));
    assert.equal(env.body.envelope_hash, undefined);
  });

  it('skips null members whatever their key, and treats undefined members as null', () => {
    // 0xf7 (undefined) as a member value: a full decode ignores it like null.
    const frame = Buffer.concat([Buffer.from([0xa3]), encodeCbor('x').subarray(0), Buffer.from([0xf7]), encodeCbor('shutdown_event'), Buffer.from([0xf6]), encodeCbor('new_keypair_reply'), encodeCbor({ error_code: 2 })]);
    const env = assertSameAsFullDecode(frame);
    assert.equal(env.kind, 'new_keypair_reply');
    assert.deepEqual(env.keys, ['x', 'shutdown_event', 'new_keypair_reply']);
  });

  it('ignores unknown keys, null or not, around a known member, and returns an unknown member alone by its name', () => {
    const around = encodeCbor({ future_event: { x: 1 }, future_null: null, new_keypair_reply: { query_id: Buffer.alloc(16), error_code: 3 }, later: { y: 2 } });
    assert.equal(assertSameAsFullDecode(around).kind, 'new_keypair_reply');
    const alone = encodeCbor({ shutdown_event: null, some_future_reply: { query_id: Buffer.alloc(16, 1) }, another_future: { z: 3 } });
    const env = assertSameAsFullDecode(alone);
    assert.equal(env.kind, 'some_future_reply');
    // An unknown member need not be a map.
    assert.equal(assertSameAsFullDecode(encodeCbor({ some_future_event: 5, shutdown_event: null })).body, 5);
  });

  it('decodes many distinct unknown keys correctly (past the key cache)', () => {
    for (let round = 0; round < 3; round++) {
      const o: Record<string, unknown> = {};
      for (let i = 0; i < 300; i++) o[`k_${round}_${i}_${'x'.repeat(i % 70)}`] = null;
      o.encrypt_read_reply = { query_id: Buffer.alloc(16), error_code: 0 };
      o[`ünïcödé_${round}`] = null;
      const env = assertSameAsFullDecode(encodeCbor(o));
      assert.equal(env.keys.length, 302);
    }
  });

  it('gives duplicate keys the meaning of a full decode: the last one wins', () => {
    const key = encodeCbor('encrypt_write_reply');
    const body = encodeCbor({ query_id: Buffer.alloc(16), error_code: 1 });
    const other = encodeCbor({ query_id: Buffer.alloc(16), error_code: 2 });
    // {k: body, k: null}: the member is gone, the envelope empty.
    assert.throws(() => decodeEnvelope(Buffer.concat([Buffer.from([0xa2]), key, body, key, Buffer.from([0xf6])]), KNOWN), EmptyEnvelopeError);
    // {k: null, k: body} and {k: body, k: other}.
    assert.equal(decodeEnvelope(Buffer.concat([Buffer.from([0xa2]), key, Buffer.from([0xf6]), key, body]), KNOWN).body.error_code, 1);
    assert.equal(decodeEnvelope(Buffer.concat([Buffer.from([0xa2]), key, body, key, other]), KNOWN).body.error_code, 2);
    // Inside the member too.
    const dupField = Buffer.concat([Buffer.from([0xa1]), key, Buffer.from([0xa2]), encodeCbor('error_code'), encodeCbor(1), encodeCbor('error_code'), encodeCbor(9)]);
    assert.equal(assertSameAsFullDecode(dupField).body.error_code, 9);
  });

  it('leaves what cbor-x decodes its own way to cbor-x: __proto__, non-ASCII and non-text keys, indefinite maps', () => {
    const proto = Buffer.concat([Buffer.from([0xa1]), encodeCbor('encrypt_write_reply'), Buffer.from([0xa2]), encodeCbor('__proto__'), encodeCbor({ polluted: true }), encodeCbor('error_code'), encodeCbor(0)]);
    const env = assertSameAsFullDecode(proto);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.equal(Object.getPrototypeOf(env.body), Object.prototype);
    assertSameAsFullDecode(encodeResponse('encrypt_write_reply', { 'clé_ü': Buffer.from([1]), error_code: 0 }));
    // An integer key inside the member.
    const intKey = Buffer.concat([Buffer.from([0xa1]), encodeCbor('encrypt_write_reply'), Buffer.from([0xa2, 0x01, 0x02]), encodeCbor('error_code'), encodeCbor(0)]);
    assertSameAsFullDecode(intKey);
    // An indefinite-length member map.
    const indefinite = Buffer.concat([Buffer.from([0xa1]), encodeCbor('encrypt_write_reply'), Buffer.from([0xbf]), encodeCbor('error_code'), encodeCbor(4), Buffer.from([0xff])]);
    assert.equal(assertSameAsFullDecode(indefinite).body.error_code, 4);
  });

  it('rejects what a full decode rejects: empty envelopes, non-maps, a known member that is not a map, trailing or missing bytes', () => {
    const allNull: Record<string, null> = {};
    for (const k of RESPONSE_KINDS) allNull[k] = null;
    assert.throws(() => decodeEnvelope(encodeCbor(allNull), KNOWN), EmptyEnvelopeError);
    assert.throws(() => decodeEnvelope(encodeCbor([1, 2]), KNOWN), /not a CBOR map/);
    assert.throws(() => decodeEnvelope(encodeCbor({ new_keypair_reply: 5 }), KNOWN), /member new_keypair_reply is not a map/);
    assert.throws(() => decodeEnvelope(encodeCbor({ new_keypair_reply: [1] }), KNOWN), /member new_keypair_reply is not a map/);
    assert.throws(() => decodeEnvelope(encodeCbor({ new_keypair_reply: Buffer.from([1]) }), KNOWN), /member new_keypair_reply is not a map/);
    const good = encodeResponse('encrypt_write_reply', { query_id: Buffer.alloc(16), error_code: 0 });
    assert.throws(() => decodeEnvelope(Buffer.concat([good, Buffer.from([0x00])]), KNOWN));
    for (const cut of [1, 2, 40, good.length - 1]) assert.throws(() => decodeEnvelope(good.subarray(0, cut), KNOWN), `cut at ${cut}`);
    assert.throws(() => decodeEnvelope(Buffer.alloc(0), KNOWN));
  });

  it('gives every byte string of a member its own memory, also in nested values', () => {
    const body = encodeResponse('encrypt_write_reply', { query_id: Buffer.alloc(16, 1), list: [Buffer.alloc(8, 2)], nested: { h: Buffer.alloc(32, 3) }, error_code: 0 });
    const frame = Buffer.from(body); // pooled: shares its ArrayBuffer
    const env = decodeEnvelope(frame, KNOWN);
    for (const b of [env.body.query_id, env.body.list[0], env.body.nested.h] as Buffer[]) {
      assert.ok(Buffer.isBuffer(b));
      assert.equal(b.buffer.byteLength, b.length);
    }
    // The caller's frame is left as it was.
    assert.deepEqual(frame, body);
  });

  it('reads a plain Uint8Array frame as it reads a Buffer', () => {
    const frame = encodeResponse('encrypt_write_reply', richBody(3));
    const plainFrame = new Uint8Array(frame.length);
    plainFrame.set(frame);
    const env = assertSameAsFullDecode(plainFrame);
    assert.ok(Buffer.isBuffer(env.body.ciphertext));
    assert.deepEqual(env.keys, RESPONSE_KINDS);
  });

  it('matches a full decode on random envelopes', () => {
    const kinds = [...CURRENT_RESPONSE_KINDS, 'unknown_a', 'unknown_b'];
    for (let i = 0; i < 300; i++) {
      const o: Record<string, unknown> = {};
      for (const k of kinds) {
        const r = Math.random();
        o[k] = r < 0.85 ? null : r < 0.95 ? richBody(i) : { query_id: randomBytes(16), error_code: i % 30 };
      }
      if (Object.values(o).every((v) => v === null)) o.encrypt_read_reply = { error_code: 0 };
      assertSameAsFullDecode(encodeCbor(o));
    }
  });
});
