/**
 * The daemon's table of in-flight ARQ operations (Pigeonhole messages and
 * copy commands): registering them under their envelope or write-cap hash,
 * finishing each exactly once with its reply, cancelling them, and dropping
 * them without a reply when their session goes away.
 */
import { u64 } from '../wire';
import type { Courier } from './pki';
import type { Session } from './sessions';

/** One ARQ operation in flight. */
export interface Op {
  kind: 'message' | 'copy';
  /** Envelope hash (message) or BLAKE2b-256 of the write cap (copy), hex; '' if the request had none. */
  key: string;
  queryId: Buffer | null;
  session: Session;
  abort: AbortController;
  courier: Courier | null;
  finished: boolean;
}

/** How a copy command ended: the reply's error code and, for a failed copy, where it failed. */
export interface CopyVerdict {
  code: number;
  replicaErrorCode: number;
  failedEnvelopeIndex: number;
}

/** What the table needs from the server: frames in the protocol level's envelope, and delivery to a session. */
export interface ArqHost {
  frameOf(kind: string, body: Record<string, unknown>): Buffer;
  deliver(s: Session, frame: Buffer): void;
}

export class ArqTable {
  private readonly messageOps = new Map<string, Set<Op>>();
  private readonly copyOps = new Map<string, Set<Op>>();

  constructor(private readonly host: ArqHost) {}

  private table(kind: Op['kind']): Map<string, Set<Op>> {
    return kind === 'message' ? this.messageOps : this.copyOps;
  }

  register(kind: Op['kind'], key: string, queryId: Buffer | null, session: Session): Op {
    const op: Op = { kind, key, queryId, session, abort: new AbortController(), courier: null, finished: false };
    session.ops.add(op);
    if (key) {
      const t = this.table(kind);
      let set = t.get(key);
      if (!set) t.set(key, (set = new Set()));
      set.add(op);
    }
    return op;
  }

  private unregister(op: Op): void {
    op.session.ops.delete(op);
    const t = this.table(op.kind);
    const set = t.get(op.key);
    if (set) {
      set.delete(op);
      if (set.size === 0) t.delete(op.key);
    }
  }

  /** Forget an operation without a reply and stop its work (its session went away). */
  drop(op: Op): void {
    op.finished = true;
    this.unregister(op);
    op.abort.abort();
  }

  finishMessage(op: Op, code: number, plaintext: Buffer | null = null): void {
    if (op.finished) return;
    op.finished = true;
    this.unregister(op);
    this.host.deliver(
      op.session,
      this.host.frameOf('start_resending_encrypted_message_reply', {
        query_id: op.queryId,
        plaintext,
        error_code: code,
        courier_identity_hash: op.courier ? op.courier.identityHash : null,
        courier_queue_id: op.courier ? op.courier.queueId : null,
      }),
    );
  }

  finishCopy(op: Op, v: CopyVerdict): void {
    if (op.finished) return;
    op.finished = true;
    this.unregister(op);
    const body: Record<string, unknown> = { query_id: op.queryId, error_code: v.code };
    // (opt) fields: omitted when zero, as Go's omitempty.
    if (v.replicaErrorCode) body.replica_error_code = v.replicaErrorCode;
    if (v.failedEnvelopeIndex) body.failed_envelope_index = u64(v.failedEnvelopeIndex);
    this.host.deliver(op.session, this.host.frameOf('start_resending_copy_command_reply', body));
  }

  /** Cancel every operation of this kind under `key`: each gets its own reply with error 24 (§3.8). */
  cancel(kind: Op['kind'], key: string): void {
    for (const op of [...(this.table(kind).get(key) ?? [])]) {
      op.abort.abort();
      if (kind === 'message') this.finishMessage(op, 24);
      else this.finishCopy(op, { code: 24, replicaErrorCode: 0, failedEnvelopeIndex: 0 });
    }
  }
}
