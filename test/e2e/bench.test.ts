// `npm run bench` keeps working: a short run (--quick) prints each table with
// a ratio on every row, and stops by itself well inside its time bound.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';

const ROOT = join(__dirname, '..', '..');

describe('npm run bench (scripts/bench.mjs --quick)', function () {
  this.timeout(90_000);

  it('measures codec, transports and pipelining and prints their ratios', async function () {
    const started = Date.now();
    const out = await new Promise<string>((res, rej) => {
      execFile(process.execPath, [join(ROOT, 'scripts', 'bench.mjs'), '--quick'], { cwd: ROOT, timeout: 60_000 }, (err, stdout, stderr) => {
        if (err) rej(new Error(`bench failed: ${err.message}\n${stdout}\n${stderr}`));
        else res(stdout);
      });
    });
    assert.ok(Date.now() - started < 60_000, 'the bench must stay under 60 s');
    const ratioRow = (label: RegExp): number => {
      const line = out.split('\n').find((l) => label.test(l));
      assert.ok(line, `no row matching ${label} in:\n${out}`);
      const m = /(\d+\.\d+)x\s*$/.exec(line);
      assert.ok(m, `row without a ratio: ${line}`);
      const r = Number(m[1]);
      assert.ok(Number.isFinite(r) && r > 0, `bad ratio in ${line}`);
      return r;
    };
    ratioRow(/encode encrypt_write frame/);
    ratioRow(/decode encrypt_write_reply/);
    // CBOR carries bytes as bytes: its frames are smaller than base64-in-JSON.
    assert.ok(ratioRow(/request frame size/) > 1);
    assert.ok(ratioRow(/reply size/) > 1);
    ratioRow(/^\s+TCP 127\.0\.0\.1/);
    ratioRow(/^\s+Unix socket/);
    ratioRow(/sequential requests\/s/);
    ratioRow(/32 in flight requests\/s/);
    assert.match(out, /bench: done in \d+(\.\d+)? s/);
  });
});
