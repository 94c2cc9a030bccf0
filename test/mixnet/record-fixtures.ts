/**
 * Records what the real kpclientd sends through the recorded scenario
 * (test/support/recorded-scenario.ts) and writes
 * test/fixtures/kpclientd-v0.0.99-frames.json. Run against
 * `npm run mixnet -- start`:
 *
 *   npx tsx test/mixnet/record-fixtures.ts [127.0.0.1:32000]
 *
 * Capabilities and seeds are replaced by 0x5a bytes of the same length (the
 * shape is what the fixtures are for); frames that carried one keep no hex.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runRecordedScenario } from '../support/recorded-scenario';
import type { RecordedFrame } from './recorder';

const SECRET_KEYS = new Set(['write_cap', 'read_cap', 'seed', 'write_cap_hash', 'temp_write_cap']);

/** Replace secret byte strings (caps, seeds) by 0x5a bytes of the same length, keeping the shape. */
function redact(v: unknown, key = ''): unknown {
  if (typeof v === 'string' && v.startsWith("h'") && SECRET_KEYS.has(key)) return `h'${'5a'.repeat((v.length - 3) / 2)}'`;
  if (Array.isArray(v)) return v.map((x) => redact(x, key));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, redact(x, k)]));
  return v;
}

function carriesSecret(f: RecordedFrame): boolean {
  return /"(write_cap|read_cap|seed|write_cap_hash|temp_write_cap)":"h'/.test(JSON.stringify(f.obj));
}

async function main(): Promise<void> {
  const target = process.argv[2] ?? '127.0.0.1:32000';
  const run = await runRecordedScenario(target);
  const frames = run.frames.map((f) => ({ ...f, hex: carriesSecret(f) ? '' : f.hex, obj: redact(f.obj) as Record<string, unknown> }));
  const out = join(__dirname, '..', 'fixtures', 'kpclientd-v0.0.99-frames.json');
  const fixture = { recordedAt: new Date().toISOString(), daemon: 'kpclientd v0.0.99 (local network from npm run mixnet)', errors: run.errors, timingsMs: run.timingsMs, frames };
  writeFileSync(out, `${JSON.stringify(fixture, null, 1)}\n`);
  console.log(`wrote ${frames.length} frames to ${out}`);
  console.log(run.errors.join('\n'));
  for (const [k, v] of Object.entries(run.timingsMs)) console.log(`${k}: ${v.join(', ')} ms`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
