/**
 * connect({ retry: true }): the client keeps trying with its reconnect
 * backoff until the daemon appears, the signal aborts or close() is called,
 * naming the last failure meanwhile.
 */
import assert from 'node:assert/strict';
import * as net from 'node:net';

import { ThinClient } from '../../src/client/client';
import { DaemonDisconnectedError, InvalidArgumentError, OperationCancelledError } from '../../src/client/errors';
import type { ConnectFailedEvent } from '../../src/client/events';
import { FakeDaemon, sleep, waitFor } from './helpers';

/** A local TCP port nothing listens on (for now). */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1' }, () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const rejectionOf = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e as Error,
  );

describe('ThinClient.connect({ retry: true })', function () {
  this.timeout(15_000);
  let port: number;
  let client: ThinClient;
  let daemon: FakeDaemon | null;
  let failures: ConnectFailedEvent[];

  beforeEach(async () => {
    port = await freePort();
    daemon = null;
    client = new ThinClient({ dial: `127.0.0.1:${port}`, reconnectInitialDelayMs: 20, reconnectMaxDelayMs: 60, handshakeTimeoutMs: 2000 });
    failures = [];
    client.on('connectFailed', (e) => failures.push(e));
  });

  afterEach(async () => {
    await client.close();
    await daemon?.stop();
  });

  it('keeps trying until the daemon listens, naming the last failure meanwhile', async () => {
    let settled = false;
    const connecting = client.connect({ retry: true }).finally(() => (settled = true));
    await waitFor(() => failures.length >= 2, 5000, 'two failed attempts');
    assert.equal(settled, false, 'still trying after two failures');
    const e = client.lastConnectionError as (Error & { code?: string }) | null;
    assert.equal(e?.code, 'ECONNREFUSED');
    assert.match(e!.message, new RegExp(`ECONNREFUSED 127\\.0\\.0\\.1:${port}`));
    for (const f of failures) {
      assert.ok(f.error instanceof DaemonDisconnectedError);
      assert.match(f.error.message, /cannot connect to the daemon at 127\.0\.0\.1:\d+: .*ECONNREFUSED/);
      assert.equal(f.reconnecting, false);
      assert.ok(typeof f.retryInMs === 'number' && f.retryInMs > 0 && f.retryInMs <= 60, `retryInMs ${f.retryInMs}`);
    }
    // A local call made meanwhile waits for the connection instead of failing.
    const counter = client.getMessageBoxIndexCounter(Buffer.alloc(104, 1));
    daemon = await FakeDaemon.start({ port, host: '127.0.0.1' });
    const conn = await daemon.accept();
    await conn.handshake();
    await connecting;
    assert.equal(client.isDaemonConnected(), true);
    assert.equal(client.lastConnectionError, null);
    await conn.reply('get_message_box_index_counter', { counter: 7n, error_code: 0 });
    assert.equal(await counter, 7n);
    const seen = failures.length;
    await sleep(150);
    assert.equal(failures.length, seen, 'no attempt after connecting');
  });

  it('without retry, connect() fails at the first failed attempt as before', async () => {
    const err = await rejectionOf(client.connect());
    assert.ok(err instanceof DaemonDisconnectedError);
    assert.equal(failures.length, 1);
    assert.equal(failures[0].retryInMs, null);
    await sleep(150);
    assert.equal(failures.length, 1, 'no retry');
    assert.equal((client.lastConnectionError as { code?: string } | null)?.code, 'ECONNREFUSED');
  });

  it('a plain connect() joining a retrying one fails with the next attempt; the retrying one goes on', async () => {
    const retrying = client.connect({ retry: true });
    await waitFor(() => failures.length >= 1, 5000, 'a failed attempt');
    const plain = await rejectionOf(client.connect());
    assert.ok(plain instanceof DaemonDisconnectedError);
    daemon = await FakeDaemon.start({ port, host: '127.0.0.1' });
    await (await daemon.accept()).handshake();
    await retrying;
  });

  it('stops when the signal aborts, with its reason, and the client stays idle', async () => {
    const ac = new AbortController();
    const connecting = rejectionOf(client.connect({ retry: true, signal: ac.signal }));
    const pending = rejectionOf(client.getMessageBoxIndexCounter(Buffer.alloc(104, 1)));
    await waitFor(() => failures.length >= 2, 5000, 'two failed attempts');
    const reason = new Error('enough');
    ac.abort(reason);
    assert.equal(await connecting, reason);
    const queued = await pending;
    assert.ok(queued instanceof DaemonDisconnectedError);
    assert.match(queued.message, /connect\(\) was aborted/);
    const seen = failures.length;
    await sleep(200);
    assert.equal(failures.length, seen, 'no attempt after the abort');
    assert.ok((await rejectionOf(client.getMessageBoxIndexCounter(Buffer.alloc(104, 1)))) instanceof DaemonDisconnectedError, 'idle again');
    // Without an Error as the reason, OperationCancelledError.
    const ac2 = new AbortController();
    const again = rejectionOf(client.connect({ retry: true, signal: ac2.signal }));
    await waitFor(() => failures.length > seen, 5000, 'another failed attempt');
    ac2.abort('string reason');
    const againErr = await again;
    assert.ok(againErr instanceof OperationCancelledError, String(againErr));
    // An already aborted signal: nothing is tried.
    const before = failures.length;
    const aborted = AbortSignal.abort();
    assert.equal(await rejectionOf(client.connect({ retry: true, signal: aborted })), aborted.reason);
    await sleep(100);
    assert.equal(failures.length, before);
  });

  it('an abort during a handshake drops that connection', async () => {
    daemon = await FakeDaemon.start({ port, host: '127.0.0.1' });
    const ac = new AbortController();
    const connecting = rejectionOf(client.connect({ retry: true, signal: ac.signal }));
    const conn = await daemon.accept();
    ac.abort();
    assert.ok((await connecting) instanceof Error);
    await waitFor(() => conn.closed, 2000, 'the half-open connection to close');
    assert.equal(client.isDaemonConnected(), false);
    assert.equal(failures.length, 0, 'an aborted attempt is no failure');
  });

  it('close() while retrying rejects with OperationCancelledError and stops trying', async () => {
    const connecting = rejectionOf(client.connect({ retry: true }));
    await waitFor(() => failures.length >= 2, 5000, 'two failed attempts');
    await client.close();
    assert.ok((await connecting) instanceof OperationCancelledError);
    const seen = failures.length;
    daemon = await FakeDaemon.start({ port, host: '127.0.0.1' });
    await sleep(200);
    assert.equal(daemon.connections.length, 0, 'no attempt after close()');
    assert.equal(failures.length, seen);
    assert.ok((await rejectionOf(client.connect({ retry: true }))) instanceof DaemonDisconnectedError, 'closed for good');
  });

  it('checks its options', async () => {
    assert.ok((await rejectionOf(client.connect({ retry: 'yes' as unknown as boolean }))) instanceof InvalidArgumentError);
    assert.ok((await rejectionOf(client.connect({ signal: {} as AbortSignal }))) instanceof InvalidArgumentError);
    assert.equal(failures.length, 0, 'nothing was tried');
  });
});
