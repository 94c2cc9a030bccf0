/**
 * What the connected daemon can be asked (PROTOCOL.md §9.3): its protocol
 * level and the current-only request kinds it serves, read from the reply
 * envelope of its handshake or forced by the daemonProtocol option.
 */
import { InvalidArgumentError, UnsupportedByDaemonError } from './errors';
import type { CurrentOnlyMethod, DaemonProtocol } from './types';
import { describeValue } from './validate';
import { HEAD_REQUEST_KINDS, HEAD_RESPONSE_KINDS } from '../wire';
import type { HeadRequestKind } from '../wire';

const METHOD_KINDS: Readonly<Record<CurrentOnlyMethod, HeadRequestKind>> = {
  getDirectoryAuthorities: 'get_directory_authorities',
  voucherMint: 'voucher_mint',
  voucherInduct: 'voucher_induct',
  voucherOpen: 'voucher_open',
  voucherDeriveStream: 'voucher_derive_stream',
};

const HEAD_KINDS: ReadonlySet<string> = new Set(HEAD_REQUEST_KINDS);

export class Capabilities {
  /** Reply kinds the daemon of the last completed handshake announced (its envelope keys). */
  kinds: ReadonlySet<string> | null = null;

  constructor(private readonly setting: DaemonProtocol | 'auto') {}

  /** 'current' when the envelope carries every reply kind of §9.3, else 'pinned'; null before the first handshake. */
  protocol(): DaemonProtocol | null {
    if (this.setting !== 'auto') return this.setting;
    if (!this.kinds) return null;
    return HEAD_RESPONSE_KINDS.every((k) => this.kinds!.has(k)) ? 'current' : 'pinned';
  }

  /** Whether the daemon serves `method`; false before the first handshake. @throws InvalidArgumentError for an unknown method */
  supports(method: CurrentOnlyMethod): boolean {
    const kind = METHOD_KINDS[method];
    if (kind === undefined) throw new InvalidArgumentError('method', `one of ${Object.keys(METHOD_KINDS).join(', ')}`, describeValue(method));
    return this.refusal(kind, method) === null && (this.setting !== 'auto' || this.kinds !== null);
  }

  /**
   * Why the daemon of the last handshake cannot take a `kind` request, or
   * null when it can (or before any handshake). Only the current-only kinds
   * are ever refused. A Go daemon sends its whole envelope (every reply kind
   * it knows, null but one) in every frame, so `<kind>_reply` among its keys
   * means it knows `kind`.
   */
  refusal(kind: string, op: string): UnsupportedByDaemonError | null {
    if (!HEAD_KINDS.has(kind)) return null;
    if (this.setting === 'current') return null;
    if (this.setting === 'pinned') return new UnsupportedByDaemonError(op, kind, 'pinned', 'the daemonProtocol option says so');
    const kinds = this.kinds;
    if (!kinds || kinds.has(`${kind}_reply`)) return null;
    const level = HEAD_RESPONSE_KINDS.some((k) => kinds.has(k)) ? 'current' : 'pinned';
    return new UnsupportedByDaemonError(op, kind, level, `its reply envelope has ${kinds.size} keys and no ${kind}_reply`);
  }
}
