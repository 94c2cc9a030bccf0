#!/usr/bin/env node
// `npm run mixnet -- start|stop|status|install`: a real, minimal Katzenpost
// network on this machine as plain processes (3 directory authorities,
// 3 mixes, 1 gateway, 1 service node with courier and echo, 2 storage
// replicas, kpclientd), so the library, the nodes and the channels can be
// tested against the real daemon. Its binaries are built with Go into a
// cache outside the work tree (shared by every clone); the network itself
// lives in .mixnet/ (git-ignored): configs, logs, PIDs.
//
// Also imported by the real-network tests (test/mixnet) for the paths and the
// daemon address.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, copyFileSync, openSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const KATZENPOST_VERSION = 'v0.0.99';
const MODULE = 'github.com/katzenpost/katzenpost';
const COMMANDS = ['genconfig', 'dirauth', 'server', 'replica', 'courier', 'http-proxy-server', 'kpclientd', 'fetch'];
// Warped epochs are 2 minutes; every process must agree, so the environment says so too.
const EPOCH = '2m';
const LDFLAGS = `-extldflags '-Wl,-z,stack-size=0x1F40000' -buildid= -X ${MODULE}/core/epochtime.WarpedEpoch=true`;

const CACHE = process.env.KATZENPOST_MIXNET_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'katzenpost-mixnet');
export const BIN_DIR = process.env.KATZENPOST_MIXNET_BIN || join(CACHE, KATZENPOST_VERSION, 'bin');
export const STATE_DIR = resolve(process.env.KATZENPOST_MIXNET_DIR || join(ROOT, '.mixnet'));
export const NET_DIR = join(STATE_DIR, 'net');
const PIDS_FILE = join(STATE_DIR, 'pids.json');
export const THINCLIENT_TOML = join(NET_DIR, 'client', 'thinclient.toml');
export const DEFAULT_BASE_PORT = 30000;
/** The thin-client port is base + 2000 (as upstream's docker-fixes branch does), away from the emulator's 64331. */
export const DEFAULT_CLIENT_PORT = DEFAULT_BASE_PORT + 2000;
/** A second kpclientd serves thin clients over WebSocket on the next port (a daemon has exactly one listener). */
export const WS_PORT_OFFSET = 1;

const HELP = `Usage: npm run mixnet -- <command> [options]

A real Katzenpost ${KATZENPOST_VERSION} network on this machine, as plain processes:
3 directory authorities, 3 mixes, 1 gateway, 1 service node (courier, echo),
2 storage replicas and kpclientd, with 2-minute epochs. Needs Go 1.26 (cgo and
gcc) to build the binaries once; nothing else of this project needs Go.

Commands:
  install     build the binaries into ${BIN_DIR}
              (reused when already there)
  start       install, generate a fresh network in .mixnet/, start every
              process and wait until kpclientd serves a PKI document with
              2 storage replicas and a courier; prints the thinclient.toml
  stop        stop every process of the network (by PID)
  status      which processes run, and the daemon's address
  logs        the last lines of every process's log

Options:
  --base-port N     first port of the network (default ${DEFAULT_BASE_PORT}); kpclientd
                    listens on N+2000
  --timeout S       how long start waits for the network (default 900 s)
  --foreground      after start, stay in the foreground; Ctrl-C stops the network
  -h, --help        this text

Environment: KATZENPOST_MIXNET_BASE_PORT (default of --base-port), KATZENPOST_MIXNET_BIN (binaries), KATZENPOST_MIXNET_DIR (state,
default .mixnet/), KATZENPOST_MIXNET_CACHE (build cache, default
~/.cache/katzenpost-mixnet), KATZENPOST_MIXNET_SRC (local module checkouts for
the source build, see the README).`;

const log = (m) => process.stdout.write(`[mixnet] ${m}\n`);

class MixnetError extends Error {}

/** Parse argv into a command and options; throws MixnetError meant for people. */
export function parseArgs(argv) {
  const envPort = process.env.KATZENPOST_MIXNET_BASE_PORT;
  const o = { command: null, basePort: envPort ? Number(envPort) : DEFAULT_BASE_PORT, timeoutS: 900, foreground: false, help: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new MixnetError(`${a} needs a value (see --help)`);
      return argv[++i];
    };
    const int = (name, v, min, max) => {
      if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw new MixnetError(`${name}: expected an integer ${min}-${max}, got "${v}"`);
      return Number(v);
    };
    if (a === '--base-port') o.basePort = int(a, value(), 1024, 63000);
    else if (a === '--timeout') o.timeoutS = int(a, value(), 10, 7200);
    else if (a === '--foreground') o.foreground = true;
    else if (a === '-h' || a === '--help') o.help = true;
    else if (!a.startsWith('-') && o.command === null) o.command = a;
    else throw new MixnetError(`unknown argument "${a}" (see --help)`);
  }
  if (!o.help && !['install', 'start', 'stop', 'status', 'logs'].includes(o.command ?? '')) {
    throw new MixnetError(o.command ? `unknown command "${o.command}" (see --help)` : 'a command is needed: install, start, stop, status or logs (see --help)');
  }
  return o;
}

// ------------------------------------------------------------------ install

function goVersion() {
  const r = spawnSync('go', ['version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return null;
  return r.stdout.trim();
}

function haveBinaries() {
  return COMMANDS.every((c) => existsSync(join(BIN_DIR, c)));
}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
  return { ok: !r.error && r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

/** What the Go module proxy refused, as "module@version" (or "module (version list)"), from go's output. */
export function refusedModules(output) {
  const found = new Set();
  for (const m of output.matchAll(/reading https?:\/\/[^/\s]+\/(\S+?)\/@v\/(\S+?): (?:4\d\d)/g)) {
    // The proxy case-encodes module paths ("!a" = "A").
    const module = m[1].replace(/!([a-z])/g, (_, c) => c.toUpperCase());
    const file = m[2];
    found.add(file === 'list' ? `${module} (version list)` : `${module}@${file.replace(/\.(info|mod|zip)$/, '')}`);
  }
  return [...found];
}

/**
 * The module proxy serves katzenpost v0.0.99 but not everything it pins: the
 * hpqc pseudo-version e598e7ee2843 and every version of katzenpost/falcon and
 * katzenpost/sqisign's Go bindings are refused (see the README). This build
 * uses a wrapper module that requires v0.0.99 unchanged and only chooses
 * dependency versions: hpqc v0.0.85 (the release cut from that branch the same
 * day) from the proxy, falcon v0.1.0 and the sqisign bindings from local
 * checkouts of those repositories at the versions hpqc pins. No Katzenpost
 * source is edited.
 */
function sourceBuild(env) {
  const src = process.env.KATZENPOST_MIXNET_SRC || join(CACHE, 'src');
  const falcon = join(src, 'falcon');
  const sqisign = join(src, 'sqisign');
  const missing = [falcon, join(sqisign, 'bindings', 'go', 'go.mod')].filter((p) => !existsSync(p));
  if (missing.length > 0) {
    return { ok: false, out: `source build: missing local checkouts: ${missing.join(', ')}` };
  }
  const staticLib = join(sqisign, 'bindings', 'go', 'sqisign', 'lib', 'linux_amd64', 'libsqisign_ffi.a');
  if (!existsSync(staticLib) || statSync(staticLib).size < 1024) {
    // The repository keeps this library out of git's objects; build it with cargo, as its README says.
    log('building sqisign-ffi (cargo build --release -p sqisign-ffi)');
    const c = run('cargo', ['build', '--release', '-p', 'sqisign-ffi'], { cwd: sqisign });
    if (!c.ok) return { ok: false, out: `cargo build of sqisign-ffi failed:\n${c.out}` };
    mkdirSync(dirname(staticLib), { recursive: true });
    copyFileSync(join(sqisign, 'target', 'release', 'libsqisign_ffi.a'), staticLib);
  }
  const wrap = join(CACHE, KATZENPOST_VERSION, 'wrapper');
  mkdirSync(wrap, { recursive: true });
  writeFileSync(join(wrap, 'go.mod'), `module katzenpost-mixnet-build

go 1.26

require ${MODULE} ${KATZENPOST_VERSION}

replace (
\tgithub.com/katzenpost/hpqc => github.com/katzenpost/hpqc v0.0.85
\tgithub.com/katzenpost/falcon => ${falcon}
\tgithub.com/katzenpost/sqisign/bindings/go => ${join(sqisign, 'bindings', 'go')}
)
`);
  writeFileSync(join(wrap, 'tools.go'), `//go:build tools\n\npackage tools\n\nimport (\n${COMMANDS.map((c) => `\t_ "${MODULE}/cmd/${c}"`).join('\n')}\n)\n`);
  const tidy = run('go', ['mod', 'tidy'], { cwd: wrap, env });
  if (!tidy.ok) return { ok: false, out: `go mod tidy in ${wrap} failed:\n${tidy.out}` };
  return run('go', ['build', '-trimpath', '-ldflags', LDFLAGS, '-o', BIN_DIR + '/', ...COMMANDS.map((c) => `${MODULE}/cmd/${c}`)], { cwd: wrap, env });
}

/** Build the pinned binaries unless they are already there. */
export function install() {
  if (haveBinaries()) {
    log(`binaries: ${BIN_DIR} (reused)`);
    return;
  }
  const go = goVersion();
  if (!go) {
    throw new MixnetError(
      'Go is not installed (no `go` on PATH). The real network needs Go 1.26 with cgo (gcc) to build ' +
        `Katzenpost ${KATZENPOST_VERSION} once; nothing else of this project needs it. Install Go, then run this again.`,
    );
  }
  log(`building Katzenpost ${KATZENPOST_VERSION} with ${go} into ${BIN_DIR} (a few minutes the first time)`);
  mkdirSync(BIN_DIR, { recursive: true });
  const env = { ...process.env, CGO_ENABLED: '1', GOBIN: BIN_DIR, GOFLAGS: '' };
  const t0 = Date.now();
  const official = run('go', ['install', '-trimpath', '-ldflags', LDFLAGS, ...COMMANDS.map((c) => `${MODULE}/cmd/${c}@${KATZENPOST_VERSION}`)], { env });
  if (official.ok && haveBinaries()) {
    log(`built with go install in ${Math.round((Date.now() - t0) / 1000)} s`);
    return;
  }
  const refused = refusedModules(official.out);
  log(`go install ${MODULE}/cmd/...@${KATZENPOST_VERSION} failed${refused.length ? `: the module proxy refused ${refused.join(', ')}` : ''}`);
  log('trying the source build (README: "The real network")');
  const fallback = sourceBuild(env);
  if (fallback.ok && haveBinaries()) {
    log(`built from the wrapper module in ${Math.round((Date.now() - t0) / 1000)} s`);
    return;
  }
  const refusedToo = refusedModules(fallback.out);
  throw new MixnetError(
    `could not build Katzenpost ${KATZENPOST_VERSION}.\n` +
      `go install: ${refused.length ? `refused by the module proxy: ${refused.join(', ')}` : lastLines(official.out, 15)}\n` +
      `source build: ${refusedToo.length ? `refused: ${refusedToo.join(', ')}` : lastLines(fallback.out, 15)}\n` +
      'See the README section "The real network" for what the build needs.',
  );
}

function lastLines(text, n) {
  return text.trim().split('\n').slice(-n).join('\n');
}

// ----------------------------------------------------------------- generate

/** Every generated address names a container; here every process runs on loopback. */
export function localizeConfig(text, clientPort) {
  return text
    .replace(/(tcp:\/\/)?(?:auth|gateway|mix|replica|servicenode)\d+:(\d+)/g, (_, scheme, port) => `${scheme ?? ''}127.0.0.1:${port}`)
    .replace(/"(?:kpclientd|localhost):64331"/g, `"127.0.0.1:${clientPort}"`);
}

function walkToml(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...walkToml(p));
    else if (e.name.endsWith('.toml')) out.push(p);
  }
  return out;
}

function generate(basePort) {
  rmSync(NET_DIR, { recursive: true, force: true });
  mkdirSync(NET_DIR, { recursive: true });
  const args = [
    '--voting', '--wirekem', 'xwing', '--nike', 'x25519',
    '--nrVoting', '3', '--layers', '3', '--nodes', '3', '--gateways', '1', '--serviceNodes', '1', '--storageNodes', '2',
    '--mu', '0.005', '--lambdaP', '0.001', '--lambdaL', '0.0005', '--lambdaM', '0.0005', '--lambdaR', '0.005',
    '--noMixDecoy', '--noGatewayDecoy', '--noDecoy', '--noMetrics', '--epochDuration', EPOCH,
    '--UserForwardPayloadLength', '2000', '--logLevel', 'DEBUG', '--port', String(basePort),
    '--baseDir', NET_DIR, '--outDir', NET_DIR,
  ];
  const g = run(join(BIN_DIR, 'genconfig'), args, { cwd: STATE_DIR });
  if (!g.ok) throw new MixnetError(`genconfig failed:\n${lastLines(g.out, 20)}`);
  const clientPort = basePort + 2000;
  for (const file of walkToml(NET_DIR)) writeFileSync(file, localizeConfig(readFileSync(file, 'utf8'), clientPort));
  // The WebSocket daemon: the same client config with the one listener swapped.
  const clientToml = readFileSync(join(NET_DIR, 'client', 'client.toml'), 'utf8');
  const wsToml = clientToml.replace(/\[Listen\]\n(?:[ \t]+.*\n|\n(?=[ \t]))*/, `[Listen]\n  [Listen.Ws]\n    Address = "ws://127.0.0.1:${clientPort + WS_PORT_OFFSET}"\n\n`);
  if (wsToml === clientToml) throw new MixnetError('could not find the [Listen] table in client/client.toml to make the WebSocket daemon config');
  writeFileSync(join(NET_DIR, 'client', 'client-ws.toml'), wsToml);
  // The service node launches its CBOR plugins from these paths.
  copyFileSync(join(BIN_DIR, 'courier'), join(NET_DIR, 'courier'));
  copyFileSync(join(BIN_DIR, 'http-proxy-server'), join(NET_DIR, 'proxy_server'));
  return clientPort;
}

// -------------------------------------------------------------------- run

/** Processes in start order: the authorities first, kpclientd last. */
function processTable() {
  const n = (p) => join(NET_DIR, p);
  return [
    ...[1, 2, 3].map((i) => ({ name: `auth${i}`, bin: 'dirauth', args: ['-f', n(`auth${i}/authority.toml`)] })),
    { name: 'gateway1', bin: 'server', args: ['-f', n('gateway1/katzenpost.toml')] },
    { name: 'servicenode1', bin: 'server', args: ['-f', n('servicenode1/katzenpost.toml')] },
    ...[1, 2, 3].map((i) => ({ name: `mix${i}`, bin: 'server', args: ['-f', n(`mix${i}/katzenpost.toml`)] })),
    ...[1, 2].map((i) => ({ name: `replica${i}`, bin: 'replica', args: ['-f', n(`replica${i}/replica.toml`)] })),
    { name: 'kpclientd', bin: 'kpclientd', args: ['-c', n('client/client.toml')] },
    { name: 'kpclientd-ws', bin: 'kpclientd', args: ['-c', n('client/client-ws.toml')] },
  ];
}

/** Where each process writes its log (the servers write their own file in DataDir; stderr goes beside it). */
export function logFiles() {
  const files = [];
  for (const p of processTable()) {
    files.push(join(STATE_DIR, 'logs', `${p.name}.out`));
    if (!p.name.startsWith('kpclientd')) files.push(join(NET_DIR, p.name, 'katzenpost.log'));
  }
  files.push(join(NET_DIR, 'servicenode1', 'courier', 'courier.log'));
  return files;
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function readPids() {
  try {
    return JSON.parse(readFileSync(PIDS_FILE, 'utf8'));
  } catch {
    return null;
  }
}

/** Restart one process of the running network (the tests kill and restart kpclientd). */
export function startProcess(name) {
  const p = processTable().find((x) => x.name === name);
  if (!p) throw new MixnetError(`no process named ${name}`);
  mkdirSync(join(STATE_DIR, 'logs'), { recursive: true });
  const out = openSync(join(STATE_DIR, 'logs', `${p.name}.out`), 'a');
  // detached: its own process group, so stopping kills the plugins it spawned too.
  const child = spawn(join(BIN_DIR, p.bin), p.args, {
    cwd: join(NET_DIR),
    detached: true,
    stdio: ['ignore', out, out],
    env: { ...process.env, KATZENPOST_EPOCH_DURATION: EPOCH },
  });
  child.unref();
  const state = readPids() ?? { processes: {} };
  state.processes[p.name] = child.pid;
  writeFileSync(PIDS_FILE, JSON.stringify(state, null, 2));
  return child.pid;
}

/** Stop one process group by PID and wait for it to go (SIGKILL after the grace period). */
export async function stopProcess(name, { signal = 'SIGTERM', graceMs = 5000 } = {}) {
  const state = readPids();
  const pid = state?.processes?.[name];
  if (!pid) return false;
  const kill = (sig) => {
    try {
      process.kill(-pid, sig);
    } catch {
      try {
        process.kill(pid, sig);
      } catch {
        /* already gone */
      }
    }
  };
  kill(signal);
  const deadline = Date.now() + graceMs;
  while (alive(pid) && Date.now() < deadline) await sleep(100);
  if (alive(pid)) kill('SIGKILL');
  while (alive(pid)) await sleep(50);
  delete state.processes[name];
  writeFileSync(PIDS_FILE, JSON.stringify(state, null, 2));
  return true;
}

export async function stop() {
  const state = readPids();
  if (!state) {
    log('not running (no .mixnet/pids.json)');
    return;
  }
  // kpclientd first, the authorities last: the reverse of the start order.
  const names = processTable().map((p) => p.name).reverse().filter((n) => state.processes[n]);
  await Promise.all(names.map((n) => stopProcess(n)));
  rmSync(PIDS_FILE, { force: true });
  log(`stopped ${names.length} processes`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function status() {
  const state = readPids();
  if (!state) {
    log('not running');
    return false;
  }
  let up = 0;
  for (const p of processTable()) {
    const pid = state.processes[p.name];
    const ok = pid && alive(pid);
    if (ok) up++;
    log(`${p.name.padEnd(13)} ${ok ? `running (pid ${pid})` : 'not running'}`);
  }
  log(`kpclientd: 127.0.0.1:${state.clientPort} (thin client config: ${THINCLIENT_TOML}); over WebSocket: ws://127.0.0.1:${state.clientPort + WS_PORT_OFFSET}`);
  return up === processTable().length;
}

/**
 * Wait until kpclientd hands out a PKI document with at least two storage
 * replicas and a courier: only then can Pigeonhole work. Uses this package's
 * own thin client (dist/), reconnecting while kpclientd is not ready.
 */
export async function waitReady(clientPort, timeoutS, { onProgress = log } = {}) {
  const require = createRequire(join(ROOT, 'package.json'));
  const { ThinClient } = require(join(ROOT, 'dist', 'index.js'));
  const t0 = Date.now();
  const deadline = t0 + timeoutS * 1000;
  let lastReport = 0;
  let lastState = 'kpclientd not accepting connections yet';
  while (Date.now() < deadline) {
    const state = readPids();
    for (const [name, pid] of Object.entries(state?.processes ?? {})) {
      if (!alive(pid)) throw new MixnetError(`${name} (pid ${pid}) exited while the network was starting`);
    }
    const client = new ThinClient({ dial: `127.0.0.1:${clientPort}`, handshakeTimeoutMs: 40000, reconnect: false });
    try {
      await client.connect();
      const doc = client.pkiDocument();
      const replicas = doc?.storageReplicas?.length ?? 0;
      const couriers = doc ? client.getAllCouriers().length : 0;
      lastState = doc ? `epoch ${doc.epoch}: ${replicas} storage replicas, ${couriers} couriers, mixnet ${client.isConnected() ? 'connected' : 'offline'}` : 'kpclientd has no PKI document yet';
      if (doc && replicas >= 2 && couriers >= 1 && client.isConnected()) {
        await client.close().catch(() => {});
        onProgress(`ready after ${Math.round((Date.now() - t0) / 1000)} s (${lastState})`);
        return;
      }
    } catch (err) {
      lastState = `kpclientd: ${err.message}`;
    }
    await client.close().catch(() => {});
    if (Date.now() - lastReport > 15000) {
      lastReport = Date.now();
      onProgress(`waiting for a consensus, ${Math.round((Date.now() - t0) / 1000)} s (${lastState})`);
    }
    await sleep(3000);
  }
  throw new MixnetError(`the network was not ready within ${timeoutS} s (${lastState})`);
}

export function printLogTails(lines = 15) {
  for (const f of logFiles()) {
    if (!existsSync(f)) continue;
    const text = readFileSync(f, 'utf8');
    if (!text.trim()) continue;
    process.stdout.write(`----- ${f.slice(STATE_DIR.length + 1)} (last ${lines} lines)\n${lastLines(text, lines)}\n`);
  }
}

export async function start(o) {
  if (readPids()) await stop();
  install();
  mkdirSync(STATE_DIR, { recursive: true });
  rmSync(join(STATE_DIR, 'logs'), { recursive: true, force: true });
  const clientPort = generate(o.basePort);
  writeFileSync(PIDS_FILE, JSON.stringify({ version: KATZENPOST_VERSION, clientPort, startedAt: new Date().toISOString(), processes: {} }, null, 2));
  for (const p of processTable()) startProcess(p.name);
  log(`started ${processTable().length} processes; logs in ${join(STATE_DIR, 'logs')} and ${NET_DIR}/<node>/`);
  log('a first consensus takes 3-6 minutes with 2-minute epochs');
  try {
    await waitReady(clientPort, o.timeoutS);
  } catch (err) {
    printLogTails();
    await stop();
    throw err;
  }
  log(`kpclientd listens on 127.0.0.1:${clientPort} (a second one on ws://127.0.0.1:${clientPort + WS_PORT_OFFSET}); use ${THINCLIENT_TOML}:`);
  process.stdout.write(readFileSync(THINCLIENT_TOML, 'utf8'));
}

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`mixnet: ${err.message}\n`);
    process.exit(2);
  }
  if (o.help) {
    process.stdout.write(`${HELP}\n`);
    return;
  }
  let stopping = false;
  const onSignal = async () => {
    if (stopping) return;
    stopping = true;
    log('interrupted: stopping the network');
    await stop();
    process.exit(130);
  };
  try {
    if (o.command === 'install') install();
    else if (o.command === 'stop') await stop();
    else if (o.command === 'status') process.exitCode = status() ? 0 : 1;
    else if (o.command === 'logs') printLogTails(40);
    else {
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      await start(o);
      if (o.foreground) {
        log('running; Ctrl-C stops the network');
        await new Promise(() => {});
      }
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      log('running in the background; `npm run mixnet -- stop` stops it');
    }
  } catch (err) {
    process.stderr.write(`mixnet: ${err instanceof MixnetError ? err.message : err.stack}\n`);
    process.exit(1);
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
