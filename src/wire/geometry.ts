/**
 * The Sphinx and Pigeonhole geometries (PROTOCOL.md §6.8): their fields,
 * the field order on the wire, and the docker test network's values.
 */

export interface SphinxGeometry {
  PacketLength: number;
  NrHops: number;
  HeaderLength: number;
  RoutingInfoLength: number;
  PerHopRoutingInfoLength: number;
  SURBLength: number;
  SphinxPlaintextHeaderLength: number;
  PayloadTagLength: number;
  ForwardPayloadLength: number;
  UserForwardPayloadLength: number;
  NextNodeHopLength: number;
  SPRPKeyMaterialLength: number;
  NIKEName: string;
  KEMName: string;
}

export interface PigeonholeGeometry {
  MaxPlaintextPayloadLength: number;
  CourierQueryReadLength: number;
  CourierQueryWriteLength: number;
  CourierQueryReplyReadLength: number;
  CourierQueryReplyWriteLength: number;
  NIKEName: string;
  SignatureSchemeName: string;
}

export const SPHINX_GEOMETRY_KEYS: readonly (keyof SphinxGeometry)[] = [
  'PacketLength',
  'NrHops',
  'HeaderLength',
  'RoutingInfoLength',
  'PerHopRoutingInfoLength',
  'SURBLength',
  'SphinxPlaintextHeaderLength',
  'PayloadTagLength',
  'ForwardPayloadLength',
  'UserForwardPayloadLength',
  'NextNodeHopLength',
  'SPRPKeyMaterialLength',
  'NIKEName',
  'KEMName',
];

export const PIGEONHOLE_GEOMETRY_KEYS: readonly (keyof PigeonholeGeometry)[] = [
  'MaxPlaintextPayloadLength',
  'CourierQueryReadLength',
  'CourierQueryWriteLength',
  'CourierQueryReplyReadLength',
  'CourierQueryReplyWriteLength',
  'NIKEName',
  'SignatureSchemeName',
];

/** The docker test network's geometry (§6.8), which the emulator serves by default. */
export const DEFAULT_SPHINX_GEOMETRY: SphinxGeometry = {
  PacketLength: 3082,
  NrHops: 5,
  HeaderLength: 476,
  RoutingInfoLength: 410,
  PerHopRoutingInfoLength: 82,
  SURBLength: 572,
  SphinxPlaintextHeaderLength: 2,
  PayloadTagLength: 32,
  ForwardPayloadLength: 2574,
  UserForwardPayloadLength: 2000,
  NextNodeHopLength: 65,
  SPRPKeyMaterialLength: 64,
  NIKEName: 'x25519',
  KEMName: '',
};

export const DEFAULT_PIGEONHOLE_GEOMETRY: PigeonholeGeometry = {
  MaxPlaintextPayloadLength: 1553,
  CourierQueryReadLength: 359,
  CourierQueryWriteLength: 2000,
  CourierQueryReplyReadLength: 1698,
  CourierQueryReplyWriteLength: 50,
  NIKEName: 'CTIDH1024-X25519',
  SignatureSchemeName: 'Ed25519',
};
