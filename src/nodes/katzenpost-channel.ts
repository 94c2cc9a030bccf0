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
 * Kinds "invite" and "join" introduce two parties with a Contact Voucher
 * instead of a pasted read cap (lib/introducer.ts runs it in the background
 * from deploy on, resuming from the database). Each side has an OUTGOING
 * channel under the channel's own name (from the seed in the credentials)
 * that katzenpost-channel-send writes, and, once introduced, an INCOMING one
 * under "<name>/incoming" (the other side's) that katzenpost-channel-receive
 * reads. The voucher is a secret: only the permission-protected voucher
 * endpoint below returns it, never a log line, a status or the flow.
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
import { EventEmitter } from 'node:events';
import { ConfigError, InvalidArgumentError, KatzenpostError } from '../client/errors';
import { Backoff } from '../util/backoff';
import { pause, withDeadline } from '../util/deadline';
import { ChannelError, acquireSharedStore, formatVoucher, parseVoucher, type ChannelCaps, type ChannelStore, type SharedStore } from '../channels';
import { Introducer, IntroductionError, isFatalIntroductionError, type IntroductionProgress } from './lib/introducer';
import { qrDataUrl } from './lib/qr';
import { configNodeOf, decodeKeyText, isDaemonConfigNode, SIZES, statusText, type DaemonConnection } from './shared';
import type { Node, NodeAPI, NodeDef, NodeStatus } from './types';

const CHANNEL_TYPE = 'katzenpost-channel';
const MODES: readonly ChannelMode[] = ['owned', 'imported', 'invite', 'join'];
const INCOMING_SUFFIX = '/incoming';
const READ_PERMISSION = 'katzenpost-channel.read';
const DEFAULT_DB_FILE = 'katzenpost-channels.db';

type ChannelMode = 'owned' | 'imported' | 'invite' | 'join';
/** Which of the channel's store channels a user node works on: send writes the outgoing one, receive reads the incoming one. */
type Direction = 'send' | 'receive';

interface ChannelDef extends NodeDef {
  daemon?: string;
  mode?: ChannelMode;
  database?: string;
  /** Invite: the name the other side sees. */
  displayName?: string;
}

/** The runtime object of a katzenpost-channel config node, as the send and receive nodes see it. */
interface ChannelConfigNode extends Node {
  /** The channel's name (its key in the database). */
  readonly channelName: string;
  readonly mode: ChannelMode;
  /** The store channel katzenpost-channel-send writes: the channel's name. */
  readonly sendName: string;
  /** The store channel katzenpost-channel-receive reads: the channel's name; invite and join: "<name>/incoming". */
  readonly receiveName: string;
  /** The katzenpost-daemon config node's id. */
  readonly daemonId: string;
  /** Absolute path of the channel database. */
  readonly dbPath: string;
  /** The daemon connection, or null when no valid daemon config node is selected. */
  readonly connection: DaemonConnection | null;
  /**
   * Opens the database and the direction's channel (once; later calls share
   * the result). Waits for the daemon when the caps must be derived from a
   * seed the database does not know yet, and (invite, and join's receive
   * side) until the introduction is done. Rejects on configuration problems
   * (missing or mismatched caps), after which the next call tries again; a
   * failed introduction stays failed until redeployed.
   */
  open(direction?: Direction): Promise<ChannelStore>;
  /** The channel's read cap (for sharing). Needs the daemon only for a seed the database does not know. */
  readCap(): Promise<Buffer>;
  /** Invite and join: how far the introduction got; null for owned and imported channels. */
  introduction(): IntroductionProgress | null;
  /** The status user nodes show while the introduction runs; null when it is done (or there is none). */
  introductionStatus(): NodeStatus | null;
  /** Calls `listener` when the introduction moves on or fails; returns the function that stops it. */
  onIntroduction(listener: (p: IntroductionProgress) => void): () => void;
  /** Invite: the voucher as people exchange it, once minted. A secret: for the voucher endpoint only. */
  voucher(): Promise<string>;
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

/** An invite or join channel without the seed of its outgoing channel. */
class IntroductionSeedMissingError extends ChannelError {
  constructor(name: string, mode: ChannelMode) {
    super(
      'NO_CREDENTIALS',
      `${CHANNEL_TYPE} "${name}": a channel of kind ${mode} needs the seed of its outgoing channel in its credentials, and it is empty. ` +
        'Open the channel node in the editor and save it (Update generates a random seed), then deploy.',
    );
  }
}

/** Errors a retry cannot fix: wrong or missing caps, a name clash, bad input, a failed introduction. */
function isConfigurationError(err: unknown): boolean {
  if (err instanceof ChannelError) return (err as KatzenpostError).code !== 'NO_CLIENT';
  return err instanceof ConfigError || err instanceof InvalidArgumentError || isFatalIntroductionError(err);
}

/** The voucher credential, read with parseVoucher; the error names the field as the editor does. */
function readVoucherCredential(name: string, text: string): Buffer {
  if (!text) {
    throw new ChannelError(
      'NO_VOUCHER',
      `${CHANNEL_TYPE} "${name}": a channel of kind join needs the voucher the other side shows; paste it into the Voucher field and deploy`,
    );
  }
  try {
    return parseVoucher(text);
  } catch (err) {
    if (!(err instanceof InvalidArgumentError)) throw err;
    const got = /, got (.*)$/.exec(err.message)?.[1];
    throw new InvalidArgumentError(`${CHANNEL_TYPE} "${name}" credentials: voucher`, err.expected, got);
  }
}

/** How long an editor request (read cap, voucher) waits for the daemon. */
const ADMIN_ANSWER_MS = 15_000;

function katzenpostChannel(RED: NodeAPI): void {
  const red = RED as AdminRED;

  function KatzenpostChannelNode(this: ChannelConfigNode, def: ChannelDef): void {
    RED.nodes.createNode(this, def);
    const node = this as ChannelConfigNode & Record<string, unknown>;
    const name = String(def.name ?? '').trim();
    const mode: ChannelMode = MODES.includes(def.mode as ChannelMode) ? (def.mode as ChannelMode) : 'owned';
    const introducing = mode === 'invite' || mode === 'join';
    const sendName = name;
    const receiveName = introducing ? `${name}${INCOMING_SUFFIX}` : name;
    const userDir = typeof RED.settings.userDir === 'string' && RED.settings.userDir ? RED.settings.userDir : join(homedir(), '.node-red');
    const dbPath = resolvePath(userDir, String(def.database ?? '').trim() || DEFAULT_DB_FILE);
    const connection = configNodeOf(RED, def.daemon, isDaemonConfigNode)?.connection ?? null;
    const creds = (node.credentials ?? {}) as Record<string, string | undefined>;
    const userId = `${node.id}:channel`;

    Object.defineProperties(node, {
      channelName: { value: name, enumerable: true },
      mode: { value: mode, enumerable: true },
      sendName: { value: sendName, enumerable: true },
      receiveName: { value: receiveName, enumerable: true },
      daemonId: { value: def.daemon ?? '', enumerable: true },
      dbPath: { value: dbPath, enumerable: true },
      connection: { value: connection, enumerable: true },
    });

    let shared: SharedStore | null = null;
    let storeOpening: Promise<ChannelStore> | null = null;
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
      if (!introducing && text('writeCap')) {
        return { kind: 'owned', writeCap: decodeKeyText(text('writeCap'), `${CHANNEL_TYPE} credentials: write cap`, SIZES.writeCap) };
      }
      if (text('seed')) return { kind: 'owned', seed: decodeKeyText(text('seed'), `${CHANNEL_TYPE} credentials: seed`, 32) };
      if (introducing) throw new IntroductionSeedMissingError(name, mode);
      return null;
    }

    /** Keeps the store's client for this channel's store channels in step with the daemon connection. */
    function bindClient(store: ChannelStore): void {
      const client = connection?.currentClient() ?? null;
      store.setClient(client, sendName);
      if (receiveName !== sendName) store.setClient(client, receiveName);
    }

    /** The shared channel database (opened once; later calls share it). */
    function openStore(): Promise<ChannelStore> {
      if (closed) return Promise.reject(new ConfigError(`${CHANNEL_TYPE} "${name}" was closed`));
      if (!storeOpening) {
        const p = (async () => {
          const s = await acquireSharedStore({
            path: dbPath,
            logger: { debug: (m) => node.debug(m), info: (m) => node.log(m), warn: (m) => node.warn(m), error: (m) => node.warn(m) },
          });
          if (closed) {
            await s.release();
            throw new ConfigError(`${CHANNEL_TYPE} "${name}" was closed`);
          }
          shared = s;
          bindClient(s.store);
          unsubscribe = connection?.on('state', () => bindClient(s.store)) ?? null;
          return s.store;
        })();
        storeOpening = p;
        p.catch(() => {
          if (storeOpening === p) storeOpening = null;
        });
      }
      return storeOpening;
    }

    // Invite and join: the introduction runs from deploy on. A form that cannot work is one configuration error for every direction.
    const progressEvents = new EventEmitter();
    progressEvents.setMaxListeners(0);
    let introducer: Introducer | null = null;
    let setupError: Error | null = null;
    if (introducing) {
      try {
        if (!name) throw new ConfigError(`${CHANNEL_TYPE}: the channel has no name`);
        const caps = credentialCaps();
        const voucher = mode === 'join' ? readVoucherCredential(name, String(creds.voucher ?? '').trim()) : null;
        if (!connection) throw new ConfigError(`${CHANNEL_TYPE} "${name}": no katzenpost-daemon config node is selected`);
        if (!caps || caps.kind !== 'owned' || !caps.seed) throw new IntroductionSeedMissingError(name, mode);
        introducer = new Introducer({
          name,
          incomingName: receiveName,
          role: mode === 'invite' ? 'invite' : 'join',
          displayName: String(def.displayName ?? '').trim() || name,
          seed: Buffer.from(caps.seed),
          voucher,
          store: openStore,
          connection,
          userId: `${node.id}:introduction`,
          debug: (m) => node.debug(m),
        });
        introducer.onProgress((p) => progressEvents.emit('progress', p));
        introducer.start();
      } catch (err) {
        setupError = err as Error;
      }
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
      const backoff = new Backoff(1000, 10_000);
      try {
        for (;;) {
          if (closed) throw new ConfigError(`${CHANNEL_TYPE} "${name}" was closed`);
          try {
            await connection.acquire({ timeoutMs: 30_000 });
            bindClient(store);
            return await fn();
          } catch (err) {
            if (isConfigurationError(err) || closed) throw err;
            node.debug(`${CHANNEL_TYPE} "${name}": waiting for the daemon (${(err as Error).message})`);
            await pause(backoff.next()).promise;
          }
        }
      } finally {
        await connection.deregister(userId);
      }
    }

    async function doOpen(): Promise<ChannelStore> {
      if (!name) throw new ConfigError(`${CHANNEL_TYPE}: the channel has no name`);
      const caps = credentialCaps();
      const store = await openStore();
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

    node.open = (direction: Direction = 'send') => {
      if (closed) return Promise.reject(new ConfigError(`${CHANNEL_TYPE} "${name}" was closed`));
      if (setupError) return Promise.reject(setupError);
      if (introducer) {
        const failed = introducer.progress().error;
        if (failed) return Promise.reject(failed);
        // The join side's outgoing channel is an owned channel from the seed, usable at once; the rest waits for the introduction.
        if (mode === 'invite' || direction === 'receive') return introducer.done().then(openStore);
      }
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
      if (setupError) throw setupError;
      if (mode === 'invite' && !introducer?.progress().done) {
        throw new IntroductionError(name, 'not introduced yet, so its outgoing channel does not exist; show the voucher instead');
      }
      if (mode === 'invite') return (await node.open('send')).shareReadCap(sendName);
      const caps = credentialCaps();
      if (caps?.kind === 'imported') return Buffer.from(caps.readCap);
      if (caps?.writeCap) return Buffer.from(caps.writeCap.subarray(SIZES.writeCap - SIZES.readCap));
      const store = await node.open();
      return store.shareReadCap(name);
    };

    node.introduction = () => introducer?.progress() ?? null;

    node.introductionStatus = () => {
      const p = introducer?.progress();
      if (!p || p.done || p.error) return null;
      const key = p.step === 'starting' ? (p.role === 'invite' ? 'introducing-minting' : 'introducing-started') : `introducing-${p.step}`;
      return { fill: 'yellow', shape: 'ring', text: statusText(RED, key, {}) };
    };

    node.onIntroduction = (listener) => {
      progressEvents.on('progress', listener);
      return () => progressEvents.off('progress', listener);
    };

    node.voucher = async () => {
      if (setupError) throw setupError;
      if (!introducer || mode !== 'invite') throw new ConfigError(`${CHANNEL_TYPE} "${name}": only a channel of kind invite shows a voucher`);
      return formatVoucher(await introducer.voucher());
    };

    node.on('close', (_removed: boolean, done: () => void) => {
      closed = true;
      unsubscribe?.();
      progressEvents.removeAllListeners();
      const stopping = introducer ? introducer.stop() : Promise.resolve();
      stopping
        .catch(() => undefined)
        .then(async () => {
          const s = shared;
          shared = null;
          if (!s) return;
          try {
            s.store.setClient(null, sendName);
            if (receiveName !== sendName) s.store.setClient(null, receiveName);
          } catch {
            // store already closed
          }
          await s.release();
        })
        .finally(() => done());
    });
  }

  RED.nodes.registerType(CHANNEL_TYPE, KatzenpostChannelNode as never, {
    credentials: {
      seed: { type: 'password' },
      writeCap: { type: 'password' },
      readCap: { type: 'password' },
      voucher: { type: 'password' },
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
      withDeadline(ADMIN_ANSWER_MS, () => new Error('the daemon did not answer in time'), () => target.readCap())
        .then(
          (cap) => res.json({ channel: target.channelName, readCap: cap.toString('hex') }),
          (err: Error) => res.status(503).json({ error: err.message }),
        );
    });

    // The editor's "show voucher" button (kind invite): the voucher as text and as a QR code. As secret as a
    // read cap (whoever types it in first becomes the other side), hence the same permission and no caching.
    red.httpAdmin.get(`/${CHANNEL_TYPE}/:id/voucher`, red.auth.needsPermission(READ_PERMISSION), (req, res) => {
      const target = RED.nodes.getNode(req.params.id);
      res.set('Cache-Control', 'no-store');
      if (!isChannelConfigNode(target)) {
        res.status(404).json({ error: 'channel not deployed: deploy it first, then ask again' });
        return;
      }
      if (target.mode !== 'invite') {
        res.status(409).json({ error: `channel "${target.channelName}" is of kind ${target.mode}: only a channel of kind invite has a voucher to show` });
        return;
      }
      withDeadline(ADMIN_ANSWER_MS, () => new Error('the voucher is not minted yet: the daemon did not answer in time'), () => target.voucher())
        .then(
          (voucher) => {
            // Capitals: the QR code's compact alphanumeric mode; the channel form reads either case.
            res.json({ channel: target.channelName, voucher, qr: qrDataUrl(voucher.toUpperCase()) });
            RED.log.info(`katzenpost: the voucher of channel "${target.channelName}" was shown in the editor`);
          },
          (err: Error) => res.status(isConfigurationError(err) ? 409 : 503).json({ error: err.message }),
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
