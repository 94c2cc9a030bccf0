import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

import { ThinClient } from '../../src/client/client';
import {
  describeDial,
  loadThinClientConfig,
  parseThinClientToml,
  resolveDialConfig,
  unixSocketPath,
  validateDialConfig,
} from '../../src/client/config';
import { ConfigError } from '../../src/client/errors';

describe('config: thinclient.toml (§1.4)', () => {
  let dir: string;
  const write = (name: string, text: string) => {
    const p = path.join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  before(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'kp-config-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('loads the reference TCP file', () => {
    const p = write('tcp.toml', '[Dial]\n  [Dial.Tcp]\n    Address = "localhost:64331"\n    Network = "tcp"\n');
    assert.deepEqual(loadThinClientConfig(p), { kind: 'tcp', host: 'localhost', port: 64331, network: 'tcp' });
  });

  it('rejects a stale [SphinxGeometry] table, naming the key and the file', () => {
    const p = write('stale.toml', '[SphinxGeometry]\nPacketLength = 3082\n\n[Dial]\n[Dial.Tcp]\nAddress = "localhost:64331"\n');
    assert.throws(
      () => loadThinClientConfig(p),
      (e: unknown) => e instanceof ConfigError && e.message.includes('SphinxGeometry') && e.message.includes(p),
    );
    const q = write('stale2.toml', '[PigeonholeGeometry]\nMaxPlaintextPayloadLength = 1553\n[Dial.Unix]\nAddress = "/x"\n');
    assert.throws(() => loadThinClientConfig(q), /PigeonholeGeometry/);
  });

  it('rejects a flat Network/Address instead of [Dial]', () => {
    assert.throws(() => parseThinClientToml('Network = "tcp"\nAddress = "localhost:1"\n', 'flat.toml'), /flat\.toml.*"Network"/);
  });

  it('requires exactly one of [Dial.Tcp], [Dial.Unix] and [Dial.Ws]', () => {
    assert.throws(
      () => parseThinClientToml('[Dial.Tcp]\nAddress = "a:1"\n[Dial.Unix]\nAddress = "/s"\n', 'both.toml'),
      /both\.toml: \[Dial\] must contain exactly one.*found 2/,
    );
    assert.throws(() => parseThinClientToml('[Dial]\n', 'neither.toml'), /neither\.toml.*found 0/);
    assert.throws(() => parseThinClientToml('', 'empty.toml'), /missing \[Dial\]/);
    assert.throws(
      () => parseThinClientToml('[Dial.Tcp]\nAddress = "a:1"\n[Dial.Ws]\nAddress = "ws://x:1"\n', 'tw.toml'),
      /tw\.toml: \[Dial\] must contain exactly one of \[Dial\.Tcp\], \[Dial\.Unix\] or \[Dial\.Ws\], found 2/,
    );
    assert.throws(() => parseThinClientToml('[Dial.Ssh]\nAddress = "x:1"\n', 'ssh.toml'), /unknown key "Dial\.Ssh"/);
  });

  it('rejects unknown keys in Dial.Tcp and Dial.Unix, naming them', () => {
    assert.throws(
      () => parseThinClientToml('[Dial.Tcp]\nAddress = "a:1"\nTimeout = 5\n', 'x.toml'),
      (e: unknown) => e instanceof ConfigError && /"Dial\.Tcp\.Timeout"/.test(e.message) && e.message.startsWith('x.toml'),
    );
    assert.throws(() => parseThinClientToml('[Dial.Unix]\nAddress = "/s"\nNetwork = "unix"\n', 'u.toml'), /"Dial\.Unix\.Network"/);
  });

  it('requires Address', () => {
    assert.throws(() => parseThinClientToml('[Dial.Tcp]\nNetwork = "tcp"\n', 'a.toml'), /Dial\.Tcp\.Address is required/);
    assert.throws(() => parseThinClientToml('[Dial.Unix]\n', 'b.toml'), /Dial\.Unix\.Address is required/);
    assert.throws(() => parseThinClientToml('[Dial.Tcp]\nAddress = ""\n', 'c.toml'), /Address is required/);
  });

  it('accepts Network tcp, tcp4, tcp6 (default tcp) and rejects anything else', () => {
    for (const n of ['tcp', 'tcp4', 'tcp6']) {
      const d = parseThinClientToml(`[Dial.Tcp]\nAddress = "127.0.0.1:5"\nNetwork = "${n}"\n`);
      assert.equal(d.kind === 'tcp' && d.network, n);
    }
    const dflt = parseThinClientToml('[Dial.Tcp]\nAddress = "127.0.0.1:5"\n');
    assert.equal(dflt.kind === 'tcp' && dflt.network, 'tcp');
    assert.throws(() => parseThinClientToml('[Dial.Tcp]\nAddress = "127.0.0.1:5"\nNetwork = "udp"\n'), /Network must be/);
  });

  it('parses IPv6 addresses in brackets and rejects bad ports', () => {
    assert.deepEqual(parseThinClientToml('[Dial.Tcp]\nAddress = "[::1]:64331"\nNetwork = "tcp6"\n'), {
      kind: 'tcp',
      host: '::1',
      port: 64331,
      network: 'tcp6',
    });
    assert.equal(describeDial({ kind: 'tcp', host: '::1', port: 64331, network: 'tcp6' }), '[::1]:64331');
    assert.throws(() => parseThinClientToml('[Dial.Tcp]\nAddress = "localhost"\n'), /host:port/);
    assert.throws(() => parseThinClientToml('[Dial.Tcp]\nAddress = "localhost:70000"\n'), /port must be/);
  });

  it('accepts Unix paths and @abstract names', () => {
    assert.deepEqual(parseThinClientToml('[Dial.Unix]\nAddress = "/run/kpclientd/thinclient.sock"\n'), {
      kind: 'unix',
      path: '/run/kpclientd/thinclient.sock',
    });
    const abs = parseThinClientToml('[Dial.Unix]\nAddress = "@katzenpost"\n');
    assert.deepEqual(abs, { kind: 'unix', path: '@katzenpost' });
    assert.equal(unixSocketPath('@katzenpost'), '\0katzenpost');
    assert.equal(unixSocketPath('/tmp/x.sock'), '/tmp/x.sock');
  });

  it('reports invalid TOML and unreadable files as ConfigError', () => {
    assert.throws(() => parseThinClientToml('[Dial\n', 'bad.toml'), (e: unknown) => e instanceof ConfigError && /bad\.toml: not valid TOML/.test(e.message));
    assert.throws(() => loadThinClientConfig(path.join(dir, 'nope.toml')), /cannot read/);
  });

  it('accepts the same settings as a plain object, with the same validation', () => {
    assert.deepEqual(validateDialConfig({ Dial: { Tcp: { Address: '127.0.0.1:9', Network: 'tcp4' } } }), {
      kind: 'tcp',
      host: '127.0.0.1',
      port: 9,
      network: 'tcp4',
    });
    assert.throws(() => validateDialConfig({ Dial: { Tcp: { Address: 'a:1', Extra: 1 } } }), /options: unknown key "Dial\.Tcp\.Extra"/);
    assert.deepEqual(resolveDialConfig({ Dial: { Unix: { Address: '@k' } } }), { kind: 'unix', path: '@k' });
  });

  it('resolves the short string forms used by the client options', () => {
    assert.deepEqual(resolveDialConfig('127.0.0.1:64331'), { kind: 'tcp', host: '127.0.0.1', port: 64331, network: 'tcp' });
    assert.deepEqual(resolveDialConfig('/tmp/d.sock'), { kind: 'unix', path: '/tmp/d.sock' });
    assert.deepEqual(resolveDialConfig('@abstract'), { kind: 'unix', path: '@abstract' });
    assert.deepEqual(resolveDialConfig('unix:/tmp/x'), { kind: 'unix', path: '/tmp/x' });
    assert.deepEqual(resolveDialConfig({ kind: 'tcp', host: 'h', port: 1 } as never), { kind: 'tcp', host: 'h', port: 1, network: 'tcp' });
    assert.throws(() => resolveDialConfig({ kind: 'tcp', host: 'h' } as never), ConfigError);
  });

  it('ThinClient takes a configFile or fromConfigFile, and rejects a bad one at construction', () => {
    const p = write('client.toml', '[Dial]\n[Dial.Unix]\nAddress = "@kp-test"\n');
    assert.equal(ThinClient.fromConfigFile(p).address, 'unix:@kp-test');
    assert.equal(new ThinClient({ configFile: p }).address, 'unix:@kp-test');
    assert.equal(new ThinClient({ dial: '[::1]:1234' }).address, '[::1]:1234');
    assert.equal(new ThinClient().address, 'localhost:64331');
    const bad = write('bad-client.toml', '[Dial.Tcp]\nAddress = "x:1"\nFoo = 1\n');
    assert.throws(() => ThinClient.fromConfigFile(bad), /Dial\.Tcp\.Foo/);
  });
});
