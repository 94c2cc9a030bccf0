import assert from 'node:assert/strict';

import { blake2b256 } from '../../src/client/crypto';
import { NotEnoughCouriersError, ProtocolError, ServiceNotFoundError } from '../../src/client/errors';
import { findCouriers, findServices, parsePkiDocument, pickDistinctCouriers } from '../../src/client/pki';
import { encodeCbor } from '../../src/wire';

function mixDescriptor(name: string, identityKey: Buffer, kaetzchen: Record<string, Record<string, unknown>> | null, epochKey: number | bigint = 7): Buffer {
  return encodeCbor({
    Name: name,
    Epoch: 7,
    IdentityKey: identityKey,
    LinkKey: Buffer.from([1]),
    MixKeys: new Map([[epochKey, Buffer.from([2, 2])]]),
    Addresses: { tcp: ['tcp://10.0.0.1:1'] },
    Kaetzchen: kaetzchen,
    KaetzchenAdvertizedData: null,
    IsGatewayNode: false,
    IsServiceNode: kaetzchen !== null,
    LoadWeight: 3,
    AuthenticationType: '',
    Version: 'v0',
  });
}

/** HEAD's field set (§9.5), in declaration order, with 64-bit floats. */
function headDocument(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    Epoch: 250_000,
    GenesisEpoch: 249_000,
    Mu: 0.001,
    LambdaP: 0.002,
    LambdaL: 0.003,
    LambdaM: 0.004,
    LambdaG: 0.005,
    LambdaR: 0.006,
    Topology: [[mixDescriptor('mix1', Buffer.alloc(32, 1), null)], [mixDescriptor('mix2', Buffer.alloc(32, 2), null)]],
    GatewayNodes: [mixDescriptor('gw', Buffer.alloc(32, 3), null)],
    ServiceNodes: [
      mixDescriptor('svc1', Buffer.alloc(32, 4), { courier: { endpoint: 'courier' }, echo: { endpoint: '+echo' } }),
      mixDescriptor('svc2', Buffer.alloc(32, 5), { courier: { endpoint: 'courier' }, echo: { endpoint: '+echo' }, testdest: { endpoint: '+testdest' } }),
      mixDescriptor('svc3', Buffer.alloc(32, 6), { courier: { endpoint: 'courier' }, broken: { notAnEndpoint: 1 } }),
    ],
    StorageReplicas: [
      {
        Name: 'replica1',
        ReplicaID: 0,
        Epoch: 250_000,
        IdentityKey: Buffer.alloc(32, 9),
        LinkKey: Buffer.alloc(4, 8),
        EnvelopeKeys: new Map([[2900, Buffer.alloc(4, 7)]]),
        Addresses: { tcp: ['tcp://10.0.0.9:1'] },
      },
    ],
    ConfiguredReplicaIDs: Buffer.from([0, 1, 2]),
    ConfiguredReplicaIdentityKeys: [Buffer.alloc(32, 9)],
    SharedRandomCommit: new Map([[Buffer.alloc(32, 0xaa), Buffer.from([1])]]),
    SharedRandomReveal: new Map(),
    SharedRandomValue: Buffer.alloc(32, 0x11),
    PriorSharedRandom: [Buffer.alloc(32, 0x22)],
    SphinxGeometryHash: Buffer.alloc(32, 0x33),
    Version: 'v1',
    PKISignatureScheme: 'Ed25519 Sphincs+',
    ...overrides,
  };
}

describe('pki: parsing the stripped document (§6.1, §9.5)', () => {
  it("parses HEAD's reduced field set in declaration order with 64-bit floats", () => {
    const doc = parsePkiDocument(encodeCbor(headDocument()));
    assert.equal(doc.epoch, 250_000);
    assert.equal(doc.genesisEpoch, 249_000);
    assert.equal(doc.mu, 0.001);
    assert.equal(doc.lambdaR, 0.006);
    // Pinned-only fields are absent, not zero.
    assert.equal(doc.sendRatePerMinute, undefined);
    assert.equal(doc.lambdaD, undefined);
    assert.equal(doc.muMaxDelay, undefined);
    assert.equal(doc.replicaEnvelopeKeys, undefined);
    assert.deepEqual(
      doc.topology.map((l) => l.map((m) => m.name)),
      [['mix1'], ['mix2']],
    );
    assert.equal(doc.gatewayNodes[0].name, 'gw');
    assert.equal(doc.serviceNodes.length, 3);
    assert.equal(doc.serviceNodes[0].loadWeight, 3);
    assert.deepEqual(doc.serviceNodes[0].mixKeys.get(7), Buffer.from([2, 2]));
    const r = doc.storageReplicas[0];
    assert.equal(r.name, 'replica1');
    assert.equal(r.replicaId, 0);
    assert.deepEqual(r.envelopeKeys.get(2900), Buffer.alloc(4, 7));
    assert.deepEqual(r.addresses, { tcp: ['tcp://10.0.0.9:1'] });
    assert.deepEqual(doc.configuredReplicaIds, [0, 1, 2]);
    assert.deepEqual(doc.configuredReplicaIdentityKeys, [Buffer.alloc(32, 9)]);
    assert.deepEqual(doc.sharedRandomCommit.get('aa'.repeat(32)), Buffer.from([1]));
    assert.equal(doc.sharedRandomReveal.size, 0);
    assert.deepEqual(doc.priorSharedRandom, [Buffer.alloc(32, 0x22)]);
    assert.equal(doc.pkiSignatureScheme, 'Ed25519 Sphincs+');
  });

  it('parses the pinned extras: delays, LambdaD and ReplicaEnvelopeKeys', () => {
    const doc = parsePkiDocument(
      encodeCbor(
        headDocument({
          SendRatePerMinute: 30,
          MuMaxDelay: 1000,
          LambdaD: 0.0005,
          LambdaDMaxDelay: 3000,
          LambdaPMaxDelay: 1000,
          ReplicaEnvelopeKeys: new Map([[1, new Map([[2900, Buffer.from([5])]])]]),
        }),
      ),
    );
    assert.equal(doc.sendRatePerMinute, 30);
    assert.equal(doc.muMaxDelay, 1000);
    assert.equal(doc.lambdaD, 0.0005);
    assert.equal(doc.lambdaDMaxDelay, 3000);
    assert.deepEqual(doc.replicaEnvelopeKeys?.get(1)?.get(2900), Buffer.from([5]));
  });

  it('decodes floats of half, single and double width alike', () => {
    const base = encodeCbor(headDocument({ Mu: 1.5, LambdaP: 1.5, LambdaL: 1.5 }));
    const double = Buffer.from('fb3ff8000000000000', 'hex');
    // Re-encode the three values in the three widths (CBOR map values are self-delimiting).
    let bytes = base;
    for (const narrower of ['f93e00', 'fa3fc00000']) {
      const at = bytes.indexOf(double);
      bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from(narrower, 'hex'), bytes.subarray(at + double.length)]);
    }
    const doc = parsePkiDocument(bytes);
    assert.deepEqual([doc.mu, doc.lambdaP, doc.lambdaL], [1.5, 1.5, 1.5]);
  });

  it('accepts null node lists and 8-byte encoded epochs', () => {
    const doc = parsePkiDocument(
      encodeCbor(
        headDocument({
          Epoch: 2n ** 40n,
          Topology: null,
          GatewayNodes: null,
          ServiceNodes: [mixDescriptor('svc', Buffer.alloc(32, 4), { echo: { endpoint: '+echo' } }, 2n ** 40n)],
          StorageReplicas: null,
        }),
      ),
    );
    assert.equal(doc.epoch, 2 ** 40);
    assert.deepEqual(doc.topology, []);
    assert.deepEqual(doc.gatewayNodes, []);
    assert.deepEqual(doc.storageReplicas, []);
    assert.deepEqual(doc.serviceNodes[0].mixKeys.get(2 ** 40), Buffer.from([2, 2]));
  });

  it('rejects documents that are not maps, lack an Epoch, or carry undecodable descriptors', () => {
    assert.throws(() => parsePkiDocument(encodeCbor([1, 2])), ProtocolError);
    assert.throws(() => parsePkiDocument(Buffer.from([0xff])), ProtocolError);
    const noEpoch = headDocument();
    delete noEpoch.Epoch;
    assert.throws(() => parsePkiDocument(encodeCbor(noEpoch)), /missing integer Epoch/);
    assert.throws(() => parsePkiDocument(encodeCbor(headDocument({ ServiceNodes: ['text, not bytes'] }))), /ServiceNodes\[0\] is not a byte string/);
    assert.throws(() => parsePkiDocument(encodeCbor(headDocument({ ServiceNodes: [Buffer.from([0xff])] }))), ProtocolError);
  });
});

describe('pki: services and couriers (§6.5)', () => {
  const doc = parsePkiDocument(encodeCbor(headDocument()));

  it('finds every node offering a capability, in document order, with queue ID and destination hash', () => {
    const echo = findServices(doc, 'echo');
    assert.deepEqual(
      echo.map((s) => s.name),
      ['svc1', 'svc2'],
    );
    assert.deepEqual(echo[1].recipientQueueId, Buffer.from('+echo'));
    assert.deepEqual(echo[1].destinationIdHash, blake2b256(Buffer.alloc(32, 5)));
    assert.equal(echo[1].capability, 'echo');
    assert.equal(echo[1].mixDescriptor.name, 'svc2');
  });

  it('skips capabilities without an endpoint and reports missing services', () => {
    assert.throws(() => findServices(doc, 'broken'), ServiceNotFoundError);
    assert.throws(
      () => findServices(doc, 'keyserver'),
      (e: unknown) => e instanceof ServiceNotFoundError && e.capability === 'keyserver',
    );
    assert.throws(() => findServices(null, 'echo'), ServiceNotFoundError);
  });

  it('lists couriers as (identity hash, queue ID) and draws distinct ones', () => {
    const couriers = findCouriers(doc);
    assert.equal(couriers.length, 3);
    assert.deepEqual(couriers[2], { identityHash: blake2b256(Buffer.alloc(32, 6)), queueId: Buffer.from('courier') });
    for (let i = 0; i < 20; i++) {
      const two = pickDistinctCouriers(couriers, 2);
      assert.equal(two.length, 2);
      assert.notDeepEqual(two[0].identityHash, two[1].identityHash);
    }
    assert.equal(pickDistinctCouriers(couriers, 3).length, 3);
    assert.throws(
      () => pickDistinctCouriers(couriers, 4),
      (e: unknown) => e instanceof NotEnoughCouriersError && e.requested === 4 && e.available === 3,
    );
    assert.deepEqual(findCouriers(null), []);
  });
});
