/**
 * A JSON-friendly summary of a PKI document for flows: what services exist,
 * how many couriers, which epoch. (The full parsed document holds Maps and
 * nested descriptors that a debug node shows poorly.)
 */
import type { CourierDescriptor, PkiDocument, ServiceDescriptor } from '../../client/pki';

export interface ServiceSummary {
  capability: string;
  /** Name of the service node hosting it. */
  name: string;
  /** The endpoint (recipient queue id) as text, e.g. "+echo". */
  endpoint: string;
  /** BLAKE2b-256 of the node's identity key, hex. */
  idHash: string;
}

export interface PkiSummary {
  epoch: number;
  genesisEpoch: number;
  /** Every capability offered, sorted. */
  capabilities: string[];
  services: Omit<ServiceSummary, 'idHash'>[];
  couriers: number;
  serviceNodes: number;
  gatewayNodes: number;
  mixLayers: number;
  storageReplicas: number;
}

export function summarizeDocument(doc: PkiDocument): PkiSummary {
  const services: Omit<ServiceSummary, 'idHash'>[] = [];
  const caps = new Set<string>();
  let couriers = 0;
  for (const node of doc.serviceNodes ?? []) {
    for (const [capability, params] of Object.entries(node.kaetzchen ?? {})) {
      const endpoint = typeof params?.endpoint === 'string' ? params.endpoint : '';
      if (!endpoint) continue;
      caps.add(capability);
      if (capability === 'courier') couriers++;
      services.push({ capability, name: node.name, endpoint });
    }
  }
  return {
    epoch: Number(doc.epoch),
    genesisEpoch: Number(doc.genesisEpoch),
    capabilities: [...caps].sort(),
    services,
    couriers,
    serviceNodes: doc.serviceNodes?.length ?? 0,
    gatewayNodes: doc.gatewayNodes?.length ?? 0,
    mixLayers: doc.topology?.length ?? 0,
    storageReplicas: doc.storageReplicas?.length ?? 0,
  };
}

/** A service as a flow object: Buffers for the destination, plus names. */
export function serviceToMsg(s: ServiceDescriptor): Record<string, unknown> {
  return {
    capability: s.capability,
    name: s.name,
    endpoint: s.recipientQueueId.toString('utf8'),
    idHash: s.destinationIdHash,
    queueId: s.recipientQueueId,
  };
}

export function courierToMsg(c: CourierDescriptor): { identityHash: Buffer; queueId: Buffer } {
  return { identityHash: c.identityHash, queueId: c.queueId };
}
