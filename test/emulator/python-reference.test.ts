/**
 * The reference Python thin client (katzenpost/thin_client 0.0.15) against
 * the emulator, unchanged: the strongest check that the emulator speaks the
 * daemon's protocol and not just our own client's dialect.
 *
 * Opt-in, because it needs the reference source outside this repository:
 *   KATZENPOST_PY_THINCLIENT=/path/to/thin_client-0.0.15   (the directory holding katzenpost_thinclient/)
 * and Debian's python3-cbor2, python3-toml, python3-coloredlogs and
 * python3-pprintpp for /usr/bin/python3 (KATZENPOST_PYTHON overrides the interpreter).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEmulator, type Emulator } from '../../src/emulator';

const SCRIPT = String.raw`
import asyncio, json, os, sys
sys.path.insert(0, os.environ["KATZENPOST_PY_THINCLIENT"])
from katzenpost_thinclient import ThinClient, Config, BoxIDNotFoundError, CopyCommandFailedError

async def main():
    events = {"status": [], "pki": 0, "sent": 0, "reply": 0}
    async def on_status(e): events["status"].append(e.get("is_connected"))
    async def on_pki(e): events["pki"] += 1
    async def on_sent(e): events["sent"] += 1
    async def on_reply(e): events["reply"] += 1
    cfg = Config(sys.argv[1], on_connection_status=on_status, on_new_pki_document=on_pki,
                 on_message_sent=on_sent, on_message_reply=on_reply)
    c = ThinClient(cfg)
    await c.start(asyncio.get_running_loop())
    out = {}
    out["geometry_payload"] = c.geometry.UserForwardPayloadLength
    out["max_plaintext"] = c.pigeonhole_geometry.max_plaintext_payload_length

    kp = await c.new_keypair(os.urandom(32))
    out["caps"] = [len(kp.write_cap), len(kp.read_cap), len(kp.first_message_index)]
    out["read_cap_is_suffix"] = kp.read_cap == kp.write_cap[32:]
    out["counter"] = await c.get_message_box_index_counter(kp.first_message_index)

    ew = await c.encrypt_write(b"hello from python", kp.write_cap, kp.first_message_index)
    w = await c.start_resending_encrypted_message(None, kp.write_cap, None, None,
            ew.envelope_descriptor, ew.message_ciphertext, ew.envelope_hash)
    out["write_courier"] = len(w.courier_identity_hash or b"")
    er = await c.encrypt_read(kp.read_cap, kp.first_message_index)
    r = await c.start_resending_encrypted_message(kp.read_cap, None, kp.first_message_index, 0,
            er.envelope_descriptor, er.message_ciphertext, er.envelope_hash)
    out["read"] = r.plaintext.decode()

    nxt = await c.next_message_box_index(kp.first_message_index)
    er2 = await c.encrypt_read(kp.read_cap, nxt)
    try:
        await c.start_resending_encrypted_message_no_retry(kp.read_cap, None, nxt, 0,
                er2.envelope_descriptor, er2.message_ciphertext, er2.envelope_hash)
        out["no_retry"] = "success?"
    except BoxIDNotFoundError:
        out["no_retry"] = "BoxIDNotFoundError"

    dest = await c.new_keypair(os.urandom(32))
    temp = await c.new_keypair(os.urandom(32))
    payload = os.urandom(3000)
    env = await c.create_courier_envelopes_from_payload(payload, dest.write_cap, dest.first_message_index, True, True)
    idx = temp.first_message_index
    for el in env.envelopes:
        e = await c.encrypt_write(el, temp.write_cap, idx)
        await c.start_resending_encrypted_message(None, temp.write_cap, None, None,
                e.envelope_descriptor, e.message_ciphertext, e.envelope_hash)
        idx = await c.next_message_box_index(idx)
    couriers = c.get_all_couriers()
    await c.start_resending_copy_command(temp.write_cap, couriers[0][0], couriers[0][1])
    got = b""
    idx = dest.first_message_index
    for _ in range(2):
        e = await c.encrypt_read(dest.read_cap, idx)
        res = await c.start_resending_encrypted_message(dest.read_cap, None, idx, 0,
                e.envelope_descriptor, e.message_ciphertext, e.envelope_hash)
        got += res.plaintext
        idx = await c.next_message_box_index(idx)
    out["copy_ok"] = got == payload
    try:
        await c.start_resending_copy_command(temp.write_cap)
        out["copy_again"] = "cached success"
    except CopyCommandFailedError as e:
        out["copy_again"] = "failed %d" % e.replica_error_code

    svc = c.get_service("echo")
    reply = await c.blocking_send_message(b"ping", *svc.to_destination(), timeout_seconds=10)
    out["echo_len"] = len(reply)
    out["echo_prefix"] = reply[:4].decode()
    doc, epoch = await c.get_pki_document_raw(0)
    out["raw_pki"] = len(doc) > 0
    out["couriers"] = len(couriers)
    await asyncio.sleep(0.05)
    out["events"] = events
    c.stop()
    print("RESULT " + json.dumps(out))

asyncio.run(main())
`;

function runPython(python: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(python, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, out });
    });
  });
}

describe('reference Python thin client 0.0.15 against the emulator', function () {
  this.timeout(60_000);
  const source = process.env.KATZENPOST_PY_THINCLIENT;
  const python = process.env.KATZENPOST_PYTHON ?? '/usr/bin/python3';
  let emu: Emulator | null = null;
  let dir: string | null = null;

  before(function () {
    if (!source || !existsSync(join(source, 'katzenpost_thinclient', 'core.py'))) {
      console.log(
        '      (skipped: set KATZENPOST_PY_THINCLIENT to an unpacked katzenpost/thin_client 0.0.15 tree, the directory holding katzenpost_thinclient/)',
      );
      this.skip();
    }
    if (!existsSync(python)) {
      console.log(`      (skipped: ${python} not found; set KATZENPOST_PYTHON)`);
      this.skip();
    }
  });

  afterEach(async () => {
    await emu?.stop();
    emu = null;
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = null;
  });

  for (const transport of ['tcp', 'unix'] as const) {
    it(`connects over ${transport}, writes, reads, copies and pings echo`, async () => {
      dir = mkdtempSync(join(tmpdir(), 'kp-py-'));
      emu = await startEmulator({ listen: transport === 'tcp' ? '127.0.0.1:0' : join(dir, 'd.sock'), latency: 'fast' });
      const section = transport === 'tcp' ? 'Tcp' : 'Unix';
      writeFileSync(join(dir, 'thinclient.toml'), `[Dial]\n  [Dial.${section}]\n    Address = "${emu.address}"\n`);
      writeFileSync(join(dir, 'probe.py'), SCRIPT);
      const { code, out } = await runPython(python, [join(dir, 'probe.py'), join(dir, 'thinclient.toml')], { ...process.env, KATZENPOST_PY_THINCLIENT: source }, 45_000);
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      assert.ok(line, `the Python client finished (exit ${code}); output:\n${out}`);
      const r = JSON.parse(line.slice(7));
      assert.equal(r.geometry_payload, 2000);
      assert.equal(r.max_plaintext, 1553);
      assert.deepEqual(r.caps, [168, 136, 104]);
      assert.equal(r.read_cap_is_suffix, true);
      assert.ok(r.counter > 0);
      assert.equal(r.write_courier, 32);
      assert.equal(r.read, 'hello from python');
      assert.equal(r.no_retry, 'BoxIDNotFoundError');
      assert.equal(r.copy_ok, true);
      assert.equal(r.copy_again, 'cached success');
      assert.equal(r.echo_len, 2574);
      assert.equal(r.echo_prefix, 'ping');
      assert.equal(r.raw_pki, true);
      assert.equal(r.couriers, 3);
      assert.deepEqual(r.events.status, [true]);
      assert.ok(r.events.pki >= 1);
      assert.equal(r.events.sent, 1);
      assert.equal(r.events.reply, 1);
      assert.equal(code, 0);
    });
  }
});
