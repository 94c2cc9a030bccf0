/**
 * The katzenpost-emulator command: --help, the banner, stdin fault
 * commands, SIGHUP restart and graceful SIGTERM.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { resolve } from 'node:path';
import { parseArgs } from '../../src/emulator/cli';
import { RawClient, tempSocketDir } from './helpers';

const ROOT = resolve(__dirname, '..', '..');
const CLI = resolve(ROOT, 'src', 'emulator', 'cli.ts');
const NODE_ARGS = ['--import', 'tsx', CLI];

interface Running {
  proc: ChildProcessWithoutNullStreams;
  out: () => string;
  address: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function waitForOutput(out: () => string, re: RegExp, timeoutMs = 15_000): Promise<RegExpExecArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = re.exec(out());
    if (m) return m;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${re} in output:\n${out()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function launch(args: string[]): Promise<Running> {
  const proc = spawn(process.execPath, [...NODE_ARGS, ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let text = '';
  proc.stdout.on('data', (d) => (text += d));
  proc.stderr.on('data', (d) => (text += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => proc.once('exit', (code, signal) => res({ code, signal })));
  const out = () => text;
  const m = await waitForOutput(out, /^listening on (\S+)/m);
  return { proc, out, address: m[1], exited };
}

describe('katzenpost-emulator CLI', function () {
  this.timeout(30_000);
  const running: Running[] = [];
  const clients: RawClient[] = [];

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const r of running.splice(0)) {
      if (r.proc.exitCode === null && r.proc.signalCode === null) {
        r.proc.kill('SIGKILL');
        await r.exited;
      }
    }
  });

  async function start(args: string[]): Promise<Running> {
    const r = await launch(args);
    running.push(r);
    return r;
  }

  async function rawClient(address: string): Promise<RawClient> {
    const c = await RawClient.connect(address);
    clients.push(c);
    return c;
  }

  it('--help documents every option and says it is a simulator without anonymity', () => {
    const r = spawnSync(process.execPath, [...NODE_ARGS, '--help'], { cwd: ROOT, encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 0);
    for (const opt of [
      '--listen ADDR',
      '--unix PATH',
      '--latency MODE',
      '--realistic',
      '--instant',
      '--epoch-period SECONDS',
      '--couriers N',
      '--replicas N',
      '--grace-period SECONDS',
      '--max-send-queue BYTES',
      '--frame-timeout SECONDS',
      '--max-buffered BYTES',
      '--offline',
      '--courier-patience SECONDS',
      '--no-pki',
      '--pki-delay SECONDS',
      '--verbose',
      '--help',
    ]) {
      assert.ok(r.stdout.includes(opt), `--help mentions ${opt}`);
    }
    for (const cmd of ['restart --fresh', 'offline', 'online', 'malformed', 'oversize', 'stall MS', 'epoch', 'no-pki', 'pki-delay SECONDS', 'shutdown', 'SIGHUP']) {
      assert.ok(r.stdout.includes(cmd), `--help mentions ${cmd}`);
    }
    assert.match(r.stdout, /^ {2}pki +publish the PKI document now/m, '--help mentions the pki command');
    assert.match(r.stdout, /SIMULATOR/);
    assert.match(r.stdout, /NO anonymity/);
  });

  it('parses --frame-timeout (seconds) and --max-buffered (bytes) into the emulator options', () => {
    const { options } = parseArgs(['--frame-timeout', '2.5', '--max-buffered=1048576']);
    assert.equal(options.frameTimeoutMs, 2500);
    assert.equal(options.maxBufferedBytes, 1048576);
  });

  it('parses --courier-patience, --no-pki and --pki-delay (seconds) into the emulator options', () => {
    assert.deepEqual(parseArgs(['--courier-patience', '0.5', '--no-pki']).options, { courierPatienceMs: 500, noPkiDocument: true });
    assert.deepEqual(parseArgs(['--pki-delay=2']).options, { pkiDocumentDelayMs: 2000 });
    assert.deepEqual(parseArgs([]).options, {}, 'by default: the real courier patience and a document from the start');
    const bad = spawnSync(process.execPath, [...NODE_ARGS, '--pki-delay', 'soon'], { cwd: ROOT, encoding: 'utf8', timeout: 20_000 });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--pki-delay needs a non-negative number/);
  });

  it('--no-pki: null document in the handshake until the pki command; no-pki and pki-delay at run time', async () => {
    const r = await start(['--listen', '127.0.0.1:0', '--no-pki']);
    assert.match(r.out(), /no PKI document yet/);
    const c = await rawClient(r.address);
    assert.equal((await c.handshake()).pki.body.payload, null);
    r.proc.stdin.write('status\n');
    await waitForOutput(r.out, /PKI document absent/);
    r.proc.stdin.write('pki\n');
    assert.ok((await c.take((f) => f.kind === 'new_pki_document_event', 5000)).body.payload.length > 1000);
    await waitForOutput(r.out, /PKI document published/);
    r.proc.stdin.write('no-pki\n');
    await waitForOutput(r.out, /PKI document withheld/);
    const later = await rawClient(r.address);
    assert.equal((await later.handshake()).pki.body.payload, null);
    // pki-delay: a new connection's handshake waits until the document comes back.
    r.proc.stdin.write('pki-delay 0.6\n');
    await waitForOutput(r.out, /PKI document delayed by 0.6 s/);
    const t0 = Date.now();
    const held = await rawClient(r.address);
    const h = await held.handshake();
    assert.ok(Date.now() - t0 >= 400, `handshake after ${Date.now() - t0} ms`);
    assert.ok(h.pki.body.payload.length > 1000);
    // The client that got null hears of the document too.
    assert.ok((await later.take((f) => f.kind === 'new_pki_document_event', 5000)).body.payload.length > 1000);
  });

  it('--pki-delay: the first handshakes wait for the delayed document', async () => {
    const t0 = Date.now();
    const r = await start(['--listen', '127.0.0.1:0', '--pki-delay', '1.5']);
    const c = await rawClient(r.address);
    const { pki } = await c.handshake();
    assert.ok(Date.now() - t0 >= 1500, `handshake done ${Date.now() - t0} ms after the start`);
    assert.ok(pki.body.payload.length > 1000);
  });

  it('closes a connection whose frame stalls past --frame-timeout and says why in the verbose log', async () => {
    const r = await start(['--listen', '127.0.0.1:0', '--frame-timeout', '0.2', '-v']);
    const c = await rawClient(r.address);
    await c.handshake();
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32BE(2048, 0);
    c.sendRaw(Buffer.concat([prefix, Buffer.alloc(10)]));
    await c.waitClosed(5000);
    await waitForOutput(r.out, /declared length 2048 bytes incomplete after 200 ms: 10 bytes of its body received/);
  });

  it('rejects an unknown option with exit code 2', () => {
    const r = spawnSync(process.execPath, [...NODE_ARGS, '--frobnicate'], { cwd: ROOT, encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown option --frobnicate/);
  });

  it('prints the banner and address; stdin commands reach clients; SIGTERM stops gracefully', async () => {
    const r = await start(['--listen', '127.0.0.1:0', '--couriers', '4']);
    assert.match(r.out(), /SIMULATOR/);
    assert.match(r.out(), /NO anonymity/);
    assert.match(r.out(), /NO real mixnet/);
    const c = await rawClient(r.address);
    const { status } = await c.handshake();
    assert.equal(status.body.is_connected, true);
    r.proc.stdin.write('offline\n');
    const off = await c.take((f) => f.kind === 'connection_status_event', 5000);
    assert.equal(off.body.is_connected, false);
    r.proc.stdin.write('online\nstatus\n');
    assert.equal((await c.take((f) => f.kind === 'connection_status_event', 5000)).body.is_connected, true);
    await waitForOutput(r.out, /1 connection\(s\)/);
    r.proc.stdin.write('epoch\n');
    await c.take((f) => f.kind === 'new_pki_document_event', 5000);
    r.proc.stdin.write('malformed\n');
    assert.equal((await c.next(5000)).kind, 'malformed');
    r.proc.kill('SIGTERM');
    const shutdown = await c.next(5000);
    assert.equal(shutdown.kind, 'shutdown_event');
    await c.waitClosed(5000);
    const exit = await r.exited;
    assert.equal(exit.code, 0);
    assert.match(r.out(), /stopped/);
  });

  it('restarts on the restart command and on SIGHUP (new instance token each time); shutdown exits', async () => {
    const r = await start(['--listen', '127.0.0.1:0', '--instant']);
    const tokens: string[] = [];
    for (const trigger of ['command', 'signal'] as const) {
      const c = await rawClient(r.address);
      tokens.push((await c.handshake()).status.body.instance_token.toString('hex'));
      if (trigger === 'command') r.proc.stdin.write('restart --fresh\n');
      else r.proc.kill('SIGHUP');
      await c.waitClosed(5000);
    }
    const c = await rawClient(r.address);
    tokens.push((await c.handshake()).status.body.instance_token.toString('hex'));
    assert.equal(new Set(tokens).size, 3);
    r.proc.stdin.write('shutdown\n');
    assert.equal((await c.next(5000)).kind, 'shutdown_event');
    assert.equal((await r.exited).code, 0);
  });

  it('listens on a Unix socket and can start offline', async () => {
    const dir = tempSocketDir();
    try {
      const path = dir.path('emu.sock');
      const r = await start(['--unix', path, '--offline', '--epoch-period', '600']);
      assert.equal(r.address, path);
      const c = await rawClient(path);
      assert.equal((await c.handshake()).status.body.is_connected, false);
      r.proc.kill('SIGINT');
      assert.equal((await r.exited).code, 0);
    } finally {
      dir.cleanup();
    }
  });
});
