// The flow library's scorecard (node-red-dev validate), applied here by our own
// code: the stock validator stops at a look-up on the flow library's website,
// which this network does not reach. Rule ids follow node-red-dev's docs.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ROOT, readPackageJson, parseEditorHtml, declaredHtmlFiles, exampleFiles, helpSources, listFiles,
  npmView, semver, type EditorDefinition, type HtmlFacts,
} from './pack-facts';

const pkg = readPackageJson();
const PREFIX = 'katzenpost-';

// Editor definitions, read from the source html (nodes/) and from the built
// html beside each declared runtime file (what Node-RED and the library read).
function sourceHtml(): HtmlFacts[] {
  return listFiles(join(ROOT, 'nodes')).filter((f) => f.endsWith('.html')).map((f) => parseEditorHtml(join(ROOT, 'nodes', f)));
}

function builtDefinitions(): Map<string, EditorDefinition> {
  const defs = new Map<string, EditorDefinition>();
  for (const { html } of declaredHtmlFiles(pkg)) {
    const file = join(ROOT, html);
    assert.ok(existsSync(file), `${html} is missing: run npm run build (Node-RED needs the html beside ${html.replace(/\.html$/, '.js')})`);
    for (const d of parseEditorHtml(file).definitions) defs.set(d.type, d);
  }
  return defs;
}

// Types registered by the runtime files, found by running each declared file
// against a stand-in RED that records registerType calls and absorbs the rest.
function runtimeTypes(): Map<string, string[]> {
  const found = new Map<string, string[]>();
  const absorb = (path: string): unknown => new Proxy(function () { /* callable stand-in */ }, {
    get: (_t, p) => (p === 'then' ? undefined : absorb(`${path}.${String(p)}`)),
    apply: () => absorb(`${path}()`),
    construct: () => absorb(`new ${path}`) as object,
  });
  for (const [declared, js] of Object.entries(pkg['node-red']?.nodes ?? {})) {
    const file = join(ROOT, js);
    assert.ok(existsSync(file), `${js} (declared for ${declared}) is missing: run npm run build`);
    const types: string[] = [];
    const RED = new Proxy({}, {
      get: (_t, p) => {
        if (p === 'nodes') {
          return new Proxy({}, {
            get: (_n, q) => (q === 'registerType' ? (type: string) => { types.push(type); } : absorb(`RED.nodes.${String(q)}`)),
          });
        }
        if (p === 'settings') return {};
        return absorb(`RED.${String(p)}`);
      },
    });
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require(file) as ((red: unknown) => unknown) | { default?: (red: unknown) => unknown };
    const fn = typeof mod === 'function' ? mod : mod.default;
    assert.equal(typeof fn, 'function', `${js} must export function(RED) as Node-RED expects`);
    fn!(RED);
    found.set(js, types);
  }
  return found;
}

interface Release { version: string; engines?: { node?: string } }
// `npm view --json` collapses its answer: a string when no release has the other
// fields, an object for one release, an array for several.
function releases(answer: unknown): Release[] {
  const list = Array.isArray(answer) ? answer : [answer];
  return list.map((r) => (typeof r === 'string' ? { version: r } : (r as Release)));
}

describe('package: flow library scorecard (our own implementation of node-red-dev validate)', function () {
  this.timeout(120_000);

  it('P01: declares a licence', function () {
    assert.equal(typeof pkg.license, 'string');
    assert.ok(pkg.license!.length > 0);
    assert.ok(existsSync(join(ROOT, 'LICENSE')) || existsSync(join(ROOT, 'LICENSE.md')), 'a LICENSE file should ship with the package');
  });

  it('P02: gives a repository or bugs link', function () {
    const repo = typeof pkg.repository === 'string' ? pkg.repository : pkg.repository?.url;
    const bugs = typeof pkg.bugs === 'string' ? pkg.bugs : pkg.bugs?.url ?? pkg.bugs?.email;
    assert.ok(repo || bugs, 'package.json needs "repository" or "bugs"');
    if (repo) assert.match(repo, /^(git\+)?(https?|git|ssh):\/\/|^git@/, `repository url "${repo}" does not look like a git url`);
  });

  it('P03: uses a scoped package name', function () {
    assert.match(pkg.name, /^@[a-z\d][\w.-]+\/[a-z\d][\w.-]*$/);
  });

  it('P04: has the node-red keyword', function () {
    assert.ok(pkg.keywords?.includes('node-red'), 'keywords must include "node-red"');
  });

  it('P05: node-red.version is satisfied by the latest Node-RED and by the one we test with', async function () {
    const range = pkg['node-red']?.version;
    assert.ok(range && semver.validRange(range), `node-red.version must be a semver range, got ${JSON.stringify(range)}`);
    const tags = (await npmView('node-red', ['dist-tags'])) as Record<string, string>;
    // node-red-dev checks the "latest" tag and any maintenance tags.
    const current = Object.entries(tags).filter(([t]) => t === 'latest' || /maintenance/.test(t));
    assert.ok(current.length > 0, 'the registry reported no latest tag for node-red');
    for (const [tag, version] of current) {
      assert.ok(semver.satisfies(version, range!), `node-red.version "${range}" does not admit node-red@${tag} = ${version}`);
    }
    const installed = JSON.parse(readFileSync(require.resolve('node-red/package.json', { paths: [ROOT] }), 'utf8')).version as string;
    assert.ok(semver.satisfies(installed, range!), `node-red.version "${range}" does not admit the devDependency node-red ${installed}`);
    console.log(`      node-red.version "${range}" admits ${current.map(([t, v]) => `${t} ${v}`).join(', ')} and the installed ${installed}`);
  });

  it('P07: engines.node has a lower bound at or below 22.9 and admits the latest Node-RED\'s minimum Node', async function () {
    const range = pkg.engines?.node;
    assert.ok(range && semver.validRange(range), `engines.node must be a semver range, got ${JSON.stringify(range)}`);
    const low = semver.minVersion(range!);
    assert.ok(low, `engines.node "${range}" has no lower bound`);
    assert.ok(semver.lte(low!.version, '22.9.0'), `engines.node lower bound ${low!.version} is above 22.9.0 (Node-RED 5's minimum)`);
    const latest = (await npmView('node-red', ['version', 'engines'])) as { version: string; engines?: { node?: string } };
    const nrMin = latest.engines?.node ? semver.minVersion(latest.engines.node) : null;
    if (nrMin) assert.ok(semver.satisfies(nrMin.version, range!), `engines.node "${range}" excludes Node ${nrMin.version}, the minimum of node-red ${latest.version}`);
    console.log(`      engines.node "${range}": lower bound ${low!.version}; node-red ${latest.version} needs ${latest.engines?.node ?? '(unspecified)'}`);
  });

  it('D01/D02: at most 6 dependencies, each range admitting its latest version', async function () {
    const deps = Object.entries(pkg.dependencies ?? {});
    assert.ok(deps.length <= 6, `${deps.length} dependencies; the scorecard allows 6`);
    const ourMinNode = semver.minVersion(pkg.engines?.node ?? '*')?.version ?? '0.0.0';
    const problems: string[] = [];
    const lines: string[] = [];
    await Promise.all(deps.map(async ([name, range]) => {
      const [latest] = releases(await npmView(name, ['version', 'engines']));
      if (semver.satisfies(latest.version, range)) {
        lines.push(`${name} ${range} admits latest ${latest.version}`);
        return;
      }
      // A latest release that drops a Node version we support (engines.node) cannot be
      // admitted without breaking installs there: then the newest release that still
      // supports our lowest Node must be admitted instead.
      const latestNode = latest.engines?.node;
      if (latestNode && !semver.satisfies(ourMinNode, latestNode)) {
        const all = releases(await npmView(`${name}@>=${semver.minVersion(range)?.version ?? '0.0.0'}`, ['version', 'engines']));
        const usable = all
          .filter((v) => !/-/.test(v.version) && (!v.engines?.node || semver.satisfies(ourMinNode, v.engines.node)))
          .map((v) => v.version)
          .sort((a, b) => semver.rcompare(a, b));
        if (usable[0] && semver.satisfies(usable[0], range)) {
          lines.push(`${name} ${range} admits ${usable[0]}, the newest release for Node ${ourMinNode}; latest ${latest.version} needs Node ${latestNode} ` +
            '(the website scorecard would flag this as out of date)');
          return;
        }
        problems.push(`${name}: range ${range} admits neither latest ${latest.version} nor ${usable[0] ?? '(none)'}, the newest release that runs on Node ${ourMinNode}`);
        return;
      }
      problems.push(`${name}: range ${range} does not admit the latest version ${latest.version}`);
    }));
    for (const l of lines.sort()) console.log(`      ${l}`);
    assert.deepEqual(problems, []);
  });

  it('N01 (local part): every node type is prefixed, unique, and registered the same by runtime and editor', function () {
    const declared = Object.keys(pkg['node-red']?.nodes ?? {});
    assert.ok(declared.length > 0, 'package.json node-red.nodes is empty');
    for (const t of declared) assert.ok(t.startsWith(PREFIX), `declared node "${t}" lacks the ${PREFIX} prefix`);

    const editorCount = new Map<string, string[]>();
    const errors: string[] = [];
    for (const h of sourceHtml()) {
      errors.push(...h.scriptErrors);
      for (const d of h.definitions) editorCount.set(d.type, [...(editorCount.get(d.type) ?? []), h.file]);
    }
    assert.deepEqual(errors, []);
    for (const [t, files] of editorCount) {
      assert.ok(t.startsWith(PREFIX), `${files[0]} registers "${t}" without the ${PREFIX} prefix`);
      assert.equal(files.length, 1, `"${t}" is registered by more than one editor file: ${files.join(', ')}`);
    }

    const runtime = runtimeTypes();
    const runtimeAll: string[] = [];
    for (const [js, types] of runtime) {
      assert.ok(types.length > 0, `${js} registers no node type`);
      runtimeAll.push(...types);
    }
    assert.equal(new Set(runtimeAll).size, runtimeAll.length, `a type is registered twice at runtime: ${runtimeAll.join(', ')}`);
    for (const t of runtimeAll) assert.ok(t.startsWith(PREFIX), `runtime registers "${t}" without the ${PREFIX} prefix`);
    assert.deepEqual([...runtimeAll].sort(), [...declared].sort(), 'runtime types and package.json node-red.nodes differ');
    assert.deepEqual([...editorCount.keys()].sort(), [...declared].sort(), 'nodes/*.html types and package.json node-red.nodes differ');
    // Each declared runtime file registers the type it is declared under, so the
    // flow library's per-file html look-up finds it.
    for (const [type, js] of Object.entries(pkg['node-red']!.nodes!)) {
      assert.ok(runtime.get(js)?.includes(type), `${js} is declared for ${type} but does not register it`);
    }
  });

  it('editor html: a literal RED.nodes.registerType(\'<type>\', {...}) in text/javascript, a form template and help for every type', function () {
    const defs = builtDefinitions();
    const problems: string[] = [];
    for (const { type, html } of declaredHtmlFiles(pkg)) {
      const facts = parseEditorHtml(join(ROOT, html));
      problems.push(...facts.scriptErrors);
      const d = facts.definitions.find((x) => x.type === type);
      if (!d) { problems.push(`${html}: no literal RED.nodes.registerType('${type}', ...) inside <script type="text/javascript">`); continue; }
      if (!d.objectLiteral) problems.push(`${html}: the definition of ${type} is not an inline object literal`);
      if (d.nonLiteral.length) problems.push(`${html}: ${type} has non-literal ${d.nonLiteral.join(', ')} (the flow library cannot read them)`);
      if (typeof d.category !== 'string') problems.push(`${html}: ${type} has no literal category`);
      if (!facts.templates.includes(type)) problems.push(`${html}: no <script type="text/html" data-template-name="${type}">`);
      const helped = helpSources(html).some((f) => parseEditorHtml(f).helps.includes(type));
      if (!helped) problems.push(`${html}: no help (data-help-name="${type}") in the html or in locales/en-US/`);
      if (d.category !== 'config') {
        if (d.category !== 'katzenpost') problems.push(`${html}: ${type} is in category ${String(d.category)}, expected katzenpost`);
        if (typeof d.icon !== 'string') problems.push(`${html}: ${type} has no literal icon`);
      }
    }
    assert.deepEqual(problems, []);
    assert.equal(defs.size, Object.keys(pkg['node-red']!.nodes!).length);
  });

  it('N02: every non-config node type is used in at least one example flow', function () {
    const defs = builtDefinitions();
    const files = exampleFiles();
    assert.ok(files.length > 0, 'examples/ has no flows');
    const used = new Set<string>();
    for (const f of files) {
      const flow = JSON.parse(readFileSync(f, 'utf8')) as { type: string }[];
      assert.ok(Array.isArray(flow), `${f}: an example must be a flat array of nodes`);
      for (const n of flow) used.add(n.type);
    }
    const missing = [...defs.values()].filter((d) => d.category !== 'config' && !used.has(d.type)).map((d) => d.type);
    assert.deepEqual(missing, [], `no example uses: ${missing.join(', ')}`);
  });

  it('M01: package name not already in the flow library catalogue — not checkable here', function () {
    const why = 'not checkable here: needs the flow library catalogue (catalogue.nodered.org), which this network does not reach';
    console.log(`      M01 ${pkg.name}: ${why}`);
    this.skip();
  });

  it('N01 (website part): node types not already published by another package — not checkable here', function () {
    const why = 'not checkable here: needs the flow library catalogue (catalogue.nodered.org), which this network does not reach';
    console.log(`      N01 ${Object.keys(pkg['node-red']?.nodes ?? {}).length} types: ${why}`);
    this.skip();
  });
});
