/**
 * katzenpost-channel-send: writes msg.payload to the next box of a persistent
 * channel. The message is queued durably before anything is sent; the output
 * message leaves when the courier acknowledged it, carrying msg.index.
 * Messages that arrive while the daemon is away wait in the queue, in order.
 */
import { InvalidArgumentError } from '../client/errors';
import { MAX_MESSAGE_LENGTH, type ChannelProblem, type ChannelStore } from '../channels';
import { errorStatusText, statusForConnection, toBuffer, useDaemon, type ConnectionState } from './shared';
import katzenpostChannel = require('./katzenpost-channel');
import type { Node, NodeAPI, NodeDef, NodeMessage, NodeStatus } from './types';

interface SendDef extends NodeDef {
  channel?: string;
}

export = function (RED: NodeAPI): void {
  function KatzenpostChannelSendNode(this: Node, def: SendDef): void {
    RED.nodes.createNode(this, def);
    const node = this;
    const target = typeof def.channel === 'string' && def.channel ? RED.nodes.getNode(def.channel) : null;
    const channel = katzenpostChannel.isConfigNode(target) ? target : null;

    let state: ConnectionState = 'idle';
    let queued = 0;
    let problem: string | null = null;
    let closed = false;

    const render = (): void => {
      if (closed) return;
      let s: NodeStatus;
      if (!channel) s = { fill: 'red', shape: 'ring', text: RED._('katzenpost-channel-send.status.no-channel') };
      else if (problem) s = { fill: 'red', shape: 'ring', text: problem };
      else if (queued > 0) {
        const translated = RED._('katzenpost-channel-send.status.queued', { count: queued });
        const text = translated.includes('status.queued') ? `${queued} queued` : translated;
        s = state === 'connected' || state === 'offline' ? { fill: 'blue', shape: 'dot', text } : { fill: 'yellow', shape: 'ring', text };
      } else s = statusForConnection(state);
      try {
        node.status(s);
      } catch {
        // node already stopped
      }
    };

    const user = useDaemon(RED, node, channel?.daemonId, {
      quietStatus: true,
      onState(next) {
        state = next;
        render();
      },
    });

    let store: ChannelStore | null = null;
    const onQueue = (q: { channel: string; queued: number }) => {
      if (q.channel !== channel?.channelName) return;
      queued = q.queued;
      if (queued === 0) problem = null;
      render();
    };
    const onProblem = (p: ChannelProblem) => {
      if (p.channel !== channel?.channelName || p.operation === 'receive') return;
      problem = errorStatusText(p.error);
      render();
    };
    const onSent = (r: { channel: string }) => {
      if (r.channel !== channel?.channelName) return;
      problem = null;
      render();
    };
    const attach = (s: ChannelStore): void => {
      if (store || closed) return;
      store = s;
      s.on('queue', onQueue);
      s.on('problem', onProblem);
      s.on('sent', onSent);
      queued = s.queued(channel!.channelName);
      render();
    };
    if (channel) {
      // Open early so that messages queued before a restart are sent without waiting for input.
      channel.open().then(attach, (err: Error) => {
        problem = errorStatusText(err);
        render();
        node.error(err);
      });
    }
    render();

    node.on('input', (msg: NodeMessage, send: (m: NodeMessage) => void, done: (err?: Error) => void) => {
      if (!channel) {
        done(new InvalidArgumentError('channel', 'a katzenpost-channel config node'));
        return;
      }
      let payload: Buffer;
      try {
        payload = toBuffer(msg.payload, {
          name: 'msg.payload',
          strings: 'utf8',
          max: MAX_MESSAGE_LENGTH,
          maxReason: 'the channel message limit',
        });
      } catch (err) {
        done(err as Error);
        return;
      }
      channel
        .open()
        .then((s) => {
          attach(s);
          // The store copies the payload before queuing it, so the incoming Buffer is never mutated or retained.
          return s.send(channel.channelName, payload);
        })
        .then(
          (result) => {
            msg.index = result.index;
            msg.channel = result.channel;
            msg.boxes = result.boxes;
            send(msg);
            done();
          },
          (err: Error & { code?: string }) => {
            // Closing (redeploy, shutdown) while the write waits: it stays
            // queued in the database and goes out after the restart, so the
            // input is accepted; only its output message is lost.
            if (closed && err.code === 'CHANNEL_CLOSED') {
              node.debug(`katzenpost-channel-send: closed with a message still queued; it is sent after the restart`);
              done();
            } else done(err);
          },
        );
    });

    node.on('close', (_removed: boolean, done: () => void) => {
      closed = true;
      if (store) {
        store.off('queue', onQueue);
        store.off('problem', onProblem);
        store.off('sent', onSent);
      }
      user
        .close()
        .catch(() => undefined)
        .finally(() => done());
    });
  }
  RED.nodes.registerType('katzenpost-channel-send', KatzenpostChannelSendNode as never);
};
