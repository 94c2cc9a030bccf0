/**
 * The emulated daemon's PKI document over time (PROTOCOL.md §2.1, §6, §9.2):
 * the epoch clock and its broadcasts, the documents it keeps for recent
 * epochs, get_pki_document, and whether it has a document at all (withheld,
 * delayed, published), with the handshakes that wait for one.
 */
import { u64, type SphinxGeometry } from '../wire';
import type { Connection } from './connection';
import * as local from './local';
import { EPOCH_BASE_MS, epochAt, makeEpochDocument, type EpochDocument, type Network } from './pki';
import type { RequestBody } from './requests';

/** How long HEAD kpclientd holds a new connection's handshake while it has no PKI document (PROTOCOL.md §9.2). */
export const HANDSHAKE_PKI_WAIT_MS = 30_000;
/** Epochs of documents kept for get_pki_document, the current one included. */
const DOCUMENT_HISTORY = 5;

/** What the document clock needs from the server. */
export interface DocumentHost {
  readonly connections: ReadonlySet<Connection>;
  readonly stopped: boolean;
  log(line: string): void;
  frameOf(kind: string, body: Record<string, unknown>): Buffer;
  /** connection_status_event as the daemon sends it now: frame 1 of the handshake. */
  statusFrame(): Buffer;
}

export interface DocumentConfig {
  network: Network;
  epochPeriodMs: number;
  /** The epoch at start (the network's genesis epoch). */
  epoch: number;
  sphinx: SphinxGeometry;
  droppedDocumentFields: readonly string[];
  /** The protocol level holds a handshake while there is no document (current kpclientd). */
  handshakeWaitsForDocument: boolean;
  /** Whether the daemon has a document at start. */
  present: boolean;
}

export class PkiDocuments {
  private readonly network: Network;
  private readonly epochPeriodMs: number;
  private readonly sphinx: SphinxGeometry;
  private readonly droppedDocumentFields: readonly string[];
  private readonly handshakeWaitsForDocument: boolean;
  private epochOffset = 0;
  private currentEpoch: number;
  private readonly documents = new Map<number, EpochDocument>();
  private epochTimer: NodeJS.Timeout | null = null;
  /** The daemon has a PKI document (false: handshakes carry null, mixnet requests fail with 4). */
  private documentPresent: boolean;
  /** While the document is delayed: new handshakes wait for it (HEAD), instead of carrying null. */
  private holdHandshakes = false;
  private documentTimer: NodeJS.Timeout | null = null;
  /** Connections whose handshake frames 1 and 2 wait for the document, with their give-up timers. */
  private readonly awaitingDocument = new Map<Connection, NodeJS.Timeout>();

  constructor(
    private readonly host: DocumentHost,
    config: DocumentConfig,
  ) {
    this.network = config.network;
    this.epochPeriodMs = config.epochPeriodMs;
    this.currentEpoch = config.epoch;
    this.sphinx = config.sphinx;
    this.droppedDocumentFields = config.droppedDocumentFields;
    this.handshakeWaitsForDocument = config.handshakeWaitsForDocument;
    this.documentPresent = config.present;
  }

  /** The epoch the emulated daemon considers current. */
  get epoch(): number {
    return this.currentEpoch;
  }

  /** Whether the daemon has a PKI document. */
  get present(): boolean {
    return this.documentPresent;
  }

  /** Start the epoch clock (the listener is up). */
  start(): void {
    this.scheduleEpochTimer();
  }

  /** Stop every timer: the epoch clock, a delayed document, held handshakes. */
  stop(): void {
    if (this.epochTimer) clearTimeout(this.epochTimer);
    if (this.documentTimer) clearTimeout(this.documentTimer);
    for (const t of this.awaitingDocument.values()) clearTimeout(t);
    this.awaitingDocument.clear();
  }

  // ---------------------------------------------------------------- handshakes
  /** A new connection: frames 1 and 2 now, or once there is a document if this daemon waits for one. */
  handshake(conn: Connection): void {
    if (this.documentPresent || !(this.holdHandshakes || this.handshakeWaitsForDocument)) this.sendHandshakeFrames(conn);
    else {
      // HEAD kpclientd waits for a document before frames 1 and 2 (§9.2).
      const t = setTimeout(() => {
        this.host.log(`conn ${conn.id}: no PKI document within ${HANDSHAKE_PKI_WAIT_MS} ms; handshake with a null document`);
        this.sendHandshakeFrames(conn);
      }, HANDSHAKE_PKI_WAIT_MS);
      this.awaitingDocument.set(conn, t);
      this.host.log(`conn ${conn.id}: handshake waits for the PKI document`);
    }
  }

  /** Frames 1 and 2, before anything else (§2.1); a null document while the daemon has none. */
  private sendHandshakeFrames(conn: Connection): void {
    this.forget(conn);
    conn.send(this.host.statusFrame());
    conn.send(this.host.frameOf('new_pki_document_event', { payload: this.documentPresent ? this.document(this.currentEpoch).canonical : null }));
  }

  /** The connection is gone: stop waiting to send its handshake. */
  forget(conn: Connection): void {
    const t = this.awaitingDocument.get(conn);
    if (t) clearTimeout(t);
    this.awaitingDocument.delete(conn);
  }

  // ---------------------------------------------------------------- document faults
  withhold(): void {
    if (this.documentTimer) clearTimeout(this.documentTimer);
    this.documentTimer = null;
    this.holdHandshakes = false;
    this.documentPresent = false;
    // Handshakes that were waiting for a delayed document stop waiting: null, as the pinned daemon.
    for (const conn of [...this.awaitingDocument.keys()]) this.sendHandshakeFrames(conn);
    this.host.log('PKI document withheld: handshakes carry a null document until it is published');
  }

  delay(ms: number): void {
    if (!(ms >= 0 && Number.isFinite(ms))) throw new RangeError('delay must be a non-negative number of milliseconds');
    if (this.host.stopped) return;
    if (this.documentTimer) clearTimeout(this.documentTimer);
    this.documentPresent = false;
    this.holdHandshakes = true;
    this.documentTimer = setTimeout(() => {
      this.documentTimer = null;
      this.publish();
    }, ms);
    this.host.log(`PKI document delayed by ${ms} ms: new handshakes wait for it (at most ${HANDSHAKE_PKI_WAIT_MS} ms)`);
  }

  publish(): void {
    if (this.documentTimer) clearTimeout(this.documentTimer);
    this.documentTimer = null;
    this.holdHandshakes = false;
    if (this.documentPresent || this.host.stopped) return;
    this.documentPresent = true;
    // Held handshakes complete with the document; everyone else gets the broadcast.
    const held = new Set(this.awaitingDocument.keys());
    for (const conn of held) this.sendHandshakeFrames(conn);
    const frame = this.host.frameOf('new_pki_document_event', { payload: this.document(this.currentEpoch).broadcast });
    for (const c of this.host.connections) if (!held.has(c)) c.broadcast(frame);
    this.host.log(`PKI document for epoch ${this.currentEpoch} published to ${this.host.connections.size} connection(s)`);
  }

  // ---------------------------------------------------------------- epochs
  advanceEpoch(): void {
    this.epochOffset++;
    this.checkEpoch();
  }

  private realEpoch(): number {
    return epochAt(Date.now(), this.epochPeriodMs);
  }

  private scheduleEpochTimer(): void {
    if (this.host.stopped) return;
    const real = this.realEpoch();
    const next = EPOCH_BASE_MS + (real + 1) * this.epochPeriodMs;
    this.epochTimer = setTimeout(() => {
      this.checkEpoch();
      this.scheduleEpochTimer();
    }, Math.max(1, next - Date.now()));
  }

  private checkEpoch(): void {
    const e = this.realEpoch() + this.epochOffset;
    if (e === this.currentEpoch) return;
    this.currentEpoch = e;
    for (const k of this.documents.keys()) if (k < e - DOCUMENT_HISTORY) this.documents.delete(k);
    if (!this.documentPresent) return;
    const doc = this.document(e);
    this.host.log(`epoch ${e}: broadcasting the new PKI document`);
    const frame = this.host.frameOf('new_pki_document_event', { payload: doc.broadcast });
    for (const c of this.host.connections) c.broadcast(frame);
  }

  private document(epoch: number): EpochDocument {
    let d = this.documents.get(epoch);
    if (!d) {
      d = makeEpochDocument(this.network, epoch, this.epochPeriodMs, this.sphinx, this.droppedDocumentFields);
      this.documents.set(epoch, d);
    }
    return d;
  }

  /** The body of get_pki_document_reply: the signed document of a recent epoch (0 = the current one). */
  getPkiDocumentReply(b: RequestBody): Record<string, unknown> {
    const requested = BigInt(b.epoch ?? 0);
    const epoch = requested === 0n ? BigInt(this.currentEpoch) : requested;
    const cached = this.documentPresent && epoch <= BigInt(this.currentEpoch) && epoch > BigInt(this.currentEpoch - DOCUMENT_HISTORY);
    if (!b.query_id || !cached) {
      // The epoch is echoed on error too (§4.16).
      const code = b.query_id ? local.ErrorCode.ServiceUnavailable : local.ErrorCode.InvalidRequest;
      return { query_id: b.query_id, payload: null, epoch: u64(epoch), error_code: code };
    }
    return { query_id: b.query_id, payload: this.document(Number(epoch)).signed, epoch: u64(epoch), error_code: 0 };
  }
}
