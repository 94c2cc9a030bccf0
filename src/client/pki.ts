/**
 * The stripped PKI document pushed in new_pki_document_event (PROTOCOL.md
 * §6.1-§6.5, §9.5): parsing, and service / courier discovery.
 *
 * The document is CBOR; its mix descriptors are themselves CBOR inside byte
 * strings. Both the pinned field set and HEAD's reduced one are accepted,
 * canonical or declaration-order encodings alike, with floats of any width.
 * Fields a version lacks are simply absent from the parsed object.
 */
import { randomInt } from 'node:crypto';
import { blake2b256 } from './crypto';
import { NotEnoughCouriersError, ProtocolError, ServiceNotFoundError } from './errors';
import { bytesOrNull, decodeCborFaithful, toNumber } from '../wire';

/** A mix, gateway or service node (§6.3). */
export interface MixDescriptor {
  name: string;
  epoch: number;
  /** Serialized identity (signing) public key, exactly as stored in the document. */
  identityKey: Buffer;
  linkKey: Buffer;
  /** Epoch -> Sphinx public key. */
  mixKeys: Map<number, Buffer>;
  /** Transport -> addresses. */
  addresses: Record<string, string[]>;
  /** Capability name -> parameters (each has an `endpoint` string); null when the node offers none. */
  kaetzchen: Record<string, Record<string, unknown>> | null;
  kaetzchenAdvertizedData: Record<string, Record<string, unknown>> | null;
  isGatewayNode: boolean;
  isServiceNode: boolean;
  loadWeight: number;
  authenticationType: string;
  version: string;
}

/** A Pigeonhole storage replica (§6.4). */
export interface ReplicaDescriptor {
  name: string;
  replicaId: number;
  epoch: number;
  identityKey: Buffer;
  linkKey: Buffer;
  /** Replica epoch -> NIKE public key. */
  envelopeKeys: Map<number, Buffer>;
  addresses: Record<string, string[]>;
}

/** One capability offered by one service node (§6.5). */
export interface ServiceDescriptor {
  capability: string;
  /** Name of the hosting service node. */
  name: string;
  /** The capability's endpoint as bytes: the `recipient_queue_id` / `dest_queue` to send to. */
  recipientQueueId: Buffer;
  /** BLAKE2b-256 of the node's IdentityKey: the `destination_id_hash` / `dest_node`. */
  destinationIdHash: Buffer;
  mixDescriptor: MixDescriptor;
}

/** A courier as used for pinning copy commands (§6.5). */
export interface CourierDescriptor {
  /** BLAKE2b-256 of the hosting node's IdentityKey (courier_identity_hash). */
  identityHash: Buffer;
  /** The courier endpoint as bytes (courier_queue_id). */
  queueId: Buffer;
}

/**
 * The stripped consensus document. Epochs and delays are numbers (they are
 * far below 2^53); the HEAD daemon omits the fields marked optional.
 */
export interface PkiDocument {
  epoch: number;
  genesisEpoch: number;
  mu: number;
  lambdaP: number;
  lambdaL: number;
  lambdaM: number;
  lambdaG: number;
  lambdaR: number;
  /** Pinned only (§9.5). */
  sendRatePerMinute?: number;
  muMaxDelay?: number;
  lambdaD?: number;
  lambdaPMaxDelay?: number;
  lambdaLMaxDelay?: number;
  lambdaDMaxDelay?: number;
  lambdaMMaxDelay?: number;
  lambdaGMaxDelay?: number;
  lambdaRMaxDelay?: number;
  /** Replica ID -> replica epoch -> NIKE public key (pinned only, optional). */
  replicaEnvelopeKeys?: Map<number, Map<number, Buffer>>;
  topology: MixDescriptor[][];
  gatewayNodes: MixDescriptor[];
  serviceNodes: MixDescriptor[];
  storageReplicas: ReplicaDescriptor[];
  configuredReplicaIds: number[];
  configuredReplicaIdentityKeys: Buffer[];
  /** Keyed by the hex of the 32-byte authority key hash. */
  sharedRandomCommit: Map<string, Buffer>;
  sharedRandomReveal: Map<string, Buffer>;
  sharedRandomValue: Buffer | null;
  priorSharedRandom: Buffer[];
  sphinxGeometryHash: Buffer | null;
  version: string;
  pkiSignatureScheme: string;
}

// ------------------------------------------------------------ decoding helpers
type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Map) && !(v instanceof Uint8Array);
}

/** Entries of a CBOR map whether it decoded as an object (text keys) or a Map. */
function mapEntries(v: unknown): [unknown, unknown][] {
  if (v instanceof Map) return [...v.entries()];
  if (isObj(v)) return Object.entries(v);
  return [];
}

function str(o: Obj, key: string): string {
  const v = o[key];
  return typeof v === 'string' ? v : '';
}

function int(o: Obj, key: string, where: string): number {
  const v = o[key];
  if (v === undefined || v === null) return 0;
  if (typeof v === 'number' && !Number.isInteger(v)) throw new ProtocolError(`${where}.${key}: expected an integer, got ${v}`);
  try {
    return toNumber(v, `${where}.${key}`);
  } catch (e) {
    throw new ProtocolError((e as Error).message);
  }
}

function optInt(o: Obj, key: string, where: string): number | undefined {
  return key in o ? int(o, key, where) : undefined;
}

function float(o: Obj, key: string): number {
  const v = o[key];
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  return 0;
}

function optFloat(o: Obj, key: string): number | undefined {
  return key in o ? float(o, key) : undefined;
}

function bytes(o: Obj, key: string): Buffer {
  return bytesOrNull(o[key]) ?? Buffer.alloc(0);
}

/** Integer map keys arrive as number (or bigint when 8-byte encoded) and, from objects, as strings. */
function keyNumber(k: unknown): number {
  if (typeof k === 'number') return k;
  if (typeof k === 'bigint') return Number(k);
  if (typeof k === 'string' && /^\d+$/.test(k)) return Number(k);
  return NaN;
}

function bytesMapByNumber(v: unknown): Map<number, Buffer> {
  const out = new Map<number, Buffer>();
  for (const [k, val] of mapEntries(v)) {
    const b = bytesOrNull(val);
    const n = keyNumber(k);
    if (b && !Number.isNaN(n)) out.set(n, b);
  }
  return out;
}

function bytesMapByHex(v: unknown): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const [k, val] of mapEntries(v)) {
    const key = bytesOrNull(k);
    const b = bytesOrNull(val);
    if (key && b) out.set(key.toString('hex'), b);
  }
  return out;
}

function addresses(v: unknown): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [k, val] of mapEntries(v)) {
    if (typeof k === 'string' && Array.isArray(val)) out[k] = val.filter((a): a is string => typeof a === 'string');
  }
  return out;
}

function capabilityMap(v: unknown): Record<string, Record<string, unknown>> | null {
  if (v === null || v === undefined) return null;
  const out: Record<string, Record<string, unknown>> = {};
  for (const [k, val] of mapEntries(v)) {
    if (typeof k !== 'string') continue;
    const params: Record<string, unknown> = {};
    for (const [pk, pv] of mapEntries(val)) if (typeof pk === 'string') params[pk] = pv;
    out[k] = params;
  }
  return out;
}

function bytesList(v: unknown): Buffer[] {
  return Array.isArray(v) ? v.map(bytesOrNull).filter((b): b is Buffer => b !== null) : [];
}

// ------------------------------------------------------------------- parsing
/** Decode one MixDescriptor from the byte string the document carries (§6.3). */
export function parseMixDescriptor(data: Uint8Array): MixDescriptor {
  let d: unknown;
  try {
    d = decodeCborFaithful(data);
  } catch (e) {
    throw new ProtocolError(`PKI document: undecodable mix descriptor: ${(e as Error).message}`);
  }
  if (!isObj(d)) throw new ProtocolError('PKI document: a mix descriptor is not a map');
  const where = `MixDescriptor ${str(d, 'Name') || '?'}`;
  return {
    name: str(d, 'Name'),
    epoch: int(d, 'Epoch', where),
    identityKey: bytes(d, 'IdentityKey'),
    linkKey: bytes(d, 'LinkKey'),
    mixKeys: bytesMapByNumber(d.MixKeys),
    addresses: addresses(d.Addresses),
    kaetzchen: capabilityMap(d.Kaetzchen),
    kaetzchenAdvertizedData: capabilityMap(d.KaetzchenAdvertizedData),
    isGatewayNode: d.IsGatewayNode === true,
    isServiceNode: d.IsServiceNode === true,
    loadWeight: int(d, 'LoadWeight', where),
    authenticationType: str(d, 'AuthenticationType'),
    version: str(d, 'Version'),
  };
}

function descriptorList(v: unknown, where: string): MixDescriptor[] {
  if (v === null || v === undefined) return [];
  if (!Array.isArray(v)) throw new ProtocolError(`PKI document: ${where} is not an array`);
  return v.map((item, i) => {
    const b = bytesOrNull(item);
    if (!b) throw new ProtocolError(`PKI document: ${where}[${i}] is not a byte string`);
    return parseMixDescriptor(b);
  });
}

function parseReplica(v: unknown, i: number): ReplicaDescriptor {
  // Inline maps (§6.4); tolerate a byte-string wrapping too.
  const b = bytesOrNull(v);
  const d = b ? decodeCborFaithful(b) : v;
  if (!isObj(d)) throw new ProtocolError(`PKI document: StorageReplicas[${i}] is not a map`);
  const where = `StorageReplicas[${i}]`;
  return {
    name: str(d, 'Name'),
    replicaId: int(d, 'ReplicaID', where),
    epoch: int(d, 'Epoch', where),
    identityKey: bytes(d, 'IdentityKey'),
    linkKey: bytes(d, 'LinkKey'),
    envelopeKeys: bytesMapByNumber(d.EnvelopeKeys),
    addresses: addresses(d.Addresses),
  };
}

/**
 * Parse the payload of a new_pki_document_event (§6.1). Throws ProtocolError
 * when the payload is not a CBOR map with an integer Epoch or a nested
 * descriptor cannot be decoded.
 */
export function parsePkiDocument(payload: Uint8Array): PkiDocument {
  let d: unknown;
  try {
    d = decodeCborFaithful(payload);
  } catch (e) {
    throw new ProtocolError(`PKI document: not decodable CBOR: ${(e as Error).message}`);
  }
  if (!isObj(d)) throw new ProtocolError('PKI document: not a CBOR map with text keys');
  if (typeof d.Epoch !== 'number' && typeof d.Epoch !== 'bigint') throw new ProtocolError('PKI document: missing integer Epoch');
  const w = 'PKI document';
  const topology = d.Topology === null || d.Topology === undefined ? [] : d.Topology;
  if (!Array.isArray(topology)) throw new ProtocolError('PKI document: Topology is not an array');
  const replicas = d.StorageReplicas;
  const doc: PkiDocument = {
    epoch: int(d, 'Epoch', w),
    genesisEpoch: int(d, 'GenesisEpoch', w),
    mu: float(d, 'Mu'),
    lambdaP: float(d, 'LambdaP'),
    lambdaL: float(d, 'LambdaL'),
    lambdaM: float(d, 'LambdaM'),
    lambdaG: float(d, 'LambdaG'),
    lambdaR: float(d, 'LambdaR'),
    topology: topology.map((layer: unknown, i: number) => descriptorList(layer, `Topology[${i}]`)),
    gatewayNodes: descriptorList(d.GatewayNodes, 'GatewayNodes'),
    serviceNodes: descriptorList(d.ServiceNodes, 'ServiceNodes'),
    storageReplicas: Array.isArray(replicas) ? replicas.map(parseReplica) : [],
    configuredReplicaIds: [...(bytesOrNull(d.ConfiguredReplicaIDs) ?? [])],
    configuredReplicaIdentityKeys: bytesList(d.ConfiguredReplicaIdentityKeys),
    sharedRandomCommit: bytesMapByHex(d.SharedRandomCommit),
    sharedRandomReveal: bytesMapByHex(d.SharedRandomReveal),
    sharedRandomValue: bytesOrNull(d.SharedRandomValue),
    priorSharedRandom: bytesList(d.PriorSharedRandom),
    sphinxGeometryHash: bytesOrNull(d.SphinxGeometryHash),
    version: str(d, 'Version'),
    pkiSignatureScheme: str(d, 'PKISignatureScheme'),
  };
  // Pinned-only fields (§9.5): present only when the daemon sent them.
  const optionalInts = {
    sendRatePerMinute: 'SendRatePerMinute',
    muMaxDelay: 'MuMaxDelay',
    lambdaPMaxDelay: 'LambdaPMaxDelay',
    lambdaLMaxDelay: 'LambdaLMaxDelay',
    lambdaDMaxDelay: 'LambdaDMaxDelay',
    lambdaMMaxDelay: 'LambdaMMaxDelay',
    lambdaGMaxDelay: 'LambdaGMaxDelay',
    lambdaRMaxDelay: 'LambdaRMaxDelay',
  } as const;
  for (const [prop, key] of Object.entries(optionalInts)) {
    const v = optInt(d, key, w);
    if (v !== undefined) doc[prop as keyof typeof optionalInts] = v;
  }
  const lambdaD = optFloat(d, 'LambdaD');
  if (lambdaD !== undefined) doc.lambdaD = lambdaD;
  if (d.ReplicaEnvelopeKeys !== undefined && d.ReplicaEnvelopeKeys !== null) {
    const rek = new Map<number, Map<number, Buffer>>();
    for (const [k, v] of mapEntries(d.ReplicaEnvelopeKeys)) rek.set(keyNumber(k), bytesMapByNumber(v));
    doc.replicaEnvelopeKeys = rek;
  }
  return doc;
}

// ------------------------------------------------------- service discovery (§6.5)
/**
 * Every service offering `capability`, in document order. Throws
 * ServiceNotFoundError when there is none (or no document).
 */
export function findServices(doc: PkiDocument | null, capability: string): ServiceDescriptor[] {
  const out: ServiceDescriptor[] = [];
  for (const node of doc?.serviceNodes ?? []) {
    const params = node.kaetzchen?.[capability];
    // `endpoint` is mandatory; a capability without one cannot be addressed.
    if (!params || typeof params.endpoint !== 'string') continue;
    out.push({
      capability,
      name: node.name,
      recipientQueueId: Buffer.from(params.endpoint, 'utf8'),
      destinationIdHash: blake2b256(node.identityKey),
      mixDescriptor: node,
    });
  }
  if (out.length === 0) throw new ServiceNotFoundError(capability);
  return out;
}

/** Every courier in the document as (identity hash, queue ID) pairs; empty when there is none. */
export function findCouriers(doc: PkiDocument | null): CourierDescriptor[] {
  let services: ServiceDescriptor[];
  try {
    services = findServices(doc, 'courier');
  } catch (e) {
    if (e instanceof ServiceNotFoundError) return [];
    throw e;
  }
  return services.map((s) => ({ identityHash: s.destinationIdHash, queueId: s.recipientQueueId }));
}

/** One element chosen uniformly at random. */
export function pickRandom<T>(items: readonly T[]): T {
  return items[randomInt(items.length)];
}

/** `n` distinct couriers drawn without replacement (partial Fisher-Yates). */
export function pickDistinctCouriers(couriers: readonly CourierDescriptor[], n: number): CourierDescriptor[] {
  if (n > couriers.length) throw new NotEnoughCouriersError(n, couriers.length);
  const pool = [...couriers];
  for (let i = 0; i < n; i++) {
    const j = i + randomInt(pool.length - i);
    [pool[i], pool[j]] = [pool[j], pool[i]];
  }
  return pool.slice(0, n);
}
