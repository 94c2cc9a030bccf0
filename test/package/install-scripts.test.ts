// npm 11 warns, and npm 12 refuses, dependency install scripts that the
// allowScripts policy does not cover. npm reads that policy only from the
// package.json of the project being installed into, so: this repository's
// package.json must cover every install script in its own tree, and the
// README must tell a user the exact entries for the pack's runtime tree.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(__dirname, '..', '..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { allowScripts?: Record<string, unknown> };
const lock = JSON.parse(readFileSync(join(ROOT, 'package-lock.json'), 'utf8')) as {
  packages: Record<string, { hasInstallScript?: boolean; dev?: boolean; version?: string }>;
};

/** Names of the packages in the lockfile that run install scripts; `runtime` = only those a user installs with the pack. */
function withInstallScripts(runtime: boolean): string[] {
  const names = new Set<string>();
  for (const [where, entry] of Object.entries(lock.packages)) {
    if (!where || !entry.hasInstallScript) continue;
    if (runtime && entry.dev) continue;
    names.add(where.slice(where.lastIndexOf('node_modules/') + 'node_modules/'.length));
  }
  return [...names].sort();
}

/** Whether an allowScripts key ("pkg", "pkg@1.2.3", "@scope/pkg@^1") allows `name`. */
function covers(policy: Record<string, unknown>, name: string): boolean {
  return Object.entries(policy).some(([key, allowed]) => allowed === true && (key === name || key.startsWith(`${name}@`)));
}

describe('package: install scripts and npm allowScripts', function () {
  it('the pack\'s own runtime tree has the install scripts the README names (better-sqlite3, cbor-extract)', function () {
    assert.deepEqual(withInstallScripts(true), ['better-sqlite3', 'cbor-extract']);
  });

  it('this repository\'s package.json covers every install script in its tree, so npm install here is silent', function () {
    const policy = pkg.allowScripts ?? {};
    const missing = withInstallScripts(false).filter((n) => !covers(policy, n));
    assert.deepEqual(missing, [], `add to package.json allowScripts: ${missing.join(', ')}`);
  });

  it('the README gives a user the allowScripts entries for exactly the runtime install scripts, and the command that writes them', function () {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const block = /"allowScripts": (\{[^}]*\})/.exec(readme);
    assert.ok(block, 'README: no "allowScripts": {...} snippet');
    const policy = JSON.parse(block[1]) as Record<string, unknown>;
    assert.deepEqual(Object.keys(policy).sort(), withInstallScripts(true));
    assert.ok(Object.values(policy).every((v) => v === true));
    const cmd = /npm pkg set ((?:allowScripts\.[^\s=]+=true\s+)+)--json/.exec(readme);
    assert.ok(cmd, 'README: no "npm pkg set allowScripts.<name>=true ... --json" command');
    assert.deepEqual(cmd[1].trim().split(/\s+/).map((a) => a.replace(/^allowScripts\./, '').replace(/=true$/, '')).sort(), withInstallScripts(true));
  });
});
