/**
 * katzenpost-daemon: the config node holding one thin-client connection to a
 * kpclientd (or the emulator) for all the nodes that select it.
 */
import { ConfigError } from '../client/errors';
import { DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_REQUEST_TIMEOUT_MS } from '../client/types';
import { DaemonConnection, dialFromConfig, readSeconds, toInteger, validationText, type DaemonConfigNode, type DaemonDef } from './shared';
import type { NodeAPI } from './types';

export = function (RED: NodeAPI): void {
  function KatzenpostDaemonNode(this: DaemonConfigNode, def: DaemonDef): void {
    RED.nodes.createNode(this, def);
    const node = this;
    const { dial, configFile, address } = dialFromConfig(def);
    // The editor refuses the same values with the same words; a flow deployed anyway fails every operation with this.
    let configError: Error | undefined;
    // Blank fields: the client's defaults (45 s handshake; 120 s requests, as encrypt_* run CTIDH-1024 in the daemon).
    let handshakeTimeoutMs = DEFAULT_HANDSHAKE_TIMEOUT_MS;
    let requestTimeoutMs = DEFAULT_REQUEST_TIMEOUT_MS;
    try {
      handshakeTimeoutMs = (readSeconds(def.handshakeTimeout, 'katzenpost-daemon handshake timeout', true) ?? DEFAULT_HANDSHAKE_TIMEOUT_MS / 1000) * 1000;
      requestTimeoutMs = (readSeconds(def.requestTimeout, 'katzenpost-daemon request timeout', true) ?? DEFAULT_REQUEST_TIMEOUT_MS / 1000) * 1000;
      checkAddress(def);
    } catch (e) {
      configError = e as Error;
    }
    // The client's log lines never contain caps (the library's rule); debug goes to Node-RED's debug level.
    const log = {
      debug: (m: string) => node.debug(m),
      info: (m: string) => node.log(m),
      warn: (m: string) => node.warn(m),
      error: (m: string) => node.warn(m),
    };
    node.connection = new DaemonConnection(
      { dial, configFile, address, handshakeTimeoutMs, requestTimeoutMs, closeTimeoutMs: 5000, configError },
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

/** The address fields the editor checks, checked again here with the same words. */
function checkAddress(def: DaemonDef): void {
  const transport = def.transport ?? 'tcp';
  const blank = (v: unknown): boolean => String(v ?? '').trim() === '';
  const fail = (field: string, what: string, value: unknown): never => {
    throw new ConfigError(
      `katzenpost-daemon ${field}: ${validationText('expected', {
        what: validationText(`what.${what}`),
        got: blank(value) ? validationText('got.nothing') : validationText('got.value', { value: String(value) }),
      })}`,
    );
  };
  if (transport === 'unix') {
    if (blank(def.socketPath)) fail('socket', 'socketPath', def.socketPath);
  } else if (transport === 'config') {
    if (blank(def.configFile)) fail('config file', 'configFile', def.configFile);
  } else {
    if (!blank(def.host) && /\s/.test(String(def.host).trim())) fail('host', 'host', def.host);
    if (!blank(def.port)) {
      try {
        toInteger(typeof def.port === 'number' ? def.port : String(def.port).trim(), 'katzenpost-daemon port', 1, 65535);
      } catch {
        fail('port', 'port', def.port);
      }
    }
  }
}
