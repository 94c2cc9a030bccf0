/**
 * scripts/mixnet.mjs without a network: its arguments, the rewrite of
 * genconfig's container addresses to loopback, and how it reads the Go
 * module proxy's refusals (what `npm run mixnet -- install` reports).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type * as Mixnet from '../../scripts/mixnet.mjs';

const script = join(__dirname, '..', '..', 'scripts', 'mixnet.mjs');
const load = (): Promise<typeof Mixnet> => import(pathToFileURL(script).href);

describe('npm run mixnet (scripts/mixnet.mjs), offline parts', function () {
  it('parses its commands and options, and names what is wrong', async () => {
    const m = await load();
    // The documented default, not one a developer or CI run set for itself.
    const envPort = process.env.KATZENPOST_MIXNET_BASE_PORT;
    delete process.env.KATZENPOST_MIXNET_BASE_PORT;
    try {
      assert.deepEqual(m.parseArgs(['start']), { command: 'start', basePort: 30000, timeoutS: 900, foreground: false, help: false });
      assert.equal(m.parseArgs(['start', '--base-port', '40000']).basePort, 40000);
      assert.equal(m.parseArgs(['start', '--timeout', '60', '--foreground']).timeoutS, 60);
      assert.throws(() => m.parseArgs([]), /a command is needed: install, start, stop, status or logs/);
      assert.throws(() => m.parseArgs(['begin']), /unknown command "begin"/);
      assert.throws(() => m.parseArgs(['start', '--base-port', '80']), /--base-port: expected an integer 1024-63000, got "80"/);
      assert.throws(() => m.parseArgs(['start', '--timeout']), /--timeout needs a value/);
      process.env.KATZENPOST_MIXNET_BASE_PORT = '45000';
      assert.equal(m.parseArgs(['start']).basePort, 45000, 'KATZENPOST_MIXNET_BASE_PORT sets the default');
    } finally {
      if (envPort === undefined) delete process.env.KATZENPOST_MIXNET_BASE_PORT;
      else process.env.KATZENPOST_MIXNET_BASE_PORT = envPort;
    }
  });

  it('rewrites every container address of the generated configs to loopback, and moves the thin-client port', async () => {
    const m = await load();
    const toml = [
      'Addresses = ["tcp://auth1:30001", "tcp://mix3:30020"]',
      'MetricsAddress = "servicenode1:30012"',
      'Address = "replica2:31002"',
      '[Listen.Tcp]\n  Address = "kpclientd:64331"',
      '[Dial.Tcp]\n  Address = "localhost:64331"',
      'Command = "/x/courier"',
    ].join('\n');
    const out = m.localizeConfig(toml, 32000);
    assert.match(out, /"tcp:\/\/127\.0\.0\.1:30001", "tcp:\/\/127\.0\.0\.1:30020"/);
    assert.match(out, /MetricsAddress = "127\.0\.0\.1:30012"/);
    assert.match(out, /Address = "127\.0\.0\.1:31002"/);
    assert.equal(out.match(/"127\.0\.0\.1:32000"/g)?.length, 2, 'listener and dial both on the new port');
    assert.doesNotMatch(out, /auth1|mix3|servicenode1|replica2|kpclientd:|localhost/);
    assert.match(out, /Command = "\/x\/courier"/);
  });

  it('names each module version the Go module proxy refused', async () => {
    const m = await load();
    const goOutput = [
      'go: github.com/katzenpost/katzenpost/cmd/genconfig@v0.0.99: loading deprecation for github.com/katzenpost/katzenpost: module github.com/katzenpost/katzenpost: reading https://proxy.golang.org/github.com/katzenpost/katzenpost/@v/list: 403 Forbidden',
      'common/backoff.go:9:2: github.com/katzenpost/hpqc@v0.0.85-0.20260715190213-e598e7ee2843: reading https://proxy.golang.org/github.com/katzenpost/hpqc/@v/v0.0.85-0.20260715190213-e598e7ee2843.zip: 403 Forbidden',
      'x: github.com/!burnt!sushi/toml@v1.6.0: reading https://proxy.golang.org/github.com/!burnt!sushi/toml/@v/v1.6.0.mod: 404 Not Found',
      'go: downloading github.com/spf13/cobra v1.10.2',
    ].join('\n');
    assert.deepEqual(m.refusedModules(goOutput), [
      'github.com/katzenpost/katzenpost (version list)',
      'github.com/katzenpost/hpqc@v0.0.85-0.20260715190213-e598e7ee2843',
      'github.com/BurntSushi/toml@v1.6.0',
    ]);
    assert.deepEqual(m.refusedModules('go: downloading github.com/spf13/cobra v1.10.2'), []);
  });

  it('explains its usage and fails clearly on a bad command line', () => {
    const help = spawnSync(process.execPath, [script, '--help'], { encoding: 'utf8' });
    assert.equal(help.status, 0);
    assert.match(help.stdout, /Needs Go 1\.26/);
    for (const c of ['install', 'start', 'stop', 'status', 'logs']) assert.match(help.stdout, new RegExp(`^  ${c} `, 'm'));
    const bad = spawnSync(process.execPath, [script, 'launch'], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /mixnet: unknown command "launch"/);
  });

  it('explains that Go is needed when there is none, instead of hanging', function () {
    this.timeout(20_000);
    // An empty PATH and a fresh cache: no binaries to reuse, no go to build them with.
    const r = spawnSync(process.execPath, [script, 'install'], {
      encoding: 'utf8',
      env: { PATH: '/nonexistent', HOME: '/nonexistent', KATZENPOST_MIXNET_CACHE: '/nonexistent/cache' },
      timeout: 15_000,
    });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /Go is not installed \(no `go` on PATH\)\. The real network needs Go 1\.26/);
  });
});
