/**
 * The Katzenpost sidebar plugin's admin endpoints (dist/nodes/katzenpost-sidebar.js)
 * in Node-RED through node-red-node-test-helper, against a real emulator:
 * the state the tab draws (daemon connection, instance token, epoch, the PKI
 * document as layers of named nodes, channels with positions and counts),
 * the share action (the read cap and a QR code that decodes to it), rewinding
 * and skipping a reader, errors that name what is wrong, permissions, and
 * that no response and no log line ever carries a write cap or a seed (nor,
 * outside the share action, a read cap).
 */
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import jsQR from 'jsqr';
import { ThinClient } from '../../src/client/client';
import type { Emulator } from '../../src/emulator';
import {
  DIST_NODES,
  NODE_RED_PATH,
  collect,
  daemonNode,
  deadAddress,
  expectSilence,
  helper,
  hostPort,
  newEmulator,
  nextInput,
  until,
} from './support';

type Res = { status: number; body: any; headers: Record<string, string>; text: string };
interface Req extends PromiseLike<Res> {
  set(field: string, value: string): Req;
  send(body: unknown): Req;
}
// The same helper singleton as support.ts, for the parts its typing leaves out.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const rawHelper = require('node-red-node-test-helper') as {
  settings(s: Record<string, unknown>): Record<string, unknown>;
  request(): { get(url: string): Req; post(url: string): Req };
  _logSpy?: { getCalls(): { args: unknown[] }[] };
};

// Node-RED's own permission check (what RED.auth.needsPermission applies when adminAuth is set).
function editorApiDir(): string {
  try {
    return path.dirname(require.resolve('@node-red/editor-api/package.json', { paths: [path.dirname(NODE_RED_PATH)] }));
  } catch {
    return path.dirname(require.resolve('@node-red/editor-api/package.json'));
  }
}
const permissionsFile = path.join(editorApiDir(), 'lib', 'auth', 'permissions.js');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { hasPermission } = require(permissionsFile) as { hasPermission(scope: string | string[], permission: string): boolean };

const CHANNEL_TYPES = ['katzenpost-daemon', 'katzenpost-channel', 'katzenpost-channel-send', 'katzenpost-channel-receive'];
const STATE = '/katzenpost/sidebar';
const share = (id: string) => `/katzenpost/sidebar/channels/${id}/share`;
const reader = (id: string) => `/katzenpost/sidebar/channels/${id}/reader`;

/**
 * The plugin module, with RED.auth standing in for an editor with adminAuth:
 * the scope of the request's x-test-scope header is checked by Node-RED's own
 * hasPermission (the helper's RED.auth lets everything through). Without the
 * header the editor is open, as without adminAuth.
 */
function sidebarWithAuth(requested: string[]): (red: any) => void {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const plugin = require(path.join(DIST_NODES, 'katzenpost-sidebar.js')) as (red: unknown) => void;
  return (red: any) => {
    red.auth = {
      needsPermission: (permission: string) => {
        requested.push(permission);
        return (req: { headers: Record<string, string | undefined> }, res: { status(n: number): { end(): void } }, next: () => void) => {
          const scope = req.headers['x-test-scope'];
          if (scope === undefined || hasPermission(scope, permission)) next();
          else res.status(401).end();
        };
      },
    };
    plugin(red);
  };
}

function modules(requested: string[] = []): unknown[] {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return [...CHANNEL_TYPES.map((t) => require(path.join(DIST_NODES, `${t}.js`))), sidebarWithAuth(requested)];
}

/** Every spelling of a secret that a response or a log line could carry. */
function spellings(secret: Buffer): string[] {
  const hex = secret.toString('hex');
  return [hex, hex.toUpperCase(), secret.toString('base64'), secret.toString('base64url'), JSON.stringify([...secret]).slice(1, 60)];
}

function assertFree(text: string, secrets: Record<string, Buffer>, where: string): void {
  for (const [name, secret] of Object.entries(secrets)) {
    for (const s of spellings(secret)) assert.ok(!text.includes(s), `${where} contains the ${name}`);
  }
}

/** Renders the QR rows (4-module quiet zone, 4 px per module) and decodes them with jsQR. */
function decodeQr(qr: { size: number; rows: string[] }): string | null {
  const scale = 4;
  const n = (qr.size + 8) * scale;
  const rgba = new Uint8ClampedArray(n * n * 4).fill(255);
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) {
      const r = Math.floor(y / scale) - 4;
      const c = Math.floor(x / scale) - 4;
      if (r >= 0 && c >= 0 && r < qr.size && c < qr.size && qr.rows[r][c] === '1') {
        const i = (y * n + x) * 4;
        rgba[i] = rgba[i + 1] = rgba[i + 2] = 0;
      }
    }
  }
  return jsQR(rgba, n, n)?.data ?? null;
}

describe('sidebar plugin: admin endpoints of the Katzenpost tab', function () {
  this.timeout(60_000);
  let emu: Emulator;
  let dir: string;
  let seed: Buffer;
  let writeCap: Buffer;
  let readCap: Buffer;
  let first: bigint;
  let secrets: Record<string, Buffer>;
  let requested: string[];

  before(async () => {
    emu = await newEmulator({ latency: 'instant' });
  });
  after(async () => {
    await emu?.stop({ graceful: false });
  });
  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'kp-sidebar-'));
    rawHelper.settings({ userDir: dir });
    seed = randomBytes(32);
    const client = new ThinClient({ dial: emu.address });
    await client.connect();
    try {
      const kp = await client.newKeypair(seed);
      writeCap = kp.writeCap;
      readCap = kp.readCap;
      first = await client.getMessageBoxIndexCounter(kp.firstMessageIndex);
    } finally {
      await client.close();
    }
    secrets = { seed, 'write cap': writeCap };
    requested = [];
  });
  afterEach(async () => {
    await helper.unload();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A writer (owned "alpha") and a reader (imported "alpha-in") of the same channel, in two databases. */
  function flow(extra: Record<string, unknown>[] = []): { flow: Record<string, unknown>[]; credentials: Record<string, unknown> } {
    return {
      flow: [
        { id: 'f1', type: 'tab', label: 'channels' },
        daemonNode(emu, { name: 'emulator' }),
        { id: 'cw', type: 'katzenpost-channel', name: 'alpha', daemon: 'daemon', mode: 'owned', database: 'writer.db' },
        { id: 'cr', type: 'katzenpost-channel', name: 'alpha-in', daemon: 'daemon', mode: 'imported', database: 'reader.db' },
        { id: 'tx', z: 'f1', type: 'katzenpost-channel-send', channel: 'cw', wires: [['acks']] },
        { id: 'acks', z: 'f1', type: 'helper' },
        { id: 'rx', z: 'f1', type: 'katzenpost-channel-receive', channel: 'cr', pollInterval: 0.02, maxPollInterval: 0.05, wires: [['got'], ['skipped']] },
        { id: 'got', z: 'f1', type: 'helper' },
        { id: 'skipped', z: 'f1', type: 'helper' },
        ...extra,
      ],
      credentials: { cw: { seed: seed.toString('hex') }, cr: { readCap: readCap.toString('base64') } },
    };
  }

  async function sendAndReceive(payloads: string[]): Promise<Record<string, any>[]> {
    const acks = collect('acks', payloads.length);
    const got = collect('got', payloads.length);
    for (const p of payloads) helper.getNode('tx')!.receive({ payload: p });
    await acks;
    return got;
  }

  async function getState(scope?: string): Promise<Res> {
    const r = rawHelper.request().get(STATE);
    return scope === undefined ? r : r.set('x-test-scope', scope);
  }

  function channelOf(body: any, id: string): any {
    const c = body.channels.find((x: { id: string }) => x.id === id);
    assert.ok(c, `no channel ${id} in ${JSON.stringify(body.channels.map((x: { id: string }) => x.id))}`);
    return c;
  }

  it('describes the daemon (state, instance token, epoch, PKI picture) and each channel (kind, positions, counts, last activity)', async () => {
    const { flow: f, credentials } = flow();
    const started = Date.now();
    await helper.load(modules(requested), f, credentials);
    const got = await sendAndReceive(['one', 'two', 'three']);
    assert.deepEqual(got.map((m) => m.payload.toString()), ['one', 'two', 'three']);

    // A client of our own sees the same daemon and document.
    const probe = new ThinClient({ dial: emu.address });
    await probe.connect();
    let doc;
    try {
      await until(() => probe.pkiDocument() !== null, 10_000, 'a PKI document');
      doc = probe.pkiDocument()!;
      assert.ok(probe.instanceToken);
    } finally {
      await probe.close();
    }

    let res!: Res;
    // The receiver marks the last message read right after emitting it; wait for the counts to settle.
    for (let i = 0; i < 50; i++) {
      res = await getState();
      if (channelOf(res.body, 'cr').unread === 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(res.status, 200);
    assert.equal(res.headers['cache-control'], 'no-store');
    const body = res.body;

    assert.equal(body.daemons.length, 1);
    const d = body.daemons[0];
    assert.equal(d.id, 'daemon');
    assert.equal(d.name, 'emulator');
    assert.equal(d.state, 'connected');
    assert.equal(d.error, null);
    assert.equal(d.address, `${hostPort(emu.address).host}:${hostPort(emu.address).port}`);
    assert.equal(d.instanceToken, emu.instanceToken.toString('hex'));
    assert.equal(d.epoch, doc.epoch);
    assert.ok(d.users >= 2, `users: ${d.users}`);
    // The picture: the emulator's network, layer by layer, with names.
    assert.equal(d.pki.epoch, doc.epoch);
    assert.deepEqual(d.pki.layers, doc.topology.map((layer) => layer.map((m) => ({ name: m.name }))));
    assert.deepEqual(d.pki.layers.map((l: { name: string }[]) => l.map((m) => m.name)), [['mix1'], ['mix2'], ['mix3']]);
    assert.deepEqual(d.pki.gateways, [{ name: 'gateway1' }]);
    assert.deepEqual(
      d.pki.couriers.map((c: { name: string }) => c.name),
      doc.serviceNodes.filter((s) => s.kaetzchen && 'courier' in s.kaetzchen).map((s) => s.name),
    );
    assert.ok(d.pki.couriers.length > 0, 'no courier in the picture');
    assert.ok(d.pki.serviceNodes.every((s: { capabilities: string[] }) => s.capabilities.includes('echo')));
    assert.deepEqual(
      d.pki.replicas,
      doc.storageReplicas.map((r) => ({ name: r.name, replicaId: r.replicaId })),
    );
    assert.ok(d.pki.replicas.length >= 2);

    const w = channelOf(body, 'cw');
    assert.equal(w.name, 'alpha');
    assert.equal(w.kind, 'owned');
    assert.equal(w.state, 'open');
    assert.equal(w.daemon, 'daemon');
    assert.equal(w.firstIndex, first.toString());
    assert.equal(w.writeIndex, (first + 3n).toString());
    assert.equal(w.readIndex, first.toString(), 'nothing reads the owned channel in its own database');
    assert.equal(w.queued, 0);
    assert.equal(w.sent, 3);
    assert.equal(w.received, 0);
    assert.ok(w.lastSentAt >= started && w.lastSentAt <= Date.now());
    assert.equal(w.lastActivityAt, w.lastSentAt);

    const r = channelOf(body, 'cr');
    assert.equal(r.name, 'alpha-in');
    assert.equal(r.kind, 'imported');
    assert.equal(r.writeIndex, null);
    assert.equal(r.readIndex, (first + 3n).toString());
    assert.equal(r.sent, 0);
    assert.equal(r.received, 3);
    assert.equal(r.receivedMessages, 3);
    assert.equal(r.unread, 0);
    assert.ok(r.lastReceivedAt >= started && r.lastActivityAt >= r.lastReceivedAt);

    // No cap of any kind in the state, and the read cap neither.
    assertFree(res.text, { ...secrets, 'read cap': readCap }, 'the state response');
    assert.deepEqual([...new Set(requested)].sort(), ['katzenpost.read', 'katzenpost.write']);
  });

  it('shares the read cap only on request, with a QR code that decodes to it', async () => {
    const { flow: f, credentials } = flow();
    await helper.load(modules(), f, credentials);
    for (const id of ['cw', 'cr']) {
      const res = await rawHelper.request().post(share(id));
      assert.equal(res.status, 200, res.text);
      assert.equal(res.headers['cache-control'], 'no-store');
      assert.equal(res.body.readCap, readCap.toString('hex'));
      assert.equal(res.body.channel, id === 'cw' ? 'alpha' : 'alpha-in');
      assert.equal(res.body.qr.size, res.body.qr.rows.length);
      assert.ok(res.body.qr.rows.every((row: string) => row.length === res.body.qr.size && /^[01]+$/.test(row)));
      assert.equal(res.body.qr.text, readCap.toString('hex').toUpperCase());
      assert.equal(decodeQr(res.body.qr), readCap.toString('hex').toUpperCase(), 'the QR code does not decode to the read cap');
      assert.ok(Buffer.from(decodeQr(res.body.qr)!, 'hex').equals(readCap));
      assertFree(res.text, secrets, `the share response of ${id}`);
    }
    // A damaged code must not decode to the cap (the decoder really checks).
    const res = await rawHelper.request().post(share('cw'));
    const rows = res.body.qr.rows.map((row: string, i: number) => (i >= 20 && i < 34 ? row.replace(/1/g, '0') : row));
    assert.notEqual(decodeQr({ size: res.body.qr.size, rows }), readCap.toString('hex').toUpperCase());

    const missing = await rawHelper.request().post(share('nope'));
    assert.equal(missing.status, 404);
    assert.match(missing.body.error, /no deployed katzenpost-channel with id "nope"/);
    // GET does not share.
    assert.equal((await rawHelper.request().get(share('cw'))).status, 404);
  });

  it('rewinds a reader (the entries are delivered again) and skips boxes (what they hold is never delivered)', async () => {
    const { flow: f, credentials } = flow();
    await helper.load(modules(), f, credentials);
    await sendAndReceive(['one', 'two', 'three']);

    const again = collect('got', 2);
    const rewound = await rawHelper.request().post(reader('cr')).send({ action: 'rewind', count: 2 });
    assert.equal(rewound.status, 200, rewound.text);
    assert.equal(rewound.body.id, 'cr');
    assert.equal(rewound.body.readIndex, (first + 1n).toString(), 'rewinding 2 of 3 entries goes back to the second box');
    assertFree(rewound.text, { ...secrets, 'read cap': readCap }, 'the reader response');
    const repeated = await again;
    assert.deepEqual(repeated.map((m) => m.payload.toString()), ['two', 'three']);
    assert.deepEqual(repeated.map((m) => m.index), [(first + 1n).toString(), (first + 2n).toString()]);

    // Skip the next (not yet written) box: the message written there is never delivered, the one after is.
    const skipped = await rawHelper.request().post(reader('cr')).send({ action: 'skip', count: '1' });
    assert.equal(skipped.status, 200, skipped.text);
    assert.equal(skipped.body.readIndex, (first + 4n).toString());
    const next = nextInput('got', 15_000);
    const acks = collect('acks', 2);
    helper.getNode('tx')!.receive({ payload: 'four (skipped)' });
    helper.getNode('tx')!.receive({ payload: 'five' });
    assert.deepEqual((await acks).map((m) => m.index), [(first + 3n).toString(), (first + 4n).toString()]);
    const got = await next;
    assert.equal(got.payload.toString(), 'five');
    assert.equal(got.index, (first + 4n).toString());
    await expectSilence('got', 200);

    // Rewinding further than the log goes back to the first box.
    const all = collect('got', 4);
    const toStart = await rawHelper.request().post(reader('cr')).send({ action: 'rewind', count: 100 });
    assert.equal(toStart.status, 200, toStart.text);
    assert.equal(toStart.body.readIndex, first.toString());
    assert.deepEqual((await all).map((m) => m.payload.toString()), ['one', 'two', 'three', 'four (skipped)']);
  });

  it('refuses bad reader requests with errors that name the problem', async () => {
    const { flow: f, credentials } = flow();
    await helper.load(modules(), f, credentials);
    const post = (id: string, body: unknown) => rawHelper.request().post(reader(id)).send(body);

    const badAction = await post('cr', { action: 'jump', count: 1 });
    assert.equal(badAction.status, 400);
    assert.equal(badAction.body.error, 'action: expected "rewind" or "skip", got "jump"');
    for (const count of [0, -1, 1.5, 'x', 10_001, null]) {
      const r = await post('cr', { action: 'skip', count });
      assert.equal(r.status, 400, `count ${JSON.stringify(count)}`);
      assert.equal(r.body.error, `count: expected an integer from 1 to 10000, got ${JSON.stringify(count)}`);
    }
    const noCount = await post('cr', { action: 'skip' });
    assert.equal(noCount.body.error, 'count: expected an integer from 1 to 10000, got nothing');
    const unknown = await post('nope', { action: 'skip', count: 1 });
    assert.equal(unknown.status, 404);
    assert.match(unknown.body.error, /no deployed katzenpost-channel with id "nope": deploy it first/);
    // Nothing has been read yet: nothing to rewind.
    const nothing = await post('cw', { action: 'rewind', count: 1 });
    assert.equal(nothing.status, 409);
    assert.match(nothing.body.error, /channel "alpha": the reader is at the channel's first box \d+; there is nothing to rewind/);
    // The positions did not move.
    const state = (await getState()).body;
    assert.equal(channelOf(state, 'cr').readIndex, first.toString());
    assert.equal(channelOf(state, 'cw').readIndex, first.toString());
  });

  it('applies the editor permissions: read scope looks, write scope acts, no scope gets nothing', async () => {
    const { flow: f, credentials } = flow();
    await helper.load(modules(), f, credentials);
    assert.equal((await getState('read')).status, 200);
    assert.equal((await getState('*')).status, 200);
    assert.equal((await getState('none')).status, 401);
    assert.equal((await getState('flows.read')).status, 401);
    for (const scope of ['read', 'none', 'katzenpost.read']) {
      const s = await rawHelper.request().post(share('cw')).set('x-test-scope', scope);
      assert.equal(s.status, 401, `share with scope ${scope}`);
      assert.ok(!s.text.includes(readCap.toString('hex')));
      const m = await rawHelper.request().post(reader('cr')).set('x-test-scope', scope).send({ action: 'skip', count: 1 });
      assert.equal(m.status, 401, `reader with scope ${scope}`);
    }
    assert.equal((await rawHelper.request().post(share('cw')).set('x-test-scope', 'write')).status, 200);
    assert.equal((await rawHelper.request().post(share('cw')).set('x-test-scope', 'katzenpost.write')).status, 200);
    // The refused skip did not move the reader.
    assert.equal(channelOf((await getState()).body, 'cr').readIndex, first.toString());
  });

  it('shows why a daemon or a channel is not working, and logs no cap', async () => {
    const dead = hostPort(await deadAddress());
    const seed2 = randomBytes(32);
    const { flow: f, credentials } = flow([
      { id: 'dead', type: 'katzenpost-daemon', name: 'nobody home', transport: 'tcp', host: dead.host, port: dead.port, handshakeTimeout: 1, requestTimeout: 2 },
      { id: 'cx', type: 'katzenpost-channel', name: 'stuck', daemon: 'dead', mode: 'owned', database: 'stuck.db' },
      { id: 'cn', type: 'katzenpost-channel', name: 'nocreds', daemon: 'daemon', mode: 'owned', database: 'nocreds.db' },
    ]);
    await helper.load(modules(), f, { ...credentials, cx: { seed: seed2.toString('hex') } });
    await sendAndReceive(['one']);
    await rawHelper.request().post(share('cw'));
    let body: any;
    for (let i = 0; i < 100; i++) {
      body = (await getState()).body;
      if (body.daemons.find((x: { id: string }) => x.id === 'dead').state === 'disconnected') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const d = body.daemons.find((x: { id: string }) => x.id === 'dead');
    assert.equal(d.name, 'nobody home');
    assert.equal(d.state, 'disconnected');
    assert.match(d.error, /ECONNREFUSED|refused/i);
    assert.equal(d.pki, null);
    assert.equal(d.instanceToken, null);
    assert.equal(d.epoch, null);

    const stuck = channelOf(body, 'cx');
    assert.equal(stuck.state, 'opening');
    assert.match(stuck.error, /waiting for the daemon/);
    assert.equal(stuck.readIndex, null);

    const nocreds = channelOf(body, 'cn');
    assert.equal(nocreds.state, 'error');
    assert.match(nocreds.error, /"nocreds": an owned channel needs a seed or a write cap in its credentials/);
    // Moving the reader of a channel that cannot open names the cause.
    const m = await rawHelper.request().post(reader('cn')).send({ action: 'skip', count: 1 });
    assert.equal(m.status, 409);
    assert.match(m.body.error, /an owned channel needs a seed or a write cap/);

    assertFree(JSON.stringify(body), { ...secrets, 'read cap': readCap, 'second seed': seed2 }, 'the state response');
    const logged = (rawHelper._logSpy?.getCalls() ?? []).map((c) => JSON.stringify(c.args)).join('\n');
    assert.ok(logged.includes('was shown in the editor for sharing'), 'the share action is logged (without the cap)');
    assertFree(logged, { ...secrets, 'read cap': readCap, 'second seed': seed2 }, 'the log');
  });
});
