// `npm start` (scripts/start.mjs): argument parsing, the demo flows it
// deploys, keeping a user's edited flows, a real daemon on a Unix socket, a
// clear message for a busy port, and Ctrl-C stopping everything.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createDecipheriv, createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type * as Start from '../../scripts/start.mjs';

const ROOT = join(__dirname, '..', '..');
const START = join(ROOT, 'scripts', 'start.mjs');
let start: typeof Start;

async function loadStart(): Promise<typeof Start> {
  start ??= (await import(START)) as typeof Start;
  return start;
}

function tmp(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

function exampleTypes(): Set<string> {
  const types = new Set<string>();
  const walk = (d: string): void => {
    for (const e of require('node:fs').readdirSync(d, { withFileTypes: true }) as import('node:fs').Dirent[]) {
      if (e.isDirectory()) walk(join(d, e.name));
      else if (e.name.endsWith('.json')) for (const n of JSON.parse(readFileSync(join(d, e.name), 'utf8')) as { type: string }[]) types.add(n.type);
    }
  };
  if (existsSync(join(ROOT, 'examples'))) walk(join(ROOT, 'examples'));
  return types;
}

describe('npm start (scripts/start.mjs)', function () {
  this.timeout(90_000);

  describe('arguments and demo flows', function () {
    it('parses the documented options', async function () {
      const s = await loadStart();
      const d = s.parseArgs([]);
      assert.equal(d.port, 1880);
      assert.equal(d.emulator, true);
      assert.equal(d.emulatorListen, '127.0.0.1:64331');
      const o = s.parseArgs(['--port', '0', '--daemon', '10.1.2.3:64331', '--reset-flows']);
      assert.equal(o.port, 0);
      assert.equal(o.daemon, '10.1.2.3:64331');
      assert.equal(o.emulator, false, 'a real daemon replaces the emulator');
      assert.equal(o.resetFlows, true);
      assert.equal(s.parseArgs(['--port=1999', '--no-emulator']).port, 1999);
      assert.equal(s.parseArgs(['--no-emulator']).emulator, false);
      assert.throws(() => s.parseArgs(['--port', 'x']), /--port: expected 0-65535/);
      assert.throws(() => s.parseArgs(['--daemon']), /--daemon needs a value/);
      assert.throws(() => s.parseArgs(['--bogus']), /unknown option "--bogus"/);
      // The emulator's protocol level: current (kpclientd v0.0.99, with the Contact Vouchers of the invite and join channels) unless asked.
      assert.equal(d.protocol, 'current');
      assert.equal(s.parseArgs(['--protocol', 'current']).protocol, 'current');
      assert.equal(s.parseArgs(['--protocol=pinned']).protocol, 'pinned');
      assert.throws(() => s.parseArgs(['--protocol', 'v99']), /--protocol: expected pinned or current, got "v99"/);
    });

    it('--mixnet points the demo at the local real network, or says how to start it', async function () {
      const s = await loadStart();
      const dir = mkdtempSync(join(tmpdir(), 'kp-mixnet-state-'));
      try {
        assert.throws(() => s.mixnetDaemonAddress(dir), /no local network is running .*npm run mixnet -- start/);
        writeFileSync(join(dir, 'pids.json'), JSON.stringify({ clientPort: 42000, processes: {} }));
        assert.equal(s.mixnetDaemonAddress(dir), '127.0.0.1:42000');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('reads daemon addresses as TCP, Unix socket, abstract socket or thinclient.toml', async function () {
      const s = await loadStart();
      assert.deepEqual(s.parseDaemonAddress('127.0.0.1:64331'), { kind: 'tcp', host: '127.0.0.1', port: 64331 });
      assert.deepEqual(s.parseDaemonAddress('[::1]:7000'), { kind: 'tcp', host: '::1', port: 7000 });
      assert.deepEqual(s.parseDaemonAddress('/run/kpclientd.sock'), { kind: 'unix', path: '/run/kpclientd.sock' });
      assert.deepEqual(s.parseDaemonAddress('@katzenpost'), { kind: 'unix', path: '@katzenpost' });
      assert.equal(s.parseDaemonAddress('/etc/katzenpost/thinclient.toml').kind, 'config');
      assert.throws(() => s.parseDaemonAddress('localhost'), /expected HOST:PORT/);
      assert.throws(() => s.parseDaemonAddress('h:70000'), /port must be 1-65535/);
      const n = s.pointDaemonNode({ id: 'd', type: 'katzenpost-daemon' } as Record<string, unknown>, { kind: 'unix', path: '/tmp/x.sock' });
      assert.equal(n.transport, 'unix');
      assert.equal(n.socketPath, '/tmp/x.sock');
    });

    it('builds one tab per example, keeps shared config nodes once, and points every daemon node at the target', async function () {
      const s = await loadStart();
      const { flows, daemonIds, exampleCount } = s.buildDemoFlows({ target: { kind: 'tcp', host: '127.0.0.1', port: 4242 } });
      assert.ok(exampleCount > 0, 'examples/ has no flows');
      const ids = flows.map((n) => n.id);
      assert.equal(new Set(ids).size, ids.length, 'node ids must be unique across the merged examples');
      const tabs = new Set(flows.filter((n) => n.type === 'tab').map((n) => n.id));
      assert.ok(tabs.size > 0);
      for (const n of flows) {
        if (n.type === 'tab') continue;
        const isFlowNode = 'x' in n || 'wires' in n;
        if (isFlowNode) assert.ok(n.z && tabs.has(n.z), `${n.type} ${n.id} is not on a deployed tab`);
      }
      assert.ok(daemonIds.length > 0, 'no katzenpost-daemon config node in the examples');
      for (const d of flows.filter((n) => n.type === 'katzenpost-daemon')) {
        assert.equal(d.transport, 'tcp');
        assert.equal(d.host, '127.0.0.1');
        assert.equal(String(d.port), '4242');
        assert.equal(d.z, undefined, 'config nodes are global so every tab can use them');
      }
      // Every reference to a node id (wires, config fields) resolves inside the merged flows.
      const idSet = new Set(ids);
      for (const n of flows) {
        for (const out of (n.wires as string[][] | undefined) ?? []) for (const w of out) assert.ok(idSet.has(w), `${n.id} wires to missing ${w}`);
        for (const [k, v] of Object.entries(n)) {
          if (['id', 'z', 'wires', 'type'].includes(k) || typeof v !== 'string') continue;
          if (daemonIds.includes(v)) assert.ok(idSet.has(v));
        }
      }
      const used = new Set(flows.map((n) => n.type));
      for (const t of exampleTypes()) assert.ok(used.has(t), `${t} from examples/ missing in the demo`);
    });

    it('seeds the user directory, keeps flows the user changed, and restores the demo on --reset-flows', async function () {
      const s = await loadStart();
      const userDir = tmp('kp-start-user-');
      try {
        const target = { kind: 'tcp' as const, host: '127.0.0.1', port: 5555 };
        const first = s.prepareUserDir({ userDir, port: 1881, target });
        assert.equal(first.seeded, true);
        const settings = readFileSync(first.settingsFile, 'utf8');
        assert.match(settings, /telemetry: \{ enabled: false/);
        assert.match(settings, /tours: false/);
        assert.match(settings, /nodesDir: \[/);
        assert.match(settings, /uiHost: "127\.0\.0\.1"/);
        // Unchanged since seeding: a restart re-seeds (picks up new examples, new address).
        const again = s.prepareUserDir({ userDir, port: 1881, target: { kind: 'tcp', host: '127.0.0.1', port: 6666 } });
        assert.equal(again.seeded, true);
        const flows = JSON.parse(readFileSync(again.flowsFile, 'utf8')) as Start.FlowNode[];
        assert.ok(flows.filter((n) => n.type === 'katzenpost-daemon').every((n) => String(n.port) === '6666'));
        // The user deploys a change: it is kept, only the demo's daemon nodes follow --daemon.
        flows.push({ id: 'user-comment', type: 'comment', z: flows[0].id, name: 'mine', x: 10, y: 10, wires: [] });
        writeFileSync(again.flowsFile, JSON.stringify(flows, null, 4));
        const logs: string[] = [];
        const kept = s.prepareUserDir({ userDir, port: 1881, target: { kind: 'unix', path: '/tmp/kp.sock' }, log: (l) => logs.push(l) });
        assert.equal(kept.seeded, false);
        assert.match(logs.join('\n'), /kept your edited flows/);
        const after = JSON.parse(readFileSync(kept.flowsFile, 'utf8')) as Start.FlowNode[];
        assert.ok(after.some((n) => n.id === 'user-comment'));
        assert.ok(after.filter((n) => n.type === 'katzenpost-daemon').every((n) => n.transport === 'unix' && n.socketPath === '/tmp/kp.sock'));
        const reset = s.prepareUserDir({ userDir, port: 1881, target, resetFlows: true });
        assert.equal(reset.seeded, true);
        assert.ok(!(JSON.parse(readFileSync(reset.flowsFile, 'utf8')) as Start.FlowNode[]).some((n) => n.id === 'user-comment'));
        // Owned demo channels carry a seed in credentials (never in the flows),
        // the same one after --reset-flows so the channel database still matches.
        const channels = (JSON.parse(readFileSync(reset.flowsFile, 'utf8')) as Start.FlowNode[]).filter((n) => n.type === 'katzenpost-channel');
        assert.ok(channels.length > 0, 'the demo has a channel');
        // Encrypted as Node-RED does it (settings.js names the secret), so Node-RED reads it without warnings.
        const secret = /credentialSecret: "([^"]+)"/.exec(readFileSync(reset.settingsFile, 'utf8'))![1];
        const sealed = JSON.parse(readFileSync(join(userDir, 'flows_cred.json'), 'utf8')) as { $: string };
        const decipher = createDecipheriv('aes-256-ctr', createHash('sha256').update(secret).digest(), Buffer.from(sealed.$.slice(0, 32), 'hex'));
        const creds = JSON.parse(decipher.update(sealed.$.slice(32), 'base64', 'utf8') + decipher.final('utf8')) as Record<string, { seed?: string }>;
        for (const c of channels) {
          assert.equal(JSON.stringify(c).includes(creds[c.id]?.seed ?? '-'), false, 'the seed is not in flows.json');
          if (c.mode === 'owned') assert.match(creds[c.id]?.seed ?? '', /^[0-9a-f]{64}$/);
        }
        const seeds = JSON.parse(readFileSync(join(userDir, 'demo-channel-seeds.json'), 'utf8')) as Record<string, string>;
        for (const c of channels) if (c.mode === 'owned') assert.equal(seeds[c.id], creds[c.id].seed);
        s.prepareUserDir({ userDir, port: 1881, target, resetFlows: true });
        assert.deepEqual(JSON.parse(readFileSync(join(userDir, 'demo-channel-seeds.json'), 'utf8')), seeds, 'the same seeds after another reset');
      } finally {
        rmSync(userDir, { recursive: true, force: true });
      }
    });
  });

  describe('running Node-RED', function () {
    before(function () {
      if (!existsSync(join(ROOT, 'dist', 'nodes')) || !existsSync(join(ROOT, 'dist', 'emulator', 'index.js'))) {
        throw new Error('dist/ is missing: run npm run build (npm test does)');
      }
    });

    it('with --daemon on a Unix socket: the flows dial that daemon and no emulator is started', async function () {
      const s = await loadStart();
      const dir = tmp('kp-start-unix-');
      // The "real daemon" here is an emulator we start ourselves on a Unix socket.
      const { startEmulator } = require(join(ROOT, 'dist', 'emulator', 'index.js')) as { startEmulator(o: object): Promise<Start.EmulatorHandle & { connectionCount(): number }> };
      const daemon = await startEmulator({ listen: join(dir, 'kpclientd.sock'), log: () => {} });
      let demo: Start.Demo | null = null;
      try {
        demo = await s.startDemo({ port: 0, daemon: daemon.address, userDir: join(dir, 'user'), stdio: join(dir, 'node-red.log'), log: () => {} });
        assert.equal(demo.emulator, null);
        assert.deepEqual(demo.daemon, { kind: 'unix', path: daemon.address });
        const res = await fetch(`${demo.editorUrl}flows`, { headers: { 'Node-RED-API-Version': 'v2' } });
        assert.equal(res.status, 200);
        const { flows } = (await res.json()) as { flows: Start.FlowNode[] };
        const daemons = flows.filter((n) => n.type === 'katzenpost-daemon');
        assert.ok(daemons.length > 0);
        for (const d of daemons) assert.equal(d.socketPath, daemon.address);
        // The deployed nodes connect to it.
        const deadline = Date.now() + 20_000;
        while (daemon.connectionCount() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
        assert.ok(daemon.connectionCount() > 0, `Node-RED never connected to ${daemon.address}; log: ${join(dir, 'node-red.log')}`);
      } finally {
        await demo?.stop();
        await daemon.stop({ graceful: false });
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('says clearly when the emulator port is taken', async function () {
      const s = await loadStart();
      const blocker = net.createServer();
      await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
      const port = (blocker.address() as net.AddressInfo).port;
      const dir = tmp('kp-start-busy-');
      try {
        await assert.rejects(
          s.startDemo({ port: 0, emulatorListen: `127.0.0.1:${port}`, userDir: join(dir, 'user'), stdio: join(dir, 'node-red.log'), log: () => {}, emulatorLog: () => {} }),
          (e: Error) => {
            assert.match(e.message, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: the address is in use`));
            assert.match(e.message, /--daemon/);
            return true;
          },
        );
        await assert.rejects(
          s.startDemo({ port, userDir: join(dir, 'user'), log: () => {} }),
          /editor port 127\.0\.0\.1:\d+ is already in use/,
        );
      } finally {
        blocker.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('the command line prints where to look and Ctrl-C (SIGINT) stops Node-RED and the emulator', async function () {
      const dir = tmp('kp-start-cli-');
      const s = await loadStart();
      const emuPort = await s.freePort();
      const child = spawn(process.execPath, [START, '--port', '0', '--emulator', `127.0.0.1:${emuPort}`, '--user-dir', join(dir, 'user')], {
        cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (c: Buffer) => { out += c.toString(); });
      child.stderr.on('data', (c: Buffer) => { out += c.toString(); });
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      try {
        const deadline = Date.now() + 60_000;
        while (!/Press Ctrl-C/.test(out) && child.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
        assert.match(out, /Press Ctrl-C to stop everything/, out);
        const url = /editor\s+(http:\/\/127\.0\.0\.1:(\d+)\/)/.exec(out);
        assert.ok(url, `no editor address in:\n${out}`);
        assert.match(out, new RegExp(`daemon emulator\\s+127\\.0\\.0\\.1:${emuPort}`));
        assert.match(out, /NO anonymity/);
        assert.equal((await fetch(`${url[1]}settings`)).status, 200);
        child.kill('SIGINT');
        const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('timeout'), 30_000))]);
        assert.equal(code, 0, `exit ${String(code)}; output:\n${out}`);
        assert.match(out, /stopped\./);
        // Both ports are free again.
        assert.equal(await s.portIsFree(emuPort), true, 'the emulator still listens');
        assert.equal(await s.portIsFree(Number(url[2])), true, 'Node-RED still listens');
      } finally {
        if (child.exitCode === null) child.kill('SIGKILL');
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});
