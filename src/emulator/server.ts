/**
 * The emulated kpclientd itself: it listens, accepts connections, reads
 * their request frames and dispatches each request to the part that
 * answers it (PROTOCOL.md §1-§2, §7.6, §10; PIGEONHOLE.md §2). The parts
 * live beside it: connection.ts (framing, send queue, backpressure),
 * sessions.ts (tokens, resume, grace period), documents.ts (epochs and the
 * PKI document), faults.ts (fault injection), arq.ts (the in-flight ARQ
 * table), mixnet.ts (the simulated mixnet and its timing), local.ts and
 * current.ts (requests answered without the mixnet).
 *
 * It has no anonymity whatsoever: it is a single process holding every
 * "box" in memory, for tests and demos.
 */
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { blake2b256 } from '../client/crypto';
import { sleep } from '../util/deadline';
import {
  DEFAULT_FRAME_TIMEOUT_MS,
  DEFAULT_MAX_FRAME_LENGTH,
  DEFAULT_SPHINX_GEOMETRY,
  encodeFrame,
  encodeResponse,
  INSTANCE_TOKEN_LENGTH,
  type PigeonholeGeometry,
  type ResponseKind,
  type SphinxGeometry,
} from '../wire';
import { ArqTable, type Op } from './arq';
import { Connection, enforceMemoryCap } from './connection';
import { handleCurrentRequest, profileFor, type ProtocolLevel, type ProtocolProfile } from './current';
import { PkiDocuments } from './documents';
import { Faults } from './faults';
import { clearStaleSocket, formatTcp, parseListenAddress, type ListenAddress } from './listen';
import * as local from './local';
import { SimulatedMixnet } from './mixnet';
import { DEFAULT_LISTEN, DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_SEND_QUEUE_BYTES, type Emulator, type EmulatorOptions } from './options';
import { boxGeometry, EnvelopeCrypto, type BoxGeometry } from './pigeonhole';
import {
  couriersOf,
  createNetwork,
  DEFAULT_EPOCH_PERIOD_MS,
  epochAt,
  pigeonholeGeometryMap,
  replicaEpochOf,
  sphinxGeometryMap,
  type Courier,
  type Network,
} from './pki';
import { decodeRequest, RequestDecodeError, UnknownRequestError, type RequestBody } from './requests';
import { SessionTable } from './sessions';
import { COURIER_DEDUP_TTL_MS, COURIER_PATIENCE_MS, createTiming, LATENCY_MODES, type LatencyMode } from './timing';
import { listenWebSocket, type WebSocketListener } from './websocket';

// What this module exported before the emulator was split into modules, from where it lives now.
export { COPY_VERDICT_TTL_MS } from './mixnet';
export { HANDSHAKE_PKI_WAIT_MS } from './documents';
export { parseListenAddress } from './listen';
export { MAX_QUEUED_RESPONSES } from './sessions';
export { DEFAULT_GRACE_PERIOD_MS, DEFAULT_LISTEN, DEFAULT_MAX_BUFFERED_BYTES, DEFAULT_MAX_SEND_QUEUE_BYTES, type Emulator, type EmulatorOptions } from './options';

/** Pause between shutdown_event and closing the socket (§10.2). */
export const SHUTDOWN_PAUSE_MS = 200;

export class EmulatorServer implements Emulator {
  readonly latency: LatencyMode;
  readonly maxSendQueueBytes: number;
  readonly maxBufferedBytes: number;

  private readonly epochPeriodMs: number;
  private readonly framing: { maxFrameLength: number; frameTimeoutMs: number };
  private readonly sphinx: SphinxGeometry = DEFAULT_SPHINX_GEOMETRY;
  private readonly profile: ProtocolProfile;
  private readonly pigeonhole: PigeonholeGeometry;
  private readonly g: BoxGeometry;
  private readonly logSink: (line: string) => void;
  private readonly network: Network;
  private readonly courierList: Courier[];
  private readonly crypto: EnvelopeCrypto;
  private readonly listenAddress: ListenAddress;

  private server: net.Server | null = null;
  private boundAddress = '';
  private wsListener: WebSocketListener | null = null;
  private readonly wsListen: string | null;
  private token: Buffer = randomBytes(INSTANCE_TOKEN_LENGTH);
  private readonly connections = new Set<Connection>();
  private readonly arq: ArqTable;
  private readonly sessions: SessionTable;
  private readonly mixnet: SimulatedMixnet;
  private readonly documents: PkiDocuments;
  private readonly faults: Faults;
  private stopped = false;
  /** pkiDocumentDelayMs, armed when the listener starts. */
  private pendingDocumentDelayMs: number | null;

  constructor(options: EmulatorOptions = {}) {
    const latency = options.latency ?? 'fast';
    if (!LATENCY_MODES.includes(latency)) throw new RangeError(`latency must be one of ${LATENCY_MODES.join(', ')}`);
    const couriers = options.couriers ?? 3;
    const replicas = options.replicas ?? 5;
    if (!Number.isInteger(couriers) || couriers < 2 || couriers > 64) throw new RangeError('couriers must be an integer from 2 to 64');
    if (!Number.isInteger(replicas) || replicas < 2 || replicas > 255) throw new RangeError('replicas must be an integer from 2 to 255');
    this.epochPeriodMs = options.epochPeriodMs ?? DEFAULT_EPOCH_PERIOD_MS;
    if (!(this.epochPeriodMs >= 100)) throw new RangeError('epochPeriodMs must be at least 100');
    this.latency = latency;
    const timing = createTiming(latency);
    this.profile = profileFor(options.protocol);
    this.pigeonhole = this.profile.pigeonhole;
    this.wsListen = options.wsListen ?? null;
    const graceMs = options.sessionGracePeriodMs ?? this.profile.gracePeriodMs;
    this.maxSendQueueBytes = options.maxSendQueueBytes ?? DEFAULT_MAX_SEND_QUEUE_BYTES;
    this.maxBufferedBytes = options.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED_BYTES;
    if (!(this.maxBufferedBytes > 0)) throw new RangeError('maxBufferedBytes must be a positive number');
    const frameTimeoutMs = options.frameTimeoutMs ?? DEFAULT_FRAME_TIMEOUT_MS;
    if (!(frameTimeoutMs > 0 && Number.isFinite(frameTimeoutMs))) throw new RangeError('frameTimeoutMs must be a positive number');
    this.framing = { maxFrameLength: options.maxFrameLength ?? DEFAULT_MAX_FRAME_LENGTH, frameTimeoutMs };
    const online = options.online ?? true;
    const courierPatienceMs = options.courierPatienceMs ?? COURIER_PATIENCE_MS;
    if (!(courierPatienceMs >= 0 && Number.isFinite(courierPatienceMs))) throw new RangeError('courierPatienceMs must be a non-negative number');
    const courierDedupTtlMs = options.courierDedupTtlMs ?? (timing.mode === 'realistic' ? COURIER_DEDUP_TTL_MS : 0);
    if (!(courierDedupTtlMs >= 0 && Number.isFinite(courierDedupTtlMs))) throw new RangeError('courierDedupTtlMs must be a non-negative number');
    if (options.pkiDocumentDelayMs !== undefined && !(options.pkiDocumentDelayMs >= 0 && Number.isFinite(options.pkiDocumentDelayMs))) {
      throw new RangeError('pkiDocumentDelayMs must be a non-negative number');
    }
    this.pendingDocumentDelayMs = options.pkiDocumentDelayMs ?? null;
    this.logSink = options.log ?? (() => {});
    this.listenAddress = parseListenAddress(options.listen ?? DEFAULT_LISTEN);
    this.g = boxGeometry(this.pigeonhole);
    this.crypto = new EnvelopeCrypto(randomBytes(32), this.g);
    const epoch = epochAt(Date.now(), this.epochPeriodMs);
    this.network = createNetwork({ serviceNodes: couriers, replicas, genesisEpoch: epoch });
    this.courierList = couriersOf(this.network);

    // The parts, wired to this server through small host objects.
    const emu = this;
    const log = (line: string) => this.log(line);
    const frameOf = (kind: string, body: Record<string, unknown>) => this.frameOf(kind, body);
    const statusFrame = () => this.statusFrame();
    this.arq = new ArqTable({ frameOf, deliver: (s, frame) => this.sessions.deliver(s, frame) });
    this.sessions = new SessionTable({ log, frameOf }, this.arq, graceMs);
    this.mixnet = new SimulatedMixnet({ hasDocument: () => this.documents.present, log, frameOf, deliver: (s, frame) => this.sessions.deliver(s, frame) }, this.arq, {
      timing,
      crypto: this.crypto,
      network: this.network,
      courierList: this.courierList,
      sphinx: this.sphinx,
      courierInvalidEnvelopeCode: this.profile.courierInvalidEnvelopeCode,
      courierPatienceMs,
      courierDedupTtlMs,
      online,
    });
    this.documents = new PkiDocuments(
      {
        connections: this.connections,
        get stopped() {
          return emu.stopped;
        },
        log,
        frameOf,
        statusFrame,
      },
      {
        network: this.network,
        epochPeriodMs: this.epochPeriodMs,
        epoch,
        sphinx: this.sphinx,
        droppedDocumentFields: this.profile.droppedDocumentFields,
        handshakeWaitsForDocument: this.profile.handshakeWaitsForDocument,
        present: !options.noPkiDocument && this.pendingDocumentDelayMs === null,
      },
    );
    this.faults = new Faults({ connections: this.connections, link: this.mixnet, statusFrame, log });
  }

  log(line: string): void {
    this.logSink(line);
  }

  /** A response frame with this protocol level's full envelope (20 or 25 keys). */
  private frameOf(kind: string, body: Record<string, unknown>): Buffer {
    return encodeFrame(encodeResponse(kind, body, this.profile.responseKinds));
  }

  get protocol(): ProtocolLevel {
    return this.profile.level;
  }

  get wsAddress(): string | null {
    return this.wsListener?.address ?? null;
  }

  /** Every outgoing frame waits until this time (stallReplies); 0 = no stall. */
  get stalledUntil(): number {
    return this.faults.stalledUntil;
  }

  set stalledUntil(until: number) {
    this.faults.stalledUntil = until;
  }

  /**
   * Keep the memory of all connections together under maxBufferedBytes by
   * dropping the connection that holds the most (on a tie, the newest),
   * until the rest fit. Called whenever a connection's share grows.
   */
  enforceMemoryCap(): void {
    enforceMemoryCap(this.connections, this.maxBufferedBytes, (line) => this.log(line));
  }

  // ---------------------------------------------------------------- lifecycle
  async start(): Promise<void> {
    const a = this.listenAddress;
    if (a.kind === 'unix') await clearStaleSocket(a.path);
    const server = net.createServer((socket) => this.accept(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      const onListening = () => {
        server.off('error', reject);
        resolve();
      };
      if (a.kind === 'unix') server.listen(a.path.startsWith('@') ? `\0${a.path.slice(1)}` : a.path, onListening);
      else server.listen(a.port, a.host, onListening);
    });
    server.on('error', (e) => this.log(`listener error: ${e.message}`));
    this.server = server;
    if (this.wsListen !== null) {
      try {
        this.wsListener = await listenWebSocket(this.wsListen, (stream) => this.accept(stream), (line) => this.log(line));
      } catch (e) {
        server.close();
        throw e;
      }
    }
    if (a.kind === 'unix') this.boundAddress = a.path;
    else this.boundAddress = formatTcp(a.host, (server.address() as net.AddressInfo).port);
    this.documents.start();
    if (this.pendingDocumentDelayMs !== null) this.delayPkiDocument(this.pendingDocumentDelayMs);
    this.pendingDocumentDelayMs = null;
    this.log(
      `listening on ${this.boundAddress}${this.wsListener ? ` and ${this.wsListener.address}` : ''} (protocol ${this.profile.level}, latency ${this.latency}, epoch ${this.documents.epoch}${this.documents.present ? '' : ', no PKI document yet'})`,
    );
  }

  get address(): string {
    return this.boundAddress;
  }

  get instanceToken(): Buffer {
    return Buffer.from(this.token);
  }

  get epoch(): number {
    return this.documents.epoch;
  }

  connectionCount(): number {
    return this.connections.size;
  }

  couriers(): { identityHash: Buffer; queueId: Buffer }[] {
    return this.courierList.map((c) => ({ identityHash: Buffer.from(c.identityHash), queueId: Buffer.from(c.queueId) }));
  }

  isOnline(): boolean {
    return this.mixnet.online;
  }

  async stop(options: { graceful?: boolean } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const graceful = options.graceful ?? true;
    this.documents.stop();
    this.faults.clearTimers();
    const server = this.server;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    const wsClosed = this.wsListener ? this.wsListener.close() : Promise.resolve();
    if (graceful && this.connections.size > 0) {
      const shutdown = this.frameOf('shutdown_event', {});
      for (const c of this.connections) c.send(shutdown, true);
      await sleep(SHUTDOWN_PAUSE_MS);
    }
    for (const c of [...this.connections]) c.destroy();
    this.sessions.destroyAll();
    this.mixnet.shutdown();
    await closed;
    await wsClosed;
    this.log('stopped');
  }

  async restart(options: { keepState?: boolean } = {}): Promise<void> {
    if (this.stopped) throw new Error('emulator is stopped');
    const keep = options.keepState ?? true;
    // A new daemon process: new instance token, no connections, no sessions, no ARQ state.
    this.token = randomBytes(INSTANCE_TOKEN_LENGTH);
    for (const c of [...this.connections]) c.destroy();
    this.sessions.destroyAll();
    this.faults.stalledUntil = 0;
    if (!keep) this.mixnet.reset();
    this.log(`restarted (${keep ? 'state kept' : 'fresh state'}), new instance token`);
  }

  // ---------------------------------------------------------------- faults (faults.ts, documents.ts)
  setOnline(online: boolean): void {
    this.faults.setOnline(online);
  }

  advanceEpoch(): void {
    this.documents.advanceEpoch();
  }

  injectMalformedFrame(): void {
    this.faults.injectMalformedFrame();
  }

  injectOversizeLengthPrefix(): void {
    this.faults.injectOversizeLengthPrefix();
  }

  stallReplies(ms: number): void {
    this.faults.stallReplies(ms);
  }

  hasPkiDocument(): boolean {
    return this.documents.present;
  }

  withholdPkiDocument(): void {
    this.documents.withhold();
  }

  delayPkiDocument(ms: number): void {
    this.documents.delay(ms);
  }

  publishPkiDocument(): void {
    this.documents.publish();
  }

  // ---------------------------------------------------------------- frames every part sends
  private statusFrame(): Buffer {
    return this.frameOf('connection_status_event', {
      is_connected: this.mixnet.online,
      err: null,
      instance_token: this.token,
      sphinx_geometry: sphinxGeometryMap(this.sphinx),
      pigeonhole_geometry: pigeonholeGeometryMap(this.pigeonhole),
    });
  }

  private localContext(): local.LocalContext {
    return {
      g: this.g,
      crypto: this.crypto,
      replica: { epoch: replicaEpochOf(this.documents.epoch, this.epochPeriodMs), replicaCount: this.network.replicas.length },
    };
  }

  // ---------------------------------------------------------------- connections
  private accept(socket: Duplex): void {
    if (this.stopped) {
      socket.destroy();
      return;
    }
    (socket as Partial<net.Socket>).setNoDelay?.(true);
    const session = this.sessions.create();
    const conn = new Connection(this, socket, session, this.framing);
    session.conn = conn;
    this.connections.add(conn);
    this.log(`conn ${conn.id}: accepted (${this.connections.size} open)`);
    this.documents.handshake(conn);
    socket.on('data', (chunk: Buffer) => this.onData(conn, chunk));
    socket.on('error', (e) => this.log(`conn ${conn.id}: ${e.message}`));
    socket.on('close', () => this.onClose(conn));
  }

  private onData(conn: Connection, chunk: Buffer): void {
    if (conn.closed) return;
    let frames: Buffer[];
    try {
      frames = conn.decoder.push(chunk);
    } catch (e) {
      this.log(`conn ${conn.id}: ${(e as Error).message}; closing`);
      conn.destroy();
      return;
    }
    if (conn.decoder.reservedBytes > 0) this.enforceMemoryCap();
    for (const f of frames) {
      if (conn.closed) return;
      this.onFrame(conn, f);
    }
  }

  private onFrame(conn: Connection, frame: Buffer): void {
    let req;
    try {
      req = decodeRequest(frame, this.profile.requestSchemas);
    } catch (e) {
      if (e instanceof UnknownRequestError && this.profile.dropUnknownRequests) {
        // A current daemon logs and drops it (PROTOCOL.md §9.2); a pinned one would abort.
        this.log(`conn ${conn.id}: ${e.message}; dropped`);
        return;
      }
      // The daemon closes the connection on an undecodable request, without an error frame (§1.2).
      this.log(`conn ${conn.id}: ${e instanceof RequestDecodeError ? e.message : String(e)}; closing the connection`);
      conn.destroy();
      return;
    }
    this.log(`conn ${conn.id}: ${req.kind}`);
    // A client that never sends session_token must still receive broadcasts.
    if (!conn.handshakeReplied && req.kind !== 'session_token') conn.releaseHeld();
    try {
      this.dispatch(conn, req.kind, req.body);
    } catch (e) {
      this.log(`conn ${conn.id}: internal error handling ${req.kind}: ${(e as Error).stack ?? e}; closing`);
      conn.destroy();
    }
  }

  private onClose(conn: Connection): void {
    conn.closed = true;
    conn.decoder.close(); // the peer left mid-frame: release it and its deadline
    this.connections.delete(conn);
    this.documents.forget(conn);
    this.log(`conn ${conn.id}: closed (${this.connections.size} open)`);
    this.sessions.disconnected(conn);
  }

  // ---------------------------------------------------------------- dispatch
  private reply(conn: Connection, kind: ResponseKind, body: Record<string, unknown>): void {
    conn.send(this.frameOf(kind, body));
  }

  private dispatch(conn: Connection, kind: string, b: RequestBody): void {
    // Without a PKI document the daemon cannot build envelopes (no replica keys): error 4 (PROTOCOL.md §5.4).
    if (!this.documents.present && local.NEEDS_PKI_DOCUMENT.has(kind)) {
      return this.reply(conn, `${kind}_reply` as ResponseKind, local.noPkiDocumentReply(kind, b));
    }
    switch (kind) {
      case 'session_token':
        return this.sessions.onSessionToken(conn, b.client_instance_token);
      case 'thin_close':
        // Destroy everything the session owns; the client closes the socket itself.
        return this.sessions.replace(conn);
      case 'send_message':
        void this.mixnet.runSend(conn.session, b);
        return;
      case 'new_keypair':
        return this.reply(conn, 'new_keypair_reply', local.newKeypair(b));
      case 'encrypt_read':
        return this.reply(conn, 'encrypt_read_reply', local.encryptRead(this.localContext(), b));
      case 'encrypt_write':
        return this.reply(conn, 'encrypt_write_reply', local.encryptWrite(this.localContext(), b));
      case 'next_message_box_index':
        return this.reply(conn, 'next_message_box_index_reply', local.nextMessageBoxIndex(b));
      case 'get_message_box_index_counter':
        return this.reply(conn, 'get_message_box_index_counter_reply', local.messageBoxIndexCounter(b));
      case 'get_pki_document':
        return this.reply(conn, 'get_pki_document_reply', this.documents.getPkiDocumentReply(b));
      case 'create_courier_envelopes_from_payload':
        return this.reply(conn, 'create_courier_envelopes_from_payload_reply', local.envelopesFromPayload(this.localContext(), b));
      case 'create_courier_envelopes_from_multi_payload':
        return this.reply(conn, 'create_courier_envelopes_from_multi_payload_reply', local.envelopesFromMultiPayload(this.localContext(), b));
      case 'create_courier_envelopes_from_tombstone_range':
        return this.reply(conn, 'create_courier_envelopes_from_tombstone_range_reply', local.envelopesFromTombstoneRange(this.localContext(), b));
      case 'start_resending_encrypted_message': {
        const op = this.arq.register('message', b.envelope_hash ? b.envelope_hash.toString('hex') : '', b.query_id, conn.session);
        void this.mixnet.runMessage(op, b);
        return;
      }
      case 'cancel_resending_encrypted_message':
        return this.onCancel(conn, b, 'message');
      case 'start_resending_copy_command': {
        const key = b.write_cap ? blake2b256(b.write_cap).toString('hex') : '';
        const op = this.arq.register('copy', key, b.query_id, conn.session);
        void this.mixnet.runCopy(op, b);
        return;
      }
      case 'cancel_resending_copy_command':
        return this.onCancel(conn, b, 'copy');
    }
    // The kinds only the current protocol knows (the decoder let nothing else through).
    const answer = handleCurrentRequest(this.network, kind, b);
    if (answer) conn.send(this.frameOf(answer.kind, answer.body));
    else if (answer === null) this.log(`conn ${conn.id}: ${kind}: the handler failed; no reply (as kpclientd v0.0.99)`);
  }

  private onCancel(conn: Connection, b: RequestBody, kind: Op['kind']): void {
    const hash: Buffer | null = kind === 'message' ? b.envelope_hash : b.write_cap_hash;
    const replyKind = kind === 'message' ? 'cancel_resending_encrypted_message_reply' : 'cancel_resending_copy_command_reply';
    if (!b.query_id || !hash) {
      this.reply(conn, replyKind, { query_id: b.query_id, error_code: local.ErrorCode.InvalidRequest });
      return;
    }
    // First the cancelled operation's own reply (24), then the cancel's reply (0) (§3.8).
    this.arq.cancel(kind, hash.toString('hex'));
    this.reply(conn, replyKind, { query_id: b.query_id, error_code: 0 });
  }
}

export async function startEmulator(options: EmulatorOptions = {}): Promise<Emulator> {
  const emu = new EmulatorServer(options);
  await emu.start();
  return emu;
}
