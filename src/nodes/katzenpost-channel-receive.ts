/**
 * katzenpost-channel-receive: a source node that reads a persistent channel in
 * order and emits one message per received payload (output 1), and one per
 * skipped box (output 2: tombstones and boxes that are not channel messages).
 * A message is marked read in the channel database right after it was
 * emitted (node.send returned), so after a crash or restart reading resumes
 * after the last emitted message.
 */
import type { ChannelItem, ChannelProblem, ChannelStore } from '../channels';
import { Backoff } from '../util/backoff';
import { pause } from '../util/deadline';
import { configNodeOf, readSeconds, useDaemon } from './shared';
import katzenpostChannel = require('./katzenpost-channel');
import type { Node, NodeAPI, NodeDef, NodeMessage } from './types';

/** How long closing waits for the receiver to stop before the daemon connection is let go. */
const CLOSE_WAIT_MS = 5000;

interface ReceiveDef extends NodeDef {
  channel?: string;
  pollInterval?: string | number;
  maxPollInterval?: string | number;
}

export = function (RED: NodeAPI): void {
  function KatzenpostChannelReceiveNode(this: Node, def: ReceiveDef): void {
    RED.nodes.createNode(this, def);
    const node = this;
    const channel = configNodeOf(RED, def.channel, katzenpostChannel.isConfigNode);
    // The editor refuses the same values with the same words; a flow deployed anyway reports it once.
    let settingsError: Error | null = null;
    let pollInitialMs = 1000;
    let pollMaxMs = 10_000;
    try {
      pollInitialMs = Math.max(10, (readSeconds(def.pollInterval, 'katzenpost-channel-receive poll interval', true) ?? 1) * 1000);
      pollMaxMs = Math.max(pollInitialMs, (readSeconds(def.maxPollInterval, 'katzenpost-channel-receive longest poll interval', true) ?? 10) * 1000);
    } catch (e) {
      settingsError = e as Error;
    }
    const controller = new AbortController();
    let received = 0;

    const user = useDaemon(RED, node, channel?.daemonId);
    if (!channel) node.status({ fill: 'red', shape: 'ring', text: RED._('katzenpost-channel-receive.status.no-channel') });

    const emit = (item: ChannelItem): void => {
      if (item.kind === 'message') {
        const msg: NodeMessage = { payload: item.payload, index: item.index, channel: item.channel, boxes: item.boxes, topic: item.channel };
        node.send([msg, null]);
        received++;
        user.status.begin()(); // clears an earlier error shown on the status
        const translated = RED._('katzenpost-channel-receive.status.received', { count: received });
        const text = translated.includes('status.received') ? `${received} received` : translated;
        user.status.setExtra({ fill: 'green', shape: 'dot', text });
      } else {
        const msg: NodeMessage = {
          payload: { kind: item.kind, index: item.index, boxes: item.boxes, ...(item.reason ? { reason: item.reason } : {}) },
          kind: item.kind,
          index: item.index,
          channel: item.channel,
          boxes: item.boxes,
          topic: item.channel,
        };
        node.send([null, msg]);
      }
      // Returning (synchronously) lets the store commit the read mark in the same tick.
    };

    let store: ChannelStore | null = null;
    const onProblem = (p: ChannelProblem) => {
      if (p.channel === channel?.receiveName && p.operation === 'receive') user.status.setError(p.error);
    };

    // Invite and join: the introduction's progress while the incoming channel does not exist yet.
    if (channel?.introduction()) user.status.setExtra(channel.introductionStatus());
    const stopIntroduction = channel?.onIntroduction(() => {
      if (received === 0 && !controller.signal.aborted) user.status.setExtra(channel.introductionStatus());
    });

    /** Resolves when the node closes. */
    const closedPromise = new Promise<void>((r) => controller.signal.addEventListener('abort', () => r(), { once: true }));
    /** The last error reported to Node-RED: the same error is not raised again at every retry. */
    let reported: string | null = null;

    /**
     * Opens the channel and runs the receiver until close; restarts it after
     * failures. A configuration error (missing or mismatched caps, a bad read
     * cap) is reported once and shown on the status; nothing is retried until
     * the flow is redeployed, since only a change of the configuration fixes
     * it. Other failures are retried with backoff, each distinct one reported
     * once.
     */
    async function run(): Promise<void> {
      if (!channel) return;
      if (settingsError) {
        user.status.setError(settingsError, true);
        node.error(settingsError.message);
        return;
      }
      // Between failed attempts: 1 s doubling to 30 s; a receive that ran normally starts over.
      const retry = new Backoff(1000, 30_000);
      while (!controller.signal.aborted) {
        try {
          const s = await channel.open('receive');
          if (!store) {
            store = s;
            s.on('problem', onProblem);
          }
          await s.receive(channel.receiveName, emit, { signal: controller.signal, pollInitialMs, pollMaxMs });
          retry.reset();
          reported = null;
        } catch (err) {
          if (controller.signal.aborted) return;
          const text = err instanceof Error ? err.message : String(err);
          const fatal = katzenpostChannel.isConfigError(err);
          user.status.setError(err, fatal);
          if (text !== reported) {
            reported = text;
            node.error(text);
          } else {
            node.debug(`katzenpost-channel-receive: still failing: ${text}`);
          }
          if (fatal) {
            await closedPromise;
            return;
          }
        }
        if (controller.signal.aborted) return;
        await pause(retry.next(), controller.signal).promise;
      }
    }
    const running = run();

    node.on('close', (_removed: boolean, done: () => void) => {
      controller.abort();
      stopIntroduction?.();
      store?.off('problem', onProblem);
      // The receiver stops at its next await (a pending read is cancelled on the daemon).
      // Bounded, so a stuck receiver cannot hold up a redeploy.
      const wait = pause(CLOSE_WAIT_MS);
      Promise.race([running, wait.promise])
        .finally(() => wait.wake())
        .then(() => user.close())
        .catch(() => undefined)
        .finally(() => done());
    });
  }
  RED.nodes.registerType('katzenpost-channel-receive', KatzenpostChannelReceiveNode as never);
};
