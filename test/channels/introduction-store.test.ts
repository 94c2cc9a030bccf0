/**
 * An introduction's progress in the channel database (since schema version 2):
 * saved and read back field for field as Buffers, replaced step by step,
 * added to a version-1 file by its migration, and a join resumed from the
 * file after the store was closed in the middle (against the emulator in
 * the current protocol).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ChannelStore, SCHEMA_VERSION, runIntroduction, startInvitation, startJoin, type IntroductionState } from '../../src/channels';
import { ThinClient } from '../../src/client/client';
import { blake2b256 } from '../../src/client/crypto';
import { startEmulator, type Emulator } from '../../src/emulator';
import { versionTwoDatabase } from './helpers';

function fullState(): IntroductionState {
  return {
    role: 'invite',
    step: 'published',
    voucher: randomBytes(32),
    writeCap: randomBytes(168),
    readCap: randomBytes(136),
    displayName: 'Alice',
    voucherPayload: randomBytes(300),
    voucherWriteCap: randomBytes(168),
    voucherReadCap: randomBytes(136),
    voucherSecretKey: randomBytes(162),
    replyIndex: randomBytes(104),
  };
}

describe('channels: an introduction saved in the channel database', function () {
  this.timeout(30_000);
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'kp-introduction-store-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('reads back what was saved, as Buffers, replaces it step by step, and forgets it', async () => {
    const path = join(dir, 'c.db');
    const state = fullState();
    let store = new ChannelStore({ path });
    assert.equal(store.introduction('alice'), null);
    store.saveIntroduction('alice', state);
    await store.close();
    store = new ChannelStore({ path });
    try {
      const back = store.introduction('alice')!;
      assert.deepEqual(back, state);
      for (const v of Object.values(back)) if (typeof v === 'object') assert.ok(Buffer.isBuffer(v));
      const done: IntroductionState = { ...state, step: 'done', writeCap: randomBytes(168), peerReadCap: randomBytes(136) };
      store.saveIntroduction('alice', done);
      assert.deepEqual(store.introduction('alice'), done);
      // Fields a later step leaves out are cleared, not kept from the earlier one.
      const join1: IntroductionState = { role: 'join', step: 'inducted', voucher: randomBytes(32), writeCap: randomBytes(168), readCap: randomBytes(136), sealedReply: randomBytes(500), peerName: 'Alice' };
      store.saveIntroduction('alice', join1);
      assert.deepEqual(store.introduction('alice'), join1);
      assert.equal(store.list().length, 0, 'an introduction is not a channel');
      store.deleteIntroduction('alice');
      assert.equal(store.introduction('alice'), null);
      assert.throws(() => store.saveIntroduction('', state), { code: 'INVALID_ARGUMENT' });
    } finally {
      await store.close();
    }
  });

  it('a version-1 database gets the introductions table by migration, keeping its channels; a newer one is refused', async () => {
    const path = join(dir, 'old.db');
    // A file as version 1 left it: version 2 without the introductions table.
    let db = versionTwoDatabase(path);
    db.exec('DROP TABLE introductions');
    db.pragma('user_version = 1');
    const cap = randomBytes(136);
    db.prepare(
      `INSERT INTO channels (name, kind, read_cap, read_cap_hash, first_index, read_index, created_at)
       VALUES ('feed', 'imported', ?, ?, ?, ?, ?)`,
    ).run(cap, blake2b256(cap), cap.subarray(32), cap.subarray(32), Date.now());
    db.close();
    let store = new ChannelStore({ path });
    try {
      assert.deepEqual(store.list().map((c) => c.name), ['feed']);
      store.saveIntroduction('alice', fullState());
      assert.equal(store.introduction('alice')?.step, 'published');
    } finally {
      await store.close();
    }
    db = new Database(path);
    assert.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
    assert.equal(SCHEMA_VERSION, 3);
    db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    db.close();
    assert.throws(() => new ChannelStore({ path }), /has schema version 4, newer than this library \(3\)/);
  });

  describe('resuming from the file (emulator, current protocol)', () => {
    let emu: Emulator;
    let alice: ThinClient;
    let bob: ThinClient;
    beforeEach(async () => {
      emu = await startEmulator({ listen: '127.0.0.1:0', protocol: 'current', latency: 'instant' });
      alice = new ThinClient({ dial: emu.address });
      bob = new ThinClient({ dial: emu.address });
      await Promise.all([alice.connect(), bob.connect()]);
    });
    afterEach(async () => {
      await alice?.close();
      await bob?.close();
      await emu?.stop({ graceful: false });
    });

    it('a join stopped after its answer was saved resumes from the reopened database, and both sides talk', async () => {
      const alicePath = join(dir, 'alice.db');
      const bobPath = join(dir, 'bob.db');
      const aliceStore = new ChannelStore({ path: alicePath, client: alice });
      const aliceOut = await alice.newKeypair(randomBytes(32));
      const bobOut = await bob.newKeypair(randomBytes(32));
      const save = (store: ChannelStore) => (s: IntroductionState) => store.saveIntroduction('me', s);
      const invite = await startInvitation(alice, aliceOut, 'Alice', save(aliceStore));
      const invited = runIntroduction(alice, invite, { save: save(aliceStore), pollInitialMs: 10, pollMaxMs: 50 });

      let bobStore = new ChannelStore({ path: bobPath, client: bob });
      const stop = new AbortController();
      await assert.rejects(
        runIntroduction(bob, startJoin(invite.voucher, bobOut), {
          save: (s) => {
            bobStore.saveIntroduction('me', s);
            if (s.step === 'inducted') throw new Error('the process dies here');
          },
          signal: stop.signal,
          pollInitialMs: 10,
          pollMaxMs: 50,
        }),
        /the process dies here/,
      );
      await bobStore.close();
      bobStore = new ChannelStore({ path: bobPath, client: bob });
      try {
        const saved = bobStore.introduction('me')!;
        assert.equal(saved.step, 'inducted');
        const b = await runIntroduction(bob, saved, { save: save(bobStore), pollInitialMs: 10, pollMaxMs: 50 });
        const a = await invited;
        assert.equal(bobStore.introduction('me')?.step, 'done');
        assert.equal(aliceStore.introduction('me')?.step, 'done');
        assert.equal(b.peerName, 'Alice');
        // The stores hold the channels the introduction led to.
        await aliceStore.openChannel('me', { kind: 'owned', writeCap: a.writeCap });
        aliceStore.importChannel('me/incoming', a.peerReadCap!);
        await bobStore.openChannel('me', { kind: 'owned', writeCap: b.writeCap });
        bobStore.importChannel('me/incoming', b.peerReadCap!);
        await aliceStore.send('me', 'to Bob');
        await bobStore.send('me', 'to Alice');
        const first = async (store: ChannelStore): Promise<string> => {
          for await (const item of store.messages('me/incoming')) if (item.kind === 'message') return item.payload.toString();
          return '';
        };
        assert.equal(await first(bobStore), 'to Bob');
        assert.equal(await first(aliceStore), 'to Alice');
      } finally {
        await bobStore.close();
        await aliceStore.close();
      }
    });
  });
});
