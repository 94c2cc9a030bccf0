/**
 * katzenpost-channel: a named persistent Pigeonhole channel (config node),
 * used by katzenpost-channel-send and katzenpost-channel-receive.
 *
 * Where things live:
 *  - Identity (caps) in Node-RED credentials: an owned channel's 32-byte seed
 *    (or its 168-byte write cap), an imported channel's 136-byte read cap.
 *  - Positions and durable work (write/read index, pending writes, outbound
 *    queue, received log) in the channel database, one SQLite file shared by
 *    every channel of this Node-RED (default <userDir>/katzenpost-channels.db),
 *    keyed by the channel name. The database keeps a copy of the caps,
 *    because resuming a queued write needs them before any node asks.
 *
 * How the two stay consistent: on every start the caps from the credentials
 * are checked against the database row of the same name. Same caps: the row's
 * positions are used. Different caps: the channel refuses to run ("caps
 * mismatch") rather than write with another channel's positions; choose a new
 * name to start over. Caps the database has under another name: the row is
 * renamed (the name was changed in the editor).
 *
 * An owned channel always gets its identity from the credentials: the editor
 * generates a random seed when the form is saved without one. Deployed with
 * neither seed nor write cap (an imported flow whose channel node was never
 * opened), it refuses to run with a NO_CREDENTIALS error telling the user to
 * open and save the node, rather than invent a seed that would live only in
 * the database. For flows deployed that way by earlier versions, a database
 * row of that name is still used, with a warning.
 */
import { homedir } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { ConfigError, InvalidArgumentError, KatzenpostError } from '../client/errors';
import { ChannelError, acquireSharedStore, type ChannelCaps, type ChannelStore, type SharedStore } from '../channels';
import { configNodeOf, decodeKeyText, isDaemonConfigNode, SIZES, type DaemonConnection } from './shared';
import type { Node, NodeAPI, NodeDef } from './types';

const CHANNEL_TYPE = 'katzenpost-channel';
const READ_PERMISSION = 'katzenpost-channel.read';
const DEFAULT_DB_FILE = 'katzenpost-channels.db';

interface ChannelDef extends NodeDef {
  daemon?: string;
  mode?: 'owned' | 'imported';
  database?: string;
}

/** The runtime object of a katzenpost-channel config node, as the send and receive nodes see it. */
interface ChannelConfigNode extends Node {
  /** The channel's name (its key in the database). */
  readonly channelName: string;
  readonly mode: 'owned' | 'imported';
  /** The katzenpost-daemon config node's id. */
  readonly daemonId: string;
  /** Absolute path of the channel database. */
  readonly dbPath: string;
  /** The daemon connection, or null when no valid daemon config node is selected. */
  readonly connection: DaemonConnection | null;
  /**
   * Opens the database and the channel (once; later calls share the result).
   * Waits for the daemon when the caps must be derived from a seed the
   * database does not know yet. Rejects on configuration problems (missing
   * or mismatched caps), after which the next call tries again.
   */
  open(): Promise<ChannelStore>;
  /** The channel's read cap (for sharing). Needs the daemon only for a seed the database does not know. */
  readCap(): Promise<Buffer>;
}

function isChannelConfigNode(n: unknown): n is ChannelConfigNode {
  return typeof n === 'object' && n !== null && (n as Node).type === CHANNEL_TYPE && typeof (n as ChannelConfigNode).open === 'function';
}

/** Minimal shapes of the admin HTTP API (express) the read-cap endpoint uses. */
interface AdminRequest {
  params: Record<string, string>;
}
interface AdminResponse {
  status(code: number): AdminResponse;
  set(field: string, value: string): AdminResponse;
  json(body: unknown): void;
}
type AdminHandler = (req: AdminRequest, res: AdminResponse, next: () => void) => void;
interface AdminRED extends NodeAPI {
  httpAdmin?: { get(path: string, ...handlers: AdminHandler[]): void };
  auth?: { needsPermission(permission: string): AdminHandler };
}

/**
 * An owned channel whose credentials hold neither a seed nor a write cap, and
 * whose name the database does not know. A ChannelError, so it counts as a
 * configuration error; its code shows on the status as "no credentials".
 */
class ChannelCredentialsMissingError extends ChannelError {
  constructor(name: string) {
    super(
      'NO_CREDENTIALS',
      `${CHANNEL_TYPE} "${name}": an owned channel needs a seed or a write cap in its credentials, and they are empty ` +
        '(for example a flow imported and deployed without opening its channel node). Open the channel node in the editor ' +
        'and save it (Update generates a random seed), then deploy.',
    );
  }
}

/** Errors a retry cannot fix: wrong or missing caps, a name clash, bad input. */
function isConfigurationError(err: unknown): boolean {
  if (err instanceof ChannelError) return (err as KatzenpostError).code !== 'NO_CLIENT';
  return err instanceof ConfigError || err instanceof InvalidArgumentError;
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}

function katzenpostChannel(RED: NodeAPI): void {
  const red = RED as AdminRED;

  function KatzenpostChannelNode(this: ChannelConfigNode, def: ChannelDef): void {
    RED.nodes.createNode(this, def);
    const node = this as ChannelConfigNode & Record<string, unknown>;
    const name = String(def.name ?? '').trim();
    const mode = def.mode === 'imported' ? 'imported' : 'owned';
    const userDir = typeof RED.settings.userDir === 'string' && RED.settings.userDir ? RED.settings.userDir : join(homedir(), '.node-red');
    const dbPath = resolvePath(userDir, String(def.database ?? '').trim() || DEFAULT_DB_FILE);
    const connection = configNodeOf(RED, def.daemon, isDaemonConfigNode)?.connection ?? null;
    const creds = (node.credentials ?? {}) as Record<string, string | undefined>;
    const userId = `${node.id}:channel`;

    Object.defineProperties(node, {
      channelName: { value: name, enumerable: true },
      mode: { value: mode, enumerable: true },
      daemonId: { value: def.daemon ?? '', enumerable: true },
      dbPath: { value: dbPath, enumerable: true },
      connection: { value: connection, enumerable: true },
    });

    let shared: SharedStore | null = null;
    let opening: Promise<ChannelStore> | null = null;
    let closed = false;
    let unsubscribe: (() => void) | null = null;
    let warnedEmptyCredentials = false;

    /** Caps from the credentials; null for an owned channel whose credentials are empty. */
    function credentialCaps(): ChannelCaps | null {
      const text = (field: string) => String(creds[field] ?? '').trim();
      if (mode === 'imported') {
        if (!text('readCap')) {
          throw new ConfigError(`${CHANNEL_TYPE} "${name}": an imported channel needs the shared read cap in its credentials`);
        }
        return { kind: 'imported', readCap: decodeKeyText(text('readCap'), `${CHANNEL_TYPE} credentials: read cap`, SIZES.readCap) };
      }
      if (text('writeCap')) {
        return { kind: 'owned', writeCap: decodeKeyText(text('writeCap'), `${CHANNEL_TYPE} credentials: write cap`, SIZES.writeCap) };
      }
      if (text('seed')) return { kind: 'owned', seed: decodeKeyText(text('seed'), `${CHANNEL_TYPE} credentials: seed`, 32) };
      return null;
    }

    /** Keeps the store's client for this channel in step with the daemon connection. */
    function bindClient(store: ChannelStore): void {
      store.setClient(connection?.currentClient() ?? null, name);
    }

    /**
     * Runs fn with a connected client in the store, registering this config
     * node as a daemon user meanwhile (so the connection starts even if no
     * send or receive node has registered yet). Retries until it works or
     * the node closes; configuration errors end it at once.
     */
    async function withDaemon<T>(store: ChannelStore, fn: () => Promise<T>): Promise<T> {
      if (!connection) throw new ConfigError(`${CHANNEL_TYPE} "${name}": no katzenpost-daemon config node is selected`);
      connection.register(userId, {});
      try {
        for (let attempt = 0; ; attempt++) {
          if (closed) throw new ConfigError(`${CHANNEL_TYPE} "${name}" was closed`);
          try {
            await connection.acquire({ timeoutMs: 30_000 });
            bindClient(store);
            return await fn();
          } catch (err) {
            if (isConfigurationError(err) || closed) throw err;
            node.debug(`${CHANNEL_TYPE} "${name}": waiting for the daemon (${(err as Error).message})`);
            await delay(Math.min(1000 * 2 ** attempt, 10_000));
          }
        }
      } finally {
        await connection.deregister(userId);
      }
    }

    async function doOpen(): Promise<ChannelStore> {
      if (!name) throw new ConfigError(`${CHANNEL_TYPE}: the channel has no name`);
      const caps = credentialCaps();
      if (!shared) {
        shared = await acquireSharedStore({ path: dbPath, logger: { debug: (m) => node.debug(m), info: (m) => node.log(m), warn: (m) => node.warn(m), error: (m) => node.warn(m) } });
        if (closed) {
          await shared.release();
          shared = null;
          throw new ConfigError(`${CHANNEL_TYPE} "${name}" was closed`);
        }
        const store = shared.store;
        bindClient(store);
        unsubscribe = connection?.on('state', () => bindClient(store)) ?? null;
      }
      const store = shared.store;
      if (caps) {
        // A seed the database does not know needs the daemon (new_keypair); everything else opens locally.
        try {
          await store.openChannel(name, caps);
        } catch (err) {
          if (isConfigurationError(err)) throw err;
          await withDaemon(store, () => store.openChannel(name, caps));
        }
      } else {
        // No identity in the credentials: never invent one here (it would live only in the database).
        const existing = store.get(name);
        if (!existing) throw new ChannelCredentialsMissingError(name);
        if (existing.kind !== 'owned') {
          throw new ConfigError(`${CHANNEL_TYPE} "${name}": the database holds it as imported, but the form says owned and has no seed`);
        }
        if (!warnedEmptyCredentials) {
          warnedEmptyCredentials = true;
          node.warn(
            `${CHANNEL_TYPE} "${name}": the credentials are empty; using the caps the channel database ${dbPath} holds under this name. ` +
              'They live only there: back that file up, since losing it loses the channel.',
          );
        }
      }
      return store;
    }

    node.open = () => {
      if (closed) return Promise.reject(new ConfigError(`${CHANNEL_TYPE} "${name}" was closed`));
      if (!opening) {
        const p = doOpen();
        opening = p;
        p.catch(() => {
          if (opening === p) opening = null;
        });
      }
      return opening;
    };

    node.readCap = async () => {
      const caps = credentialCaps();
      if (caps?.kind === 'imported') return Buffer.from(caps.readCap);
      if (caps?.writeCap) return Buffer.from(caps.writeCap.subarray(SIZES.writeCap - SIZES.readCap));
      const store = await node.open();
      return store.shareReadCap(name);
    };

    node.on('close', (_removed: boolean, done: () => void) => {
      closed = true;
      unsubscribe?.();
      const s = shared;
      shared = null;
      if (!s) return done();
      try {
        s.store.setClient(null, name);
      } catch {
        // store already closed
      }
      s.release().finally(() => done());
    });
  }

  RED.nodes.registerType(CHANNEL_TYPE, KatzenpostChannelNode as never, {
    credentials: {
      seed: { type: 'password' },
      writeCap: { type: 'password' },
      readCap: { type: 'password' },
    },
  });

  // The editor's "show read cap" button. The read cap is a secret (it reads
  // the whole channel), hence a permission of its own and no caching.
  if (red.httpAdmin && red.auth) {
    red.httpAdmin.get(`/${CHANNEL_TYPE}/:id/read-cap`, red.auth.needsPermission(READ_PERMISSION), (req, res) => {
      const target = RED.nodes.getNode(req.params.id);
      res.set('Cache-Control', 'no-store');
      if (!isChannelConfigNode(target)) {
        res.status(404).json({ error: 'channel not deployed: deploy it first, then ask again' });
        return;
      }
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error('the daemon did not answer in time')), 15_000);
        timer.unref();
      });
      Promise.race([target.readCap(), timeout])
        .finally(() => clearTimeout(timer))
        .then(
          (cap) => res.json({ channel: target.channelName, readCap: cap.toString('hex') }),
          (err: Error) => res.status(503).json({ error: err.message }),
        );
    });
  }
}

// The send and receive nodes reach the config node's types through this
// namespace (a node file must have `export =` as its only export).
// eslint-disable-next-line @typescript-eslint/no-namespace
namespace katzenpostChannel {
  export type ConfigNode = ChannelConfigNode;
  export const TYPE = CHANNEL_TYPE;
  export const isConfigNode = isChannelConfigNode;
  /** Errors a retry cannot fix (missing or mismatched caps, bad credentials): report once, until redeploy. */
  export const isConfigError = isConfigurationError;
}

export = katzenpostChannel;
