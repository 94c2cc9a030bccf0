/**
 * katzenpost-pki: looks things up in the current PKI document: services by
 * capability, couriers, a summary, or the raw signed document of an epoch.
 */
import { InvalidArgumentError, ProtocolError } from '../client/errors';
import {
  courierToMsg,
  defineOperationNode,
  describeValue,
  serviceToMsg,
  summarizeDocument,
  toInteger,
} from './shared';
import type { NodeAPI, NodeDef } from './types';

interface PkiDef extends NodeDef {
  lookup?: 'service' | 'services' | 'courier' | 'couriers' | 'distinctCouriers' | 'document' | 'raw';
  /** msg property the result goes to (default payload), so a lookup can keep the payload for a send node. */
  property?: string;
}

export = function (RED: NodeAPI): void {
  defineOperationNode<PkiDef>(RED, {
    type: 'katzenpost-pki',
    async run({ RED, client, msg, config, setting, callOptions }) {
      const lookup = config.lookup ?? 'service';
      const property = typeof config.property === 'string' && config.property.trim() ? config.property.trim() : 'payload';
      const put = (value: unknown): void => {
        RED.util.setMessageProperty(msg, property, value, true);
      };
      switch (lookup) {
        case 'service':
        case 'services': {
          const c = await setting('capability', 'capability', 'katzenpost-pki capability');
          const cap = c.value;
          if (typeof cap !== 'string' || cap.trim() === '') {
            throw new InvalidArgumentError(c.name, 'a capability name such as "echo" or "courier"', describeValue(cap));
          }
          if (lookup === 'services') {
            put(client.getServices(cap.trim()).map(serviceToMsg));
            return msg;
          }
          const svc = client.getService(cap.trim());
          put(serviceToMsg(svc));
          msg.destination = { idHash: svc.destinationIdHash, queueId: svc.recipientQueueId };
          return msg;
        }
        case 'courier': {
          const c = courierToMsg(client.getCourierDestination());
          put(c);
          msg.courier = c;
          return msg;
        }
        case 'couriers':
          put(client.getAllCouriers().map(courierToMsg));
          return msg;
        case 'distinctCouriers': {
          const c = await setting('count', 'count', 'katzenpost-pki count');
          const n = c.value === undefined || c.value === '' ? 2 : toInteger(c.value, c.name, 1, 1000);
          put(client.getDistinctCouriers(n).map(courierToMsg));
          return msg;
        }
        case 'document': {
          const doc = client.pkiDocument();
          if (!doc) throw new ProtocolError('katzenpost-pki: the daemon has not sent a PKI document yet');
          put(summarizeDocument(doc));
          msg.epoch = Number(doc.epoch);
          return msg;
        }
        case 'raw': {
          const e = await setting('epoch', 'epoch', 'katzenpost-pki epoch');
          const epoch = e.value === undefined || e.value === '' ? 0 : toInteger(e.value, e.name, 0, Number.MAX_SAFE_INTEGER);
          const r = await client.getPkiDocumentRaw(epoch, callOptions());
          put(r.payload);
          msg.epoch = Number(r.epoch);
          return msg;
        }
        default:
          throw new InvalidArgumentError('katzenpost-pki lookup', 'one of service, services, courier, couriers, distinctCouriers, document, raw', String(lookup));
      }
    },
  });
};
