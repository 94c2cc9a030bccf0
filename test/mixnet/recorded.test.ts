/**
 * The recorded scenario (test/support/recorded-scenario.ts) against the real
 * kpclientd: one reply of every kind, the expected-outcome error codes, a
 * copy, both cancels and legacy echo, with the same outcomes as the
 * committed fixtures and every reply shaped key for key like them. This
 * keeps the fixtures, and so the emulator held to them, true to the daemon.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RecordedFrame } from './recorder';
import { runRecordedScenario } from '../support/recorded-scenario';
import { assertSameShape } from '../support/shape';
import { daemonAddress } from './support';

const fixture: { errors: string[]; frames: RecordedFrame[] } = JSON.parse(
  readFileSync(join(__dirname, '..', 'fixtures', 'kpclientd-v0.0.99-frames.json'), 'utf8'),
);

function kindOf(f: RecordedFrame): string {
  return Object.entries(f.obj).find(([, v]) => v !== null)![0];
}

describe('real kpclientd v0.0.99: the recorded scenario @ci', function () {
  this.timeout(15 * 60 * 1000);

  it('meets the recorded outcomes and sends replies shaped like the fixtures @ci', async () => {
    const run = await runRecordedScenario(daemonAddress());
    assert.deepEqual(run.errors, fixture.errors, 'the same outcomes and error codes as when the fixtures were recorded');
    const first = new Map<string, RecordedFrame>();
    for (const f of fixture.frames.filter((x) => x.dir === 'daemon->client')) if (!first.has(kindOf(f))) first.set(kindOf(f), f);
    const seen = new Set<string>();
    for (const f of run.frames.filter((x) => x.dir === 'daemon->client')) {
      const kind = kindOf(f);
      if (seen.has(kind)) continue;
      seen.add(kind);
      const recorded = first.get(kind);
      assert.ok(recorded, `${kind}: a reply kind the fixtures do not have`);
      assert.deepEqual(Object.keys(f.obj), Object.keys(recorded.obj), `${kind}: envelope keys and order`);
      if (kind !== 'new_pki_document_event') assertSameShape(f.obj[kind], recorded.obj[kind], kind);
    }
    assert.deepEqual([...seen].sort(), [...first.keys()].sort(), 'every reply kind of the fixtures');
    for (const [k, v] of Object.entries(run.timingsMs)) console.log(`      ${k}: ${v.join(', ')} ms`);
  });
});
