/**
 * Message-level helpers shared by the Pigeonhole nodes: the `msg.envelope`
 * object that encrypt nodes write and resend/cancel nodes read, and service
 * destinations for the legacy send nodes.
 */
import { createHash } from 'node:crypto';
import { InvalidArgumentError } from '../../client/errors';
import type { ResendParams, StartResendingResult, ThinClient } from '../../client/client';
import type { NodeMessage } from '../types';
import { describeValue, evaluateTypedInput, toBuffer } from './inputs';
import { SIZES, type OperationContext } from './operation';

/** What `encrypt_read` / `encrypt_write` produced, as carried in msg.envelope. */
export interface MsgEnvelope {
  messageCiphertext: Buffer;
  envelopeDescriptor: Buffer;
  envelopeHash: Buffer;
  /** Which encrypt node made it; lets a resend node tell a read from a write. */
  kind?: 'read' | 'write';
}

/** Builds msg.envelope from an encrypt result (fresh Buffers owned by the client). */
export function envelopeFromResult(
  r: { messageCiphertext: Buffer; envelopeDescriptor: Buffer; envelopeHash: Buffer },
  kind: 'read' | 'write',
): MsgEnvelope {
  return {
    messageCiphertext: r.messageCiphertext,
    envelopeDescriptor: r.envelopeDescriptor,
    envelopeHash: r.envelopeHash,
    kind,
  };
}

/**
 * A default ARQ write of an envelope made for `writeCap` (by encrypt_write or
 * tombstone_range), the way the copy and tombstone nodes dispatch them.
 */
export function resendWrite(
  client: ThinClient,
  writeCap: Uint8Array,
  e: { envelopeDescriptor: Uint8Array; messageCiphertext: Uint8Array; envelopeHash: Uint8Array },
  signal: AbortSignal,
): Promise<StartResendingResult> {
  const params: ResendParams = {
    writeCap,
    readCap: null,
    messageBoxIndex: null,
    envelopeDescriptor: e.envelopeDescriptor,
    messageCiphertext: e.messageCiphertext,
    envelopeHash: e.envelopeHash,
  };
  return client.startResendingEncryptedMessage(params, { signal });
}

/**
 * A short, non-secret name for a box in status texts: the first 6 hex
 * digits of the SHA-256 of its 104-byte MessageBoxIndex. (The index itself
 * holds key material and is never shown.)
 */
export function boxLabel(index: Uint8Array): string {
  return createHash('sha256').update(index).digest('hex').slice(0, 6);
}

/** Reads and checks msg.envelope (errors name the sub-property). */
export function readEnvelope(msg: NodeMessage, prop = 'envelope'): MsgEnvelope {
  const env = msg[prop];
  if (typeof env !== 'object' || env === null || Array.isArray(env) || Buffer.isBuffer(env)) {
    throw new InvalidArgumentError(
      `msg.${prop}`,
      'an object {messageCiphertext, envelopeDescriptor, envelopeHash} from an encrypt node',
      describeValue(env),
    );
  }
  const e = env as Record<string, unknown>;
  const kind = e.kind === 'read' || e.kind === 'write' ? e.kind : undefined;
  return {
    messageCiphertext: toBuffer(e.messageCiphertext, { name: `msg.${prop}.messageCiphertext`, nonEmpty: true }),
    envelopeDescriptor: toBuffer(e.envelopeDescriptor, { name: `msg.${prop}.envelopeDescriptor`, nonEmpty: true }),
    envelopeHash: toBuffer(e.envelopeHash, { name: `msg.${prop}.envelopeHash`, size: SIZES.envelopeHash }),
    kind,
  };
}

/** A legacy-send destination: the service node's identity hash and its queue (endpoint) id. */
export interface Destination {
  idHash: Buffer;
  queueId: Buffer;
  /** Service capability and node name, when chosen from the PKI document. */
  capability?: string;
  name?: string;
}

/** Reads msg.destination = {idHash: Buffer(32), queueId: Buffer | string}. */
export function readDestination(value: unknown, name = 'msg.destination'): Destination {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || Buffer.isBuffer(value)) {
    throw new InvalidArgumentError(name, 'an object {idHash: Buffer(32), queueId: Buffer}', describeValue(value));
  }
  const d = value as Record<string, unknown>;
  return {
    idHash: toBuffer(d.idHash, { name: `${name}.idHash`, size: SIZES.idHash }),
    // The queue id is an endpoint name ("+echo"), so text is unambiguous here.
    queueId: toBuffer(d.queueId, { name: `${name}.queueId`, nonEmpty: true, strings: 'utf8' }),
  };
}

/** Picks one service with the capability (uniformly at random among matches). */
export function destinationForCapability(client: ThinClient, capability: string, name: string): Destination {
  if (typeof capability !== 'string' || capability.trim() === '') {
    throw new InvalidArgumentError(name, 'a service capability name such as "echo"', describeValue(capability));
  }
  // Throws ServiceNotFoundError ("service not found: no service node offers ...") when none does.
  const svc = client.getService(capability.trim());
  return {
    idHash: svc.destinationIdHash,
    queueId: svc.recipientQueueId,
    capability: svc.capability,
    name: svc.name,
  };
}

/** The plain object a destination becomes on a message (Buffers only, JSON-friendly). */
export function destinationToMsg(d: Destination): Record<string, unknown> {
  const out: Record<string, unknown> = { idHash: d.idHash, queueId: d.queueId };
  if (d.capability !== undefined) out.capability = d.capability;
  if (d.name !== undefined) out.name = d.name;
  return out;
}

/** A courier pin from msg.courier = {identityHash: Buffer(32), queueId: Buffer}. */
export function readCourier(value: unknown, name = 'msg.courier'): { identityHash: Buffer; queueId: Buffer } {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || Buffer.isBuffer(value)) {
    throw new InvalidArgumentError(name, 'an object {identityHash: Buffer(32), queueId: Buffer} from a PKI node', describeValue(value));
  }
  const c = value as Record<string, unknown>;
  return {
    identityHash: toBuffer(c.identityHash, { name: `${name}.identityHash`, size: SIZES.idHash }),
    queueId: toBuffer(c.queueId, { name: `${name}.queueId`, nonEmpty: true, strings: 'utf8' }),
  };
}

/**
 * The destination of a legacy send, in this order: the node's Service field
 * (a TypedInput; node config wins), msg.destination, msg.capability.
 */
export async function resolveServiceDestination(ctx: OperationContext): Promise<Destination> {
  const formValue = await evaluateTypedInput(ctx.RED, ctx.node, ctx.msg, ctx.config.service, ctx.config.serviceType);
  if (formValue !== undefined && formValue !== '') {
    const type = typeof ctx.config.serviceType === 'string' && ctx.config.serviceType ? ctx.config.serviceType : 'str';
    const name = type === 'str' ? `${ctx.node.type} service` : `${type}.${String(ctx.config.service)}`;
    if (typeof formValue === 'object' && formValue !== null && !Buffer.isBuffer(formValue)) {
      // A context variable may hold a destination object, e.g. saved from a PKI node.
      return readDestination(formValue, name);
    }
    return destinationForCapability(ctx.client, String(formValue), name);
  }
  const msg = ctx.msg;
  if (msg.destination !== undefined && msg.destination !== null) return readDestination(msg.destination);
  if (msg.capability !== undefined && msg.capability !== null && msg.capability !== '') {
    return destinationForCapability(ctx.client, msg.capability as string, 'msg.capability');
  }
  throw new InvalidArgumentError(
    'msg.destination',
    'an object {idHash: Buffer(32), queueId: Buffer} (or a Service in the node, or msg.capability)',
    describeValue(msg.destination),
  );
}
