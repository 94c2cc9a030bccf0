/**
 * Bench section: our CBOR codec (frame encode / envelope decode, cbor-x)
 * against a JSON baseline carrying the same fields (bytes as base64, as JSON
 * needs), plus the sizes of both. No goal of issue 15; kept for comparison.
 */
import { randomBytes } from 'node:crypto';
import { dist, rate, fmt, ratio, table } from './common.mjs';

export function codecBench({ quick }) {
  const { wire } = dist();
  const ms = quick ? 300 : 1500;
  const queryId = randomBytes(16);
  const plaintext = randomBytes(1024);
  const writeCap = randomBytes(168);
  const index = randomBytes(104);
  const body = wire.requestBodies.encryptWrite(queryId, plaintext, writeCap, index);
  // The same request as a JSON protocol would carry it: bytes as base64.
  const b64 = (b) => Buffer.from(b).toString('base64');
  const jsonBody = () => ({ encrypt_write: { query_id: b64(queryId), plaintext: b64(plaintext), write_cap: b64(writeCap), message_box_index: b64(index) } });

  const encodeCbor = () => wire.encodeFrame(wire.encodeRequest('encrypt_write', body));
  const encodeJson = () => {
    const text = Buffer.from(JSON.stringify(jsonBody()));
    const out = Buffer.allocUnsafe(4 + text.length);
    out.writeUInt32BE(text.length, 0);
    text.copy(out, 4);
    return out;
  };

  // A daemon reply: the Go daemon's full envelope with every other key null.
  const replyBody = {
    query_id: queryId, message_ciphertext: randomBytes(1200), envelope_descriptor: randomBytes(180),
    envelope_hash: randomBytes(32), next_message_box_index: randomBytes(104), error_code: 0,
  };
  const cborReply = wire.encodeResponse('encrypt_write_reply', replyBody);
  const jsonEnvelope = {};
  for (const k of wire.RESPONSE_KINDS) jsonEnvelope[k] = null;
  jsonEnvelope.encrypt_write_reply = Object.fromEntries(Object.entries(replyBody).map(([k, v]) => [k, Buffer.isBuffer(v) ? b64(v) : v]));
  const jsonReply = Buffer.from(JSON.stringify(jsonEnvelope));
  const decodeCbor = () => wire.decodeEnvelope(cborReply, wire.RESPONSE_KINDS);
  const decodeJson = () => {
    const v = JSON.parse(jsonReply.toString('utf8'));
    for (const [k, b] of Object.entries(v)) {
      if (b === null) continue;
      // Restore the byte fields, as a JSON client would have to.
      for (const f of ['query_id', 'message_ciphertext', 'envelope_descriptor', 'envelope_hash', 'next_message_box_index']) b[f] = Buffer.from(b[f], 'base64');
      return { kind: k, body: b };
    }
    return null;
  };
  // Same content both ways before timing anything.
  const a = decodeCbor();
  const b = decodeJson();
  if (a.kind !== b.kind || !Buffer.from(a.body.message_ciphertext).equals(b.body.message_ciphertext)) throw new Error('codec baseline mismatch');

  const encC = rate(encodeCbor, ms);
  const encJ = rate(encodeJson, ms);
  const decC = rate(decodeCbor, ms);
  const decJ = rate(decodeJson, ms);
  table('CBOR codec (ours, cbor-x) vs JSON with base64 bytes', ['operation', 'CBOR', 'JSON', 'CBOR/JSON'], [
    ['encode encrypt_write frame (1 KiB plaintext)', `${fmt(encC)}/s`, `${fmt(encJ)}/s`, ratio(encC, encJ)],
    ['decode encrypt_write_reply (20-key envelope)', `${fmt(decC)}/s`, `${fmt(decJ)}/s`, ratio(decC, decJ)],
    ['request frame size (smaller is better)', `${encodeCbor().length} B`, `${encodeJson().length} B`, ratio(encodeJson().length, encodeCbor().length)],
    ['reply size (smaller is better)', `${cborReply.length} B`, `${jsonReply.length} B`, ratio(jsonReply.length, cborReply.length)],
  ]);
  return [];
}
