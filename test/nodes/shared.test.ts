/**
 * The shared runtime's input rules, without Node-RED: Buffer coercion,
 * credential text, timeouts, status texts, status coalescing, the deadline
 * sweep.
 */
import * as assert from 'node:assert/strict';
import {
  decodeKeyText,
  describeValue,
  errorStatusText,
  resolveTimeoutMs,
  statusForConnection,
  STATUS_TEXT,
  toBuffer,
  toInteger,
} from '../../src/nodes/shared';
import { InvalidArgumentError } from '../../src/client/errors';
import type { ThinClient } from '../../src/client/client';
import { cancelKeyOf } from '../../src/nodes/lib/operation';
import { resendWrite } from '../../src/nodes/lib/pigeonhole';
import { StatusController, STATUS_MIN_INTERVAL_MS } from '../../src/nodes/lib/status';
import type { Node, NodeStatus } from '../../src/nodes/types';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A StatusController on a stand-in node that records what node.status() was given. */
function recordedStatus(): { status: StatusController; shown: NodeStatus[] } {
  const shown: NodeStatus[] = [];
  const node = { status: (s: NodeStatus) => void shown.push(s) } as unknown as Node;
  return { status: new StatusController(node), shown };
}

describe('node pack: shared input rules', () => {
  describe('toBuffer', () => {
    it('returns the very Buffer it was given (no copy, no mutation)', () => {
      const b = Buffer.from([1, 2, 3]);
      const out = toBuffer(b, { name: 'msg.x', size: 3 });
      assert.equal(out, b);
      assert.deepEqual([...b], [1, 2, 3]);
    });

    it('views a Uint8Array without copying', () => {
      const backing = new Uint8Array([9, 8, 7, 6]);
      const view = backing.subarray(1, 3);
      const out = toBuffer(view, { name: 'msg.x', size: 2 });
      assert.deepEqual([...out], [8, 7]);
      assert.equal(out.buffer, backing.buffer);
    });

    it('accepts the JSON form {type:"Buffer", data:[...]}', () => {
      const json = JSON.parse(JSON.stringify(Buffer.from('abc')));
      assert.deepEqual(toBuffer(json, { name: 'msg.x' }), Buffer.from('abc'));
    });

    it('refuses JSON-form data that is not bytes', () => {
      assert.throws(() => toBuffer({ type: 'Buffer', data: [1, 256] }, { name: 'msg.x' }), /msg\.x: expected a Buffer/);
    });

    it('refuses strings unless the field takes them, naming the property and the expected size', () => {
      assert.throws(
        () => toBuffer('abc', { name: 'msg.writeCap', size: 168 }),
        (e: Error) => e instanceof InvalidArgumentError && e.message === 'msg.writeCap: expected a Buffer of 168 bytes, got a string',
      );
      assert.deepEqual(toBuffer('héllo', { name: 'msg.payload', strings: 'utf8' }), Buffer.from('héllo', 'utf8'));
      assert.deepEqual(toBuffer('0a0b', { name: 'x', strings: 'hex' }), Buffer.from([10, 11]));
      assert.throws(() => toBuffer('0a0', { name: 'x', strings: 'hex' }), /not hex/);
      assert.deepEqual(toBuffer('AQID', { name: 'x', strings: 'base64' }), Buffer.from([1, 2, 3]));
    });

    it('checks exact size, emptiness and the upper bound with readable messages', () => {
      assert.throws(() => toBuffer(Buffer.alloc(104), { name: 'msg.writeCap', size: 168 }), {
        message: 'msg.writeCap: expected a Buffer of 168 bytes, got 104 bytes',
      });
      assert.throws(() => toBuffer(Buffer.alloc(0), { name: 'msg.payload', nonEmpty: true }), /msg\.payload: expected a non-empty Buffer, got an empty value/);
      assert.throws(() => toBuffer(Buffer.alloc(1554), { name: 'msg.payload', max: 1553, maxReason: 'one box' }), {
        message: 'msg.payload: expected at most 1553 bytes (one box), got 1554 bytes',
      });
    });

    it('describes missing and odd values without revealing them', () => {
      assert.throws(() => toBuffer(undefined, { name: 'msg.readCap', size: 136 }), /msg\.readCap: expected a Buffer of 136 bytes, got undefined \(missing\)/);
      assert.equal(describeValue(null), 'null');
      assert.equal(describeValue(42), 'the number 42');
      assert.equal(describeValue({ a: 1 }), 'an object');
      assert.equal(describeValue([1, 2]), 'an array of 2 items');
      assert.equal(describeValue('secret'), 'a string');
    });
  });

  describe('decodeKeyText (credential fields)', () => {
    const cap = Buffer.alloc(168, 0xab);

    it('reads hex and base64 by their length', () => {
      assert.deepEqual(decodeKeyText(cap.toString('hex'), 'cap', 168), cap);
      assert.deepEqual(decodeKeyText(cap.toString('base64'), 'cap', 168), cap);
      assert.deepEqual(decodeKeyText(cap.toString('base64url'), 'cap', 168), cap);
      assert.deepEqual(decodeKeyText(` ${cap.toString('hex').slice(0, 100)}\n${cap.toString('hex').slice(100)} `, 'cap', 168), cap);
    });

    it('names the field and the expected encodings, never the text', () => {
      const text = 'deadbeef'.repeat(5);
      assert.throws(
        () => decodeKeyText(text, 'katzenpost-resend credentials: write cap', 168),
        (e: Error) =>
          e.message ===
            'katzenpost-resend credentials: write cap: expected 168 bytes as hex (336 characters) or base64 (224 characters), got 40 characters' &&
          !e.message.includes('deadbeef'),
      );
    });
  });

  describe('resolveTimeoutMs', () => {
    it('msg.timeout (ms) wins over the node field (s), which wins over the default', () => {
      assert.equal(resolveTimeoutMs({ timeout: 250 }, '5', 1000), 250);
      assert.equal(resolveTimeoutMs({}, '5', 1000), 5000);
      assert.equal(resolveTimeoutMs({}, '', 1000), 1000);
      assert.equal(resolveTimeoutMs({}, '', undefined), undefined);
      assert.equal(resolveTimeoutMs({ timeout: '300' }, '', undefined), 300);
    });

    it('0 means no timeout', () => {
      assert.equal(resolveTimeoutMs({ timeout: 0 }, '5', 1000), undefined);
      assert.equal(resolveTimeoutMs({}, '0', 1000), undefined);
    });

    it('a bad msg.timeout is an error naming it', () => {
      assert.throws(() => resolveTimeoutMs({ timeout: 'soon' }, '', undefined), /msg\.timeout: expected a number of milliseconds/);
      assert.throws(() => resolveTimeoutMs({ timeout: -1 }, '', undefined), /msg\.timeout/);
    });
  });

  it('toInteger takes numbers and decimal strings in range', () => {
    assert.equal(toInteger('7', 'msg.count', 1, 10), 7);
    assert.equal(toInteger(3, 'msg.count', 1, 10), 3);
    assert.throws(() => toInteger(11, 'msg.count', 1, 10), /msg\.count: expected an integer from 1 to 10, got the number 11/);
    assert.throws(() => toInteger('x', 'msg.count', 1, 10), /got "x"/);
    assert.throws(() => toInteger(1.5, 'msg.count', 1, 10), /msg\.count/);
  });

  it('status texts are i18n keys whose shapes follow the conventions', () => {
    assert.deepEqual(statusForConnection('connecting'), { fill: 'yellow', shape: 'ring', text: STATUS_TEXT.connecting });
    assert.deepEqual(statusForConnection('connected'), { fill: 'green', shape: 'dot', text: STATUS_TEXT.connected });
    assert.deepEqual(statusForConnection('offline'), { fill: 'yellow', shape: 'dot', text: STATUS_TEXT.offline });
    assert.deepEqual(statusForConnection('disconnected'), { fill: 'red', shape: 'ring', text: STATUS_TEXT.disconnected });
    assert.deepEqual(statusForConnection('idle'), {});
    assert.match(STATUS_TEXT.offline, /^@katzenpost-community\/node-red-katzenpost\/katzenpost-daemon:katzenpost-daemon\.status\.offline$/);
    assert.equal(errorStatusText(new InvalidArgumentError('x', 'y')), 'invalid argument');
    assert.ok(errorStatusText({ code: 'A_VERY_LONG_ERROR_CODE_INDEED' }).length < 20);
  });

  describe('cancelKeyOf (msg.cancel targets)', () => {
    const hash = Buffer.alloc(32, 7);
    it('takes msg.envelopeHash, else msg.envelope.envelopeHash, as hex; no key at all means "every operation"', () => {
      assert.equal(cancelKeyOf({ cancel: true, envelopeHash: hash }), hash.toString('hex'));
      assert.equal(cancelKeyOf({ cancel: true, envelope: { envelopeHash: hash } }), hash.toString('hex'));
      assert.equal(cancelKeyOf({ cancel: true }), null);
      assert.equal(cancelKeyOf({ cancel: true, envelope: 'not an object' }), null);
    });
    it('a key that is present but not 32 bytes is an error naming the property, never "every operation"', () => {
      assert.throws(() => cancelKeyOf({ cancel: true, envelopeHash: hash.subarray(0, 31) }), (e: Error) => {
        assert.ok(e instanceof InvalidArgumentError);
        assert.match(e.message, /^msg\.envelopeHash: expected a Buffer of 32 bytes, got 31 bytes$/);
        return true;
      });
      assert.throws(() => cancelKeyOf({ cancel: true, envelopeHash: 'abc' }), /msg\.envelopeHash: expected a Buffer of 32 bytes, got a string/);
      assert.throws(
        () => cancelKeyOf({ cancel: true, envelope: { envelopeHash: Buffer.alloc(33) } }),
        /msg\.envelope\.envelopeHash: expected a Buffer of 32 bytes, got 33 bytes/,
      );
    });
  });

  it('resendWrite sends a default write of the envelope with the write cap only', async () => {
    const calls: unknown[][] = [];
    const client = {
      startResendingEncryptedMessage: async (...args: unknown[]) => {
        calls.push(args);
        return { plaintext: null, courierIdentityHash: null, courierQueueId: null };
      },
    } as unknown as ThinClient;
    const writeCap = Buffer.alloc(168, 1);
    const env = { envelopeDescriptor: Buffer.from('d'), messageCiphertext: Buffer.from('c'), envelopeHash: Buffer.alloc(32, 2), nextMessageBoxIndex: Buffer.alloc(104) };
    const signal = new AbortController().signal;
    await resendWrite(client, writeCap, env, signal);
    assert.deepEqual(calls, [
      [
        { writeCap, readCap: null, messageBoxIndex: null, envelopeDescriptor: env.envelopeDescriptor, messageCiphertext: env.messageCiphertext, envelopeHash: env.envelopeHash },
        { signal },
      ],
    ]);
  });

  describe('StatusController (coalesced status)', () => {
    const working = { fill: 'blue', shape: 'dot', text: STATUS_TEXT.working };
    const connected = statusForConnection('connected');

    it('shows a change at once after a quiet interval, and never the same status twice in a row', async () => {
      const { status, shown } = recordedStatus();
      status.setConnection('connected');
      assert.deepEqual(shown, [connected]);
      status.setConnection('connected');
      await sleep(STATUS_MIN_INTERVAL_MS + 50);
      assert.deepEqual(shown, [connected], 'an unchanged status was sent again');
      const end = status.begin();
      assert.deepEqual(shown, [connected, working], '"working" after a quiet interval is shown as the operation starts');
      end();
      await sleep(STATUS_MIN_INTERVAL_MS + 50);
      assert.deepEqual(shown, [connected, working, connected]);
      status.close();
    });

    it('a burst of fast operations costs at most one update per interval and ends on the final state', async () => {
      const { status, shown } = recordedStatus();
      status.setConnection('connected');
      const started = Date.now();
      for (let i = 0; i < 1000; i++) status.begin()();
      const elapsed = Date.now() - started;
      // The first "working" at once; the rest waits for the interval, which shows the state as it then is.
      assert.ok(shown.length <= 2 + Math.floor(elapsed / STATUS_MIN_INTERVAL_MS), `${shown.length} updates for 1000 operations`);
      await sleep(STATUS_MIN_INTERVAL_MS + 50);
      assert.deepEqual(shown.at(-1), connected);
      status.close();
    });

    it('an error within the interval is shown at its end, as a red ring with the code', async () => {
      const { status, shown } = recordedStatus();
      status.setConnection('connected');
      status.begin()(new InvalidArgumentError('msg.payload', 'a Buffer', 'a number'));
      await sleep(STATUS_MIN_INTERVAL_MS + 50);
      assert.deepEqual(shown.at(-1), { fill: 'red', shape: 'ring', text: 'invalid argument' });
      // The next operation clears it; a daemon problem outranks everything.
      status.begin()();
      status.setConnection('disconnected', 'ECONNREFUSED 127.0.0.1:1');
      await sleep(STATUS_MIN_INTERVAL_MS + 50);
      assert.deepEqual(shown.at(-1), { fill: 'red', shape: 'ring', text: 'ECONNREFUSED 127.0.0.1:1' });
      status.close();
    });

    it('shows nothing more once closed (a deferred update included)', async () => {
      const { status, shown } = recordedStatus();
      status.setConnection('connected');
      status.begin(); // within the interval: deferred
      status.close();
      await sleep(STATUS_MIN_INTERVAL_MS + 50);
      assert.deepEqual(shown, [connected]);
    });
  });
});
