/**
 * Bench section: our ThinClient against the reference Python binding
 * (katzenpost_thinclient from PyPI, driven by python_driver.py through its
 * public API), both on the same minimal daemon, encryptWrite with a 1 KiB
 * plaintext, one at a time and 32 in flight (asyncio.gather on the Python
 * side). Interleaved rounds, best of each. Goal (issue 15): client >= 3x
 * Python, both ways. The bare ping-pong client (client-vs-bare.mjs) runs in
 * the same rounds and is printed beside them: bare/Python is where this
 * run's round-trip floor puts the ratio for a client with no work of its
 * own (ours batches its writes, so with many in flight it can pass it).
 * When the machine is busy the floor rises for every client alike, and
 * bare/Python itself may fall below 3.
 *
 * The binding comes from the venv scripts/ci-reference-clients.sh keeps,
 * ~/.cache/katzenpost-ci/py-VERSION (XDG_CACHE_HOME honoured; VERSION is
 * KATZENPOST_BENCH_PY_VERSION, default 0.0.25). A venv that cannot import
 * that version is made the same way the CI script makes it (python3 -m venv,
 * pip install katzenpost_thinclient==VERSION). When Python, the venv or the
 * install is not to be had, the rows say "unavailable: <reason>" and the
 * rest of the bench goes on.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { BENCH_DIR, runJsonChild, fmt, ratio, table, verdict, unavailable, PIPELINE } from './common.mjs';
import { barePingPong, clientRate } from './client-vs-bare.mjs';

export const PY_VERSION = process.env.KATZENPOST_BENCH_PY_VERSION || '0.0.25';
const DRIVER = join(BENCH_DIR, 'python_driver.py');

function run(cmd, args, timeoutMs) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, PIP_DISABLE_PIP_VERSION_CHECK: '1' } });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? r.error.message : ''}`.trim() };
}

/** { python } for a venv interpreter that imports katzenpost_thinclient==PY_VERSION, or { reason }. */
export function pythonBinding() {
  const cache = process.env.XDG_CACHE_HOME || join(homedir(), '.cache');
  const venv = join(cache, 'katzenpost-ci', `py-${PY_VERSION}`);
  const python = join(venv, 'bin', 'python');
  const check = `import importlib.metadata as m, sys; import katzenpost_thinclient; assert m.version("katzenpost_thinclient") == "${PY_VERSION}"`;
  if (existsSync(python) && run(python, ['-c', check], 30_000).ok) return { python, venv };
  const python3 = run('python3', ['--version'], 10_000);
  if (!python3.ok) return { reason: `python3 is not installed (${python3.out.split('\n')[0] || 'not found'})` };
  console.log(`  (making ${venv}: python3 -m venv, pip install katzenpost_thinclient==${PY_VERSION})`);
  const made = run('python3', ['-m', 'venv', '--clear', venv], 120_000);
  if (!made.ok) return { reason: `python3 -m venv ${venv} failed: ${made.out.split('\n').slice(-1)[0]}` };
  const pip = run(python, ['-m', 'pip', 'install', '--no-input', `katzenpost_thinclient==${PY_VERSION}`], 240_000);
  if (!pip.ok) return { reason: `pip install katzenpost_thinclient==${PY_VERSION} failed: ${pip.out.split('\n').slice(-1)[0]}` };
  if (!run(python, ['-c', check], 30_000).ok) return { reason: `katzenpost_thinclient==${PY_VERSION} installed but not importable in ${venv}` };
  return { python, venv };
}

async function pythonRate(python, toml, concurrency, ms) {
  const r = await runJsonChild(DRIVER, ['--toml', toml, '--concurrency', String(concurrency), '--ms', String(ms)], { cmd: python, timeoutMs: ms + 30_000 });
  if (r.error) throw new Error(r.error);
  if (r.exitCode !== 0 || !Number.isFinite(r.rate)) throw new Error(`python_driver.py exited ${r.exitCode}: ${JSON.stringify(r)}`);
  return r;
}

/** Prints the client-vs-Python table; returns its goal rows. `address` is the minimal daemon's Unix socket. */
export async function clientVsPython(address, dir, { quick, overBudget }) {
  const goalText = '>= 3.00x';
  const rows = (seq, par) => [
    { figure: 'client vs Python binding, sequential', ...seq },
    { figure: `client vs Python binding, ${PIPELINE} in flight`, ...par },
  ];
  const binding = pythonBinding();
  let version = PY_VERSION;
  const best = { client1: 0, py1: 0, bare1: 0, clientN: 0, pyN: 0, bareN: 0 };
  let reason = binding.reason ?? null;
  const rounds = quick ? 1 : 3;
  if (!reason) {
    const toml = join(dir, 'thinclient.toml');
    writeFileSync(toml, `[Dial]\n  [Dial.Unix]\n    Address = "${address}"\n`);
    const ms = quick ? 300 : 1000;
    try {
      // Each client run follows a Python run, as before the bare runs were added here: the bare client
      // runs in this process, and its garbage may still be collected during the run after it.
      for (let r = 0; r < rounds && (r === 0 || !overBudget()); r++) {
        best.bare1 = Math.max(best.bare1, await barePingPong(address, 1, ms));
        const p1 = await pythonRate(binding.python, toml, 1, ms);
        version = p1.version ?? version;
        best.py1 = Math.max(best.py1, p1.rate);
        best.client1 = Math.max(best.client1, await clientRate(address, 1, ms));
        best.bareN = Math.max(best.bareN, await barePingPong(address, PIPELINE, ms));
        best.pyN = Math.max(best.pyN, (await pythonRate(binding.python, toml, PIPELINE, ms)).rate);
        best.clientN = Math.max(best.clientN, await clientRate(address, PIPELINE, ms));
      }
    } catch (e) {
      reason = `the Python driver failed: ${String(e && e.message ? e.message : e).split('\n').slice(0, 3).join(' ')}`;
    }
  }
  const title = `ThinClient vs the reference Python binding (katzenpost_thinclient ${version}, PyPI), same minimal daemon (encryptWrite, 1 KiB, Unix socket)`;
  if (reason) {
    const u = unavailable(reason, goalText);
    table(title, ['measure', 'client', 'Python', 'goal', 'client/Python'], [
      ['client vs Python, sequential', '-', '-', u.status, '-'],
      [`client vs Python, ${PIPELINE} in flight`, '-', '-', u.status, '-'],
    ]);
    return rows({ value: '-', ...u }, { value: '-', ...u });
  }
  const seq = verdict(best.client1 / best.py1 >= 3, goalText);
  const par = verdict(best.clientN / best.pyN >= 3, goalText);
  table(`${title}; best of ${rounds} interleaved rounds; bare = the bare ping-pong client, the floor`, ['measure', 'client', 'Python', 'bare', 'goal', 'client/Python', 'bare/Python'], [
    ['client vs Python, sequential', `${fmt(best.client1)}/s`, `${fmt(best.py1)}/s`, `${fmt(best.bare1)}/s`, seq.text, ratio(best.client1, best.py1), ratio(best.bare1, best.py1)],
    [`client vs Python, ${PIPELINE} in flight`, `${fmt(best.clientN)}/s`, `${fmt(best.pyN)}/s`, `${fmt(best.bareN)}/s`, par.text, ratio(best.clientN, best.pyN), ratio(best.bareN, best.pyN)],
  ]);
  return rows({ value: ratio(best.client1, best.py1), ...seq }, { value: ratio(best.clientN, best.pyN), ...par });
}
