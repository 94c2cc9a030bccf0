// The README's library script is documentation that must keep working: run it
// as a user would, with the package name mapped to this checkout's sources.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const root = join(__dirname, '..', '..');
const run = promisify(execFile);

describe('README', () => {
  it('starts with the two newcomer commands (start, then test)', () => {
    const lines = readFileSync(join(root, 'README.md'), 'utf8').split('\n');
    const block = lines.slice(lines.indexOf('```sh') + 1, lines.indexOf('```'));
    assert.match(block[0], /^npm install && npm start\b/);
    assert.match(block[1], /^npm test\b/);
  });

  it('library script writes a Pigeonhole box and reads it back', async function () {
    this.timeout(60000);
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Using the library from TypeScript'));
    const m = /```ts\n([\s\S]*?)```/.exec(section);
    assert.ok(m, 'the library section has a ts code block');
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).name as string;
    const script = m[1]
      .replaceAll(`'${pkg}/emulator'`, JSON.stringify(join(root, 'src', 'emulator')))
      .replaceAll(`'${pkg}'`, JSON.stringify(join(root, 'src')));
    assert.notEqual(script, m[1], 'the script imports the package by name');
    const dir = mkdtempSync(join(tmpdir(), 'kp-readme-'));
    try {
      const file = join(dir, 'write-and-read.ts');
      writeFileSync(file, script);
      const { stdout } = await run(process.execPath, ['--import', 'tsx', file], { cwd: root, timeout: 50000 });
      assert.equal(stdout.trim(), 'hello, pigeonhole');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
