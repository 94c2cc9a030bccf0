/**
 * The emulator held to the real daemon: the recorded scenario runs against
 * the emulator, and every frame it sends is compared key for key (names,
 * order, types, null versus absent, nesting) with the frames recorded from
 * the real kpclientd v0.0.99 (test/fixtures/kpclientd-v0.0.99-frames.json),
 * as are the error codes met on the way. In its `current` protocol the
 * emulator must match the recording exactly; in the `pinned` one (v0.0.76)
 * it lacks exactly what v0.0.99 added and keeps exactly what v0.0.99 dropped.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeCborFaithful } from '../../src/wire';
import { DROPPED_DOCUMENT_FIELDS, startEmulator, type Emulator, type ProtocolLevel } from '../../src/emulator';
import { render, type RecordedFrame } from '../mixnet/recorder';
import { runRecordedScenario, type RecordedScenario } from '../support/recorded-scenario';
import { assertSameShape } from '../support/shape';

interface Fixture {
  errors: string[];
  frames: RecordedFrame[];
}

const fixture: Fixture = JSON.parse(readFileSync(join(__dirname, '..', 'fixtures', 'kpclientd-v0.0.99-frames.json'), 'utf8'));

/**
 * Reply kinds the v0.0.99 daemon's envelope has and the pinned (v0.0.76)
 * protocol has not (PROTOCOL.md §9.3): filtered out for the pinned emulator only.
 */
const ADDED_AFTER_PINNED = [
  'get_directory_authorities_reply',
  'voucher_mint_reply',
  'voucher_induct_reply',
  'voucher_open_reply',
  'voucher_derive_stream_reply',
];

function kindOf(f: RecordedFrame): string {
  const set = Object.entries(f.obj).filter(([, v]) => v !== null);
  assert.equal(set.length, 1, `one member set in ${JSON.stringify(Object.keys(f.obj))}`);
  return set[0][0];
}

function byKind(frames: RecordedFrame[], dir: RecordedFrame['dir']): Map<string, RecordedFrame[]> {
  const out = new Map<string, RecordedFrame[]>();
  for (const f of frames.filter((x) => x.dir === dir)) {
    const k = kindOf(f);
    out.set(k, [...(out.get(k) ?? []), f]);
  }
  return out;
}

/** The PKI document inside a new_pki_document_event, decoded and rendered like the frames. */
function pkiDocumentOf(f: RecordedFrame): Record<string, unknown> {
  const payload = (f.obj.new_pki_document_event as { payload: string }).payload;
  return render(decodeCborFaithful(Buffer.from(payload.slice(2, -1), 'hex'))) as Record<string, unknown>;
}

for (const protocol of ['pinned', 'current'] as ProtocolLevel[]) {
  describe(`emulator (${protocol} protocol) against the frames recorded from the real kpclientd v0.0.99`, function () {
    this.timeout(60_000);
    let emu: Emulator;
    let run: RecordedScenario;
    /** What v0.0.99 added, which the pinned protocol lacks: nothing for the current one. */
    const added = protocol === 'pinned' ? ADDED_AFTER_PINNED : [];

    before(async () => {
      emu = await startEmulator({ listen: '127.0.0.1:0', latency: 'instant', protocol });
      run = await runRecordedScenario(emu.address, { settleMs: 300 });
    });
    after(async () => {
      await emu?.stop({ graceful: false });
    });

    it('meets the same outcomes and error codes on the same calls', () => {
      assert.deepEqual(run.errors, fixture.errors);
    });

    it('opens the connection with the same frames in the same order', () => {
      const handshake = (frames: RecordedFrame[]) => {
        const upToReply = frames.slice(0, frames.findIndex((f) => f.obj.session_token_reply) + 1);
        // The daemon repeats new_pki_document_event when an epoch turns during the handshake.
        return upToReply.filter((f) => f.dir === 'daemon->client').map(kindOf).filter((k, i, a) => a.indexOf(k) === i);
      };
      assert.deepEqual(handshake(run.frames), handshake(fixture.frames));
    });

    it(`sends every reply kind the real daemon sent, shaped key for key like it${protocol === 'current' ? ', in the full 25-key envelope' : ''}`, () => {
      const ours = byKind(run.frames, 'daemon->client');
      const real = byKind(fixture.frames, 'daemon->client');
      assert.deepEqual([...ours.keys()].sort(), [...real.keys()].sort(), 'the same reply and event kinds');
      for (const [kind, realFrames] of real) {
        const ourFrames = ours.get(kind)!;
        // Envelope: the real one (for the pinned protocol less the kinds added after it), every frame.
        const want = Object.keys(realFrames[0].obj).filter((k) => !added.includes(k));
        for (const f of ourFrames) assert.deepEqual(Object.keys(f.obj), want, `${kind}: envelope keys and order`);
        // Bodies pairwise, call for call (the same calls in the same order on both sides).
        const n = kind === 'new_pki_document_event' ? 1 : Math.min(ourFrames.length, realFrames.length);
        for (let i = 0; i < n; i++) assertSameShape(ourFrames[i].obj[kind], realFrames[i].obj[kind], `${kind}[${i}]`);
      }
    });

    it('sends as many replies of each kind as the real daemon for the same calls', () => {
      const count = (frames: RecordedFrame[]) =>
        Object.fromEntries([...byKind(frames, 'daemon->client')].filter(([k]) => k !== 'new_pki_document_event').map(([k, v]) => [k, v.length]));
      assert.deepEqual(count(run.frames), count(fixture.frames));
    });

    it(
      protocol === 'current'
        ? 'pushes a PKI document with exactly the real document keys, types and nesting'
        : 'pushes a PKI document with the real keys, types and nesting plus the fields v0.0.99 dropped',
      () => {
        const ours = pkiDocumentOf(byKind(run.frames, 'daemon->client').get('new_pki_document_event')![0]);
        const real = pkiDocumentOf(byKind(fixture.frames, 'daemon->client').get('new_pki_document_event')![0]);
        if (protocol === 'pinned') {
          for (const f of DROPPED_DOCUMENT_FIELDS) {
            assert.ok(f in ours, `the pinned document has ${f}`);
            delete ours[f];
          }
        }
        assertSameShape(ours, real, 'pki document');
      },
    );

    it('answers get_pki_document with the real certificate around the real document', () => {
      const signed = (frames: RecordedFrame[]) => {
        const f = frames.find((x) => x.obj.get_pki_document_reply)!;
        const payload = (f.obj.get_pki_document_reply as { payload: string }).payload;
        const cert = decodeCborFaithful(Buffer.from(payload.slice(2, -1), 'hex'));
        return { cert: Object.keys(cert).sort(), certified: render(decodeCborFaithful(cert.Certified)) as Record<string, unknown> };
      };
      const ours = signed(run.frames);
      const real = signed(fixture.frames);
      assert.deepEqual(ours.cert, real.cert, 'certificate keys');
      if (protocol === 'pinned') for (const f of DROPPED_DOCUMENT_FIELDS) delete ours.certified[f];
      assertSameShape(ours.certified, real.certified, 'certified document');
    });

    it(`announces the ${protocol === 'current' ? 'same' : 'pinned'} Pigeonhole geometry${protocol === 'current' ? ' as the real daemon' : ''}`, () => {
      const geometry = (frames: RecordedFrame[]) => (frames.find((f) => f.obj.connection_status_event)!.obj.connection_status_event as Record<string, unknown>).pigeonhole_geometry;
      if (protocol === 'current') assert.deepEqual(geometry(run.frames), geometry(fixture.frames));
      else assert.equal((geometry(run.frames) as Record<string, number>).MaxPlaintextPayloadLength, 1553);
    });
  });
}
