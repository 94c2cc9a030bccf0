/**
 * The Contact Voucher introduction of two channel holders (src/channels/introduction.ts)
 * against the emulator speaking the current protocol, over real sockets: both sides in
 * parallel, a restart in the middle, the voucher text format, and a pinned daemon.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { ThinClient } from '../../src/client/client';
import { InvalidArgumentError, UnsupportedByDaemonError } from '../../src/client/errors';
import { startEmulator, type Emulator } from '../../src/emulator';
import {
  formatVoucher,
  parseVoucher,
  runIntroduction,
  startInvitation,
  startJoin,
  type IntroductionState,
} from '../../src/channels/introduction';

async function send(c: ThinClient, writeCap: Buffer, text: string): Promise<void> {
  const w = await c.encryptWrite(text, writeCap, ThinClient.firstMessageIndexOf(writeCap));
  await c.startResendingEncryptedMessage({ writeCap, ...w });
}

async function receive(c: ThinClient, readCap: Buffer): Promise<string | undefined> {
  const idx = ThinClient.firstMessageIndexOf(readCap);
  const r = await c.encryptRead(readCap, idx);
  return (await c.startResendingEncryptedMessage({ readCap, messageBoxIndex: idx, ...r })).plaintext?.toString();
}

describe('channels: introducing two parties with a Contact Voucher (emulator, current protocol)', function () {
  this.timeout(30_000);
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

  it('invite and join meet: each side ends with a write cap the other reads, saving every step', async () => {
    const aliceOut = await alice.newKeypair(randomBytes(32));
    const bobOut = await bob.newKeypair(randomBytes(32));
    const aliceSaves: IntroductionState[] = [];
    const bobSaves: IntroductionState[] = [];
    const invite = await startInvitation(alice, aliceOut, 'alice', (s) => aliceSaves.push(s));
    const text = formatVoucher(invite.voucher);
    assert.match(text, /^([0-9a-f]{8}-){7}[0-9a-f]{8}$/);
    // Bob starts first: he polls box 0 until Alice has published it.
    const joined = runIntroduction(bob, startJoin(parseVoucher(text), bobOut), { save: (s) => bobSaves.push(s), pollInitialMs: 10, pollMaxMs: 50 });
    const invited = runIntroduction(alice, invite, { save: (s) => aliceSaves.push(s), pollInitialMs: 10, pollMaxMs: 50 });
    const [a, b] = await Promise.all([invited, joined]);
    assert.deepEqual(aliceSaves.map((s) => s.step), ['minted', 'published', 'done']);
    assert.deepEqual(bobSaves.map((s) => s.step), ['inducted', 'done']);
    assert.equal(b.peerName, 'alice');
    assert.ok(a.peerReadCap!.equals(bobOut.readCap), "Alice receives from Bob's channel");
    assert.ok(!a.writeCap.equals(aliceOut.writeCap), "Alice's write cap is re-seeded");
    // Both directions carry messages.
    await send(alice, a.writeCap, 'hello Bob');
    assert.equal(await receive(bob, b.peerReadCap!), 'hello Bob');
    await send(bob, b.writeCap, 'hello Alice');
    assert.equal(await receive(alice, a.peerReadCap!), 'hello Alice');
  });

  it('a join interrupted after induct resumes from its saved state and writes the same sealed reply', async () => {
    const aliceOut = await alice.newKeypair(randomBytes(32));
    const bobOut = await bob.newKeypair(randomBytes(32));
    const invite = await startInvitation(alice, aliceOut, 'alice', () => {});
    const invited = runIntroduction(alice, invite, { save: () => {}, pollInitialMs: 10, pollMaxMs: 50 });
    let saved: IntroductionState | null = null;
    const stop = new AbortController();
    // The join side "crashes" right after saving the inducted step, before writing box 1.
    await assert.rejects(
      runIntroduction(bob, startJoin(invite.voucher, bobOut), {
        save: (s) => {
          saved = structuredClone(s);
          if (s.step === 'inducted') throw new Error('crash after saving');
        },
        signal: stop.signal,
        pollInitialMs: 10,
        pollMaxMs: 50,
      }),
      /crash after saving/,
    );
    assert.equal(saved!.step, 'inducted');
    // A new process (a new client) picks up the saved state.
    await bob.close();
    bob = new ThinClient({ dial: emu.address });
    await bob.connect();
    const revived: IntroductionState = { ...saved!, ...Object.fromEntries(Object.entries(saved!).map(([k, v]) => [k, v instanceof Uint8Array ? Buffer.from(v) : v])) };
    const b = await runIntroduction(bob, revived, { save: () => {} });
    const a = await invited;
    assert.equal(b.step, 'done');
    await send(alice, a.writeCap, 'after the restart');
    assert.equal(await receive(bob, b.peerReadCap!), 'after the restart');
  });

  it('parseVoucher names the field and what it expects', () => {
    assert.ok(parseVoucher(' ' + 'ab'.repeat(32).toUpperCase() + '\n').equals(Buffer.alloc(32, 0xab)));
    for (const bad of ['abc', 'zz'.repeat(32), 42, null]) {
      assert.throws(() => parseVoucher(bad), (e: Error) => e instanceof InvalidArgumentError && /^voucher: expected 32 bytes as 64 hex digits/.test(e.message));
    }
  });

  it('a pinned daemon refuses the invitation with UnsupportedByDaemonError and the connection survives', async () => {
    const pinned = await startEmulator({ listen: '127.0.0.1:0', protocol: 'pinned', latency: 'instant' });
    const c = new ThinClient({ dial: pinned.address });
    try {
      await c.connect();
      const kp = await c.newKeypair(randomBytes(32));
      await assert.rejects(startInvitation(c, kp, 'alice', () => assert.fail('nothing to save')), (e: Error) => e instanceof UnsupportedByDaemonError && /voucherMint/.test(e.message));
      assert.equal((await c.newKeypair(randomBytes(32))).readCap.length, 136);
    } finally {
      await c.close();
      await pinned.stop({ graceful: false });
    }
  });
});
