/**
 * katzenpost-channel-send: writes msg.payload to the next box of a persistent
 * channel. The message is queued durably before anything is sent; the output
 * message leaves when the courier acknowledged it, carrying msg.index.
 * Messages that arrive while the daemon is away wait in the queue, in order.
 *
 * Queuing needs the channel open. A channel the database does not know yet
 * (first deploy of a seed) opens only once the daemon derived its caps; an
 * input waits for that at most its timeout (msg.timeout ms, else the node's
 * timeout in seconds, else 30 s) and then fails naming the cause. Closing
 * the node completes such waiting inputs without an error (they were never
 * queued, so nothing is sent for them).
 */
import { DaemonDisconnectedError, InvalidArgumentError, ThinClientTimeoutError } from '../client/errors';
import { MAX_MESSAGE_LENGTH, type ChannelProblem, type ChannelStore } from '../channels';
import { formatMs } from './lib/daemon-connection';
import { CoalescedStatus, configNodeOf, defaultTimeoutMs, errorStatusText, reportFailure, resolveTimeoutMs, statusForConnection, toBuffer, useDaemon, type ConnectionState } from './shared';
import katzenpostChannel = require('./katzenpost-channel');
import type { Node, NodeAPI, NodeDef, NodeMessage, NodeStatus } from './types';

interface SendDef extends NodeDef {
  channel?: string;
  /** Seconds an input may wait for the channel to open; blank = 30, 0 = no limit. */
  timeout?: string | number;
}

/** How long an input waits for the channel to open when neither msg.timeout nor the node sets it. */
const DEFAULT_OPEN_WAIT_MS = defaultTimeoutMs('katzenpost-channel-send') ?? 30_000;

export = function (RED: NodeAPI): void {
  function KatzenpostChannelSendNode(this: Node, def: SendDef): void {
    RED.nodes.createNode(this, def);
    const node = this;
    const channel = configNodeOf(RED, def.channel, katzenpostChannel.isConfigNode);

    let state: ConnectionState = 'idle';
    let stateDetail: string | null = null;
    let queued = 0;
    let problem: string | null = null;
    /** A failed introduction (invite and join): a configuration error, shown until redeployed. */
    let introductionProblem: string | null = null;
    let closed = false;
    /** Errors already raised with node.error: a configuration error is raised once. */
    const reported = new Set<string>();
    const reportOnce = (err: Error): void => {
      if (reported.has(err.message)) return;
      reported.add(err.message);
      node.error(err.message);
    };

    const currentStatus = (): NodeStatus => {
      let s: NodeStatus;
      if (!channel) s = { fill: 'red', shape: 'ring', text: RED._('katzenpost-channel-send.status.no-channel') };
      else if (problem || introductionProblem) s = { fill: 'red', shape: 'ring', text: (problem ?? introductionProblem)! };
      else if (queued > 0) {
        const translated = RED._('katzenpost-channel-send.status.queued', { count: queued });
        const text = translated.includes('status.queued') ? `${queued} queued` : translated;
        s = state === 'connected' || state === 'offline' ? { fill: 'blue', shape: 'dot', text } : { fill: 'yellow', shape: 'ring', text };
      } else {
        // While the introduction runs (and the daemon is there to run it), its step.
        const introducing = state === 'connected' ? channel.introductionStatus() : null;
        s = introducing ?? statusForConnection(state, stateDetail);
      }
      return s;
    };
    // Queue changes come with every message: coalesced, as every node's status is.
    const shownStatus = new CoalescedStatus(node, currentStatus);
    // Shows nothing once closed (the close handler closes shownStatus).
    const render = (): void => shownStatus.update();

    const user = useDaemon(RED, node, channel?.daemonId, {
      quietStatus: true,
      onState(next, detail) {
        state = next;
        stateDetail = detail ?? null;
        render();
      },
    });

    let store: ChannelStore | null = null;
    const onQueue = (q: { channel: string; queued: number }) => {
      if (q.channel !== channel?.sendName) return;
      queued = q.queued;
      if (queued === 0) problem = null;
      render();
    };
    const onProblem = (p: ChannelProblem) => {
      if (p.channel !== channel?.sendName || p.operation === 'receive') return;
      problem = errorStatusText(p.error);
      render();
    };
    const onSent = (r: { channel: string }) => {
      if (r.channel !== channel?.sendName) return;
      problem = null;
      render();
    };
    const attach = (s: ChannelStore): void => {
      if (store || closed) return;
      store = s;
      s.on('queue', onQueue);
      s.on('problem', onProblem);
      s.on('sent', onSent);
      queued = s.queued(channel!.sendName);
      render();
    };
    // Invite and join: the introduction's progress on the status, and its failure (a configuration error) once.
    const stopIntroduction = channel?.onIntroduction((p) => {
      if (closed) return;
      if (p.error) {
        introductionProblem = errorStatusText(p.error);
        reportOnce(p.error);
      }
      render();
    });
    if (channel) {
      // Open early so that messages queued before a restart are sent without waiting for input.
      channel.open('send').then(attach, (err: Error) => {
        if (closed) return;
        problem = errorStatusText(err);
        render();
        reportOnce(err);
      });
    }
    render();

    /** Inputs waiting for the channel to open (not queued yet), each with its clean completion for close. */
    const waitingOpen = new Set<() => void>();

    /** channel.open(), bounded by the input's timeout, failing with an error that names the cause. */
    function openWithin(timeoutMs: number | undefined, source: string): Promise<ChannelStore> {
      const opening = channel!.open('send');
      if (timeoutMs === undefined) return opening;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(notOpenError(timeoutMs, source)), timeoutMs);
        opening.then(
          (s) => {
            clearTimeout(timer);
            resolve(s);
          },
          (err: unknown) => {
            clearTimeout(timer);
            reject(err);
          },
        );
      });
    }

    function notOpenError(waitedMs: number, source: string): Error {
      const connection = channel!.connection;
      const what = `katzenpost-channel-send: channel "${channel!.sendName}" not open after ${formatMs(waitedMs)} (${source})`;
      const state = connection?.getState();
      const introducing = channel!.introductionStatus();
      if (introducing) {
        return new ThinClientTimeoutError(`${what}: the introduction is not complete yet (${introducing.text}); the message was not queued`);
      }
      if (connection && state !== 'connected' && state !== 'offline') {
        return new DaemonDisconnectedError(`${what}: daemon at ${connection.address} not reachable; the message was not queued`);
      }
      return new ThinClientTimeoutError(`${what}: the daemon has not derived its caps yet; the message was not queued`);
    }

    node.on('input', (msg: NodeMessage, send: (m: NodeMessage) => void, done: (err?: Error) => void) => {
      if (!channel) {
        reportFailure(node, new InvalidArgumentError('katzenpost-channel-send channel', 'a katzenpost-channel config node', 'none selected'), msg, done);
        return;
      }
      let payload: Buffer;
      let timeoutMs: number | undefined;
      try {
        payload = toBuffer(msg.payload, {
          name: 'msg.payload',
          strings: 'utf8',
          max: MAX_MESSAGE_LENGTH,
          maxReason: 'the channel message limit',
        });
        timeoutMs = resolveTimeoutMs(msg, def.timeout, DEFAULT_OPEN_WAIT_MS, 'katzenpost-channel-send timeout');
      } catch (err) {
        reportFailure(node, err, msg, done);
        return;
      }
      const source = msg.timeout !== undefined && msg.timeout !== null && msg.timeout !== '' ? 'msg.timeout' : 'node timeout';
      let finished = false;
      const finish = (err?: Error): void => {
        if (finished) return;
        finished = true;
        waitingOpen.delete(completeOnClose);
        if (err) reportFailure(node, err, msg, done);
        else done();
      };
      // Closed before the message was queued: nothing will send it, and nobody can catch an error any more.
      const completeOnClose = (): void => finish();
      waitingOpen.add(completeOnClose);
      openWithin(timeoutMs, source)
        .then((s) => {
          if (closed || finished) {
            finish();
            return;
          }
          waitingOpen.delete(completeOnClose);
          attach(s);
          // The store copies the payload before queuing it, so the incoming Buffer is never mutated or retained.
          return s.send(channel.sendName, payload).then((result) => {
            msg.index = result.index;
            msg.channel = result.channel;
            msg.boxes = result.boxes;
            send(msg);
            finish();
          });
        })
        .catch((err: Error & { code?: string }) => {
          // Closing (redeploy, shutdown) while the write waits: it stays
          // queued in the database and goes out after the restart, so the
          // input is accepted; only its output message is lost.
          if (closed) {
            if (err.code === 'CHANNEL_CLOSED') {
              node.debug(`katzenpost-channel-send: closed with a message still queued; it is sent after the restart`);
            }
            finish();
          } else finish(err);
        });
    });

    node.on('close', (_removed: boolean, done: () => void) => {
      closed = true;
      shownStatus.close();
      stopIntroduction?.();
      if (waitingOpen.size > 0) {
        node.warn(
          `katzenpost-channel-send: closed while ${waitingOpen.size} message(s) waited for the channel to open; they were not queued and are not sent`,
        );
        for (const complete of [...waitingOpen]) complete();
      }
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
