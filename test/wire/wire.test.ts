import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import sinon from 'sinon';

import {
  DEFAULT_MAX_FRAME_LENGTH,
  FrameDecoder,
  FrameTimeoutError,
  FrameTooLargeError,
  RESPONSE_KINDS,
  decodeCbor,
  decodeCborFaithful,
  decodeEnvelope,
  encodeCbor,
  encodeFrame,
  encodeRequest,
  encodeResponse,
  toBigInt,
  toNumber,
  u64,
} from '../../src/wire';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('wire: framing', () => {
  it('writes a 4-byte big-endian prefix followed by the body, in one buffer', () => {
    const f = encodeFrame(Buffer.from([1, 2, 3]));
    assert.equal(f.toString('hex'), '00000003010203');
  });

  it('reassembles a frame delivered one byte at a time', () => {
    const d = new FrameDecoder();
    const frame = encodeFrame(Buffer.from('hello world'));
    const out: Buffer[] = [];
    for (const b of frame) out.push(...d.push(Buffer.from([b])));
    assert.equal(out.length, 1);
    assert.equal(out[0].toString(), 'hello world');
    assert.equal(d.pendingBytes, 0);
  });

  it('splits several frames merged into one chunk, keeping a trailing partial frame', () => {
    const d = new FrameDecoder();
    const a = encodeFrame(Buffer.from('a'));
    const b = encodeFrame(Buffer.from('bb'));
    const c = encodeFrame(Buffer.from('ccc'));
    const merged = Buffer.concat([a, b, c.subarray(0, 5)]);
    const first = d.push(merged);
    assert.deepEqual(
      first.map((x) => x.toString()),
      ['a', 'bb'],
    );
    assert.equal(d.pendingBytes, 5);
    const rest = d.push(c.subarray(5));
    assert.deepEqual(
      rest.map((x) => x.toString()),
      ['ccc'],
    );
  });

  it('handles a prefix split across chunks', () => {
    const d = new FrameDecoder();
    const f = encodeFrame(Buffer.from('xyz'));
    assert.deepEqual(d.push(f.subarray(0, 2)), []);
    assert.deepEqual(d.push(f.subarray(2, 3)), []);
    const out = d.push(f.subarray(3));
    assert.equal(out[0].toString(), 'xyz');
  });

  it('yields a zero-length frame as an empty buffer', () => {
    const d = new FrameDecoder();
    const out = d.push(Buffer.concat([encodeFrame(Buffer.alloc(0)), encodeFrame(Buffer.from('z'))]));
    assert.equal(out.length, 2);
    assert.equal(out[0].length, 0);
    assert.equal(out[1].toString(), 'z');
  });

  it('accepts a frame of exactly the maximum length and rejects one byte more', () => {
    const max = 64;
    const ok = new FrameDecoder(max).push(encodeFrame(Buffer.alloc(max, 7)));
    assert.equal(ok.length, 1);
    assert.equal(ok[0].length, max);
    assert.throws(() => new FrameDecoder(max).push(encodeFrame(Buffer.alloc(max + 1))), FrameTooLargeError);
  });

  it('rejects an oversize prefix as soon as the 4 prefix bytes arrive, before allocating', () => {
    const allocUnsafe = sinon.spy(Buffer, 'allocUnsafe');
    const alloc = sinon.spy(Buffer, 'alloc');
    try {
      const d = new FrameDecoder(); // default 40 MiB
      assert.equal(d.maxFrameLength, DEFAULT_MAX_FRAME_LENGTH);
      let err: unknown;
      try {
        d.push(Buffer.from([0xff, 0xff, 0xff, 0xff]));
      } catch (e) {
        err = e;
      }
      assert.ok(err instanceof FrameTooLargeError, 'FrameTooLargeError expected');
      assert.equal(err.declaredLength, 0xffffffff);
      assert.equal(err.maxLength, DEFAULT_MAX_FRAME_LENGTH);
      const big = [...allocUnsafe.args, ...alloc.args].filter((a) => typeof a[0] === 'number' && a[0] > 1024);
      assert.deepEqual(big, [], 'no buffer was allocated for the declared body');
    } finally {
      allocUnsafe.restore();
      alloc.restore();
    }
  });
});

describe('wire: large and partial frames', () => {
  it('copies a large frame fed in many chunks into one buffer of the declared length, keeping no chunk', () => {
    const body = randomBytes(3 * 1024 * 1024 + 17);
    const frame = encodeFrame(body);
    const d = new FrameDecoder();
    const out: Buffer[] = [];
    // The first cut splits the length prefix; the odd step misaligns every later chunk.
    const cuts = [0, 2];
    for (let off = 2 + 65_531; off < frame.length; off += 65_531) cuts.push(off);
    cuts.push(frame.length);
    for (let i = 0; i + 1 < cuts.length; i++) {
      const chunk = Buffer.from(frame.subarray(cuts[i], cuts[i + 1])); // a private buffer, as a socket hands out
      out.push(...d.push(chunk));
      if (i === 1) assert.equal(d.reservedBytes, body.length, 'the body buffer is allocated once the length is known');
      // A decoder still referencing this chunk would now see garbage.
      chunk.fill(0xee);
    }
    assert.equal(out.length, 1);
    assert.ok(out[0].equals(body), 'decoded body equals the original');
    assert.equal(d.pendingBytes, 0);
    assert.equal(d.reservedBytes, 0);
  });

  describe('frame deadline', () => {
    let clock: sinon.SinonFakeTimers;
    beforeEach(() => {
      clock = sinon.useFakeTimers();
    });
    afterEach(() => clock.restore());

    function decoderWithDeadline(ms: number): { d: FrameDecoder; timeouts: FrameTimeoutError[] } {
      const timeouts: FrameTimeoutError[] = [];
      const d = new FrameDecoder({ frameTimeoutMs: ms, onFrameTimeout: (e) => timeouts.push(e) });
      return { d, timeouts };
    }

    it('reports a frame that misses the bound, counted from its first byte, naming declared length, bytes received and bound', () => {
      const { d, timeouts } = decoderWithDeadline(1000);
      const frame = encodeFrame(Buffer.alloc(5000, 1));
      d.push(frame.subarray(0, 1004));
      clock.tick(600);
      d.push(frame.subarray(1004, 2004)); // progress does not extend the deadline
      clock.tick(399);
      assert.equal(timeouts.length, 0);
      clock.tick(1);
      assert.equal(timeouts.length, 1);
      const e = timeouts[0];
      assert.ok(e instanceof FrameTimeoutError);
      assert.equal(e.declaredLength, 5000);
      assert.equal(e.receivedBytes, 2000);
      assert.equal(e.timeoutMs, 1000);
      assert.match(e.message, /declared length 5000 bytes/);
      assert.match(e.message, /2000 bytes/);
      assert.match(e.message, /1000 ms/);
      assert.equal(d.reservedBytes, 0, 'the partial frame is released');
      assert.deepEqual(d.push(frame.subarray(2004)), [], 'a timed-out decoder yields nothing more');
      clock.tick(10_000);
      assert.equal(timeouts.length, 1, 'reported once');
    });

    it('bounds each frame separately and runs no deadline between frames', () => {
      const { d, timeouts } = decoderWithDeadline(1000);
      const a = encodeFrame(Buffer.alloc(10, 1));
      const b = encodeFrame(Buffer.alloc(10, 2));
      d.push(a.subarray(0, 5));
      clock.tick(900);
      assert.equal(d.push(Buffer.concat([a.subarray(5), b.subarray(0, 5)])).length, 1); // b starts at t=900
      clock.tick(900); // past a's deadline, not b's
      assert.equal(timeouts.length, 0);
      assert.equal(d.push(b.subarray(5)).length, 1);
      clock.tick(60_000); // an idle connection is not a partial frame
      assert.equal(timeouts.length, 0);
    });

    it('bounds a half-received length prefix too', () => {
      const { d, timeouts } = decoderWithDeadline(250);
      d.push(Buffer.from([0, 0]));
      clock.tick(250);
      assert.equal(timeouts.length, 1);
      assert.equal(timeouts[0].declaredLength, null);
      assert.equal(timeouts[0].receivedBytes, 2);
      assert.match(timeouts[0].message, /length prefix/);
    });

    it('close() cancels the deadline and releases the partial frame', () => {
      const { d, timeouts } = decoderWithDeadline(100);
      d.push(encodeFrame(Buffer.alloc(4096)).subarray(0, 100));
      assert.equal(d.reservedBytes, 4096);
      d.close();
      assert.equal(d.reservedBytes, 0);
      clock.tick(1000);
      assert.equal(timeouts.length, 0);
    });
  });
});

describe('wire: CBOR codec', () => {
  it('keeps null distinct from an empty byte string, both ways', () => {
    const enc = encodeCbor({ a: null, b: Buffer.alloc(0) });
    assert.equal(enc.toString('hex'), 'a26161f6616240');
    const dec = decodeCbor(enc);
    assert.equal(dec.a, null);
    assert.ok(Buffer.isBuffer(dec.b));
    assert.equal(dec.b.length, 0);
  });

  it('encodes Uint8Array and Buffer as plain byte strings (no tag), text keys, shortest map headers', () => {
    assert.equal(encodeCbor(new Uint8Array([1, 2])).toString('hex'), '420102');
    assert.equal(encodeCbor({ x: Buffer.from([9]) }).toString('hex'), 'a161784109');
    const small: Record<string, number> = {};
    for (let i = 0; i < 3; i++) small[`k${i}`] = i;
    assert.equal(encodeCbor(small)[0], 0xa3);
    const big: Record<string, number> = {};
    for (let i = 0; i < 24; i++) big[`k${i}`] = i;
    assert.equal(encodeCbor(big).subarray(0, 2).toString('hex'), 'b818');
    // The Python binding's single-key request envelope.
    assert.equal(encodeRequest('thin_close', {}).toString('hex'), 'a16a7468696e5f636c6f7365a0');
  });

  it('encodes u64 values in the shortest form and decodes 8-byte integers as bigint', () => {
    assert.equal(encodeCbor(u64(0)).toString('hex'), '00');
    assert.equal(encodeCbor(u64(100n)).toString('hex'), '1864');
    assert.equal(encodeCbor(u64(0xffffffff)).toString('hex'), '1affffffff');
    assert.equal(encodeCbor(u64(2 ** 40)).toString('hex'), '1b0000010000000000', 'not a float');
    const v = (1n << 62n) + 12345n;
    const enc = encodeCbor(u64(v));
    assert.equal(enc.toString('hex'), '1b4000000000003039');
    const dec = decodeCbor(enc);
    assert.equal(typeof dec, 'bigint');
    assert.equal(dec, v);
    assert.equal(toBigInt(dec), v);
    assert.equal(toBigInt(decodeCbor(hex('01'))), 1n);
    assert.equal(toNumber(decodeCbor(hex('1b0000000000000005'))), 5);
    assert.throws(() => toNumber(v), RangeError);
  });

  it('toNumber / toBigInt accept integers only: TypeError naming the field for text, fractions and NaN; null is 0', () => {
    assert.equal(toBigInt(null, 'counter'), 0n);
    assert.equal(toBigInt(undefined, 'counter'), 0n);
    assert.equal(toBigInt(7, 'counter'), 7n);
    assert.equal(toNumber(null, 'error_code'), 0);
    for (const bad of ['12', 1.5, Number.NaN, Number.POSITIVE_INFINITY, true, Buffer.from([1]), {}]) {
      assert.throws(() => toBigInt(bad, 'counter'), (e: unknown) => e instanceof TypeError && /^counter: expected an integer, got /.test(e.message), `toBigInt(${String(bad)})`);
      assert.throws(() => toNumber(bad, 'error_code'), (e: unknown) => e instanceof TypeError && /^error_code: expected an integer, got /.test(e.message), `toNumber(${String(bad)})`);
    }
    // A float64 integer above 2^53 cannot be trusted as a number.
    assert.throws(() => toNumber(2 ** 60, 'reply_eta'), RangeError);
    assert.equal(toBigInt(2 ** 60, 'reply_eta'), 1n << 60n);
  });

  it('decodes half, single and double precision floats', () => {
    assert.equal(decodeCbor(hex('f93e00')), 1.5); // half
    assert.equal(decodeCbor(hex('f90000')), 0); // half zero, as in the vector PKI document
    assert.equal(decodeCbor(hex('fa3fc00000')), 1.5); // single
    assert.equal(decodeCbor(hex('fb3f747ae147ae147b')), 0.005); // double
    assert.equal(decodeCbor(hex('f97c00')), Infinity);
  });

  it('decodeCborFaithful keeps integer and byte-string map keys, objects otherwise', () => {
    // {100: h'01', "a": {h'aa': 1}}
    const m = decodeCborFaithful(hex('a2 1864 4101 6161 a1 41aa 01'));
    assert.ok(m instanceof Map);
    assert.deepEqual(m.get(100), Buffer.from([1]));
    const inner = m.get('a');
    assert.ok(inner instanceof Map);
    const [[k, val]] = [...inner.entries()];
    assert.deepEqual(k, Buffer.from([0xaa]));
    assert.equal(val, 1);
    assert.deepEqual(decodeCborFaithful(hex('a1 6178 a0')), { x: {} });
  });
});

describe('wire: envelopes', () => {
  it('decodes the full 20-key Go envelope of §8.4 to its one non-null member', () => {
    const body = hex(`b47373657373696f6e5f746f6b656e5f7265706c79f66e73687574646f776e5f6576656e74f677636f6e6e656374696f
      6e5f7374617475735f6576656e74f6766e65775f706b695f646f63756d656e745f6576656e74f6726d6573736167655f
      73656e745f6576656e74f6736d6573736167655f7265706c795f6576656e74f6781c6d6573736167655f69645f676172
      626167655f636f6c6c6563746564f6716e65775f6b6579706169725f7265706c79f672656e63727970745f726561645f
      7265706c79f673656e63727970745f77726974655f7265706c79f6782773746172745f726573656e64696e675f656e63
      7279707465645f6d6573736167655f7265706c79f6782863616e63656c5f726573656e64696e675f656e637279707465
      645f6d6573736167655f7265706c79f6782273746172745f726573656e64696e675f636f70795f636f6d6d616e645f72
      65706c79f6782363616e63656c5f726573656e64696e675f636f70795f636f6d6d616e645f7265706c79f6781c6e6578
      745f6d6573736167655f626f785f696e6465785f7265706c79f678236765745f6d6573736167655f626f785f696e6465
      785f636f756e7465725f7265706c79a36871756572795f6964500000000000000000000000000000000467636f756e74
      6572016a6572726f725f636f646500766765745f706b695f646f63756d656e745f7265706c79f6782b6372656174655f
      636f75726965725f656e76656c6f7065735f66726f6d5f7061796c6f61645f7265706c79f678316372656174655f636f
      75726965725f656e76656c6f7065735f66726f6d5f6d756c74695f7061796c6f61645f7265706c79f678336372656174
      655f636f75726965725f656e76656c6f7065735f66726f6d5f746f6d6273746f6e655f72616e67655f7265706c79f6`);
    assert.equal(body.length, 671);
    const env = decodeEnvelope(body, RESPONSE_KINDS);
    assert.equal(env.kind, 'get_message_box_index_counter_reply');
    assert.deepEqual(env.body.query_id, hex('00000000000000000000000000000004'));
    assert.equal(env.body.counter, 1);
    assert.equal(env.body.error_code, 0);
    // And our own Go-style encoder reproduces it byte for byte.
    const re = encodeResponse('get_message_box_index_counter_reply', { query_id: hex('00000000000000000000000000000004'), counter: 1, error_code: 0 });
    assert.equal(re.toString('hex'), body.toString('hex'));
  });

  it('ignores unknown keys, null or not, when a known member is present', () => {
    const frame = encodeCbor({
      some_future_event: { x: 1 },
      another_future_key: null,
      new_keypair_reply: { query_id: Buffer.alloc(16), error_code: 3 },
    });
    const env = decodeEnvelope(frame, RESPONSE_KINDS);
    assert.equal(env.kind, 'new_keypair_reply');
    assert.equal(env.body.error_code, 3);
  });

  it('returns an envelope whose only non-null member is unknown under that name', () => {
    const env = decodeEnvelope(encodeCbor({ voucher_mint_reply: { query_id: Buffer.alloc(16) }, shutdown_event: null }), RESPONSE_KINDS);
    assert.equal(env.kind, 'voucher_mint_reply');
  });

  it('rejects an envelope whose members are all null, and non-map frames', () => {
    const allNull: Record<string, null> = {};
    for (const k of RESPONSE_KINDS) allNull[k] = null;
    assert.throws(() => decodeEnvelope(encodeCbor(allNull), RESPONSE_KINDS), /no non-null member/);
    assert.throws(() => decodeEnvelope(encodeCbor([1, 2]), RESPONSE_KINDS), /not a CBOR map/);
    assert.throws(() => decodeEnvelope(encodeCbor({ new_keypair_reply: 5 }), RESPONSE_KINDS), /not a map/);
    assert.throws(() => decodeEnvelope(hex('ff'), RESPONSE_KINDS));
  });
});
