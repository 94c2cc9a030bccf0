// Schema version 3 stores payloads in chunks and records a copy stream window
// by window. A file written by version 2 (payloads as single values, a copy
// planned whole) keeps every queued and every unread message through the
// migration: queued ones are sent, a copy planned by version 2 is planned
// again, unread ones are delivered, all byte for byte.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SCHEMA_VERSION, type SendResult } from '../../src/channels';
import { blake2b256 } from '../../src/client/crypto';
import { Harness, TEST_TIMEOUT_MS, collect, texts, versionTwoDatabase } from './helpers';

describe('channels: migration from schema version 2', function () {
  this.timeout(TEST_TIMEOUT_MS);
  const h = new Harness();
  beforeEach(async () => {
    await h.start();
  });
  afterEach(() => h.cleanup());

  it('sends the queued messages (a planned copy planned again), delivers the unread one and keeps a retained payload, byte for byte', async () => {
    const client = await h.client();
    const out = await client.newKeypair(randomBytes(32));
    const incoming = await client.newKeypair(randomBytes(32));
    const large = randomBytes(100_000);
    const unread = randomBytes(150_000);
    const retained = randomBytes(70_000);

    const path = join(h.tempDir(), 'v2.db');
    const v2 = versionTwoDatabase(path);
    const now = Date.now();
    const channel = v2.prepare(
      `INSERT INTO channels (name, kind, read_cap, read_cap_hash, write_cap, first_index, write_index, read_index, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const outId = channel.run('out', 'owned', out.readCap, blake2b256(out.readCap), out.writeCap, out.firstMessageIndex, out.firstMessageIndex, out.firstMessageIndex, now)
      .lastInsertRowid;
    const inId = channel.run('in', 'imported', incoming.readCap, blake2b256(incoming.readCap), null, incoming.firstMessageIndex, null, incoming.firstMessageIndex, now)
      .lastInsertRowid;
    const queue = v2.prepare("INSERT INTO outbound (channel_id, op, payload, queued_at) VALUES (?, 'message', ?, ?)");
    const largeSeq = queue.run(outId, large, now).lastInsertRowid;
    queue.run(outId, Buffer.from('after'), now);
    // Version 2 had planned the large message's copy whole and written part of its stream.
    v2.prepare(
      `INSERT INTO pending_writes (seq, mode, box_index, next_index, box_count, temp_seed, temp_write_cap, temp_first_index, created_at)
       VALUES (?, 'copy', ?, ?, 66, ?, ?, ?, ?)`,
    ).run(largeSeq, out.firstMessageIndex, randomBytes(104), randomBytes(32), randomBytes(168), randomBytes(104), now);
    const element = v2.prepare('INSERT INTO pending_copy_elements (seq, element, data, temp_index, done) VALUES (?, ?, ?, ?, ?)');
    element.run(largeSeq, 0, randomBytes(1553), randomBytes(104), 1);
    element.run(largeSeq, 1, randomBytes(1553), null, 0);
    const receive = v2.prepare(
      'INSERT INTO received (channel_id, kind, counter, box_count, payload, payload_length, received_at, read_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    );
    const retainedId = receive.run(inId, 'message', '7', 46, retained, retained.length, now, now).lastInsertRowid;
    receive.run(inId, 'message', '8', 98, unread, unread.length, now, null);
    v2.close();

    const store = h.store(client, {}, path);
    const sent: SendResult[] = [];
    await new Promise<void>((resolve) => {
      store.on('sent', (r) => {
        sent.push(r);
        if (sent.length === 2) resolve();
      });
    });
    const first = BigInt(store.get('out')!.firstIndex);
    assert.equal(BigInt(sent[0].index), first, 'the copy lands where version 2 planned it');
    const reader = h.store(await h.client());
    reader.importChannel('out', out.readCap);
    const items = await collect(reader, 'out', 2);
    assert.ok(items[0].kind === 'message' && items[0].payload.equals(large), 'the queued large message arrives intact');
    assert.deepEqual(texts(items.slice(1)), ['after']);

    const [delivered] = await collect(store, 'in', 1);
    assert.equal(delivered.index, '8');
    assert.ok(delivered.kind === 'message' && delivered.payload.equals(unread), 'the unread message is delivered intact');
    await store.close();

    const db = new Database(path, { readonly: true });
    try {
      assert.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
      const columns = (table: string) => (db.pragma(`table_info(${table})`) as { name: string }[]).map((c) => c.name);
      assert.ok(!columns('outbound').includes('payload') && !columns('received').includes('payload'), 'payloads only in chunks');
      const chunks = db.prepare('SELECT data FROM received_chunks WHERE received_id = ? ORDER BY chunk').all(retainedId) as { data: Buffer }[];
      assert.ok(Buffer.concat(chunks.map((c) => c.data)).equals(retained), 'a retained payload is kept, in chunks');
      assert.equal((db.prepare('SELECT COUNT(*) AS n FROM outbound_chunks').get() as { n: number }).n, 0, 'sent payloads are gone');
    } finally {
      db.close();
    }
  });
});
