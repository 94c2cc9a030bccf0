/**
 * katzenpost-daemon: the config node holding one thin-client connection to a
 * kpclientd (or the emulator) for all the nodes that select it.
 */
import { DaemonConnection, dialFromConfig, parseSeconds, type DaemonConfigNode, type DaemonDef } from './shared';
import type { NodeAPI } from './types';

export = function (RED: NodeAPI): void {
  function KatzenpostDaemonNode(this: DaemonConfigNode, def: DaemonDef): void {
    RED.nodes.createNode(this, def);
    const node = this;
    const { dial, configFile, address } = dialFromConfig(def);
    const handshakeTimeoutMs = (parseSeconds(def.handshakeTimeout) || 10) * 1000;
    const requestTimeoutMs = (parseSeconds(def.requestTimeout) || 30) * 1000;
    // The client's log lines never contain caps (the library's rule); debug goes to Node-RED's debug level.
    const log = {
      debug: (m: string) => node.debug(m),
      info: (m: string) => node.log(m),
      warn: (m: string) => node.warn(m),
      error: (m: string) => node.warn(m),
    };
    node.connection = new DaemonConnection(
      { dial, configFile, address, handshakeTimeoutMs, requestTimeoutMs, closeTimeoutMs: 5000 },
      log,
    );
    node.on('close', (_removed: boolean, done: () => void) => {
      // shutdown() is bounded (closeTimeoutMs), well inside Node-RED's 15 s close deadline.
      node.connection
        .shutdown()
        .catch(() => undefined)
        .finally(() => done());
    });
  }
  RED.nodes.registerType('katzenpost-daemon', KatzenpostDaemonNode as never);
};
