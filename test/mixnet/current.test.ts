/**
 * What kpclientd v0.0.99 added (PROTOCOL.md §9), against the REAL daemon of
 * `npm run mixnet -- start`: the protocol level read from the handshake,
 * getDirectoryAuthorities, the Contact Voucher calls (end to end through the
 * real mixnet, and every failure code), unknown requests dropped instead of
 * fatal, and the WebSocket transport of the second kpclientd, which listens
 * with [Listen.Ws] on ws://127.0.0.1:<clientPort+1> (or
 * KATZENPOST_MIXNET_WS_ADDRESS).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { WebSocket } from 'ws';
import {
  CURRENT_RESPONSE_KINDS,
  DaemonError,
  InvalidArgumentError,
  ThinClient,
  VoucherHashMismatchError,
  VoucherSealOpenFailedError,
  VoucherSignatureInvalidError,
  blake2b256,
  type CurrentOnlyMethod,
} from '../../src';
import { decodeCbor, decodeCborFaithful, decodeEnvelope, FrameDecoder, HEAD_RESPONSE_KINDS, RESPONSE_KINDS } from '../../src/wire';
import { encodeCanonical } from '../../src/emulator/pki';
import { formatVoucher, parseVoucher, runIntroduction, startInvitation, startJoin } from '../../src/channels/introduction';
import { RawConnection } from './raw';
import { connectReal, daemonAddress, wsDaemonAddress } from './support';

const MINUTE = 60_000;
const LOCAL_TIMEOUT_MS = 5 * MINUTE;

const rejectionOf = (p: Promise<unknown>) =>
  p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e as Error,
  );

/** Write `data` to the box at `index` of `writeCap`. */
async function write(c: ThinClient, writeCap: Buffer, index: Buffer, data: Buffer | string): Promise<void> {
  const w = await c.encryptWrite(data, writeCap, index);
  await c.startResendingEncryptedMessage({ writeCap, ...w });
}

/** Read the box at `index` of `readCap`, waiting until it is written. */
async function read(c: ThinClient, readCap: Buffer, index: Buffer): Promise<Buffer> {
  const r = await c.encryptRead(readCap, index);
  const got = await c.startResendingEncryptedMessage({ readCap, messageBoxIndex: index, ...r });
  assert.ok(got.plaintext, 'a plaintext');
  return got.plaintext;
}

/** The top-level keys of the first frame the daemon sends on a fresh TCP connection. */
async function firstEnvelopeKeys(): Promise<string[]> {
  const [host, port] = daemonAddress().split(':');
  const socket = net.connect(Number(port), host);
  const decoder = new FrameDecoder();
  try {
    return await new Promise<string[]>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no first frame within 60 s')), MINUTE);
      socket.on('error', reject);
      socket.on('data', (chunk: Buffer) => {
        const [frame] = decoder.push(chunk);
        if (!frame) return;
        clearTimeout(t);
        resolve(decodeEnvelope(frame, [...RESPONSE_KINDS, ...HEAD_RESPONSE_KINDS]).keys);
      });
    });
  } finally {
    socket.destroy();
  }
}

describe('real kpclientd v0.0.99: the current protocol', function () {
  this.timeout(15 * MINUTE);
  let c: ThinClient;

  before(async () => {
    c = await connectReal({ requestTimeoutMs: LOCAL_TIMEOUT_MS });
  });
  after(async () => {
    await c?.close();
  });

  it('sends the 25-key reply envelope, so the client sees a current daemon that supports every newer method @ci', async () => {
    assert.deepEqual(await firstEnvelopeKeys(), [...CURRENT_RESPONSE_KINDS]);
    assert.equal(c.daemonProtocol(), 'current');
    for (const m of ['getDirectoryAuthorities', 'voucherMint', 'voucherInduct', 'voucherOpen', 'voucherDeriveStream'] as CurrentOnlyMethod[]) {
      assert.equal(c.supports(m), true, m);
    }
    assert.equal(c.pigeonholeGeometry().MaxPlaintextPayloadLength, 1549);
  });

  it('getDirectoryAuthorities: the configured authorities, each hash the key of its signature on the signed document @ci', async () => {
    const auths = await c.getDirectoryAuthorities();
    assert.deepEqual(auths.map((a) => a.identifier).sort(), ['auth1', 'auth2', 'auth3']);
    const cert = decodeCborFaithful((await c.getPkiDocumentRaw(0)).payload);
    const signers = [...(cert.Signatures as Map<Buffer, unknown>).keys()].map((k) => Buffer.from(k).toString('hex')).sort();
    assert.deepEqual(auths.map((a) => a.identityKeyHash.toString('hex')).sort(), signers);
    for (const a of auths) {
      assert.equal(a.pkiSignatureScheme, 'Ed25519');
      assert.ok(a.wireKemScheme.length > 0);
      assert.ok(a.addresses.length > 0 && a.addresses.every((x) => /^tcp:\/\//.test(x)), a.addresses.join());
      assert.match(a.identityPublicKeyPem, /^-----BEGIN ED25519 PUBLIC KEY-----\n/);
      assert.match(a.linkPublicKeyPem, /^-----BEGIN [A-Z0-9-]+ PUBLIC KEY-----\n/);
      const raw = Buffer.from(a.identityPublicKeyPem.split('\n').slice(1, -2).join(''), 'base64');
      assert.ok(blake2b256(raw).equals(a.identityKeyHash), `${a.identifier}: the hash is BLAKE2b-256 of the identity key`);
    }
  });

  it('Contact Voucher end to end through the mixnet: mint, publish, derive, read, induct, reply, open, then a message on the mutated caps', async () => {
    // Two clients, as two people: the joiner and the inductor.
    const inductor = await connectReal({ requestTimeoutMs: LOCAL_TIMEOUT_MS });
    try {
      const joiner = await c.newKeypair(randomBytes(32));
      assert.ok(ThinClient.firstMessageIndexOf(joiner.writeCap).equals(joiner.firstMessageIndex), 'the index inside the cap is the first index');
      const m = await c.voucherMint(joiner.writeCap, 'alice');
      assert.deepEqual([m.voucher.length, m.voucherSecretKey.length, m.voucherPublicKey.length], [32, 162, 160]);
      assert.ok(blake2b256(m.voucherPayload).equals(m.voucher), 'the voucher is BLAKE2b-256 of its payload');
      const box0 = ThinClient.firstMessageIndexOf(m.voucherWriteCap);
      await write(c, m.voucherWriteCap, box0, m.voucherPayload);

      // The inductor has only the voucher.
      const stream = await inductor.voucherDeriveStream(m.voucher);
      assert.ok(stream.voucherReadCap.equals(m.voucherReadCap), 'the same voucher stream');
      const payload = await read(inductor, stream.voucherReadCap, ThinClient.firstMessageIndexOf(stream.voucherReadCap));
      const ind = await inductor.voucherInduct(m.voucher, payload, 'welcome: the group read caps');
      assert.equal(ind.displayName, 'alice');
      const box1 = await inductor.nextMessageBoxIndex(ThinClient.firstMessageIndexOf(ind.voucherWriteCap));
      await write(inductor, ind.voucherWriteCap, box1, ind.sealedReply);

      // The joiner reads box 1 and opens it.
      const sealed = await read(c, m.voucherReadCap, await c.nextMessageBoxIndex(box0));
      const op = await c.voucherOpen(m.voucherSecretKey, sealed, joiner.writeCap);
      assert.equal(op.whoReply.toString(), 'welcome: the group read caps');
      assert.ok(op.salt.equals(ind.salt));
      assert.ok(op.mutatedMessageWriteCap.subarray(32).equals(ind.mutatedMessageReadCap), 'the mutated caps are a pair');

      // Real messages on the re-seeded channel: written by the joiner, read by the inductor.
      await write(c, op.mutatedMessageWriteCap, ThinClient.firstMessageIndexOf(op.mutatedMessageWriteCap), 'hello from alice');
      const got = await read(inductor, ind.mutatedMessageReadCap, ThinClient.firstMessageIndexOf(ind.mutatedMessageReadCap));
      assert.equal(got.toString(), 'hello from alice');
    } finally {
      await inductor.close();
    }
  });

  it('a channel introduction (src/channels/introduction.ts) between two clients: invite and join meet, then messages both ways', async () => {
    const bob = await connectReal({ requestTimeoutMs: LOCAL_TIMEOUT_MS });
    try {
      const [aliceOut, bobOut] = await Promise.all([c.newKeypair(randomBytes(32)), bob.newKeypair(randomBytes(32))]);
      const steps: string[] = [];
      const invite = await startInvitation(c, aliceOut, 'alice', (s) => steps.push(`invite:${s.step}`));
      const poll = { pollInitialMs: 2000, pollMaxMs: 15_000 };
      // Bob starts polling box 0 before Alice publishes it.
      const [b, a] = await Promise.all([
        runIntroduction(bob, startJoin(parseVoucher(formatVoucher(invite.voucher)), bobOut), { save: (s) => steps.push(`join:${s.step}`), ...poll }),
        runIntroduction(c, invite, { save: (s) => steps.push(`invite:${s.step}`), ...poll }),
      ]);
      assert.deepEqual(steps.filter((s) => s.startsWith('invite')), ['invite:minted', 'invite:published', 'invite:done']);
      assert.deepEqual(steps.filter((s) => s.startsWith('join')), ['join:inducted', 'join:done']);
      assert.equal(b.peerName, 'alice');
      assert.ok(a.peerReadCap!.equals(bobOut.readCap));
      await Promise.all([
        write(c, a.writeCap, ThinClient.firstMessageIndexOf(a.writeCap), 'alice to bob'),
        write(bob, b.writeCap, ThinClient.firstMessageIndexOf(b.writeCap), 'bob to alice'),
      ]);
      const [toBob, toAlice] = await Promise.all([
        read(bob, b.peerReadCap!, ThinClient.firstMessageIndexOf(b.peerReadCap!)),
        read(c, a.peerReadCap!, ThinClient.firstMessageIndexOf(a.peerReadCap!)),
      ]);
      assert.equal(toBob.toString(), 'alice to bob');
      assert.equal(toAlice.toString(), 'bob to alice');
    } finally {
      await bob.close();
    }
  });

  it('voucher failures from the real daemon: 28, 29, 30 as their own classes, 3 as DaemonError', async () => {
    const kp = await c.newKeypair(randomBytes(32));
    const m = await c.voucherMint(kp.writeCap, 'bob');
    const tampered = Buffer.from(m.voucherPayload);
    tampered[tampered.length - 1] ^= 1;
    const e28 = await rejectionOf(c.voucherInduct(m.voucher, tampered, Buffer.alloc(0)));
    assert.ok(e28 instanceof VoucherHashMismatchError, String(e28));

    const vp = decodeCbor(m.voucherPayload);
    const spa = decodeCbor(vp.SignedPleaseAdd);
    const signature = Buffer.from(spa.Signature);
    signature[0] ^= 1;
    const badPayload = encodeCanonical({ SignedPleaseAdd: encodeCanonical({ PleaseAdd: spa.PleaseAdd, Signature: signature }), VoucherPubKey: vp.VoucherPubKey });
    assert.ok(encodeCanonical({ SignedPleaseAdd: vp.SignedPleaseAdd, VoucherPubKey: vp.VoucherPubKey }).equals(m.voucherPayload), 'the payload is canonical CBOR');
    const e29 = await rejectionOf(c.voucherInduct(blake2b256(badPayload), badPayload, Buffer.alloc(0)));
    assert.ok(e29 instanceof VoucherSignatureInvalidError, String(e29));

    const ind = await c.voucherInduct(m.voucher, m.voucherPayload, Buffer.from('who'));
    const sealed = Buffer.from(ind.sealedReply);
    sealed[sealed.length - 5] ^= 1;
    const e30 = await rejectionOf(c.voucherOpen(m.voucherSecretKey, sealed, kp.writeCap));
    assert.ok(e30 instanceof VoucherSealOpenFailedError, String(e30));
    const other = await c.voucherMint(kp.writeCap, 'eve');
    assert.ok((await rejectionOf(c.voucherOpen(other.voucherSecretKey, ind.sealedReply, kp.writeCap))) instanceof VoucherSealOpenFailedError);

    const garbage = Buffer.from('not a voucher payload');
    const e3 = await rejectionOf(c.voucherInduct(blake2b256(garbage), garbage, Buffer.alloc(0)));
    assert.ok(e3 instanceof DaemonError && e3.errorCode === 3, String(e3));
    // A short secret key makes the daemon's handler panic (contained) and never answer: refused locally.
    assert.ok((await rejectionOf(c.voucherOpen(randomBytes(10), ind.sealedReply, kp.writeCap))) instanceof InvalidArgumentError);
    assert.ok(c.isDaemonConnected());
  });

  it('drops an unknown request kind or an all-null envelope and keeps serving the connection', async () => {
    const raw = await RawConnection.open();
    try {
      raw.send('bogus_request' as never, { query_id: randomBytes(16) });
      raw.send('new_keypair', null as never); // {"new_keypair": null}: no non-null member at all
      const kp = await raw.request('new_keypair', { seed: randomBytes(32) });
      assert.equal(kp.error_code, 0);
      const auths = await raw.request('get_directory_authorities' as never, {});
      assert.equal(auths.error_code, 0);
    } finally {
      await raw.close();
    }
    // The daemon is still there for everyone else.
    assert.ok((await c.newKeypair(randomBytes(32))).writeCap.length === 168);
  });
});

describe('real kpclientd v0.0.99 over WebSocket ([Listen.Ws])', function () {
  this.timeout(15 * MINUTE);
  let address: string;
  let c: ThinClient;

  before(async function () {
    address = wsDaemonAddress();
    // Fail clearly, with what is missing, when no WebSocket daemon listens there.
    await new Promise<void>((resolve, reject) => {
      const ws = new WebSocket(address, { handshakeTimeout: 10_000 });
      ws.once('open', () => {
        ws.terminate();
        resolve();
      });
      ws.once('error', (e) =>
        reject(
          new Error(
            `no kpclientd WebSocket listener is reachable at ${address} (${e.message}): the network of \`npm run mixnet -- start\` ` +
              'must run a second kpclientd with [Listen.Ws] on ws://127.0.0.1:<clientPort+1>, or set KATZENPOST_MIXNET_WS_ADDRESS',
          ),
        ),
      );
    });
    // Default options: the 45 s default handshake deadline covers a daemon still waiting for its document.
    c = new ThinClient({ dial: address, requestTimeoutMs: LOCAL_TIMEOUT_MS });
    await c.connect();
  });
  after(async () => {
    await c?.close();
  });

  it('completes the handshake: a current daemon with geometries and a PKI document @ci', () => {
    assert.equal(c.address, address);
    assert.equal(c.daemonProtocol(), 'current');
    assert.ok(c.pkiDocument(), 'a PKI document');
    assert.equal(c.sphinxGeometry().UserForwardPayloadLength, 2000);
  });

  it('serves local requests: keypair, index, directory authorities, a voucher @ci', async () => {
    const kp = await c.newKeypair(randomBytes(32));
    assert.equal((await c.nextMessageBoxIndex(kp.firstMessageIndex)).length, 104);
    assert.equal((await c.getDirectoryAuthorities()).length, 3);
    const m = await c.voucherMint(kp.writeCap, 'over websocket');
    assert.ok((await c.voucherDeriveStream(m.voucher)).voucherWriteCap.equals(m.voucherWriteCap));
  });

  it('writes and reads a full box through the mixnet', async () => {
    const kp = await c.newKeypair(randomBytes(32));
    const data = randomBytes(1549);
    await write(c, kp.writeCap, kp.firstMessageIndex, data);
    assert.ok((await read(c, kp.readCap, kp.firstMessageIndex)).equals(data));
  });

  it('talks to the TCP daemon of the same network through Pigeonhole', async () => {
    const tcp = await connectReal({ requestTimeoutMs: LOCAL_TIMEOUT_MS });
    try {
      const kp = await tcp.newKeypair(randomBytes(32));
      await write(tcp, kp.writeCap, kp.firstMessageIndex, 'from the TCP client');
      assert.equal((await read(c, kp.readCap, kp.firstMessageIndex)).toString(), 'from the TCP client');
    } finally {
      await tcp.close();
    }
  });
});
