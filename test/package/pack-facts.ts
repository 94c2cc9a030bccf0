// What the flow library (and node-red-dev validate) reads from a node pack,
// gathered the same way it does: package.json, the editor HTML parsed as
// JavaScript (not executed), the examples, and the registry via `npm view`.
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

export const ROOT = resolve(__dirname, '..', '..');

export interface PackageJson {
  name: string;
  version: string;
  license?: string;
  repository?: string | { type?: string; url: string; directory?: string };
  bugs?: string | { url?: string; email?: string };
  keywords?: string[];
  engines?: { node?: string };
  dependencies?: Record<string, string>;
  files?: string[];
  main?: string;
  types?: string;
  bin?: Record<string, string>;
  'node-red'?: { version?: string; nodes?: Record<string, string> };
}

export function readPackageJson(): PackageJson {
  return JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as PackageJson;
}

/** The Node-RED the tests run against: KATZENPOST_NODE_RED_PATH or our devDependency. */
export function nodeRedDir(): string {
  const env = process.env.KATZENPOST_NODE_RED_PATH;
  return env ? resolve(env) : dirname(require.resolve('node-red/package.json', { paths: [ROOT] }));
}

// Loaded from node-red's own dependency tree: nothing extra to install.
interface SemverApi {
  satisfies(version: string, range: string, options?: { includePrerelease?: boolean }): boolean;
  minVersion(range: string): { version: string } | null;
  validRange(range: string): string | null;
  lte(a: string, b: string): boolean;
  rcompare(a: string, b: string): number;
}
function resolveFromNodeRed(name: string): string {
  const red = nodeRedDir();
  return require.resolve(name, { paths: [ROOT, red, join(red, 'node_modules', '@node-red', 'nodes'), join(red, '..', '@node-red', 'nodes')] });
}
export const semver: SemverApi = require(resolveFromNodeRed('semver')) as SemverApi;

interface AcornNode { type: string; [k: string]: unknown }
const acorn = require(resolveFromNodeRed('acorn')) as { parse(src: string, o: { ecmaVersion: 'latest' | number; sourceType?: string }): AcornNode };

export interface EditorDefinition {
  type: string;
  file: string;                     // html file (relative to ROOT)
  objectLiteral: boolean;           // second argument is an inline object, as the flow library requires
  category?: unknown;               // literal value, undefined when not a literal
  icon?: unknown;
  color?: unknown;
  inputs?: unknown;
  outputs?: unknown;
  defaults: string[];
  credentials: string[];
  nonLiteral: string[];             // properties the flow library wants inline but are not
}

export interface HtmlFacts {
  file: string;
  definitions: EditorDefinition[];
  templates: string[];              // data-template-name values
  helps: string[];                  // data-help-name values
  scriptErrors: string[];
}

function walk(node: unknown, visit: (n: AcornNode) => void): void {
  if (Array.isArray(node)) {
    for (const c of node) walk(c, visit);
    return;
  }
  if (!node || typeof node !== 'object') return;
  const n = node as AcornNode;
  if (typeof n.type === 'string') visit(n);
  for (const [k, v] of Object.entries(n)) {
    if (k !== 'type' && v && typeof v === 'object') walk(v, visit);
  }
}

function keyName(p: AcornNode): string | undefined {
  const key = p.key as AcornNode | undefined;
  if (!key) return undefined;
  if (key.type === 'Identifier') return key.name as string;
  if (key.type === 'Literal') return String(key.value);
  return undefined;
}

function attrs(tag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of tag.matchAll(/([\w-]+)\s*=\s*("([^"]*)"|'([^']*)')/g)) out[m[1].toLowerCase()] = m[3] ?? m[4];
  return out;
}

/** Parse one editor HTML file the way node-red-dev's checknodes does. */
export function parseEditorHtml(file: string): HtmlFacts {
  const text = readFileSync(file, 'utf8');
  const rel = file.startsWith(ROOT) ? file.slice(ROOT.length + 1) : file;
  const facts: HtmlFacts = { file: rel, definitions: [], templates: [], helps: [], scriptErrors: [] };
  for (const m of text.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)) {
    const a = attrs(m[1]);
    const type = (a.type ?? '').toLowerCase();
    if (type === 'text/html' || type === 'text/x-red') {
      if (a['data-template-name']) facts.templates.push(a['data-template-name']);
      if (a['data-help-name']) facts.helps.push(a['data-help-name']);
      continue;
    }
    if (type !== 'text/javascript') continue;
    let ast: AcornNode;
    try {
      ast = acorn.parse(m[2], { ecmaVersion: 'latest', sourceType: 'script' });
    } catch (e) {
      facts.scriptErrors.push(`${rel}: <script type="text/javascript"> does not parse: ${(e as Error).message}`);
      continue;
    }
    walk(ast, (n) => {
      if (n.type !== 'CallExpression') return;
      const callee = n.callee as AcornNode;
      if (callee.type !== 'MemberExpression') return;
      const prop = callee.property as AcornNode;
      if (prop.type !== 'Identifier' || prop.name !== 'registerType') return;
      const args = n.arguments as AcornNode[];
      if (!args[0] || args[0].type !== 'Literal' || typeof args[0].value !== 'string') {
        facts.scriptErrors.push(`${rel}: registerType() with a non-literal type name`);
        return;
      }
      const def: EditorDefinition = { type: args[0].value, file: rel, objectLiteral: args[1]?.type === 'ObjectExpression', defaults: [], credentials: [], nonLiteral: [] };
      if (def.objectLiteral) {
        for (const p of (args[1].properties as AcornNode[])) {
          const k = keyName(p);
          const v = p.value as AcornNode | undefined;
          if (!k || !v) continue;
          if (['category', 'icon', 'color', 'inputs', 'outputs'].includes(k)) {
            if (v.type === 'Literal') (def as unknown as Record<string, unknown>)[k] = v.value;
            else def.nonLiteral.push(k);
          } else if (k === 'defaults' || k === 'credentials') {
            if (v.type === 'ObjectExpression') def[k] = (v.properties as AcornNode[]).map(keyName).filter((x): x is string => !!x);
            else def.nonLiteral.push(k);
          }
        }
      }
      facts.definitions.push(def);
    });
  }
  return facts;
}

/** Every file under dir (relative paths with forward slashes). */
export function listFiles(dir: string, base = dir): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...listFiles(p, base));
    else if (e.isFile()) out.push(p.slice(base.length + 1).split('\\').join('/'));
  }
  return out.sort();
}

export function exampleFiles(): string[] {
  return listFiles(join(ROOT, 'examples')).filter((f) => f.endsWith('.json')).map((f) => join(ROOT, 'examples', f));
}

/** The editor HTML beside each declared node file (what Node-RED and the flow library read). */
export function declaredHtmlFiles(pkg = readPackageJson()): { type: string; js: string; html: string }[] {
  return Object.entries(pkg['node-red']?.nodes ?? {}).map(([type, js]) => ({ type, js, html: js.replace(/\.js$/, '.html') }));
}

/** Help text for a node: in its html, or in locales/en-US/<basename>.html beside it. */
export function helpSources(htmlRel: string): string[] {
  const dir = dirname(join(ROOT, htmlRel));
  const out = [join(ROOT, htmlRel)];
  const loc = join(dir, 'locales', 'en-US', basename(htmlRel));
  if (existsSync(loc)) out.push(loc);
  return out;
}

export interface NpmResult { stdout: string; stderr: string }

/** Run npm with a bounded time; rejects with npm's own first error line. */
export function npm(args: string[], timeoutMs = 60_000): Promise<NpmResult> {
  return new Promise((res, rej) => {
    execFile('npm', args, { cwd: ROOT, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' } }, (err, stdout, stderr) => {
      if (err) {
        const line = String(stderr).split('\n').find((l) => /npm (error|ERR!)/.test(l) && !/A complete log/.test(l)) ?? (err as Error).message;
        const e = new Error(`npm ${args.join(' ')} failed: ${line.trim()}`) as Error & { stderr: string };
        e.stderr = String(stderr);
        rej(e);
        return;
      }
      res({ stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

const REGISTRY_DOWN = /ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNREFUSED|ECONNRESET|ENETUNREACH|network|socket hang up|timed out|SIGTERM/i;

/** `npm view <spec> <fields> --json`, failing with a clear message when the registry is unreachable. */
export async function npmView(spec: string, fields: string[]): Promise<unknown> {
  let r: NpmResult;
  try {
    r = await npm(['view', spec, ...fields, '--json'], 45_000);
  } catch (e) {
    const msg = (e as Error).message;
    if (REGISTRY_DOWN.test(msg) || REGISTRY_DOWN.test((e as { stderr?: string }).stderr ?? '')) {
      throw new Error(`the npm registry is unreachable, so the scorecard cannot ask it about ${spec}: ${msg}`);
    }
    throw e;
  }
  const text = r.stdout.trim();
  if (!text) throw new Error(`npm view ${spec} ${fields.join(' ')}: empty answer`);
  return JSON.parse(text);
}
