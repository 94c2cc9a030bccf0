/**
 * Fault injection on the emulated daemon's connections: mixnet connectivity
 * going away and coming back, replies stalled for a while, a malformed
 * frame, an oversize length prefix. (The PKI document faults live with the
 * document, in documents.ts.)
 */
import { encodeFrame } from '../wire';
import type { Connection } from './connection';

/** What fault injection acts on. */
export interface FaultHost {
  readonly connections: ReadonlySet<Connection>;
  /** The simulated mixnet's connectivity. */
  readonly link: { readonly online: boolean; setOnline(online: boolean): void };
  /** connection_status_event as the daemon sends it now. */
  statusFrame(): Buffer;
  log(line: string): void;
}

export class Faults {
  /** Every outgoing frame waits until this time; 0 = no stall. */
  stalledUntil = 0;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly host: FaultHost) {}

  /** Mixnet connectivity changes: ARQ operations wait while offline; every client hears connection_status_event. */
  setOnline(online: boolean): void {
    if (this.host.link.online === online) return;
    this.host.link.setOnline(online);
    this.host.log(`mixnet connectivity: ${online ? 'online' : 'offline'}`);
    const frame = this.host.statusFrame();
    for (const c of this.host.connections) c.broadcast(frame);
  }

  stallReplies(ms: number): void {
    this.stalledUntil = Math.max(this.stalledUntil, Date.now() + Math.max(0, ms));
    this.host.log(`stalling every outgoing frame for ${ms} ms`);
  }

  injectMalformedFrame(): void {
    // A map header promising two entries, then one key and nothing: undecodable CBOR.
    const body = Buffer.from('a26b6d616c666f726d6564', 'hex');
    for (const c of this.host.connections) c.writeRaw(encodeFrame(body));
    this.host.log(`injected a malformed frame into ${this.host.connections.size} connection(s)`);
  }

  injectOversizeLengthPrefix(): void {
    // A prefix far over the 40 MiB cap; the stream is useless afterwards, so close it if the client does not.
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32BE(0xfffffff0, 0);
    for (const c of this.host.connections) {
      c.writeRaw(prefix);
      const t = setTimeout(() => {
        this.timers.delete(t);
        c.destroy();
      }, 1000);
      this.timers.add(t);
    }
    this.host.log(`injected an oversize length prefix into ${this.host.connections.size} connection(s)`);
  }

  /** Cancel the pending fault timers (the emulator stops). */
  clearTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }
}
