import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  LARGE_HEADER_LENGTH,
  MAX_MESSAGE_LENGTH,
  assembleLarge,
  encodeLarge,
  encodeSingle,
  maxSinglePayload,
  parseFirstBox,
} from '../../src/channels/framing';
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
