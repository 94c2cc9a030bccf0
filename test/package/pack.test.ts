// `npm pack --dry-run`: the tarball carries what Node-RED needs to load the
// pack (compiled nodes with their html, locales, icons, examples, the library
// entry and the emulator bin) and nothing from development.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, readPackageJson, declaredHtmlFiles, listFiles, parseEditorHtml, npm, nodeRedDir } from './pack-facts';

interface PackEntry { path: string; size: number }

describe('package: npm pack contents', function () {
  this.timeout(120_000);
  const pkg = readPackageJson();
  let files: string[] = [];
  let packed: Set<string>;

  before(async function () {
    assert.ok(existsSync(join(ROOT, 'dist', 'index.js')), 'dist/ is missing: run npm run build first (npm test does)');
    // --ignore-scripts: a dry run must not build or touch anything.
    const { stdout } = await npm(['pack', '--dry-run', '--json', '--ignore-scripts'], 90_000);
    const report = JSON.parse(stdout) as { files: PackEntry[]; entryCount: number; size: number; unpackedSize: number }[];
    files = report[0].files.map((f) => f.path).sort();
    packed = new Set(files);
    console.log(`      ${report[0].entryCount} files, ${(report[0].size / 1024).toFixed(0)} KiB packed, ${(report[0].unpackedSize / 1024).toFixed(0)} KiB unpacked`);
  });

  it('ships every declared node as compiled .js with its .html', function () {
    for (const { type, js, html } of declaredHtmlFiles(pkg)) {
      assert.ok(packed.has(js), `${type}: ${js} is not in the package`);
      assert.ok(packed.has(html), `${type}: ${html} is not in the package`);
    }
  });

  it('ships the locales beside the nodes, one message catalogue per node file', function () {
    const locales = files.filter((f) => f.startsWith('dist/nodes/locales/en-US/'));
    assert.ok(locales.length > 0, 'no dist/nodes/locales/en-US/ files in the package');
    for (const src of listFiles(join(ROOT, 'locales'))) {
      assert.ok(packed.has(`dist/nodes/locales/${src}`), `locales/${src} is not shipped as dist/nodes/locales/${src}`);
    }
    // Node-RED loads <basename>.json as the node set's i18n namespace.
    for (const { js } of declaredHtmlFiles(pkg)) {
      const base = js.replace(/^.*\//, '').replace(/\.js$/, '');
      assert.ok(packed.has(`dist/nodes/locales/en-US/${base}.json`), `no dist/nodes/locales/en-US/${base}.json for ${js}`);
    }
  });

  it('ships the icons, including every icon an editor definition names', function () {
    const icons = files.filter((f) => f.startsWith('dist/nodes/icons/'));
    assert.ok(icons.length > 0, 'no dist/nodes/icons/ files in the package');
    for (const src of listFiles(join(ROOT, 'icons'))) assert.ok(packed.has(`dist/nodes/icons/${src}`), `icons/${src} is not shipped`);
    const coreIcons = new Set(listFiles(join(nodeRedDir(), '..', '@node-red', 'nodes', 'icons')).concat(
      existsSync(join(nodeRedDir(), 'node_modules', '@node-red', 'nodes', 'icons')) ? listFiles(join(nodeRedDir(), 'node_modules', '@node-red', 'nodes', 'icons')) : []));
    for (const { html } of declaredHtmlFiles(pkg)) {
      for (const d of parseEditorHtml(join(ROOT, html)).definitions) {
        if (typeof d.icon !== 'string' || d.icon.startsWith('font-awesome/') || d.icon.startsWith('node-red/')) continue;
        assert.ok(packed.has(`dist/nodes/icons/${d.icon}`) || coreIcons.has(d.icon), `${d.type}: icon ${d.icon} is neither shipped nor a core icon`);
      }
    }
  });

  it('ships every example flow, README and LICENSE', function () {
    const examples = listFiles(join(ROOT, 'examples'));
    assert.ok(examples.length > 0, 'examples/ is empty');
    for (const e of examples) assert.ok(packed.has(`examples/${e}`), `examples/${e} is not shipped`);
    assert.ok(packed.has('README.md'), 'README.md is not shipped');
    assert.ok(packed.has('LICENSE') || packed.has('LICENSE.md'), 'LICENSE is not shipped');
    assert.ok(packed.has('package.json'));
  });

  it('ships the library entry with its types and the emulator bin', function () {
    for (const f of ['dist/index.js', 'dist/index.d.ts', 'dist/emulator/cli.js', 'dist/emulator/index.js', 'dist/emulator/index.d.ts', 'dist/channels/index.js', 'dist/channels/index.d.ts']) {
      assert.ok(packed.has(f), `${f} is not in the package`);
    }
    assert.equal(pkg.main, 'dist/index.js');
    for (const bin of Object.values(pkg.bin ?? {})) {
      assert.ok(packed.has(bin.replace(/^\.\//, '')), `bin ${bin} is not shipped`);
      assert.match(readFileSync(join(ROOT, bin), 'utf8'), /^#!\/usr\/bin\/env node/, `${bin} needs a node shebang`);
    }
  });

  it('ships nothing from development', function () {
    const forbidden = [
      /^src\//, /^test\//, /^\.ci\//, /^scripts\//, /^docs\//, /(^|\/)node_modules\//, /^\.node-red-user\//, /^test-artifacts\//,
      /\.db(-wal|-shm)?$/, /\.tgz$/, /\.tsbuildinfo$/, /(^|\/)\.env/, /\.test\.(js|ts|d\.ts|js\.map)$/, /^tsconfig.*\.json$/, /^\.mocharc/, /^package-lock\.json$/,
      /^\.git/,
    ];
    const bad = files.filter((f) => forbidden.some((r) => r.test(f)));
    assert.deepEqual(bad, [], `development files in the package: ${bad.join(', ')}`);
    // Only these top-level entries belong in the tarball.
    const tops = new Set(files.map((f) => f.split('/')[0]));
    for (const t of tops) assert.ok(['dist', 'examples', 'README.md', 'LICENSE', 'LICENSE.md', 'CHANGELOG.md', 'package.json'].includes(t), `unexpected top-level entry "${t}"`);
  });
});
