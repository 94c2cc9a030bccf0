/**
 * katzenpost-events: a source of daemon events. Emits a summary of every new
 * PKI document (topic "pki"), every change of the connection state (topic
 * "connection"), and optionally every daemon event as it comes (topic = the
 * event type).
 */
import { summarizeDocument, useDaemon, type ConnectionState, type DaemonEvent, type DaemonUser } from './shared';
import type { Node, NodeAPI, NodeDef, NodeMessage } from './types';

interface EventsDef extends NodeDef {
  pki?: boolean;
  connection?: boolean;
  all?: boolean;
}

/** Event fields as a flow can show them: Dates and Buffers stay, Errors become their message. */
function plainFields(ev: DaemonEvent): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(ev)) {
    if (k === 'type') continue;
    if (k === 'document') continue; // the parsed document is large; the summary or the raw payload serve better
    out[k] = v instanceof Error ? v.message : v;
  }
  if (ev.type === 'newPkiDocument' && ev.document) out.summary = summarizeDocument(ev.document);
  return out;
}

export = function (RED: NodeAPI): void {
  function KatzenpostEventsNode(this: Node, config: EventsDef): void {
    RED.nodes.createNode(this, config);
    const node = this;
    const wantPki = config.pki !== false;
    const wantConnection = config.connection !== false;
    const wantAll = config.all === true;
    let lastState: ConnectionState | null = null;
    let lastEpoch: number | null = null;
    let address = '';
    // Assigned below; the callbacks run only after registration, but may run during it.
    let user: DaemonUser | undefined;

    const emit = (msg: NodeMessage): void => {
      try {
        node.send(msg);
      } catch (e) {
        node.debug(`katzenpost-events: send failed: ${(e as Error).message}`);
      }
    };

    user = useDaemon(RED, node, config.daemon, {
      onState(state) {
        if (!wantConnection || state === lastState || state === 'idle' || state === 'closed') return;
        lastState = state;
        const client = user?.connection?.currentClient() ?? null;
        emit({
          topic: 'connection',
          payload: {
            state,
            daemon: address,
            daemonConnected: state === 'connected' || state === 'offline',
            mixnetConnected: state === 'connected',
            instanceToken: client?.instanceToken ?? null,
          },
        });
      },
      onEvent(ev) {
        if (wantPki && ev.type === 'newPkiDocument' && ev.document) {
          const summary = summarizeDocument(ev.document);
          // The handshake and a reconnect can deliver the same epoch again.
          if (summary.epoch !== lastEpoch) {
            lastEpoch = summary.epoch;
            emit({ topic: 'pki', payload: summary, epoch: summary.epoch });
          }
        }
        if (wantAll) emit({ topic: ev.type, payload: plainFields(ev) });
      },
    });
    address = user.connection?.address ?? '';
    const registered = user;

    node.on('close', (_removed: boolean, done: () => void) => {
      registered
        .close()
        .catch(() => undefined)
        .finally(() => done());
    });
  }
  RED.nodes.registerType('katzenpost-events', KatzenpostEventsNode as never);
};
