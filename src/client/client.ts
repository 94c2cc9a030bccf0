/**
 * ThinClient: the TypeScript thin client for kpclientd (PROTOCOL.md), as a
 * façade. It keeps the public API and wires the modules that do the work:
 * connection.ts and socket.ts (socket, handshake, reconnect), requests.ts (pending
 * requests, replay, cancel, deadlines), legacy.ts, pigeonhole.ts and
 * directory.ts (the operations), messages.ts (typed replies and events).
 */
import { EventEmitter } from 'node:events';

import { Capabilities } from './capabilities';
import { describeDial } from './config';
import { DaemonLink } from './connection';
import { newMessageId, newQueryId, newSurbId } from './crypto';
import { Directory } from './directory';
import { ProtocolError } from './errors';
import { EventFanout } from './events';
import type { ThinClientEvent, ThinClientEventMap } from './events';
import { LegacySend } from './legacy';
import { decodeGarbageCollected } from './messages';
import type { RawBody } from './messages';
import { Pigeonhole, capStartIndex, hashWriteCap } from './pigeonhole';
import type { CourierDescriptor, PkiDocument, ServiceDescriptor } from './pki';
import { RequestTable } from './requests';
import { resolveOptions } from './settings';
import type { Settings } from './settings';
import type {
  ArqOptions,
  BlockingSendOptions,
  CallOptions,
  ConnectOptions,
  CopyCommandOptions,
  CourierEnvelopesResult,
  CurrentOnlyMethod,
  DaemonProtocol,
  DirectoryAuthority,
  EncryptResult,
  KeypairResult,
  LegacyReply,
  MultiPayloadDestination,
  MultiPayloadResult,
  RawPkiDocument,
  ResendParams,
  StartResendingResult,
  ThinClientOptions,
  TombstoneRangeEnvelopesResult,
  TombstoneRangeResult,
  VoucherInductResult,
  VoucherMintResult,
  VoucherOpenResult,
  VoucherStreamCaps,
} from './types';
import { optionalSignal } from './validate';
import type { PigeonholeGeometry, SphinxGeometry } from '../wire';

export * from './types';

type EventArgs = { [K in keyof ThinClientEventMap]: [ThinClientEventMap[K]] };

/**
 * The thin client. Create it, call connect(), use the methods, close() at
 * the end. Every method validates its arguments locally (InvalidArgumentError
 * naming the argument) before anything is sent.
 */
export class ThinClient extends EventEmitter<EventArgs> {
  private readonly settings: Settings;
  /** What the daemon of the last handshake serves. */
  private readonly caps: Capabilities;
  /** Listeners and events() iterators. */
  private readonly fanout: EventFanout;
  private readonly link: DaemonLink;
  private readonly requests: RequestTable;
  private readonly directory: Directory;
  private readonly legacy: LegacySend;
  private readonly pigeonhole: Pigeonhole;

  /**
   * @throws ConfigError for an unusable `dial` / `configFile`;
   *         InvalidArgumentError for a bad option (e.g. a sessionToken that is not 16 bytes).
   */
  constructor(options: ThinClientOptions = {}) {
    super();
    const settings = (this.settings = resolveOptions(options));
    const publish = (ev: ThinClientEvent): void => this.fanout.publish(ev);
    this.fanout = new EventFanout((name) => this.rawListeners(name as keyof EventArgs) as ((e: ThinClientEvent) => unknown)[], this, settings.log);
    this.caps = new Capabilities(settings.protocol);
    this.link = new DaemonLink(settings, this.caps, {
      publish,
      mixnetDown: () => this.legacy.mixnetDown(),
      pkiEvent: (body) => this.directory.onPkiEvent(body),
      frame: (kind, body, connectionId) => this.onFrame(kind, body, connectionId),
      ready: (write, { reconnecting, daemonRestarted }) => {
        if (reconnecting && (daemonRestarted || !this.link.resumed)) this.legacy.sessionLost(daemonRestarted);
        return this.requests.flush(write, reconnecting);
      },
      failAll: (makeError) => {
        this.requests.rejectAll(makeError);
        this.legacy.rejectAll(makeError);
      },
      closed: () => this.fanout.end(),
    });
    this.requests = new RequestTable(this.link, this.caps, settings.requestTimeoutMs, settings.log);
    this.directory = new Directory(this.requests, publish, settings.log);
    this.legacy = new LegacySend(this.link, publish);
    this.pigeonhole = new Pigeonhole(this.requests, () => this.link.pigeonhole);
  }

  /** A client for the daemon named in a thinclient.toml (§1.4). @throws ConfigError */
  static fromConfigFile(path: string, options: Omit<ThinClientOptions, 'dial' | 'configFile'> = {}): ThinClient {
    return new ThinClient({ ...options, configFile: path });
  }

  /** BLAKE2b-256 of a 168-byte WriteCap: the key of cancelResendingCopyCommand. @throws InvalidArgumentError */
  static writeCapHash(writeCap: Uint8Array): Buffer {
    return hashWriteCap(writeCap);
  }

  /**
   * The MessageBoxIndex a cap starts at: the last 104 bytes of a 168-byte
   * WriteCap or a 136-byte ReadCap (PROTOCOL.md §6.9). For a new keypair it
   * equals firstMessageIndex; use it for caps that come without an index,
   * such as the voucher stream caps and the mutated caps of voucherInduct /
   * voucherOpen (box 0 of the voucher stream is at this index, box 1 at its successor).
   * @throws InvalidArgumentError
   */
  static firstMessageIndexOf(cap: Uint8Array): Buffer {
    return capStartIndex(cap);
  }

  // ------------------------------------------------------------- properties
  /** This object's session token (client_instance_token); pass it to a new client to resume the session. */
  get sessionToken(): Buffer {
    return Buffer.from(this.settings.token);
  }

  /** The daemon's instance token from the last connection_status_event. */
  get instanceToken(): Buffer | null {
    const t = this.link.instanceToken;
    return t ? Buffer.from(t) : null;
  }

  /** The app ID the daemon bound this session to. */
  get appId(): Buffer | null {
    const a = this.link.appId;
    return a ? Buffer.from(a) : null;
  }

  /** Whether the last handshake resumed an existing daemon session. */
  get resumed(): boolean {
    return this.link.resumed;
  }

  /** The address this client dials. */
  get address(): string {
    return describeDial(this.settings.dial);
  }

  /** The daemon's connection to the mixnet (last connection_status_event); false while our socket is down. */
  isConnected(): boolean {
    return this.link.mixnetConnected;
  }

  /**
   * Why the daemon cannot be reached right now: the socket error of the last
   * lost connection or failed (re)connect attempt (e.g. `connect
   * ECONNREFUSED 127.0.0.1:64331`, with its `code`), or null while connected
   * or when the daemon simply hung up.
   */
  get lastConnectionError(): Error | null {
    return this.link.isDaemonConnected() ? null : this.link.lastSocketError;
  }

  /** Our socket to the daemon is up and its handshake is done. */
  isDaemonConnected(): boolean {
    return this.link.isDaemonConnected();
  }

  /** The Sphinx geometry the daemon announced. @throws ProtocolError before the first status event */
  sphinxGeometry(): SphinxGeometry {
    const g = this.link.sphinx;
    if (!g) throw new ProtocolError('no Sphinx geometry yet: connect() first');
    return { ...g };
  }

  /** The Pigeonhole geometry the daemon announced. @throws ProtocolError before the first status event */
  pigeonholeGeometry(): PigeonholeGeometry {
    const g = this.link.pigeonhole;
    if (!g) throw new ProtocolError('no Pigeonhole geometry yet: connect() first');
    return { ...g };
  }

  /**
   * The protocol level of the daemon of the last handshake: 'current'
   * (kpclientd v0.0.99+) when its reply envelope carries every reply kind
   * of PROTOCOL.md §9.3, else 'pinned'; null before the first handshake.
   * Forced by the daemonProtocol option.
   */
  daemonProtocol(): DaemonProtocol | null {
    return this.caps.protocol();
  }

  /**
   * Whether the connected daemon serves `method` (one of the current-only
   * methods: getDirectoryAuthorities and the voucher calls). False before
   * the first handshake. A call the daemon does not serve fails with
   * UnsupportedByDaemonError without sending anything.
   */
  supports(method: CurrentOnlyMethod): boolean {
    return this.caps.supports(method);
  }

  // -------------------------------------------------------------- lifecycle
  /**
   * Open the socket and perform the handshake (§2.1). Resolves once the
   * session token reply arrived. While the client is reconnecting by
   * itself, resolves at the next successful reconnect. `{ retry: true }`
   * keeps trying after a failed attempt (no daemon, a broken handshake),
   * with the reconnect backoff, until connected, `signal` aborts (its
   * reason, else OperationCancelledError) or close()/disconnect() is called
   * (OperationCancelledError); meanwhile lastConnectionError names the last
   * failure and each one is a 'connectFailed' event.
   * @throws DaemonDisconnectedError (cannot reach the daemon, or the client is closed),
   *         ProtocolError / CborError (the daemon broke the handshake), ThinClientTimeoutError, InvalidArgumentError
   */
  connect(opts: ConnectOptions = {}): Promise<void> {
    return this.link.connect(opts);
  }

  /**
   * Say goodbye (thin_close: the daemon drops this session's state), close
   * the socket and stop reconnecting. Pending calls reject with
   * OperationCancelledError and event iterators end. Idempotent; never throws.
   */
  close(): Promise<void> {
    return this.link.shutdown(true);
  }

  /**
   * Close the socket WITHOUT thin_close: the daemon keeps the session for its
   * grace period (30 minutes at kpclientd v0.0.76, 10 minutes by default at
   * v0.0.99, where it is the daemon's SessionGracePeriod setting), so
   * connect() again, or a new client given this sessionToken, resumes it
   * within that time. Pending calls reject with OperationCancelledError.
   * Idempotent; never throws.
   */
  disconnect(): Promise<void> {
    return this.link.shutdown(false);
  }

  /**
   * Every event, in order, as an async iterator with an unbounded buffer
   * (nothing is dropped). Ends when `signal` aborts, the iterator is
   * returned, or the client is closed.
   */
  events(signal?: AbortSignal): AsyncIterableIterator<ThinClientEvent> {
    return this.fanout.iterator(optionalSignal('signal', signal), this.link.state === 'closed');
  }

  // ------------------------------------------------------- PKI and services
  /** The current stripped PKI document, or null before the daemon sent one. */
  pkiDocument(): PkiDocument | null {
    return this.directory.pkiDocument();
  }

  /** The document of `epoch` if it is among the last 5 received, else null. @throws InvalidArgumentError */
  pkiDocumentForEpoch(epoch: number | bigint): PkiDocument | null {
    return this.directory.pkiDocumentForEpoch(epoch);
  }

  /**
   * The signed, certificate-wrapped document of `epoch` (0 = the daemon's
   * current one) and the epoch it belongs to (§3.13).
   * @throws DaemonError('get_pki_document', 10) when the daemon has no document for that epoch
   */
  getPkiDocumentRaw(epoch: number | bigint = 0, opts?: CallOptions): Promise<RawPkiDocument> {
    return this.directory.getPkiDocumentRaw(epoch, opts);
  }

  /** Every service offering `capability` (e.g. "echo", "courier"). @throws ServiceNotFoundError */
  getServices(capability: string): ServiceDescriptor[] {
    return this.directory.getServices(capability);
  }

  /** One service offering `capability`, chosen uniformly at random. @throws ServiceNotFoundError */
  getService(capability: string): ServiceDescriptor {
    return this.directory.getService(capability);
  }

  /** Every courier in the current document (empty when there is none). */
  getAllCouriers(): CourierDescriptor[] {
    return this.directory.getAllCouriers();
  }

  /**
   * `n` different couriers drawn at random (for nested copies).
   * @throws InvalidArgumentError (n not a positive integer), NotEnoughCouriersError
   */
  getDistinctCouriers(n: number): CourierDescriptor[] {
    return this.directory.getDistinctCouriers(n);
  }

  /** One courier chosen at random. @throws ServiceNotFoundError when the document has none */
  getCourierDestination(): CourierDescriptor {
    return this.directory.getCourierDestination();
  }

  // ---------------------------------------------------------- legacy (§3.3)
  /**
   * Send `payload` with a SURB so the service can reply; returns once the
   * request is written. The reply arrives as a 'messageReply' event carrying `surbId`.
   * @throws InvalidArgumentError, ThinClientOfflineError (daemon not on the mixnet), DaemonDisconnectedError
   */
  sendMessage(surbId: Uint8Array, payload: Uint8Array | string, destNode: Uint8Array, destQueue: Uint8Array): Promise<void> {
    return this.legacy.sendMessage(surbId, payload, destNode, destQueue);
  }

  /**
   * Fire-and-forget send: no SURB, so neither a sent event nor a reply follows.
   * @throws InvalidArgumentError, ThinClientOfflineError, DaemonDisconnectedError
   */
  sendMessageWithoutReply(payload: Uint8Array | string, destNode: Uint8Array, destQueue: Uint8Array): Promise<void> {
    return this.legacy.sendMessageWithoutReply(payload, destNode, destQueue);
  }

  /**
   * Send with a fresh SURB and wait for the reply (§7.5): its payload, the SURB ID, the daemon's sentAt and
   * replyEtaMs, and its error code (returned, not thrown). A lost daemon connection does not end the wait by
   * itself: if the reconnect resumes the session, the reply the daemon queued meanwhile still arrives.
   * @throws InvalidArgumentError, ThinClientOfflineError, ThinClientTimeoutError (default 30 s), OperationCancelledError
   *         (signal), DaemonDisconnectedError ("connection lost": the daemon went offline, restarted, or did not resume
   *         the session after a reconnect; or the connection dropped with reconnect disabled), KatzenpostError
   *         SEND_FAILED (message_sent_event carried an error)
   */
  sendMessageAwaitingReply(payload: Uint8Array | string, destNode: Uint8Array, destQueue: Uint8Array, opts?: BlockingSendOptions): Promise<LegacyReply> {
    return this.legacy.sendMessageAwaitingReply(payload, destNode, destQueue, opts);
  }

  /** sendMessageAwaitingReply for the reply's payload. @throws as it, and DaemonError('send_message', code) for a reply's error code */
  blockingSendMessage(payload: Uint8Array | string, destNode: Uint8Array, destQueue: Uint8Array, opts?: BlockingSendOptions): Promise<Buffer> {
    return this.legacy.blockingSendMessage(payload, destNode, destQueue, opts);
  }

  // ----------------------------------------------------- pigeonhole (§3.4-)
  /**
   * Derive a WriteCap, ReadCap and first index from a 32-byte seed
   * (deterministic: the same seed gives the same channel).
   * @throws InvalidArgumentError, DaemonError('new_keypair', code), ThinClientTimeoutError, OperationCancelledError
   */
  newKeypair(seed: Uint8Array, opts?: CallOptions): Promise<KeypairResult> {
    return this.pigeonhole.newKeypair(seed, opts);
  }

  /**
   * The successor of a 104-byte MessageBoxIndex.
   * @throws InvalidArgumentError, DaemonError('next_message_box_index', code), ThinClientTimeoutError
   */
  nextMessageBoxIndex(index: Uint8Array, opts?: CallOptions): Promise<Buffer> {
    return this.pigeonhole.nextMessageBoxIndex(index, opts);
  }

  /**
   * The 64-bit counter of an index (a bigint: first counters are near 2^62).
   * @throws InvalidArgumentError, DaemonError('get_message_box_index_counter', code), ThinClientTimeoutError
   */
  getMessageBoxIndexCounter(index: Uint8Array, opts?: CallOptions): Promise<bigint> {
    return this.pigeonhole.getMessageBoxIndexCounter(index, opts);
  }

  /**
   * Encrypt a read of one box; pass the result to startResendingEncryptedMessage
   * together with the same readCap and index.
   * @throws InvalidArgumentError, DaemonError('encrypt_read', code), ThinClientTimeoutError
   */
  encryptRead(readCap: Uint8Array, index: Uint8Array, opts?: CallOptions): Promise<EncryptResult> {
    return this.pigeonhole.encryptRead(readCap, index, opts);
  }

  /**
   * Encrypt a write of `plaintext` (at most MaxPlaintextPayloadLength bytes;
   * empty = a tombstone) to one box.
   * @throws InvalidArgumentError, DaemonError('encrypt_write', code), ThinClientTimeoutError
   */
  encryptWrite(plaintext: Uint8Array | string, writeCap: Uint8Array, index: Uint8Array, opts?: CallOptions): Promise<EncryptResult> {
    return this.pigeonhole.encryptWrite(plaintext, writeCap, index, opts);
  }

  /**
   * Send an encrypted read or write through the daemon's ARQ and block until
   * its final outcome (§3.7): the plaintext for reads, null for writes.
   * Replayed verbatim if the connection is lost meanwhile.
   * @throws InvalidArgumentError; the replica/courier errors of §5.5 (BoxIDNotFoundError,
   *         TombstoneError, StartResendingCancelledError, …); OperationCancelledError (signal)
   *         and ThinClientTimeoutError (timeoutMs), both of which also cancel on the daemon
   */
  startResendingEncryptedMessage(params: ResendParams, opts?: ArqOptions): Promise<StartResendingResult> {
    return this.pigeonhole.startResending(params, opts, 'startResendingEncryptedMessage', {});
  }

  /**
   * Like startResendingEncryptedMessage, but a write to a box that already
   * holds different content fails with BoxAlreadyExistsError (one more round trip).
   */
  startResendingEncryptedMessageReturnBoxExists(params: ResendParams, opts?: ArqOptions): Promise<StartResendingResult> {
    return this.pigeonhole.startResending(params, opts, 'startResendingEncryptedMessageReturnBoxExists', { noIdempotentBoxAlreadyExists: true });
  }

  /** Like startResendingEncryptedMessage, but a read of an unwritten box fails at once with BoxIDNotFoundError. */
  startResendingEncryptedMessageNoRetry(params: ResendParams, opts?: ArqOptions): Promise<StartResendingResult> {
    return this.pigeonhole.startResending(params, opts, 'startResendingEncryptedMessageNoRetry', { noRetryOnBoxIdNotFound: true });
  }

  /**
   * Stop the ARQ of the operation with this envelope hash. The blocked
   * start call then rejects with StartResendingCancelledError (from the
   * daemon's reply, or locally once the cancel completed). Succeeds for
   * unknown hashes too.
   * @throws InvalidArgumentError, DaemonError('cancel_resending_encrypted_message', code), ThinClientTimeoutError
   */
  cancelResendingEncryptedMessage(envelopeHash: Uint8Array, opts?: CallOptions): Promise<void> {
    return this.pigeonhole.cancelResendingEncryptedMessage(envelopeHash, opts);
  }

  /**
   * Build the tombstones of `maxCount` consecutive boxes from `start` (a
   * client-side loop of encrypt_write with an empty plaintext, §3.6). Each
   * envelope still has to be sent with startResendingEncryptedMessage.
   * @throws InvalidArgumentError, DaemonError('encrypt_write', code), ThinClientTimeoutError
   */
  tombstoneRange(writeCap: Uint8Array, start: Uint8Array, maxCount: number, opts?: CallOptions): Promise<TombstoneRangeResult> {
    return this.pigeonhole.tombstoneRange(writeCap, start, maxCount, opts);
  }

  /**
   * Cut `payload` (at most 10 MiB) into copy-stream elements for one
   * destination channel (§3.14).
   * @throws InvalidArgumentError, DaemonError('create_courier_envelopes_from_payload', code), ThinClientTimeoutError
   */
  createCourierEnvelopesFromPayload(
    payload: Uint8Array | string,
    destWriteCap: Uint8Array,
    destStartIndex: Uint8Array,
    isStart: boolean,
    isLast: boolean,
    opts?: CallOptions,
  ): Promise<CourierEnvelopesResult> {
    return this.pigeonhole.createCourierEnvelopesFromPayload(payload, destWriteCap, destStartIndex, isStart, isLast, opts);
  }

  /**
   * Pack payloads for several destination channels into one copy stream
   * (§3.15). Pass the returned `buffer` to the next call; set isLast on the final one.
   * @throws InvalidArgumentError, DaemonError('create_courier_envelopes_from_multi_payload', code), ThinClientTimeoutError
   */
  createCourierEnvelopesFromMultiPayload(
    destinations: MultiPayloadDestination[],
    isStart: boolean,
    isLast: boolean,
    buffer?: Uint8Array | null,
    opts?: CallOptions,
  ): Promise<MultiPayloadResult> {
    return this.pigeonhole.createCourierEnvelopesFromMultiPayload(destinations, isStart, isLast, buffer, opts);
  }

  /**
   * Tombstones for `maxCount` destination boxes as copy-stream elements
   * (§3.16), with the same `buffer` continuation as the multi-payload call.
   * @throws InvalidArgumentError, DaemonError('create_courier_envelopes_from_tombstone_range', code), ThinClientTimeoutError
   */
  createCourierEnvelopesFromTombstoneRange(
    destWriteCap: Uint8Array,
    destStartIndex: Uint8Array,
    maxCount: number,
    isStart: boolean,
    isLast: boolean,
    buffer?: Uint8Array | null,
    opts?: CallOptions,
  ): Promise<TombstoneRangeEnvelopesResult> {
    return this.pigeonhole.createCourierEnvelopesFromTombstoneRange(destWriteCap, destStartIndex, maxCount, isStart, isLast, buffer, opts);
  }

  /**
   * Tell a courier to copy the temporary stream of `writeCap` to its
   * destinations, blocking until done (§3.9). Optionally pinned to a courier.
   * Replayed verbatim if the connection is lost meanwhile.
   * @throws InvalidArgumentError, CopyCommandFailedError (replicaErrorCode, failedEnvelopeIndex),
   *         StartResendingCancelledError, OperationCancelledError / ThinClientTimeoutError (also cancel on the daemon)
   */
  startResendingCopyCommand(writeCap: Uint8Array, opts: CopyCommandOptions = {}): Promise<void> {
    return this.pigeonhole.startResendingCopyCommand(writeCap, opts);
  }

  /**
   * Stop the copy command whose WriteCap hashes to `writeCapHash` (see
   * ThinClient.writeCapHash); the blocked call rejects with StartResendingCancelledError.
   * @throws InvalidArgumentError, DaemonError('cancel_resending_copy_command', code), ThinClientTimeoutError
   */
  cancelResendingCopyCommand(writeCapHash: Uint8Array, opts?: CallOptions): Promise<void> {
    return this.pigeonhole.cancelResendingCopyCommand(writeCapHash, opts);
  }

  // ------------------------------------------- current daemon only (§9.3)
  /**
   * The directory authorities the daemon is configured with. Their
   * identityKeyHash values are the keys of the Signatures map of the signed
   * document from getPkiDocumentRaw, so signatures can be named.
   * kpclientd v0.0.99+ only.
   * @throws UnsupportedByDaemonError (a pinned daemon; nothing is sent),
   *         DaemonError('get_directory_authorities', 10) when the daemon has none configured,
   *         ThinClientTimeoutError, OperationCancelledError
   */
  getDirectoryAuthorities(opts?: CallOptions): Promise<DirectoryAuthority[]> {
    return this.directory.getDirectoryAuthorities(opts);
  }

  /**
   * Contact Voucher, step 1 (the joiner): mint a voucher from the write cap
   * of the channel the joiner will write on. Hand `voucher` (32 bytes) to
   * the inductor out of band; write `voucherPayload` to box 0 of the voucher
   * stream (voucherWriteCap, at ThinClient.firstMessageIndexOf(voucherWriteCap));
   * keep `voucherSecretKey` secret for voucherOpen. Local to the daemon (no
   * mixnet traffic); the daemon supplies all randomness. kpclientd v0.0.99+ only.
   * @param messageWriteCap the joiner's 168-byte WriteCap (e.g. from newKeypair)
   * @param displayName how the joiner wants to be known to the group (any text)
   * @throws InvalidArgumentError, UnsupportedByDaemonError, DaemonError('voucher_mint', 3) (a malformed cap),
   *         ThinClientTimeoutError, OperationCancelledError
   */
  voucherMint(messageWriteCap: Uint8Array, displayName: string, opts?: CallOptions): Promise<VoucherMintResult> {
    return this.pigeonhole.voucherMint(messageWriteCap, displayName, opts);
  }

  /**
   * Contact Voucher, step 2 (the inductor): check the payload read from box 0
   * of the voucher stream against the voucher and its signature, and seal
   * `whoReply` with a fresh salt for the joiner. Write `sealedReply` to box 1
   * of the voucher stream; give `mutatedMessageReadCap` to whoever should read
   * the joiner. kpclientd v0.0.99+ only.
   * @param voucher the 32-byte token the joiner handed over
   * @param voucherPayload the plaintext of voucher stream box 0
   * @param whoReply any bytes for the joiner (may be empty), e.g. the group's read caps
   * @throws InvalidArgumentError, UnsupportedByDaemonError, VoucherHashMismatchError (28: the payload is not
   *         the voucher's), VoucherSignatureInvalidError (29), DaemonError('voucher_induct', 3) (a malformed payload),
   *         ThinClientTimeoutError, OperationCancelledError
   */
  voucherInduct(voucher: Uint8Array, voucherPayload: Uint8Array, whoReply: Uint8Array | string, opts?: CallOptions): Promise<VoucherInductResult> {
    return this.pigeonhole.voucherInduct(voucher, voucherPayload, whoReply, opts);
  }

  /**
   * Contact Voucher, step 3 (the joiner): open the sealed reply read from box 1
   * of the voucher stream and re-seed the joiner's write cap with the salt.
   * Write real messages with `mutatedMessageWriteCap` from
   * ThinClient.firstMessageIndexOf(mutatedMessageWriteCap): they land where
   * the inductor's mutatedMessageReadCap reads. kpclientd v0.0.99+ only.
   * @param voucherSecretKey from voucherMint (162 bytes)
   * @param sealedReply the plaintext of voucher stream box 1
   * @param messageWriteCap the same write cap that was given to voucherMint
   * @throws InvalidArgumentError, UnsupportedByDaemonError, VoucherSealOpenFailedError (30: tampered, or not
   *         sealed for this key), DaemonError('voucher_open', 3), ThinClientTimeoutError, OperationCancelledError
   */
  voucherOpen(voucherSecretKey: Uint8Array, sealedReply: Uint8Array, messageWriteCap: Uint8Array, opts?: CallOptions): Promise<VoucherOpenResult> {
    return this.pigeonhole.voucherOpen(voucherSecretKey, sealedReply, messageWriteCap, opts);
  }

  /**
   * The voucher stream's caps, from the voucher alone: the inductor reads
   * box 0 with voucherReadCap before voucherInduct. The same caps as
   * voucherMint returned to the joiner. kpclientd v0.0.99+ only.
   * @throws InvalidArgumentError, UnsupportedByDaemonError, DaemonError('voucher_derive_stream', code),
   *         ThinClientTimeoutError, OperationCancelledError
   */
  voucherDeriveStream(voucher: Uint8Array, opts?: CallOptions): Promise<VoucherStreamCaps> {
    return this.pigeonhole.voucherDeriveStream(voucher, opts);
  }

  // -------------------------------------------------------------- utilities
  /** 16 random bytes for the legacy message ID. */
  newMessageId(): Buffer {
    return newMessageId();
  }

  /** 16 random bytes naming a SURB (for sendMessage). */
  newSurbId(): Buffer {
    return newSurbId();
  }

  /** 16 random bytes correlating a request with its reply. */
  newQueryId(): Buffer {
    return newQueryId();
  }

  /** A frame after the handshake that the link does not handle itself (status and PKI events it does). */
  private onFrame(kind: string, body: RawBody, connectionId: number): void {
    switch (kind) {
      case 'message_sent_event':
        return this.legacy.onMessageSent(body);
      case 'message_reply_event':
        return this.legacy.onMessageReply(body);
      case 'message_id_garbage_collected':
        return this.fanout.publish(decodeGarbageCollected(body));
    }
    if (kind.endsWith('_reply')) this.requests.route(kind, body);
    else this.settings.log.debug(`connection ${connectionId}: ignoring ${kind}`);
  }
}
