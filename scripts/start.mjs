#!/usr/bin/env node
// `npm start`: Node-RED with this pack loaded from the working tree, the
// daemon emulator beside it, and the example flows deployed, so a newcomer
// sees working flows at http://127.0.0.1:1880 at once.
//
// Also imported by test/e2e (startDemo) so the browser test runs exactly
// what a person gets from `npm start`, on ephemeral ports.
import { spawn } from 'node:child_process';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync, createWriteStream } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import http from 'node:http';
import { dirname, join, relative, resolve, basename, isAbsolute } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(ROOT, 'package.json'));

export const DEFAULT_EMULATOR_LISTEN = '127.0.0.1:64331';
export const DEFAULT_EDITOR_PORT = 1880;
const DAEMON_TYPE = 'katzenpost-daemon';
const MARKER = '.katzenpost-demo.json';

const HELP = `Usage: npm start -- [options]

Starts Node-RED with this node pack loaded from the working tree, the
Katzenpost daemon emulator beside it, and the example flows deployed.

Options:
  --port N              editor port (default ${DEFAULT_EDITOR_PORT}; 0 picks a free one)
  --host HOST           editor address (default 127.0.0.1: loopback only, the editor has no login)
  --daemon ADDRESS      use a real kpclientd instead of the emulator:
                        HOST:PORT, a Unix socket path, @abstract-name, or a thinclient.toml path
  --mixnet              use the kpclientd of the local real network
                        (start it first: npm run mixnet -- start)
  --no-emulator         do not start the emulator (the flows dial ${DEFAULT_EMULATOR_LISTEN}
                        unless --daemon says otherwise)
  --emulator ADDRESS    where the emulator listens (default ${DEFAULT_EMULATOR_LISTEN})
  --realistic           emulator with mixnet-like latency instead of a few milliseconds
  --protocol LEVEL      the protocol the emulator speaks: current (kpclientd v0.0.99, what
                        is installed today, the default: Contact Vouchers, so the channel
                        kinds invite and join work) or pinned (v0.0.76)
  --verbose             print the emulator's log (one line per request) with Node-RED's
  --user-dir DIR        Node-RED user directory (default .node-red-user/ in the project)
  --reset-flows         replace the flows in the user directory with the demo flows
  -h, --help            this text

Environment: KATZENPOST_NODE_RED_PATH=<dir of a node-red package> runs that
Node-RED instead of the one in devDependencies.`;

/** Parse argv into options; throws Error with a message meant for people. */
export function parseArgs(argv) {
  const o = { port: DEFAULT_EDITOR_PORT, host: '127.0.0.1', daemon: null, emulator: true, emulatorListen: DEFAULT_EMULATOR_LISTEN, realistic: false, protocol: 'current', userDir: join(ROOT, '.node-red-user'), resetFlows: false, verbose: false, help: false };
  const need = (i, name) => {
    if (i >= argv.length || argv[i].startsWith('--')) throw new Error(`${name} needs a value (see --help)`);
    return argv[i];
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let inline = null;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { inline = a.slice(eq + 1); a = a.slice(0, eq); }
    const value = () => (inline !== null ? inline : need(++i, a));
    switch (a) {
      case '--port': {
        const v = value();
        const n = Number(v);
        if (!/^\d+$/.test(v) || n > 65535) throw new Error(`--port: expected 0-65535, got "${v}"`);
        o.port = n;
        break;
      }
      case '--host': o.host = value(); break;
      case '--daemon': o.daemon = value(); break;
      case '--mixnet': o.daemon = mixnetDaemonAddress(); break;
      case '--no-emulator': o.emulator = false; break;
      case '--emulator': o.emulatorListen = value(); break;
      case '--realistic': o.realistic = true; break;
      case '--protocol': {
        const v = value();
        if (v !== 'pinned' && v !== 'current') throw new Error(`--protocol: expected pinned or current, got "${v}"`);
        o.protocol = v;
        break;
      }
      case '--user-dir': o.userDir = resolve(value()); break;
      case '--reset-flows': o.resetFlows = true; break;
      case '--verbose': o.verbose = true; break;
      case '-h': case '--help': o.help = true; break;
      default: throw new Error(`unknown option "${argv[i]}" (see --help)`);
    }
  }
  // A real daemon replaces the emulator: running both would only confuse.
  if (o.daemon) o.emulator = false;
  return o;
}

/** The thin-client address of the network that `npm run mixnet -- start` runs (its .mixnet/pids.json). */
export function mixnetDaemonAddress(stateDir = process.env.KATZENPOST_MIXNET_DIR || join(ROOT, '.mixnet')) {
  const file = join(stateDir, 'pids.json');
  if (!existsSync(file)) throw new Error(`--mixnet: no local network is running (${file} is missing); start it with: npm run mixnet -- start`);
  const { clientPort } = JSON.parse(readFileSync(file, 'utf8'));
  return `127.0.0.1:${clientPort}`;
}

/**
 * Classify a daemon address the way the daemon config node stores it.
 * "host:port" and "[v6]:port" are TCP, "*.toml" is a thinclient.toml, anything
 * else with a slash or a leading @ is a Unix socket.
 */
export function parseDaemonAddress(address) {
  const a = String(address).trim();
  if (/\.toml$/i.test(a)) return { kind: 'config', path: resolve(a) };
  if (a.startsWith('@')) return { kind: 'unix', path: a };
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(a) ?? /^([^:/\s]+):(\d+)$/.exec(a);
  if (m) {
    const port = Number(m[2]);
    if (port < 1 || port > 65535) throw new Error(`daemon address "${a}": port must be 1-65535`);
    return { kind: 'tcp', host: m[1], port };
  }
  if (a.includes('/')) return { kind: 'unix', path: isAbsolute(a) ? a : resolve(a) };
  throw new Error(`daemon address "${a}": expected HOST:PORT, a Unix socket path, @name or a .toml file`);
}

export function describeTarget(t) {
  if (t.kind === 'tcp') return t.host.includes(':') ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
  if (t.kind === 'unix') return t.path.startsWith('@') ? `unix abstract ${t.path}` : `unix ${t.path}`;
  return `thinclient.toml ${t.path}`;
}

/**
 * Point one daemon config node at `target`. The node keeps TCP host/port,
 * a socket path, or a thinclient.toml path, chosen by `transport` (see
 * src/nodes/lib/daemon-config.ts).
 */
export function pointDaemonNode(node, target) {
  if (target.kind === 'tcp') {
    node.transport = 'tcp';
    node.host = target.host;
    node.port = target.port;
  } else if (target.kind === 'unix') {
    node.transport = 'unix';
    node.socketPath = target.path;
  } else {
    node.transport = 'config';
    node.configFile = target.path;
  }
  return node;
}

function shortId(seed) {
  return createHash('sha256').update(seed).digest('hex').slice(0, 16);
}

function listExampleFiles(dir) {
  const out = [];
  const walk = (d) => {
    for (const e of readdirSync(d, { withFileTypes: true }).sort((x, y) => x.name.localeCompare(y.name, 'en', { numeric: true }))) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && e.name.endsWith('.json')) out.push(p);
    }
  };
  if (existsSync(dir)) walk(dir);
  return out;
}

function isConfigNode(n) {
  return !('x' in n) && !('wires' in n) && !['tab', 'subflow', 'group'].includes(n.type);
}

// Rewrite every string equal to an old id, however deep (wires, links, scope lists, config references).
function remapIds(value, map) {
  if (typeof value === 'string') return map.has(value) ? map.get(value) : value;
  if (Array.isArray(value)) return value.map((v) => remapIds(v, map));
  if (value && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = remapIds(v, map);
    return out;
  }
  return value;
}

/**
 * One flows array from every examples/**.json: each example on its own tab
 * (titled from its file name), ids kept unless two examples share one, the
 * shared config nodes (the examples use stable ids for them) kept once and made
 * global, and every daemon config node pointed at `target`.
 */
export function buildDemoFlows({ examplesDir = join(ROOT, 'examples'), target } = {}) {
  const files = listExampleFiles(examplesDir);
  const flows = [];
  const used = new Map(); // id -> node
  const daemonIds = [];
  const tabs = [];
  for (const file of files) {
    const rel = relative(examplesDir, file);
    let nodes;
    try {
      nodes = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new Error(`examples/${rel}: not valid JSON: ${e.message}`);
    }
    if (!Array.isArray(nodes)) throw new Error(`examples/${rel}: expected a flat array of nodes`);
    const localTabs = new Set(nodes.filter((n) => n.type === 'tab').map((n) => n.id));
    const subflows = new Set(nodes.filter((n) => n.type === 'subflow').map((n) => n.id));
    const map = new Map();
    const skip = new Set();
    for (const n of nodes) {
      if (!used.has(n.id)) continue;
      const prior = used.get(n.id);
      // The examples share their config nodes on purpose: keep the first copy.
      if (isConfigNode(n) && prior.type === n.type) skip.add(n.id);
      else map.set(n.id, shortId(`${rel}:${n.id}`));
    }
    const title = basename(rel, '.json').replace(/^\d+\s*-\s*/, '');
    const group = dirname(rel) === '.' ? '' : dirname(rel);
    let tabId = null;
    for (const raw of nodes) {
      if (skip.has(raw.id)) continue;
      const n = remapIds(raw, map);
      if (n.type !== 'tab' && n.type !== 'subflow') {
        if (isConfigNode(n)) {
          if (!(n.z && subflows.has(raw.z))) delete n.z;
        } else if (!(raw.z && (localTabs.has(raw.z) || subflows.has(raw.z)))) {
          if (!tabId) {
            tabId = shortId(`tab:${rel}`);
            tabs.push({ id: tabId, type: 'tab', label: title, disabled: false, info: `Deployed by npm start from examples/${rel}${group ? ` (${group})` : ''}.` });
          }
          n.z = tabId;
        }
      }
      if (n.type === DAEMON_TYPE) {
        if (target) pointDaemonNode(n, target);
        daemonIds.push(n.id);
      }
      used.set(n.id, n);
      flows.push(n);
    }
  }
  // Tabs first so the editor shows them in example order.
  return { flows: [...tabs, ...flows], daemonIds, exampleCount: files.length };
}

function sha(text) {
  return createHash('sha256').update(text).digest('hex');
}

/**
 * Lay out the user directory: a package.json, a settings file regenerated on
 * each start, and the demo flows. The flows file is replaced only when it is
 * missing, unchanged since we last wrote it, or --reset-flows says so; a flow
 * the user edited and deployed is kept, with only the demo's daemon config
 * nodes pointed at the current daemon.
 */
export function prepareUserDir({ userDir, port, host = '127.0.0.1', target, resetFlows = false, log = () => {} }) {
  mkdirSync(userDir, { recursive: true });
  const pkgFile = join(userDir, 'package.json');
  if (!existsSync(pkgFile)) {
    writeFileSync(pkgFile, JSON.stringify({ name: 'katzenpost-demo-user-dir', description: 'Node-RED user directory of npm start (git-ignored)', version: '0.0.0', private: true, dependencies: {} }, null, 2) + '\n');
  }
  const settingsFile = join(userDir, 'settings.js');
  writeFileSync(settingsFile, settingsSource({ port, host, userDir }));

  const flowsFile = join(userDir, 'flows.json');
  const markerFile = join(userDir, MARKER);
  const marker = existsSync(markerFile) ? JSON.parse(readFileSync(markerFile, 'utf8')) : null;
  const current = existsSync(flowsFile) ? readFileSync(flowsFile, 'utf8') : null;
  const demo = buildDemoFlows({ target });
  let seeded;
  if (resetFlows || current === null || (marker && marker.flowsHash === sha(current))) {
    const text = JSON.stringify(demo.flows, null, 2) + '\n';
    writeFileSync(flowsFile, text);
    // Credentials of replaced flows would not match the new ones; the demo's
    // owned channels get their seeds (Node-RED encrypts the file on deploy).
    const credentials = encryptCredentials(demoChannelCredentials(userDir, demo.flows), DEMO_CREDENTIAL_SECRET);
    writeFileSync(join(userDir, 'flows_cred.json'), JSON.stringify(credentials, null, 2) + '\n', { mode: 0o600 });
    writeFileSync(markerFile, JSON.stringify({ flowsHash: sha(text), daemonIds: demo.daemonIds }, null, 2) + '\n');
    seeded = true;
  } else {
    // Keep the user's work; point the demo's daemon nodes at today's daemon.
    let flows;
    try {
      flows = JSON.parse(current);
    } catch (e) {
      throw new Error(`${flowsFile} is not valid JSON (${e.message}); fix it or run with --reset-flows`);
    }
    const ids = new Set(marker?.daemonIds ?? demo.daemonIds);
    let changed = 0;
    for (const n of flows) {
      if (n.type === DAEMON_TYPE && ids.has(n.id) && target) { pointDaemonNode(n, target); changed++; }
    }
    if (changed) writeFileSync(flowsFile, JSON.stringify(flows, null, 4) + '\n');
    log(`kept your edited flows in ${flowsFile} (npm start -- --reset-flows restores the demo)`);
    seeded = false;
  }
  return { settingsFile, flowsFile, seeded, exampleCount: demo.exampleCount, daemonIds: demo.daemonIds };
}

/**
 * An owned channel keeps its identity (a 32-byte seed) in Node-RED
 * credentials, which example flows never carry. The demo's seeds are made
 * once per user directory and kept, so --reset-flows reopens the same
 * channels that the channel database already knows.
 */
/** The user directory's credentialSecret: the demo's seeds guard nothing of value. */
const DEMO_CREDENTIAL_SECRET = 'katzenpost-demo-not-a-secret';

/** flows_cred.json as Node-RED writes it: {"$": iv hex + AES-256-CTR(JSON) base64}, key = SHA-256(secret). */
export function encryptCredentials(credentials, secret) {
  const key = createHash('sha256').update(secret).digest();
  const iv = randomBytes(16);
  const cipher = createCipheriv('aes-256-ctr', key, iv);
  return { $: iv.toString('hex') + cipher.update(JSON.stringify(credentials), 'utf8', 'base64') + cipher.final('base64') };
}

export function demoChannelCredentials(userDir, flows) {
  const seedsFile = join(userDir, 'demo-channel-seeds.json');
  const seeds = existsSync(seedsFile) ? JSON.parse(readFileSync(seedsFile, 'utf8')) : {};
  const credentials = {};
  let added = false;
  for (const n of flows) {
    // Owned channels, and the outgoing channels of invite and join (a join's voucher comes from the other side, at run time).
    if (n.type !== 'katzenpost-channel' || (n.mode ?? 'owned') === 'imported') continue;
    if (typeof seeds[n.id] !== 'string') {
      seeds[n.id] = randomBytes(32).toString('hex');
      added = true;
    }
    credentials[n.id] = { seed: seeds[n.id] };
  }
  if (added) writeFileSync(seedsFile, JSON.stringify(seeds, null, 2) + '\n', { mode: 0o600 });
  return credentials;
}

function settingsSource({ port, host, userDir }) {
  return `// Written by scripts/start.mjs at every start: edits here are lost.
// Node-RED settings for the demo: loopback only, no telemetry, no tours,
// this pack loaded from the working tree through nodesDir.
module.exports = {
  uiPort: ${JSON.stringify(port)},
  uiHost: ${JSON.stringify(host)},
  userDir: ${JSON.stringify(userDir)},
  flowFile: 'flows.json',
  flowFilePretty: true,
  // A Node-RED package directory in nodesDir is loaded as a module, with its
  // examples/ offered in Import > Examples, straight from the working tree.
  nodesDir: [${JSON.stringify(ROOT)}],
  credentialSecret: ${JSON.stringify(DEMO_CREDENTIAL_SECRET)},
  telemetry: { enabled: false, updateNotification: false },
  diagnostics: { enabled: false, ui: false },
  externalModules: { palette: { allowInstall: false } },
  logging: { console: { level: 'info', metrics: false, audit: false } },
  editorTheme: {
    tours: false,
    projects: { enabled: false },
    palette: { categories: ['katzenpost', 'common', 'function', 'network', 'sequence', 'parser', 'storage'] },
    page: { title: 'Node-RED · Katzenpost demo' },
  },
};
`;
}

/** Resolve the Node-RED to run: KATZENPOST_NODE_RED_PATH or our devDependency. */
export function nodeRedDir() {
  const env = process.env.KATZENPOST_NODE_RED_PATH;
  if (env) {
    const dir = resolve(env);
    if (!existsSync(join(dir, 'red.js'))) throw new Error(`KATZENPOST_NODE_RED_PATH=${env}: no red.js there`);
    return dir;
  }
  try {
    return dirname(require.resolve('node-red/package.json'));
  } catch {
    throw new Error('node-red is not installed: run npm install first');
  }
}

/** A free TCP port on host (the kernel's choice). */
export function freePort(host = '127.0.0.1') {
  return new Promise((res, rej) => {
    const s = net.createServer();
    s.once('error', rej);
    s.listen(0, host, () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** Resolve true when nothing listens on host:port (so we may bind it). */
export function portIsFree(port, host = '127.0.0.1') {
  return new Promise((res) => {
    const s = net.createServer();
    s.once('error', () => res(false));
    s.listen(port, host, () => s.close(() => res(true)));
  });
}

function canConnect(target, timeoutMs = 1500) {
  return new Promise((res) => {
    const opts = target.kind === 'tcp' ? { host: target.host, port: target.port } : { path: target.path.startsWith('@') ? `\0${target.path.slice(1)}` : target.path };
    const s = net.connect(opts);
    const t = setTimeout(() => { s.destroy(); res(false); }, timeoutMs);
    s.once('connect', () => { clearTimeout(t); s.destroy(); res(true); });
    s.once('error', () => { clearTimeout(t); res(false); });
  });
}

function get(url, timeoutMs = 2000) {
  return new Promise((res, rej) => {
    const req = http.get(url, { timeout: timeoutMs }, (r) => {
      let body = '';
      r.setEncoding('utf8');
      r.on('data', (c) => { body += c; });
      r.on('end', () => res({ status: r.statusCode, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', rej);
  });
}

async function loadEmulatorModule() {
  const entry = join(ROOT, 'dist', 'emulator', 'index.js');
  if (!existsSync(entry)) throw new Error('dist/emulator/index.js is missing: run npm run build first (npm start does)');
  const mod = await import(pathToFileURL(entry).href);
  return mod.startEmulator ? mod : mod.default;
}

/**
 * Start the whole demo. Returns { editorUrl, daemon, emulator, nodeRed, stop }.
 * `stdio` 'inherit' shows Node-RED's log in the terminal; a file path sends it there.
 */
export async function startDemo(options = {}) {
  const o = { ...parseArgs([]), ...options };
  // A real daemon replaces the emulator, as on the command line.
  if (o.daemon) o.emulator = false;
  const log = o.log ?? ((m) => console.log(m));
  if (!existsSync(join(ROOT, 'dist', 'nodes'))) throw new Error('dist/nodes is missing: run npm run build first (npm start does)');
  const redDir = nodeRedDir();

  let port = o.port;
  if (port === 0) port = await freePort(o.host);
  else if (!(await portIsFree(port, o.host))) {
    throw new Error(`the editor port ${o.host}:${port} is already in use (another Node-RED?). Stop it, or choose another with --port N`);
  }

  let emulator = null;
  let target;
  if (o.emulator) {
    const { startEmulator } = await loadEmulatorModule();
    try {
      emulator = await startEmulator({ listen: o.emulatorListen, latency: o.realistic ? 'realistic' : 'fast', protocol: o.protocol, log: o.emulatorLog ?? (o.verbose ? (line) => log(`[emulator] ${line}`) : () => {}) });
    } catch (e) {
      if (e && e.code === 'EADDRINUSE') {
        throw new Error(`the emulator cannot listen on ${o.emulatorListen}: the address is in use (a kpclientd or another emulator?). ` +
          `Use it with --daemon ${o.emulatorListen}, or move the emulator with --emulator 127.0.0.1:PORT`);
      }
      throw e;
    }
    target = parseDaemonAddress(emulator.address);
  } else {
    target = parseDaemonAddress(o.daemon ?? DEFAULT_EMULATOR_LISTEN);
    if (target.kind === 'config' && !existsSync(target.path)) throw new Error(`--daemon ${o.daemon}: no such thinclient.toml`);
    if (target.kind !== 'config' && !(await canConnect(target))) {
      log(`warning: nothing answers at ${describeTarget(target)} yet; the daemon config node will keep retrying`);
    }
  }

  let child = null;
  const stop = async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGINT');
      // Node-RED gives each node 15 s to close; do not wait forever past that.
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(timer);
    }
    if (emulator) {
      const e = emulator;
      emulator = null;
      await e.stop();
    }
  };

  try {
    const prepared = prepareUserDir({ userDir: o.userDir, port, host: o.host, target, resetFlows: o.resetFlows, log });
    let stdio = 'inherit';
    let logStream = null;
    if (o.stdio && o.stdio !== 'inherit') {
      logStream = createWriteStream(o.stdio, { flags: 'a' });
      await new Promise((r) => logStream.once('open', r));
      stdio = ['ignore', logStream, logStream];
    }
    child = spawn(process.execPath, [join(redDir, 'red.js'), '--settings', prepared.settingsFile, '--userDir', o.userDir], {
      cwd: o.userDir,
      stdio,
      env: process.env,
    });
    const early = new Promise((_, rej) => child.once('exit', (code, sig) => rej(new Error(`Node-RED exited during start-up (${sig ?? `code ${code}`})${logStream ? `; see ${o.stdio}` : ''}`))));
    early.catch(() => {});
    const editorUrl = `http://${o.host.includes(':') ? `[${o.host}]` : o.host}:${port}/`;
    const deadline = Date.now() + (o.startTimeoutMs ?? 90_000);
    // Node-RED opens its port only after the flows have started.
    for (;;) {
      const ready = await Promise.race([get(`${editorUrl}settings`).then((r) => r.status === 200, () => false), early]);
      if (ready) break;
      if (Date.now() > deadline) throw new Error(`Node-RED did not answer at ${editorUrl} within ${Math.round((o.startTimeoutMs ?? 90_000) / 1000)} s`);
      await new Promise((r) => setTimeout(r, 250));
    }
    const nodeRedVersion = JSON.parse(readFileSync(join(redDir, 'package.json'), 'utf8')).version;
    return { editorUrl, port, daemon: target, emulator, nodeRed: { child, version: nodeRedVersion, dir: redDir }, prepared, userDir: o.userDir, stop };
  } catch (e) {
    await stop().catch(() => {});
    throw e;
  }
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`npm start: ${e.message}`);
    process.exit(2);
  }
  if (opts.help) {
    console.log(HELP);
    return;
  }
  let demo;
  try {
    demo = await startDemo(opts);
  } catch (e) {
    console.error(`\nnpm start: ${e.message}`);
    process.exit(1);
  }
  const rel = relative(process.cwd(), demo.userDir) || '.';
  const lines = [
    '',
    '  Katzenpost demo is running',
    `    Node-RED ${demo.nodeRed.version} editor   ${demo.editorUrl}`,
    demo.emulator
      ? `    daemon emulator            ${describeTarget(demo.daemon)}  (an in-memory stand-in for kpclientd: NO anonymity, nothing leaves this machine${opts.verbose ? '' : '; --verbose shows its log'})`
      : `    kpclientd                  ${describeTarget(demo.daemon)}`,
    demo.prepared.seeded
      ? `    demo flows                 ${demo.prepared.exampleCount} example flow(s) from examples/, one tab each`
      : '    flows                      your edited flows (npm start -- --reset-flows restores the demo)',
    `    user directory             ${rel}${rel.endsWith('/') ? '' : '/'}  (git-ignored)`,
    '',
    '  Open the editor, click an inject node\'s button and watch the debug sidebar (the bug icon, top right).',
    '  More examples: menu > Import > Examples > @katzenpost-community/node-red-katzenpost.',
    '  Press Ctrl-C to stop everything.',
    '',
  ];
  console.log(lines.join('\n'));

  let stopping = false;
  const shutdown = async (sig) => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${sig}: stopping Node-RED${demo.emulator ? ' and the emulator' : ''}...`);
    try {
      await demo.stop();
      console.log('stopped.');
      process.exit(0);
    } catch (e) {
      console.error(`error while stopping: ${e.message}`);
      process.exit(1);
    }
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGHUP', () => shutdown('SIGHUP'));
  demo.nodeRed.child.once('exit', async (code, sig) => {
    if (stopping) return;
    stopping = true;
    console.error(`Node-RED exited (${sig ?? `code ${code}`}); stopping.`);
    await demo.stop().catch(() => {});
    process.exit(code || 1);
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
