/**
 * Shared set-up for the node tests: Node-RED through node-red-node-test-helper
 * (KATZENPOST_NODE_RED_PATH selects another Node-RED, e.g. 5.x in CI), our
 * compiled nodes from dist/nodes (run `node scripts/build.mjs` first), core
 * nodes for the example flows, and an emulator on an ephemeral port.
 */
import * as assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { ThinClient } from '../../src/client/client';
import { startEmulator, type Emulator, type EmulatorOptions } from '../../src/emulator';
import { STATUS_MIN_INTERVAL_MS } from '../../src/nodes/lib/status';

// The helper ships no types.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const helperModule = require('node-red-node-test-helper');

export const NODE_RED_PATH = process.env.KATZENPOST_NODE_RED_PATH || require.resolve('node-red');
helperModule.init(NODE_RED_PATH);

/** node-red-node-test-helper, initialised on the Node-RED under test. */
export const helper: {
  load(nodes: unknown[], flow: unknown[], credentials?: Record<string, unknown>): Promise<void>;
  unload(): Promise<void>;
  getNode(id: string): TestNode | null;
  startServer(done: () => void): void;
  stopServer(done: () => void): void;
} = helperModule;

/** The runtime node as the tests see it (an EventEmitter with receive()). */
export interface TestNode {
  id: string;
  type: string;
  credentials?: Record<string, unknown>;
  receive(msg?: Record<string, unknown>): void;
  on(event: string, fn: (...args: any[]) => void): void;
  once(event: string, fn: (...args: any[]) => void): void;
  removeListener(event: string, fn: (...args: any[]) => void): void;
  [key: string]: unknown;
}

const ROOT = path.resolve(__dirname, '..', '..');
const PACKAGE = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { 'node-red': { nodes: Record<string, string> } };

/**
 * Every node type of the pack, exactly as package.json's node-red.nodes
 * declares them (what Node-RED loads), so no type can be left out of the
 * load, help and example checks.
 */
export const OUR_TYPES: readonly string[] = Object.keys(PACKAGE['node-red'].nodes);

/** Our config node types (no palette entry; other nodes refer to them), by their editor file's category. */
export const OUR_CONFIG_TYPES: readonly string[] = OUR_TYPES.filter((t) =>
  /category:\s*'config'/.test(readFileSync(path.join(ROOT, 'nodes', `${t}.html`), 'utf8')),
);

export const DIST_NODES = path.resolve(ROOT, 'dist', 'nodes');

/** Our compiled node modules (the files package.json's node-red.nodes points at). */
export function ourNodes(): unknown[] {
  return OUR_TYPES.map((t) => {
    const file = path.resolve(ROOT, PACKAGE['node-red'].nodes[t]);
    if (!existsSync(file)) throw new Error(`${file} is missing: run "node scripts/build.mjs" before the node tests`);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(file);
  });
}

const NODES_DIR = path.dirname(require.resolve('@node-red/nodes/package.json', { paths: [path.dirname(NODE_RED_PATH)] }));

const CORE_FILES: Record<string, string> = {
  inject: 'core/common/20-inject.js',
  debug: 'core/common/21-debug.js',
  comment: 'core/common/90-comment.js',
  link: 'core/common/60-link.js',
  function: 'core/function/10-function.js',
  switch: 'core/function/10-switch.js',
  change: 'core/function/15-change.js',
  delay: 'core/function/89-delay.js',
  trigger: 'core/function/89-trigger.js',
  split: 'core/sequence/17-split.js',
};

/** Core node modules by short name (catch, status and complete are loaded by the helper itself). */
export function coreNodes(...names: (keyof typeof CORE_FILES)[]): unknown[] {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return names.map((n) => require(path.join(NODES_DIR, CORE_FILES[n])));
}

/** Which core module a flow node type needs, for loading example flows. */
export function coreModuleFor(type: string): keyof typeof CORE_FILES | null {
  if (type in CORE_FILES) return type as keyof typeof CORE_FILES;
  if (type === 'link in' || type === 'link out' || type === 'link call') return 'link';
  if (type === 'split' || type === 'join') return 'split';
  return null;
}

export async function newEmulator(options: EmulatorOptions = {}): Promise<Emulator> {
  return startEmulator({ listen: '127.0.0.1:0', latency: 'fast', ...options });
}

export function hostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  return { host: address.slice(0, i), port: Number(address.slice(i + 1)) };
}

/** A katzenpost-daemon config node pointing at the emulator. */
export function daemonNode(emu: Emulator | { address: string }, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const { host, port } = hostPort(emu.address);
  return {
    id: 'daemon',
    type: 'katzenpost-daemon',
    name: 'test daemon',
    transport: 'tcp',
    host,
    port,
    handshakeTimeout: 5,
    requestTimeout: 10,
    ...extra,
  };
}

export function getNode(id: string): TestNode {
  const n = helper.getNode(id);
  assert.ok(n, `node ${id} is not running`);
  return n;
}

/** The next message a (helper) node receives. */
export function nextInput(id: string, timeoutMs = 10_000): Promise<Record<string, any>> {
  return collect(id, 1, timeoutMs).then((a) => a[0]);
}

/** The next `count` messages a (helper) node receives, in order. */
export function collect(id: string, count: number, timeoutMs = 10_000): Promise<Record<string, any>[]> {
  const node = getNode(id);
  return new Promise((resolve, reject) => {
    const got: Record<string, any>[] = [];
    const onInput = (msg: Record<string, any>): void => {
      got.push(msg);
      if (got.length === count) {
        clearTimeout(timer);
        node.removeListener('input', onInput);
        resolve(got);
      }
    };
    const timer = setTimeout(() => {
      node.removeListener('input', onInput);
      reject(new Error(`node ${id}: got ${got.length} of ${count} messages within ${timeoutMs} ms`));
    }, timeoutMs);
    node.on('input', onInput);
  });
}

/** Resolves when nothing reaches node `id` for `ms`; rejects with the message that did. */
export function expectSilence(id: string, ms: number): Promise<void> {
  const node = getNode(id);
  return new Promise((resolve, reject) => {
    const onInput = (msg: unknown): void => {
      clearTimeout(timer);
      node.removeListener('input', onInput);
      reject(new Error(`node ${id} unexpectedly received ${JSON.stringify(msg)}`));
    };
    const timer = setTimeout(() => {
      node.removeListener('input', onInput);
      resolve();
    }, ms);
    node.on('input', onInput);
  });
}

export interface StatusArg {
  fill?: string;
  shape?: string;
  text?: string;
}

/**
 * Every status a node has shown since the flow was loaded, read from the
 * helper's spy on Node.prototype.status (so nothing shown before the test
 * looked is missed).
 */
export function statusHistory(id: string): StatusArg[] {
  const node = getNode(id);
  const spy = helperModule._NodePrototype.status as { getCalls(): { thisValue: unknown; args: [StatusArg] }[] };
  return spy
    .getCalls()
    .filter((c) => c.thisValue === node)
    .map((c) => c.args[0]);
}

/** Status of node `id`: its history, the latest, and waiting for one that matches (among those shown from now on, or the current one). */
export function watchStatus(id: string): {
  readonly history: StatusArg[];
  current(): StatusArg | undefined;
  waitFor(pred: (s: StatusArg) => boolean, timeoutMs?: number): Promise<StatusArg>;
} {
  const seen = statusHistory(id).length;
  return {
    get history() {
      return statusHistory(id);
    },
    current: () => statusHistory(id).at(-1),
    async waitFor(pred, timeoutMs = 10_000) {
      let found: StatusArg | undefined;
      await until(
        () => {
          const h = statusHistory(id);
          // The current status counts, then anything shown after the watch began.
          found = [h.at(-1), ...h.slice(seen)].find((s) => s !== undefined && pred(s));
          return found !== undefined;
        },
        timeoutMs,
        () => `a matching status on ${id} (saw ${JSON.stringify(statusHistory(id).slice(-4))})`,
      );
      return found!;
    },
  };
}

export const delay = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Status texts as the runtime sends them (i18n keys). */
export const TEXT = {
  connected: 'node-red:common.status.connected',
  connecting: 'node-red:common.status.connecting',
  disconnected: 'node-red:common.status.disconnected',
  offline: /katzenpost-daemon:katzenpost-daemon\.status\.offline$/,
  working: /katzenpost-daemon:katzenpost-daemon\.status\.working$/,
};

export const isConnected = (s: StatusArg): boolean => s.fill === 'green' && s.shape === 'dot' && s.text === TEXT.connected;

/**
 * Waits until node `id` shows "connected" and then for the status interval:
 * a status change closer than STATUS_MIN_INTERVAL_MS to the previous one is
 * shown at the end of the interval (coalesced), a later one at once, so the
 * next operation's "working" is then shown as it starts.
 */
export async function quietConnected(id: string): Promise<void> {
  await watchStatus(id).waitFor(isConnected);
  await delay(STATUS_MIN_INTERVAL_MS);
}

export type Outcome = { port: number | 'catch'; msg: Record<string, any> };

/**
 * One node under test (id "op") in a tab, each output wired to a helper
 * node ("out1", "out2", ...), and a Catch node for it wired to "caught".
 */
export function opFlow(
  emu: Emulator | { address: string },
  type: string,
  props: Record<string, unknown> = {},
  outputs = 1,
  daemonExtra: Record<string, unknown> = {},
): Record<string, unknown>[] {
  const outs = Array.from({ length: outputs }, (_, i) => `out${i + 1}`);
  return [
    { id: 'tab', type: 'tab', label: 'test' },
    daemonNode(emu, daemonExtra),
    { id: 'op', z: 'tab', type, daemon: 'daemon', ...props, wires: outs.map((o) => [o]) },
    ...outs.map((id) => ({ id, z: 'tab', type: 'helper' })),
    { id: 'catch', z: 'tab', type: 'catch', scope: ['op'], uncaught: false, wires: [['caught']] },
    { id: 'caught', z: 'tab', type: 'helper' },
  ];
}

/** Sends msg to node `id` and resolves with where the answer came out: output 1..n or the Catch node. */
export function roundTrip(msg: Record<string, unknown>, opts: { id?: string; outputs?: number; timeoutMs?: number } = {}): Promise<Outcome> {
  const id = opts.id ?? 'op';
  const outputs = opts.outputs ?? 2;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const ports: [string, number | 'catch'][] = [['caught', 'catch']];
  for (let i = 1; i <= outputs; i++) if (helper.getNode(`out${i}`)) ports.push([`out${i}`, i]);
  return new Promise((resolve, reject) => {
    const listeners: [TestNode, (m: Record<string, any>) => void][] = [];
    const finish = (): void => {
      clearTimeout(timer);
      for (const [n, l] of listeners) n.removeListener('input', l);
    };
    for (const [nodeId, port] of ports) {
      const n = getNode(nodeId);
      const l = (m: Record<string, any>): void => {
        finish();
        resolve({ port, msg: m });
      };
      n.on('input', l);
      listeners.push([n, l]);
    }
    const timer = setTimeout(() => {
      finish();
      reject(new Error(`no answer from ${id} within ${timeoutMs} ms`));
    }, timeoutMs);
    getNode(id).receive(msg);
  });
}

/** Like roundTrip, but fails unless the answer came out of `port`. */
export async function expectPort(port: number | 'catch', msg: Record<string, unknown>, opts: { id?: string; outputs?: number; timeoutMs?: number } = {}): Promise<Record<string, any>> {
  const r = await roundTrip(msg, opts);
  if (r.port !== port) {
    const detail = r.port === 'catch' ? `error: ${r.msg.error?.message}` : JSON.stringify(Object.keys(r.msg));
    throw new Error(`expected output ${port}, got ${r.port} (${detail})`);
  }
  return r.msg;
}

/** A direct client to the emulator, for setting up and checking boxes outside Node-RED. */
export async function directClient(emu: Emulator | { address: string }): Promise<ThinClient> {
  const c = new ThinClient({ dial: emu.address, reconnect: false });
  await c.connect();
  return c;
}

export async function writeBox(c: ThinClient, writeCap: Buffer, index: Buffer, payload: Buffer | string): Promise<void> {
  const e = await c.encryptWrite(payload, writeCap, index);
  await c.startResendingEncryptedMessage({
    writeCap,
    readCap: null,
    messageBoxIndex: null,
    envelopeDescriptor: e.envelopeDescriptor,
    messageCiphertext: e.messageCiphertext,
    envelopeHash: e.envelopeHash,
  });
}

export async function readBox(c: ThinClient, readCap: Buffer, index: Buffer, noRetry = true): Promise<Buffer> {
  const e = await c.encryptRead(readCap, index);
  const p = {
    readCap,
    writeCap: null,
    messageBoxIndex: index,
    envelopeDescriptor: e.envelopeDescriptor,
    messageCiphertext: e.messageCiphertext,
    envelopeHash: e.envelopeHash,
  };
  const r = noRetry ? await c.startResendingEncryptedMessageNoRetry(p) : await c.startResendingEncryptedMessage(p);
  return r.plaintext ?? Buffer.alloc(0);
}

const CONFIG_TYPES = new Set(['katzenpost-daemon', 'katzenpost-channel', 'tab', 'group', 'subflow']);

/**
 * helper.load with the flow made valid for Node-RED 4+: a node without x/y
 * counts as a config node there, so flow nodes get a position.
 */
export function loadFlow(modules: unknown[], flow: Record<string, unknown>[], credentials?: Record<string, unknown>): Promise<void> {
  const placed = flow.map((n, i) =>
    CONFIG_TYPES.has(String(n.type)) || ('x' in n && 'y' in n) ? n : { ...n, x: 100, y: 40 + 40 * i },
  );
  return helper.load(modules, placed, credentials);
}

/** Polls `pred` every 10 ms until it holds (or fails after timeoutMs, saying what it waited for: `what`, or what it returns then). */
export function until(pred: () => boolean, timeoutMs: number, what: string | (() => string)): Promise<void> {
  const start = Date.now();
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (pred()) resolve();
      else if (Date.now() - start > timeoutMs) reject(new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'function' ? what() : what}`));
      else setTimeout(tick, 10);
    };
    tick();
  });
}

/** The connection state held by the daemon config node (id "daemon" unless given). */
export function daemonState(id = 'daemon'): string {
  return (getNode(id) as unknown as { connection: { getState(): string } }).connection.getState();
}

/** Waits until the daemon config node has finished its handshake. */
export function waitConnected(id = 'daemon', timeoutMs = 10_000): Promise<void> {
  return until(() => daemonState(id) === 'connected', timeoutMs, `daemon ${id} to connect`);
}

/** A TCP address nobody listens on (an emulator's port, after it stopped). */
export async function deadAddress(): Promise<string> {
  const e = await newEmulator();
  const address = e.address;
  await e.stop({ graceful: false });
  return address;
}

/** Messages reaching node `id` until `done(all so far)` holds. */
export function collectUntil(id: string, done: (msgs: Record<string, any>[]) => boolean, timeoutMs = 10_000): Promise<Record<string, any>[]> {
  const node = getNode(id);
  return new Promise((resolve, reject) => {
    const got: Record<string, any>[] = [];
    const onInput = (msg: Record<string, any>): void => {
      got.push(msg);
      if (done(got)) {
        clearTimeout(timer);
        node.removeListener('input', onInput);
        resolve(got);
      }
    };
    const timer = setTimeout(() => {
      node.removeListener('input', onInput);
      reject(new Error(`node ${id}: condition not met within ${timeoutMs} ms; got ${JSON.stringify(got.map((m) => [m.topic, m.payload?.state ?? m.payload?.epoch]))}`));
    }, timeoutMs);
    node.on('input', onInput);
  });
}
