// Build: compile src/ to dist/ with tsc, then lay out the Node-RED editor
// assets beside the compiled node files (Node-RED pairs foo.js with foo.html,
// and looks for locales/ and icons/ next to them).
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, chmodSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const tsc = require.resolve('typescript/bin/tsc');
const dist = join(root, 'dist');

if (process.argv.includes('--clean')) rmSync(dist, { recursive: true, force: true });
// tsc still emits on type errors; we lay out the assets anyway and fail at the end.
let failed = false;
try {
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { stdio: 'inherit', cwd: root });
} catch {
  failed = true;
}

const nodesOut = join(dist, 'nodes');
mkdirSync(nodesOut, { recursive: true });
for (const f of existsSync(join(root, 'nodes')) ? readdirSync(join(root, 'nodes')) : []) {
  if (f.endsWith('.html')) cpSync(join(root, 'nodes', f), join(nodesOut, f));
}
if (existsSync(join(root, 'locales'))) cpSync(join(root, 'locales'), join(nodesOut, 'locales'), { recursive: true });
if (existsSync(join(root, 'icons'))) cpSync(join(root, 'icons'), join(nodesOut, 'icons'), { recursive: true });
const cli = join(dist, 'emulator', 'cli.js');
if (existsSync(cli)) chmodSync(cli, 0o755);
if (failed) {
  console.error('build: TypeScript reported errors (see above)');
  process.exit(1);
}
