// tcp6 end to end: the emulator on the IPv6 loopback, a client that may only
// dial IPv6, and a client restricted to IPv4 that must not reach it.
import assert from 'node:assert/strict';
import net from 'node:net';
import { startEmulator, type Emulator } from '../../src/emulator';
import { DaemonDisconnectedError, ThinClient } from '../../src';

function ipv6LoopbackAvailable(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(0, '::1', () => s.close(() => resolve(true)));
  });
}

describe('client over tcp6', function () {
  let emulator: Emulator | undefined;
  const clients: ThinClient[] = [];

  before(async function () {
    if (!(await ipv6LoopbackAvailable())) {
      console.log('      skipped: this machine has no IPv6 loopback (::1)');
      this.skip();
    }
    emulator = await startEmulator({ listen: '[::1]:0', latency: 'instant' });
  });

  after(async () => {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await emulator?.stop({ graceful: false });
  });

  it('a tcp6 client reaches a daemon on [::1] and runs a request', async () => {
    const port = Number(/:(\d+)$/.exec(emulator!.address)![1]);
    const client = new ThinClient({ dial: { kind: 'tcp', host: '::1', port, network: 'tcp6' }, reconnect: false });
    clients.push(client);
    await client.connect();
    const { readCap, writeCap } = await client.newKeypair(Buffer.alloc(32, 7));
    assert.deepEqual(readCap, writeCap.subarray(32));
  });

  it('the same address in thinclient.toml form ("[::1]:port", Network tcp6) works too', async () => {
    const port = Number(/:(\d+)$/.exec(emulator!.address)![1]);
    const client = new ThinClient({ dial: { Dial: { Tcp: { Address: `[::1]:${port}`, Network: 'tcp6' } } }, reconnect: false });
    clients.push(client);
    await client.connect();
    assert.equal(client.isDaemonConnected(), true);
  });

  it('a tcp4 client cannot reach the IPv6-only daemon', async () => {
    const port = Number(/:(\d+)$/.exec(emulator!.address)![1]);
    const client = new ThinClient({ dial: { kind: 'tcp', host: 'localhost', port, network: 'tcp4' }, reconnect: false, handshakeTimeoutMs: 3000 });
    clients.push(client);
    await assert.rejects(client.connect(), (err: unknown) => err instanceof DaemonDisconnectedError);
  });
});
