// SIGKILL in the middle of a send and of a receive: a child process runs the
// store, freezes at a chosen durable step (or is caught with replies in
// flight), is killed, and is started again on the same database. Every
// message must then arrive exactly once, in order.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { ChannelStore, LARGE_HEADER_LENGTH } from '../../src/channels';
import { READ_CAP_LENGTH, WRITE_CAP_LENGTH } from '../../src/wire';
import { Harness, collect } from './helpers';

const ROOT = resolve(__dirname, '..', '..');
const FIXTURE = join(__dirname, 'fixtures', 'channel-process.ts');

type Line = Record<string, any>;

class Child {
  readonly lines: Line[] = [];
  private readonly proc: ChildProcess;
  private buffer = '';
  private readonly listeners = new Set<() => void>();
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr = '';

  constructor(config: Record<string, unknown>) {
    this.proc = spawn(process.execPath, ['--import', 'tsx', FIXTURE, JSON.stringify(config)], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      this.buffer += chunk;
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        if (line.trim()) this.lines.push(JSON.parse(line));
      }
      for (const l of this.listeners) l();
    });
    this.proc.stderr!.setEncoding('utf8').on('data', (c: string) => (this.stderr += c));
    this.exited = new Promise((r) => this.proc.once('exit', (code, signal) => r({ code, signal })));
    this.exited.then(() => {
      for (const l of this.listeners) l();
    });
  }

  /** Resolves with the first line matching `pred`; fails on an early exit or after a timeout. */
  waitFor(pred: (l: Line) => boolean, timeoutMs = 20_000): Promise<Line> {
    return new Promise((resolve, reject) => {
      let finished = false;
      const check = () => {
        const hit = this.lines.find(pred);
        if (hit && !finished) {
          finished = true;
          cleanup();
          resolve(hit);
        } else if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
          if (!finished) {
            finished = true;
            cleanup();
            reject(new Error(`child exited before the expected line; stderr: ${this.stderr}; lines: ${JSON.stringify(this.lines.slice(-5))}`));
          }
        }
      };
      const timer = setTimeout(() => {
        if (finished) return;
        finished = true;
        cleanup();
        reject(new Error(`timed out waiting for a line; last lines: ${JSON.stringify(this.lines.slice(-5))}; stderr: ${this.stderr}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
    });
  }

  /** Lets a child paused at its stop point go on. */
  resume(): void {
    this.proc.stdin!.write('g');
  }

  async kill(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    const { signal } = await this.exited;
    assert.equal(signal, 'SIGKILL');
  }

  async finish(): Promise<void> {
    const { code } = await this.exited;
    assert.equal(code, 0, `child failed: ${this.stderr} ${JSON.stringify(this.lines.slice(-3))}`);
  }

  forceStop(): void {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

function readDb<T>(path: string, fn: (db: Database.Database) => T): T {
  const db = new Database(path, { readonly: true });
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

describe('channels: SIGKILL in the middle of a send or a receive', function () {
  this.timeout(60_000);
  const h = new Harness();
  const children: Child[] = [];
  const child = (config: Record<string, unknown>) => {
    const c = new Child(config);
    children.push(c);
    return c;
  };
  beforeEach(async () => {
    await h.start();
  });
  afterEach(async () => {
    for (const c of children.splice(0)) c.forceStop();
    await h.cleanup();
  });

  /** Waits for the child to stop at its stage, optionally lets one request through with its reply held, and kills it. */
  async function killWhenStopped(c: Child, stallInFlight: boolean) {
    await c.waitFor((l) => l.t === 'stopped');
    if (stallInFlight) {
      // Hold every reply, then let the child dispatch the recorded request: it
      // reaches the emulator, its acknowledgement does not reach the child.
      h.emulator.stallReplies(800);
      c.resume();
      await new Promise((r) => setTimeout(r, 150));
    }
    await c.kill();
  }

  // Five messages; the third goes through a copy command (two or more boxes).
  const large = 'L'.repeat(2500) + randomBytes(1000).toString('hex');
  const messages = ['m1', 'm2', large, 'm4', 'm5'];
  const withLarge = messages;
  // The same with a copy stream of three windows (32 boxes each, the last one shorter).
  const longer = 'W'.repeat(20_000) + randomBytes(50_000).toString('hex');
  const withLonger = ['m1', 'm2', longer, 'm4', 'm5'];

  type Recorded = { pending: any[]; elements: any[]; sent: number; queued: number };

  /**
   * Runs the sender, kills it at `stopAt`, runs it again to drain, and checks
   * the channel holds each message once. `check` looks at what was recorded at the kill.
   */
  async function sendScenario(
    stopAt: Record<string, unknown> | null,
    { stallInFlight = false, messages = withLarge, check }: { stallInFlight?: boolean; messages?: string[]; check?: (before: Recorded) => void } = {},
  ) {
    const dir = h.tempDir();
    const db = join(dir, 'writer.db');
    const seed = randomBytes(32).toString('hex');
    const base = { address: h.emulator.address, db, channel: 'c', role: 'send', seed };
    const first = child({
      ...base,
      messages,
      stopAt: stopAt ?? { stage: 'pending-recorded', occurrence: 2, action: 'announce' },
    });
    await killWhenStopped(first, stallInFlight);
    const before: Recorded = readDb(db, (d) => ({
      pending: d.prepare('SELECT * FROM pending_writes').all() as any[],
      elements: d.prepare('SELECT * FROM pending_copy_elements ORDER BY element').all() as any[],
      sent: (d.prepare('SELECT COUNT(*) AS n FROM sent').get() as any).n as number,
      queued: (d.prepare('SELECT COUNT(*) AS n FROM outbound').get() as any).n as number,
    }));
    assert.equal(before.queued + before.sent, messages.length, 'every message is either queued or sent at the kill');
    assert.ok(before.queued > 0, 'the kill landed before the queue drained');
    check?.(before);

    if (stallInFlight) {
      // The write reached the daemon (its box exists) but the child never saw the ACK.
      await new Promise((r) => setTimeout(r, 800));
      const pending = before.pending[0];
      let readCap: Buffer;
      let index: Buffer;
      if (pending?.mode === 'copy') {
        // Paused before the second element of the second window: the first left in the table was written, the second is in flight.
        readCap = Buffer.from(pending.temp_write_cap).subarray(WRITE_CAP_LENGTH - READ_CAP_LENGTH);
        index = before.elements[1].temp_index;
      } else {
        assert.equal(pending?.mode, 'box');
        assert.equal(pending?.seq, 2);
        readCap = readDb(db, (d) => (d.prepare('SELECT read_cap FROM channels').get() as any).read_cap);
        index = pending.box_index;
      }
      const client = await h.client();
      const enc = await client.encryptRead(readCap, index);
      const reply = await client.startResendingEncryptedMessageNoRetry({
        readCap,
        messageBoxIndex: index,
        replyIndex: 0,
        envelopeDescriptor: enc.envelopeDescriptor,
        messageCiphertext: enc.messageCiphertext,
        envelopeHash: enc.envelopeHash,
      });
      assert.ok(reply.plaintext && reply.plaintext.length > 0, 'the in-flight write had landed');
    }
    const second = child({ ...base, messages: [] });
    await second.waitFor((l) => l.t === 'done');
    await second.finish();

    // The resumed write re-sends the recorded envelope (same hash), not a new one.
    const firstDispatch = second.lines.find((l) => l.t === 'dispatch');
    const recorded = before.pending[0];
    if (recorded?.mode === 'box' && recorded.envelope_hash) {
      assert.equal(firstDispatch?.hash, Buffer.from(recorded.envelope_hash).toString('hex'));
    }
    if (recorded?.mode === 'copy') {
      // Elements leave the table once acknowledged: the first one left is the first re-sent.
      const pendingEl = before.elements.find((e) => e.envelope_hash);
      if (pendingEl) assert.equal(firstDispatch?.hash, Buffer.from(pendingEl.envelope_hash).toString('hex'));
      // No new copy stream was planned for the resumed message.
      assert.ok(!second.lines.some((l) => l.t === 'progress' && l.stage === 'pending-recorded' && l.seq === recorded.seq));
    }

    // An independent reader sees each message exactly once, in order, and
    // the channel holds exactly the boxes those messages need.
    const after = readDb(db, (d) => ({
      channel: d.prepare('SELECT * FROM channels').get() as any,
      sent: d.prepare('SELECT * FROM sent ORDER BY id').all() as any[],
      queued: (d.prepare('SELECT COUNT(*) AS n FROM outbound').get() as any).n as number,
      pending: (d.prepare('SELECT COUNT(*) AS n FROM pending_writes').get() as any).n as number,
    }));
    assert.equal(after.queued, 0);
    assert.equal(after.pending, 0);
    assert.equal(after.sent.length, messages.length);
    const reader = h.store(await h.client());
    reader.importChannel('c', after.channel.read_cap);
    const items = await collect(reader, 'c', messages.length);
    assert.deepEqual(
      items.map((i) => (i.kind === 'message' ? i.payload.toString() : i.kind)),
      messages,
    );
    assert.deepEqual(
      items.map((i) => i.index),
      after.sent.map((s) => s.counter),
    );
    const boxes = after.sent.reduce((n, s) => n + s.box_count, 0);
    assert.equal(BigInt(reader.get('c')!.readIndex) - BigInt(reader.get('c')!.firstIndex), BigInt(boxes));
    // Nothing was written past the last message.
    const extra = await collect(reader, 'c', 1, 300).catch(() => null);
    assert.equal(extra, null, 'no box beyond the five messages');
  }

  it('send: killed after the envelope was recorded, before it was dispatched', async () => {
    await sendScenario({ stage: 'pending-recorded', occurrence: 2, action: 'freeze' });
  });

  it('send: killed with the write in flight (replies stalled)', async () => {
    await sendScenario({ stage: 'pending-recorded', occurrence: 2, action: 'pause' }, { stallInFlight: true });
  });

  it('send: killed after the courier acknowledged, before the index advanced', async () => {
    await sendScenario({ stage: 'write-acknowledged', occurrence: 2, action: 'freeze' });
  });

  it('send: killed in the middle of writing the temporary copy stream', async () => {
    await sendScenario({ stage: 'element-acked', occurrence: 1, action: 'freeze', match: { element: 0 } });
  });

  it('send: killed after the copy command succeeded, before the index advanced', async () => {
    await sendScenario({ stage: 'write-acknowledged', occurrence: 3, action: 'freeze' });
  });

  // The copy of `longer` as recorded at the kill: its plan and the elements not known to be acknowledged.
  const framedLonger = LARGE_HEADER_LENGTH + Buffer.byteLength(longer);
  const copyOf = (before: Recorded) => {
    const plan = before.pending[0];
    assert.equal(plan?.mode, 'copy');
    return { plan, elements: before.elements.map((e) => e.element as number) };
  };

  it('send: killed after a copy was planned, before its first window was built', async () => {
    await sendScenario(
      { stage: 'pending-recorded', occurrence: 1, match: { mode: 'copy' }, action: 'freeze' },
      {
        messages: withLonger,
        check: (before) => {
          const { plan, elements } = copyOf(before);
          assert.equal(plan.copy_built, 0);
          assert.deepEqual(elements, []);
        },
      },
    );
  });

  it('send: killed while encrypting the second window of a copy stream (the first written, nothing of the second recorded)', async () => {
    // The encrypt_writes after the first window's record are the second window's.
    await sendScenario(
      { call: 'encryptWrite', occurrence: 3, after: 'element-recorded', action: 'freeze' },
      {
        messages: withLonger,
        check: (before) => {
          const { plan, elements } = copyOf(before);
          assert.ok(plan.copy_built > 0 && plan.copy_built < framedLonger, 'one window built');
          // The first window, written but its acknowledgements not yet recorded (they go with the next window).
          assert.deepEqual(elements, Array.from({ length: plan.copy_elements }, (_, i) => i));
        },
      },
    );
  });

  /** The second window is recorded and the first one's acknowledgements with it. */
  const secondWindowRecorded = (before: Recorded) => {
    const { plan, elements } = copyOf(before);
    assert.ok(plan.copy_built > 0 && plan.copy_built < framedLonger, 'two of three windows built');
    assert.ok(elements[0] > 0, 'the first window acknowledged');
    assert.equal(elements[elements.length - 1], plan.copy_elements - 1);
    assert.ok(before.elements.every((e) => e.envelope_hash), 'every element recorded with its envelope');
  };

  it('send: killed after the second window of a copy stream was recorded, before any of it was written', async () => {
    // The first window's acknowledgements are recorded with the second window, then its elements are reported recorded.
    await sendScenario(
      { stage: 'element-recorded', occurrence: 1, after: 'element-acked', action: 'freeze' },
      { messages: withLonger, check: secondWindowRecorded },
    );
  });

  it('send: killed in the middle of writing the second window of a copy stream', async () => {
    await sendScenario(
      { call: 'startResendingEncryptedMessage', occurrence: 3, after: 'element-acked', action: 'freeze' },
      { messages: withLonger, check: secondWindowRecorded },
    );
  });

  it('send: killed with an element of the second window in flight (replies stalled)', async () => {
    await sendScenario(
      { call: 'startResendingEncryptedMessage', occurrence: 2, after: 'element-acked', action: 'pause' },
      { stallInFlight: true, messages: withLonger, check: secondWindowRecorded },
    );
  });

  it('send: killed after the whole stream was written, at the copy command', async () => {
    await sendScenario(
      { stage: 'copy-dispatch', occurrence: 1, action: 'freeze' },
      {
        messages: withLonger,
        check: (before) => {
          const { plan, elements } = copyOf(before);
          assert.equal(plan.copy_built, framedLonger);
          assert.deepEqual(elements, [], 'every element acknowledged');
        },
      },
    );
  });

  /** Writes the messages in-process, runs a reader child, kills it at `stopAt`, runs it again, and collects what it delivered. */
  async function receiveScenario(stopAt: Record<string, unknown>, stallInFlight = false) {
    const writer = h.store(await h.client());
    await writer.createChannel('c');
    const sent = [];
    for (const m of messages) sent.push(await writer.send('c', m));
    const db = join(h.tempDir(), 'reader.db');
    const base = {
      address: h.emulator.address,
      db,
      channel: 'c',
      role: 'receive',
      readCap: writer.shareReadCap('c').toString('hex'),
      until: 'm5',
    };
    const first = child({ ...base, stopAt });
    await killWhenStopped(first, stallInFlight);
    const second = child(base);
    await second.waitFor((l) => l.t === 'done');
    await second.finish();
    const delivered = [...first.lines, ...second.lines].filter((l) => l.t === 'item');
    return { delivered, sent, first, second };
  }

  function assertExactlyOnce(delivered: Line[], sent: { index: string }[]) {
    assert.deepEqual(
      delivered.map((l) => l.text),
      messages,
    );
    assert.deepEqual(
      delivered.map((l) => l.index),
      sent.map((s) => s.index),
    );
  }

  it('receive: killed after reading the first box of a large message, before its continuation', async () => {
    const { delivered, sent, first } = await receiveScenario({ stage: 'box-read', occurrence: 3, action: 'freeze' });
    assert.equal(first.lines.filter((l) => l.t === 'item').length, 2);
    assertExactlyOnce(delivered, sent);
  });

  it('receive: killed in the middle of reassembling a large message', async () => {
    const { delivered, sent } = await receiveScenario({ stage: 'box-read', occurrence: 4, action: 'freeze' });
    assertExactlyOnce(delivered, sent);
  });

  it('receive: killed after logging a message, before handing it over', async () => {
    const { delivered, sent, second } = await receiveScenario({ stage: 'logged', occurrence: 3, action: 'freeze' });
    // The second run delivers the logged message from the log, without reading its boxes again.
    const firstItem = second.lines.findIndex((l) => l.t === 'item');
    assert.equal(second.lines[firstItem].text, large);
    assert.ok(!second.lines.slice(0, firstItem).some((l) => l.t === 'progress' && l.stage === 'reading'));
    assertExactlyOnce(delivered, sent);
  });

  it('receive: killed with a read in flight (replies stalled)', async () => {
    const { delivered, sent, first } = await receiveScenario({ stage: 'reading', occurrence: 3, action: 'pause' }, true);
    assert.equal(first.lines.filter((l) => l.t === 'item').length, 2, 'killed while reading the third message');
    assertExactlyOnce(delivered, sent);
  });

  it('receive: the one documented repeat window (handler returned, read mark not committed) repeats the same index', async () => {
    // Frozen between the handler's return and the read-mark commit: the only
    // point where a delivered item is delivered again (store.ts, crash windows).
    const { delivered } = await receiveScenario({ stage: 'delivered', occurrence: 2, action: 'freeze' });
    assert.deepEqual(
      delivered.map((l) => l.text),
      ['m1', 'm2', 'm2', large, 'm4', 'm5'],
    );
    assert.equal(delivered[1].index, delivered[2].index, 'the repeat carries the same index, so consumers can de-duplicate');
  });

  it('a restarted store resumes a kill during a send while a reader in another process keeps reading', async () => {
    // Both sides killed once: writer mid-copy, reader mid-read; each message still arrives once.
    const seed = randomBytes(32).toString('hex');
    const dir = h.tempDir();
    const wdb = join(dir, 'w.db');
    const rdb = join(dir, 'r.db');
    const wbase = { address: h.emulator.address, db: wdb, channel: 'c', role: 'send', seed };
    const w1 = child({ ...wbase, messages, stopAt: { stage: 'element-recorded', occurrence: 1, action: 'freeze' } });
    await w1.waitFor((l) => l.t === 'stopped');
    const readCap = readDb(wdb, (d) => Buffer.from((d.prepare('SELECT read_cap FROM channels').get() as any).read_cap).toString('hex'));
    const rbase = { address: h.emulator.address, db: rdb, channel: 'c', role: 'receive', readCap, until: 'm5' };
    const r1 = child({ ...rbase, stopAt: { stage: 'reading', occurrence: 6, action: 'freeze' } });
    await r1.waitFor((l) => l.t === 'stopped');
    await w1.kill();
    await r1.kill();
    const w2 = child({ ...wbase, messages: [] });
    const r2 = child(rbase);
    await w2.waitFor((l) => l.t === 'done');
    await r2.waitFor((l) => l.t === 'done');
    await w2.finish();
    await r2.finish();
    const delivered = [...r1.lines, ...r2.lines].filter((l) => l.t === 'item');
    assert.deepEqual(
      delivered.map((l) => l.text),
      messages,
    );
    // Sanity: a fresh store on the writer database sees nothing queued.
    const check = new ChannelStore({ path: wdb });
    try {
      assert.equal(check.queued('c'), 0);
    } finally {
      await check.close();
    }
  });
});
