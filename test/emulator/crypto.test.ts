/**
 * The emulator's own cryptography, function by function: its HKDF against
 * node:crypto's, and box signatures (remembered when made, so a copy or a
 * read verifies them cheaply) still refusing every tampered box.
 */
import assert from 'node:assert/strict';
import { hkdfSync, randomBytes } from 'node:crypto';
import { DEFAULT_PIGEONHOLE_GEOMETRY } from '../../src/wire';
import { boxGeometry, deriveKeypair, forgetBoxSignatures, hkdf, nextIndex, openBox, readCapOf, sealBox } from '../../src/emulator/pigeonhole';

describe('emulator: cryptography', () => {
  it('hkdf gives the bytes of hkdfSync(sha256) for every length, string and byte salts, the empty salt', () => {
    const ikm = randomBytes(32);
    for (const length of [1, 16, 31, 32, 33, 64, 80, 255, 8160]) {
      for (const salt of ['bacap-index', randomBytes(40), '']) {
        const want = Buffer.from(hkdfSync('sha256', ikm, typeof salt === 'string' ? Buffer.from(salt) : salt, Buffer.from('some info'), length));
        assert.deepEqual(hkdf(ikm, salt, 'some info', length), want, `length ${length}, salt ${typeof salt === 'string' ? JSON.stringify(salt) : 'bytes'}`);
      }
    }
    assert.throws(() => hkdf(ikm, 'x', 'y', 8161), /at most 8160 bytes/);
  });

  describe('box signatures', () => {
    const g = boxGeometry(DEFAULT_PIGEONHOLE_GEOMETRY);
    const kp = deriveKeypair(randomBytes(32));
    const other = deriveKeypair(randomBytes(32));
    const idx = kp.firstIndex;
    const plaintext = Buffer.from('a box of the emulator');

    for (const remembered of [true, false]) {
      const how = remembered ? 'remembered' : 'verified in full';
      it(`${how}: a sealed box opens, a tampered one or one under another key does not`, () => {
        const { boxId, box } = sealBox(g, kp.writeCap, idx, plaintext);
        if (!remembered) forgetBoxSignatures();
        assert.deepEqual(openBox(kp.readCap, idx, box, boxId), { code: 0, plaintext });

        const flipped = Buffer.from(box.payload);
        flipped[10] ^= 1;
        assert.equal(openBox(kp.readCap, idx, { tombstone: false, payload: flipped }, boxId).code, 23, 'ciphertext changed');
        const badSig = Buffer.from(box.payload);
        badSig[badSig.length - 1] ^= 1;
        assert.equal(openBox(kp.readCap, idx, { tombstone: false, payload: badSig }, boxId).code, 23, 'signature changed');
        assert.equal(openBox(readCapOf(other.writeCap), idx, box, boxId).code, 23, 'another key');
        const otherId = Buffer.from(boxId);
        otherId[0] ^= 1;
        assert.equal(openBox(kp.readCap, idx, box, otherId).code, 23, 'another box id');
      });

      it(`${how}: a tombstone reads as one, a forged one as invalid`, () => {
        const next = nextIndex(idx);
        const { boxId, box } = sealBox(g, kp.writeCap, next, Buffer.alloc(0));
        if (!remembered) forgetBoxSignatures();
        assert.equal(openBox(kp.readCap, next, box, boxId).code, 11);
        assert.equal(openBox(readCapOf(other.writeCap), next, box, boxId).code, 25);
        const forged = Buffer.from(box.payload);
        forged[0] ^= 1;
        assert.equal(openBox(kp.readCap, next, { tombstone: true, payload: forged }, boxId).code, 25);
      });
    }
  });
});
