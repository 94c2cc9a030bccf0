import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  LARGE_HEADER_LENGTH,
  LargeMessageAssembler,
  MAX_MESSAGE_LENGTH,
  assembleLarge,
  encodeLarge,
  encodeSingle,
  largeHeader,
  maxSinglePayload,
  parseFirstBox,
} from '../../src/channels/framing';
import { blake2b256 } from '../../src/client/crypto';
import { needsCopy } from '../../src/channels/framing';

describe('channels: framing v1', () => {
  it('frames a single-box message with a 4-byte header and parses it back', () => {
    const frame = encodeSingle(Buffer.from('hello'));
    assert.deepEqual([...frame.subarray(0, 4)], [0x4b, 0x43, 0x01, 0x01]);
    const parsed = parseFirstBox(frame);
    assert.equal(parsed.kind, 'single');
    assert.equal(parsed.kind === 'single' && parsed.payload.toString(), 'hello');
  });

  it('keeps an empty payload a 4-byte message, distinct from a tombstone', () => {
    const frame = encodeSingle(Buffer.alloc(0));
    assert.equal(frame.length, 4);
    const parsed = parseFirstBox(frame);
    assert.equal(parsed.kind === 'single' && parsed.payload.length, 0);
  });

  it('chooses a copy only when the header and payload do not fit one box', () => {
    assert.equal(maxSinglePayload(1553), 1549);
    assert.equal(needsCopy(1549, 1553), false);
    assert.equal(needsCopy(1550, 1553), true);
  });

  it('reassembles a large message split the way a copy stream splits it', () => {
    const payload = randomBytes(10 * 1024);
    const framed = encodeLarge(payload);
    assert.equal(framed.length, LARGE_HEADER_LENGTH + payload.length);
    assert.equal(framed.readUInt32BE(4), payload.length);
    const chunk = 1549;
    const boxes: Buffer[] = [];
    for (let o = 0; o < framed.length; o += chunk) boxes.push(framed.subarray(o, o + chunk));
    const head = parseFirstBox(boxes[0]);
    assert.equal(head.kind, 'large');
    if (head.kind !== 'large') return;
    assert.equal(head.framedLength, framed.length);
    const out = assembleLarge(head, boxes);
    assert.equal(out.ok, true);
    assert.ok(out.ok && out.payload.equals(payload));
  });

  it('frames a large message from its length and hash alone, and reassembles it box by box into one Buffer', () => {
    const payload = randomBytes(5000);
    const framed = encodeLarge(payload);
    assert.ok(largeHeader(payload.length, blake2b256(payload)).equals(framed.subarray(0, LARGE_HEADER_LENGTH)));
    const head = parseFirstBox(framed.subarray(0, 1545));
    assert.equal(head.kind, 'large');
    if (head.kind !== 'large') return;
    const assembler = new LargeMessageAssembler(head);
    assert.equal(assembler.missing, framed.length - 1545);
    for (let o = 1545; o < framed.length; o += 1545) assert.equal(assembler.add(framed.subarray(o, o + 1545)), null);
    assert.equal(assembler.missing, 0);
    const out = assembler.finish();
    assert.ok(out.ok && out.payload.equals(payload));
    // Bytes past the announced length make it malformed.
    const over = new LargeMessageAssembler(head);
    assert.equal(over.add(framed.subarray(1545)), null);
    assert.match(over.add(Buffer.from('x')) ?? '', /spans 5041 bytes, header says 5040/);
    // So does a box short of it, or a wrong hash.
    const short = new LargeMessageAssembler(head);
    short.add(framed.subarray(1545, 3000));
    assert.deepEqual(short.finish(), { ok: false, reason: 'large message spans 3000 bytes, header says 5040' });
    const corrupt = new LargeMessageAssembler(head);
    const tail = Buffer.from(framed.subarray(1545));
    tail[100] ^= 1;
    corrupt.add(tail);
    assert.deepEqual(corrupt.finish(), { ok: false, reason: 'large message hash mismatch' });
  });

  it('rejects a reassembly with extra bytes or a corrupted payload', () => {
    const payload = randomBytes(4000);
    const framed = encodeLarge(payload);
    const boxes = [framed.subarray(0, 1549), framed.subarray(1549, 3098), framed.subarray(3098)];
    const head = parseFirstBox(boxes[0]);
    assert.equal(head.kind, 'large');
    if (head.kind !== 'large') return;
    const extra = assembleLarge(head, [...boxes, Buffer.from('x')]);
    assert.equal(extra.ok, false);
    const corrupted = Buffer.from(boxes[2]);
    corrupted[0] ^= 0xff;
    const bad = assembleLarge(head, [boxes[0], boxes[1], corrupted]);
    assert.deepEqual(bad, { ok: false, reason: 'large message hash mismatch' });
  });

  it('reports boxes that are not channel messages as malformed', () => {
    assert.equal(parseFirstBox(Buffer.from('plain text')).kind, 'malformed');
    assert.equal(parseFirstBox(Buffer.from([0x4b, 0x43, 0x02, 0x01])).kind, 'malformed');
    assert.equal(parseFirstBox(Buffer.from([0x4b, 0x43, 0x01, 0x07, 1])).kind, 'malformed');
    // A large header whose whole message would fit in the first box is not valid.
    const small = encodeLarge(Buffer.from('tiny'));
    assert.equal(parseFirstBox(small).kind, 'malformed');
    assert.equal(parseFirstBox(Buffer.from([0x4b, 0x43, 0x01, 0x02, 0, 0])).kind, 'malformed');
  });

  it('refuses payloads over the channel message limit', () => {
    assert.equal(MAX_MESSAGE_LENGTH, 10 * 1024 * 1024 - LARGE_HEADER_LENGTH);
    assert.throws(() => encodeLarge(Buffer.alloc(MAX_MESSAGE_LENGTH + 1)), RangeError);
  });
});
