/**
 * What the Katzenpost sidebar shows, as plain JSON: each daemon connection
 * with its PKI document drawn as layers of named nodes, and each persistent
 * channel with its positions and counts. Nothing here carries a capability:
 * the descriptions are built field by field from values that are not caps
 * (names, counters, counts, times), never by copying an object wholesale.
 */
import type { PkiDocument } from '../../client/pki';
import type { ChannelActivity, ChannelInfo } from '../../channels';
import type { DaemonConnection } from './daemon-connection';
import type { ConnectionState } from './status';

/** One node of the network picture. */
export interface PictureNode {
  name: string;
}

/** The PKI document as the sidebar draws it: who is in which layer, and what the service nodes offer. */
export interface NetworkPicture {
  epoch: number;
  genesisEpoch: number;
  gateways: PictureNode[];
  /** Mix layers in path order; each is the list of its mixes. */
  layers: PictureNode[][];
  serviceNodes: (PictureNode & { capabilities: string[] })[];
  /** Service nodes offering the courier capability. */
  couriers: PictureNode[];
  replicas: (PictureNode & { replicaId: number })[];
}

export interface DaemonView {
  id: string;
  name: string;
  address: string;
  state: ConnectionState;
  /** Nodes using this connection. */
  users: number;
  /** Why it is not connected (the last connection error), or null. */
  error: string | null;
  /** The daemon's instance token (hex): random per kpclientd process, so a change means the daemon restarted. */
  instanceToken: string | null;
  epoch: number | null;
  pki: NetworkPicture | null;
}

export type ChannelViewState = 'open' | 'opening' | 'error' | 'stopped';

export interface ChannelView {
  /** The katzenpost-channel config node's id. */
  id: string;
  name: string;
  kind: 'owned' | 'imported';
  /** The katzenpost-daemon config node's id. */
  daemon: string;
  state: ChannelViewState;
  error: string | null;
  /** Counter of the channel's first box. */
  firstIndex: string | null;
  /** Counter of the next box this Node-RED writes (owned channels, once known). */
  writeIndex: string | null;
  /** Counter of the next box the reader reads. */
  readIndex: string | null;
  queued: number | null;
  unread: number | null;
  sent: number | null;
  received: number | null;
  receivedMessages: number | null;
  createdAt: number | null;
  lastSentAt: number | null;
  lastReceivedAt: number | null;
  lastActivityAt: number | null;
}

export interface SidebarState {
  daemons: DaemonView[];
  channels: ChannelView[];
  /** Server time of this snapshot (ms), so the browser can show "3 s ago" without trusting its own clock. */
  now: number;
}

function names(list: { name?: unknown }[] | undefined): PictureNode[] {
  return (list ?? []).map((d) => ({ name: typeof d?.name === 'string' ? d.name : '' }));
}

export function networkPicture(doc: PkiDocument): NetworkPicture {
  const serviceNodes = (doc.serviceNodes ?? []).map((d) => ({
    name: typeof d.name === 'string' ? d.name : '',
    capabilities: Object.keys(d.kaetzchen ?? {}).sort(),
  }));
  return {
    epoch: Number(doc.epoch),
    genesisEpoch: Number(doc.genesisEpoch),
    gateways: names(doc.gatewayNodes),
    layers: (doc.topology ?? []).map((layer) => names(layer)),
    serviceNodes,
    couriers: serviceNodes.filter((s) => s.capabilities.includes('courier')).map((s) => ({ name: s.name })),
    replicas: (doc.storageReplicas ?? []).map((r) => ({ name: typeof r.name === 'string' ? r.name : '', replicaId: Number(r.replicaId) })),
  };
}

export function daemonView(id: string, name: string, connection: DaemonConnection | null): DaemonView {
  if (!connection) {
    return { id, name, address: '', state: 'closed', users: 0, error: 'not deployed', instanceToken: null, epoch: null, pki: null };
  }
  const client = connection.currentClient();
  let doc: PkiDocument | null = null;
  let token: Buffer | null = null;
  try {
    doc = client?.pkiDocument() ?? null;
    token = client?.instanceToken ?? null;
  } catch {
    // a client being torn down: show what the connection knows
  }
  const pki = doc ? networkPicture(doc) : null;
  const err = connection.getState() === 'connected' ? null : connection.getLastError();
  return {
    id,
    name,
    address: connection.address,
    state: connection.getState(),
    users: connection.userCount(),
    error: err ? err.message : null,
    instanceToken: token ? token.toString('hex') : null,
    epoch: pki ? pki.epoch : null,
    pki,
  };
}

/** A channel whose store is not (yet) open: what the config says, and why. */
export function channelStub(
  id: string,
  name: string,
  kind: 'owned' | 'imported',
  daemon: string,
  state: ChannelViewState,
  error: string | null,
): ChannelView {
  return {
    id,
    name,
    kind,
    daemon,
    state,
    error,
    firstIndex: null,
    writeIndex: null,
    readIndex: null,
    queued: null,
    unread: null,
    sent: null,
    received: null,
    receivedMessages: null,
    createdAt: null,
    lastSentAt: null,
    lastReceivedAt: null,
    lastActivityAt: null,
  };
}

export function channelView(id: string, daemon: string, info: ChannelInfo, activity: ChannelActivity): ChannelView {
  return {
    id,
    name: info.name,
    kind: info.kind,
    daemon,
    state: 'open',
    error: null,
    firstIndex: info.firstIndex,
    writeIndex: info.kind === 'owned' ? info.writeIndex : null,
    readIndex: info.readIndex,
    queued: info.queued,
    unread: info.unread,
    sent: activity.sent,
    received: activity.received,
    receivedMessages: activity.receivedMessages,
    createdAt: activity.createdAt,
    lastSentAt: activity.lastSentAt,
    lastReceivedAt: activity.lastReceivedAt,
    lastActivityAt: activity.lastActivityAt,
  };
}
