/**
 * The emulated directory: network identity (nodes, couriers, replicas,
 * authorities), epoch arithmetic and the PKI document in the two encodings
 * the daemon uses (PROTOCOL.md §6.1-§6.6).
 *
 * cbor-x cannot produce the daemon's canonical form (keys sorted
 * shortest-first, floats in their shortest exact width, integer and byte
 * string map keys), so this module carries its own small encoder for it.
 */
import { createPrivateKey, createPublicKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import { blake2b256 } from '../client/crypto';
import { PIGEONHOLE_GEOMETRY_KEYS, SPHINX_GEOMETRY_KEYS, type PigeonholeGeometry, type SphinxGeometry } from '../wire';

/** The client's BLAKE2b-256 (src/client/crypto.ts), the one hash the emulator uses too. */
export { blake2b256 };

// ------------------------------------------------------------ CBOR writer
/** A number that must be written as a CBOR float even when it is integral (e.g. LambdaG = 0). */
export class CborFloat {
  constructor(readonly value: number) {}
}

export type CborItem =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | CborFloat
  | CborItem[]
  | Map<CborItem, CborItem>
  | { [key: string]: CborItem };

function head(major: number, n: number | bigint): Buffer {
  const v = BigInt(n);
  const m = major << 5;
  if (v < 24n) return Buffer.from([m | Number(v)]);
  if (v < 0x100n) return Buffer.from([m | 24, Number(v)]);
  if (v < 0x10000n) {
    const b = Buffer.alloc(3);
    b[0] = m | 25;
    b.writeUInt16BE(Number(v), 1);
    return b;
  }
  if (v < 0x100000000n) {
    const b = Buffer.alloc(5);
    b[0] = m | 26;
    b.writeUInt32BE(Number(v), 1);
    return b;
  }
  const b = Buffer.alloc(9);
  b[0] = m | 27;
  b.writeBigUInt64BE(v, 1);
  return b;
}

/** IEEE half precision bits of x, or null when x is not exactly representable. */
function toHalf(x: number): number | null {
  if (Number.isNaN(x)) return 0x7e00;
  if (x === Infinity) return 0x7c00;
  if (x === -Infinity) return 0xfc00;
  if (x === 0) return Object.is(x, -0) ? 0x8000 : 0;
  const sign = x < 0 ? 0x8000 : 0;
  const a = Math.abs(x);
  const e = Math.floor(Math.log2(a));
  if (e > 15 || e < -24) return null;
  if (e >= -14) {
    const mant = a / 2 ** e - 1; // normal: 10 fraction bits
    const scaled = mant * 1024;
    if (!Number.isInteger(scaled)) return null;
    return sign | ((e + 15) << 10) | scaled;
  }
  const scaled = a / 2 ** -24; // subnormal
  if (!Number.isInteger(scaled)) return null;
  return sign | scaled;
}

function encodeFloat(x: number, shortest: boolean): Buffer {
  if (shortest) {
    const h = toHalf(x);
    if (h !== null) return Buffer.from([0xf9, h >> 8, h & 0xff]);
    if (Math.fround(x) === x) {
      const b = Buffer.alloc(5);
      b[0] = 0xfa;
      b.writeFloatBE(x, 1);
      return b;
    }
  }
  const b = Buffer.alloc(9);
  b[0] = 0xfb;
  b.writeDoubleBE(x, 1);
  return b;
}

function encodeItem(v: CborItem, canonical: boolean): Buffer {
  if (v === null) return Buffer.from([0xf6]);
  if (v === true) return Buffer.from([0xf5]);
  if (v === false) return Buffer.from([0xf4]);
  if (v instanceof CborFloat) return encodeFloat(v.value, canonical);
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) return encodeFloat(v, canonical);
    return v >= 0 ? head(0, v) : head(1, -1 - v);
  }
  if (typeof v === 'bigint') return v >= 0n ? head(0, v) : head(1, -1n - v);
  if (typeof v === 'string') {
    const s = Buffer.from(v, 'utf8');
    return Buffer.concat([head(3, s.length), s]);
  }
  if (v instanceof Uint8Array) return Buffer.concat([head(2, v.length), v]);
  if (Array.isArray(v)) return Buffer.concat([head(4, v.length), ...v.map((x) => encodeItem(x, canonical))]);
  const entries: [CborItem, CborItem][] = v instanceof Map ? [...v.entries()] : Object.entries(v);
  let encoded = entries.map(([k, val]) => [encodeItem(k, canonical), encodeItem(val, canonical)] as const);
  if (canonical) {
    // RFC 7049 canonical order, as the Go encoder's CanonicalEncOptions: length first, then bytewise.
    encoded = [...encoded].sort(([a], [b]) => a.length - b.length || Buffer.compare(a, b));
  }
  return Buffer.concat([head(5, encoded.length), ...encoded.flat()]);
}

/** Canonical CBOR (sorted keys, shortest floats): the handshake copy, descriptors, certificates. */
export function encodeCanonical(v: CborItem): Buffer {
  return encodeItem(v, true);
}

/** Go's default CBOR encoding: fields in declaration order, floats as 64-bit. */
export function encodeDeclarationOrder(v: CborItem): Buffer {
  return encodeItem(v, false);
}

// ------------------------------------------------------------ epochs (§6.2)
export const EPOCH_BASE_MS = Date.UTC(2017, 5, 1, 0, 0, 0);
export const DEFAULT_EPOCH_PERIOD_MS = 20 * 60 * 1000;
export const REPLICA_EPOCH_PERIOD_MS = 7 * 24 * 60 * 60 * 1000;

export function epochAt(nowMs: number, periodMs: number): number {
  return Math.floor((nowMs - EPOCH_BASE_MS) / periodMs);
}

export function replicaEpochOf(epoch: number, periodMs: number): number {
  return Math.floor((epoch * periodMs) / REPLICA_EPOCH_PERIOD_MS);
}

// ------------------------------------------------------------ keys
export interface Ed25519Pair {
  privateKey: KeyObject;
  publicRaw: Buffer;
}

const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/**
 * Bounded memo for key objects: importing a DER key costs about a
 * millisecond, and a 10 MiB copy stream seals thousands of boxes with one cap.
 */
class KeyCache<T> {
  private readonly map = new Map<string, T>();
  constructor(private readonly limit: number) {}
  get(key: string, make: () => T): T {
    let v = this.map.get(key);
    if (v === undefined) {
      v = make();
      if (this.map.size >= this.limit) this.map.delete(this.map.keys().next().value as string);
      this.map.set(key, v);
    }
    return v;
  }
}

const privateKeys = new KeyCache<Ed25519Pair>(1024);
const publicKeys = new KeyCache<KeyObject>(1024);

/** Ed25519 key from a 32-byte seed, through PKCS#8 so node:crypto does the real derivation. */
export function ed25519FromSeed(seed: Uint8Array): Ed25519Pair {
  return privateKeys.get(Buffer.from(seed.buffer, seed.byteOffset, seed.byteLength).toString('hex'), () => {
    const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, seed]), format: 'der', type: 'pkcs8' });
    const spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
    return { privateKey, publicRaw: Buffer.from(spki.subarray(spki.length - 32)) };
  });
}

export function ed25519PublicKey(raw: Uint8Array): KeyObject {
  return publicKeys.get(Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('hex'), () =>
    createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, raw]), format: 'der', type: 'spki' }),
  );
}

// ------------------------------------------------------------ network
export interface NodeIdentity {
  name: string;
  seed: Buffer;
  identityKey: Buffer; // raw Ed25519 public key, as the descriptor's IdentityKey
  linkKey: Buffer;
  address: string;
}

export interface ServiceNode extends NodeIdentity {
  /** BLAKE2b-256(IdentityKey): the destination_id_hash / courier identity hash. */
  identityHash: Buffer;
}

export interface ReplicaNode extends NodeIdentity {
  replicaId: number;
}

export interface Authority {
  name: string;
  key: Ed25519Pair;
}

export interface Courier {
  identityHash: Buffer;
  queueId: Buffer;
  node: ServiceNode;
}

/** Capabilities every emulated service node offers, with their Kaetzchen endpoints (PIGEONHOLE.md §3.2). */
export const SERVICE_ENDPOINTS: Readonly<Record<string, string>> = {
  courier: 'courier',
  echo: '+echo',
  testdest: '+testdest',
};

export interface Network {
  genesisEpoch: number;
  mixLayers: NodeIdentity[][];
  gateways: NodeIdentity[];
  serviceNodes: ServiceNode[];
  replicas: ReplicaNode[];
  authorities: Authority[];
}

function makeNode(name: string, port: number): NodeIdentity {
  const seed = randomBytes(32);
  const pair = ed25519FromSeed(seed);
  return { name, seed, identityKey: pair.publicRaw, linkKey: randomBytes(32), address: `tcp://127.0.0.1:${port}` };
}

/** The docker test network's shape: 3 authorities, 3 mix layers, 1 gateway, N service nodes, M replicas. */
export function createNetwork(opts: { serviceNodes: number; replicas: number; genesisEpoch: number }): Network {
  let port = 30000;
  const mixLayers = [0, 1, 2].map((l) => [makeNode(`mix${l + 1}`, ++port)]);
  const gateways = [makeNode('gateway1', ++port)];
  const serviceNodes: ServiceNode[] = [];
  for (let i = 0; i < opts.serviceNodes; i++) {
    const n = makeNode(`servicenode${i + 1}`, ++port);
    serviceNodes.push({ ...n, identityHash: blake2b256(n.identityKey) });
  }
  const replicas: ReplicaNode[] = [];
  for (let i = 0; i < opts.replicas; i++) replicas.push({ ...makeNode(`replica${i + 1}`, ++port), replicaId: i });
  const authorities = [1, 2, 3].map((i) => ({ name: `auth${i}`, key: ed25519FromSeed(randomBytes(32)) }));
  return { genesisEpoch: opts.genesisEpoch, mixLayers, gateways, serviceNodes, replicas, authorities };
}

export function couriersOf(net: Network): Courier[] {
  return net.serviceNodes.map((node) => ({ identityHash: node.identityHash, queueId: Buffer.from(SERVICE_ENDPOINTS.courier), node }));
}

/** Per-epoch key material is derived, so every document of an epoch carries the same keys. */
function epochKey(seed: Buffer, label: string, epoch: number): Buffer {
  return blake2b256(Buffer.concat([seed, Buffer.from(`${label}:${epoch}`)]));
}

function mixDescriptor(node: NodeIdentity, epoch: number, kind: 'mix' | 'gateway' | 'service'): Buffer {
  const mixKeys = new Map<CborItem, CborItem>();
  for (const e of [epoch, epoch + 1, epoch + 2]) mixKeys.set(e, epochKey(node.seed, 'mixkey', e));
  const service = kind === 'service';
  let kaetzchen: CborItem = null;
  let advertized: CborItem = null;
  if (service) {
    const k: Record<string, CborItem> = {};
    for (const [cap, endpoint] of Object.entries(SERVICE_ENDPOINTS)) k[cap] = { endpoint };
    kaetzchen = k;
    const linkPem = `-----BEGIN X25519 PUBLIC KEY-----\n${node.linkKey.toString('base64')}\n-----END X25519 PUBLIC KEY-----\n`;
    advertized = { courier: { linkPublicKey: linkPem } };
  }
  // Descriptors are always canonically encoded, nested as byte strings (§6.3).
  return encodeCanonical({
    Name: node.name,
    Epoch: epoch,
    IdentityKey: node.identityKey,
    LinkKey: node.linkKey,
    MixKeys: mixKeys,
    Addresses: { tcp: [node.address] },
    Kaetzchen: kaetzchen,
    KaetzchenAdvertizedData: advertized,
    IsGatewayNode: kind === 'gateway',
    IsServiceNode: service,
    LoadWeight: 0,
    AuthenticationType: '',
    Version: 'v0',
  });
}

function geometryMap<T extends object>(g: T, keys: readonly (keyof T)[]): Record<string, CborItem> {
  const o: Record<string, CborItem> = {};
  for (const k of keys) o[k as string] = g[k] as CborItem;
  return o;
}

/** The document body (§6.1, pinned field set) for one epoch, as a CBOR item in declaration order. */
export function buildDocument(net: Network, epoch: number, epochPeriodMs: number, sphinx: SphinxGeometry): Record<string, CborItem> {
  const replicaEpoch = replicaEpochOf(epoch, epochPeriodMs);
  const replicaEnvelopeKeys = new Map<CborItem, CborItem>();
  const storageReplicas = net.replicas.map((r) => {
    const envelopeKeys = new Map<CborItem, CborItem>();
    for (const re of [replicaEpoch, replicaEpoch + 1]) envelopeKeys.set(re, epochKey(r.seed, 'envelopekey', re));
    replicaEnvelopeKeys.set(r.replicaId, envelopeKeys);
    // Replica descriptors are inline maps, not nested byte strings (§6.4).
    return {
      Name: r.name,
      ReplicaID: r.replicaId,
      Epoch: epoch,
      IdentityKey: r.identityKey,
      LinkKey: r.linkKey,
      EnvelopeKeys: envelopeKeys,
      Addresses: { tcp: [r.address] },
    } as Record<string, CborItem>;
  });
  return {
    Epoch: epoch,
    GenesisEpoch: net.genesisEpoch,
    SendRatePerMinute: 0,
    Mu: new CborFloat(0.005),
    MuMaxDelay: 1000,
    LambdaP: new CborFloat(0.001),
    LambdaPMaxDelay: 1000,
    LambdaL: new CborFloat(0.0005),
    LambdaLMaxDelay: 1000,
    LambdaD: new CborFloat(0.0005),
    LambdaDMaxDelay: 3000,
    LambdaM: new CborFloat(0.0005),
    LambdaMMaxDelay: 100,
    LambdaG: new CborFloat(0),
    LambdaGMaxDelay: 0,
    LambdaR: new CborFloat(0.005),
    LambdaRMaxDelay: 1000,
    Topology: net.mixLayers.map((layer) => layer.map((n) => mixDescriptor(n, epoch, 'mix'))),
    GatewayNodes: net.gateways.map((n) => mixDescriptor(n, epoch, 'gateway')),
    ServiceNodes: net.serviceNodes.map((n) => mixDescriptor(n, epoch, 'service')),
    StorageReplicas: storageReplicas,
    ConfiguredReplicaIDs: Buffer.from(net.replicas.map((r) => r.replicaId)),
    ConfiguredReplicaIdentityKeys: net.replicas.map((r) => r.identityKey),
    ReplicaEnvelopeKeys: replicaEnvelopeKeys,
    // A consensus carries no commits or reveals: those travel in the authorities' votes and
    // certificates only (null in every document recorded from kpclientd v0.0.99).
    SharedRandomCommit: null,
    SharedRandomReveal: null,
    SharedRandomValue: epochKey(Buffer.from('srv'), 'value', epoch),
    PriorSharedRandom: [epochKey(Buffer.from('srv'), 'value', epoch - 1)],
    SphinxGeometryHash: blake2b256(encodeCanonical(geometryMap(sphinx, SPHINX_GEOMETRY_KEYS))),
    Version: 'v1',
    PKISignatureScheme: 'Ed25519',
  };
}

/**
 * The certificate-wrapped signed document of get_pki_document (§6.6). Each
 * authority signs the canonical encoding of the certificate without its
 * Signatures member (Version, Expiration, KeyType, Certified).
 */
export function signDocument(net: Network, document: Record<string, CborItem>, epoch: number): Buffer {
  const certified = encodeCanonical(document);
  const unsigned = { Version: 0, Expiration: epoch + 5, KeyType: 'Ed25519', Certified: certified };
  const toSign = encodeCanonical(unsigned);
  const signatures = new Map<CborItem, CborItem>();
  for (const a of net.authorities) {
    const sum = blake2b256(a.key.publicRaw);
    signatures.set(sum, { PublicKeySum256: sum, Payload: sign(null, toSign, a.key.privateKey) });
  }
  return encodeCanonical({ ...unsigned, Signatures: signatures });
}

/** One epoch's document in every form the daemon hands out. */
export interface EpochDocument {
  epoch: number;
  /** Canonical encoding: the handshake's new_pki_document_event payload. */
  canonical: Buffer;
  /** Declaration-order encoding: later new_pki_document_event broadcasts. */
  broadcast: Buffer;
  /** get_pki_document_reply payload. */
  signed: Buffer;
}

/**
 * `dropFields`: document fields this protocol level no longer has (the
 * current daemon dropped SendRatePerMinute, MuMaxDelay, LambdaD, every
 * Lambda*MaxDelay and ReplicaEnvelopeKeys, PROTOCOL.md §9.5).
 */
export function makeEpochDocument(net: Network, epoch: number, epochPeriodMs: number, sphinx: SphinxGeometry, dropFields: readonly string[] = []): EpochDocument {
  const doc = buildDocument(net, epoch, epochPeriodMs, sphinx);
  for (const f of dropFields) delete doc[f];
  return {
    epoch,
    canonical: encodeCanonical(doc),
    broadcast: encodeDeclarationOrder(doc),
    signed: signDocument(net, doc, epoch),
  };
}

/** Geometry maps with exactly the §6.8 keys in order. */
export function sphinxGeometryMap(g: SphinxGeometry): Record<string, unknown> {
  return geometryMap(g, SPHINX_GEOMETRY_KEYS);
}

export function pigeonholeGeometryMap(g: PigeonholeGeometry): Record<string, unknown> {
  return geometryMap(g, PIGEONHOLE_GEOMETRY_KEYS);
}
