/**
 * katzenpost-sidebar: a Node-RED plugin (package.json node-red.plugins) whose
 * editor half (katzenpost-sidebar.html) adds a "Katzenpost" tab to the
 * editor's sidebar, and whose runtime half (this file) serves it over the
 * admin HTTP API:
 *
 *   GET  <admin>/katzenpost/sidebar                       katzenpost.read
 *        every daemon connection (state, instance token, epoch, the PKI
 *        document as layers of named nodes) and every persistent channel
 *        (kind, positions, queued / sent / received counts, last activity)
 *   POST <admin>/katzenpost/sidebar/channels/:id/share    katzenpost.write
 *        the channel's read cap (hex) and a QR code of it: the one response
 *        that carries a capability, and only on this explicit request
 *   POST <admin>/katzenpost/sidebar/channels/:id/reader   katzenpost.write
 *        {"action":"rewind","count":n}: read the last n received entries again;
 *        {"action":"skip","count":n}: jump the reader n boxes ahead
 *
 * The routes use the editor's own authentication: with adminAuth set, a user
 * whose scope is "read" can look but not share or move; without adminAuth
 * the editor is open and so are they. No response carries a write cap or a
 * seed, no log line carries any cap, and every response is no-store.
 */
import { randomBytes } from 'node:crypto';
import qrcode = require('qrcode-generator');
import type { ThinClient } from '../client/client';
import { InvalidArgumentError, KatzenpostError } from '../client/errors';
import { ChannelError, type ChannelStore } from '../channels';
import katzenpostChannel = require('./katzenpost-channel');
import { channelStub, channelView, daemonView, type ChannelView, type SidebarState } from './lib/sidebar-data';
import { isDaemonConfigNode } from './shared';
import type { NodeAPI, NodeDef } from './types';

const PLUGIN_ID = 'katzenpost-sidebar';
const READ_PERMISSION = 'katzenpost.read';
const WRITE_PERMISSION = 'katzenpost.write';
/** The most entries a rewind or boxes a skip can cover in one request. */
const MAX_MOVE = 10_000;

/** How long the state request waits for a channel to open before reporting it as opening. */
const OPEN_WAIT_MS = 2_000;
/** How long the share and reader requests wait for the daemon. */
const ACTION_WAIT_MS = 30_000;

// ------------------------------------------------ the admin API we use

interface AdminRequest {
  params: Record<string, string>;
  body?: unknown;
}
interface AdminResponse {
  status(code: number): AdminResponse;
  set(field: string, value: string): AdminResponse;
  json(body: unknown): void;
}
type AdminHandler = (req: AdminRequest, res: AdminResponse, next: (err?: unknown) => void) => void;
interface SidebarRED extends NodeAPI {
  httpAdmin?: {
    get(path: string, ...handlers: AdminHandler[]): void;
    post(path: string, ...handlers: AdminHandler[]): void;
  };
  auth?: { needsPermission(permission: string): AdminHandler };
  plugins?: { registerPlugin(id: string, definition: Record<string, unknown>): void };
}
interface FlowNodeDef extends NodeDef {
  daemon?: string;
  mode?: string;
}
type ChannelNode = katzenpostChannel.ConfigNode;

/** An error the browser shows as it is, with the HTTP status it came with. */
class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new HttpError(504, `${what} did not finish within ${ms / 1000} s`)), ms);
    timer.unref();
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function statusOf(err: unknown): number {
  if (err instanceof HttpError) return err.status;
  if (err instanceof InvalidArgumentError) return 400;
  if (err instanceof ChannelError) return (err as KatzenpostError).code === 'NO_CLIENT' ? 503 : 409;
  if (err instanceof KatzenpostError) return 503;
  return 500;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** `count` of a reader request: an integer from 1 to MAX_MOVE. */
function readCount(body: Record<string, unknown>): number {
  const v = body.count;
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*\d+\s*$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > MAX_MOVE) {
    throw new HttpError(400, `count: expected an integer from 1 to ${MAX_MOVE}, got ${JSON.stringify(v) ?? 'nothing'}`);
  }
  return n;
}

// ------------------------------------------------------------- plugin

function katzenpostSidebar(RED: NodeAPI): void {
  const red = RED as SidebarRED;
  red.plugins?.registerPlugin(PLUGIN_ID, { type: PLUGIN_ID });
  if (!red.httpAdmin || !red.auth) return; // no editor (disableEditor): nothing to serve

  /** The flow definitions of one of our config node types (eachNode walks the deployed configuration). */
  function definitions(type: string): FlowNodeDef[] {
    const found: FlowNodeDef[] = [];
    const each = (RED.nodes as unknown as { eachNode?(cb: (n: FlowNodeDef) => void): void }).eachNode;
    each?.((n) => {
      if (n && n.type === type) found.push(n);
    });
    return found.sort((a, b) => String(a.name ?? '').localeCompare(String(b.name ?? '')) || a.id.localeCompare(b.id));
  }

  function channelNode(id: string): ChannelNode {
    const n = RED.nodes.getNode(id);
    if (!katzenpostChannel.isConfigNode(n)) {
      throw new HttpError(404, `no deployed katzenpost-channel with id ${JSON.stringify(id)}: deploy it first`);
    }
    return n;
  }

  async function describeChannel(def: FlowNodeDef): Promise<ChannelView> {
    const kind = def.mode === 'imported' ? 'imported' : 'owned';
    const daemon = String(def.daemon ?? '');
    const name = String(def.name ?? '').trim();
    const node = RED.nodes.getNode(def.id);
    if (!katzenpostChannel.isConfigNode(node)) return channelStub(def.id, name, kind, daemon, 'stopped', 'not running (disabled, or not deployed yet)');
    // Invite and join: the channel shown is the outgoing one (owned); the invitation's exists once it is introduced.
    const intro = node.introduction();
    if (intro?.error) return channelStub(def.id, node.channelName, kind, node.daemonId, 'error', intro.error.message);
    if (intro && !intro.done && node.mode === 'invite') {
      return channelStub(def.id, node.channelName, kind, node.daemonId, 'opening', node.introductionStatus()?.text ?? 'introducing');
    }
    let store: ChannelStore;
    try {
      store = await withTimeout(node.open(), OPEN_WAIT_MS, 'opening the channel');
    } catch (err) {
      if (err instanceof HttpError) {
        return channelStub(def.id, node.channelName, kind, node.daemonId, 'opening', 'waiting for the daemon to derive the channel from its seed');
      }
      return channelStub(def.id, node.channelName, kind, node.daemonId, 'error', messageOf(err));
    }
    try {
      const info = store.get(node.channelName);
      if (!info) return channelStub(def.id, node.channelName, kind, node.daemonId, 'error', `channel "${node.channelName}" is not in ${node.dbPath}`);
      return channelView(def.id, node.daemonId, info, store.activity(node.channelName));
    } catch (err) {
      return channelStub(def.id, node.channelName, kind, node.daemonId, 'error', messageOf(err));
    }
  }

  async function state(): Promise<SidebarState> {
    const daemons = definitions('katzenpost-daemon').map((def) => {
      const n = RED.nodes.getNode(def.id);
      return daemonView(def.id, String(def.name ?? ''), isDaemonConfigNode(n) ? n.connection : null);
    });
    const channels = await Promise.all(definitions(katzenpostChannel.TYPE).map((def) => describeChannel(def)));
    return { daemons, channels, now: Date.now() };
  }

  /** Runs fn with a connected client of the channel's daemon, registering as a user meanwhile if needed. */
  async function withClient<T>(node: ChannelNode, fn: (client: ThinClient) => Promise<T>): Promise<T> {
    const connection = node.connection;
    if (!connection) throw new HttpError(409, `katzenpost-channel "${node.channelName}": no katzenpost-daemon config node is selected`);
    const userId = `${PLUGIN_ID}:${randomBytes(6).toString('hex')}`;
    connection.register(userId, {});
    try {
      return await fn(await connection.acquire({ timeoutMs: 10_000 }));
    } finally {
      await connection.deregister(userId);
    }
  }

  /** Moves the reader; returns the channel as the state request describes it. */
  async function moveReader(id: string, body: Record<string, unknown>): Promise<ChannelView> {
    const action = body.action;
    if (action !== 'rewind' && action !== 'skip') {
      throw new HttpError(400, `action: expected "rewind" or "skip", got ${JSON.stringify(action) ?? 'nothing'}`);
    }
    const count = readCount(body);
    const node = channelNode(id);
    const store = await withTimeout(node.open(), ACTION_WAIT_MS, 'opening the channel');
    const name = node.channelName;
    const info = store.get(name);
    if (!info) throw new HttpError(409, `channel "${name}" is not in ${node.dbPath}`);
    let target: bigint;
    if (action === 'rewind') {
      // Back to the count-th newest entry of the reader's log, or to the first box when the log is shorter.
      const log = store.receivedLog(name, count);
      if (log.length === 0 && info.readIndex === info.firstIndex) {
        throw new HttpError(409, `channel "${name}": the reader is at the channel's first box ${info.firstIndex}; there is nothing to rewind`);
      }
      target = log.length === count ? BigInt(log[count - 1].index) : BigInt(info.firstIndex);
    } else {
      target = BigInt(info.readIndex) + BigInt(count);
    }
    await withTimeout(
      withClient(node, (client) => store.moveReader(name, target, { client, maxSteps: 100_000 })),
      ACTION_WAIT_MS,
      'moving the reader',
    );
    return channelView(id, node.daemonId, store.get(name)!, store.activity(name));
  }

  async function share(id: string): Promise<{ channel: string; readCap: string; qr: { text: string; size: number; rows: string[] } }> {
    const node = channelNode(id);
    const cap = await withTimeout(node.readCap(), ACTION_WAIT_MS, 'getting the read cap');
    const hex = cap.toString('hex');
    // Upper-case hex is QR "alphanumeric" text: 272 characters fit version 9 at level M (53 x 53 modules).
    // The channel form accepts hex of either case.
    const text = hex.toUpperCase();
    const qr = qrcode(0, 'M');
    qr.addData(text, 'Alphanumeric');
    qr.make();
    const size = qr.getModuleCount();
    const rows: string[] = [];
    for (let r = 0; r < size; r++) {
      let line = '';
      for (let c = 0; c < size; c++) line += qr.isDark(r, c) ? '1' : '0';
      rows.push(line);
    }
    RED.log.info(`katzenpost: the read cap of channel "${node.channelName}" was shown in the editor for sharing`);
    return { channel: node.channelName, readCap: hex, qr: { text, size, rows } };
  }

  /** Wraps a route: no caching, JSON errors naming the problem, never an unhandled rejection. */
  const route =
    (fn: (req: AdminRequest) => Promise<unknown>): AdminHandler =>
    (req, res) => {
      res.set('Cache-Control', 'no-store');
      let work: Promise<unknown>;
      try {
        work = fn(req);
      } catch (err) {
        work = Promise.reject(err);
      }
      work.then(
        (body) => {
          try {
            res.json(body);
          } catch {
            // the client went away
          }
        },
        (err: unknown) => {
          const status = statusOf(err);
          if (status === 500) RED.log.warn(`katzenpost sidebar: ${messageOf(err)}`);
          try {
            res.status(status).json({ error: messageOf(err) });
          } catch {
            // the client went away
          }
        },
      );
    };

  const body = (req: AdminRequest): Record<string, unknown> =>
    req.body && typeof req.body === 'object' && !Array.isArray(req.body) ? (req.body as Record<string, unknown>) : {};

  red.httpAdmin.get('/katzenpost/sidebar', red.auth.needsPermission(READ_PERMISSION), route(() => state()));
  red.httpAdmin.post('/katzenpost/sidebar/channels/:id/share', red.auth.needsPermission(WRITE_PERMISSION), route((req) => share(req.params.id)));
  red.httpAdmin.post(
    '/katzenpost/sidebar/channels/:id/reader',
    red.auth.needsPermission(WRITE_PERMISSION),
    route((req) => moveReader(req.params.id, body(req))),
  );
}

export = katzenpostSidebar;
