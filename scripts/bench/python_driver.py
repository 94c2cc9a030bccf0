"""Bench driver for the reference Python thin client (katzenpost_thinclient, PyPI).

Used by scripts/bench/python.mjs: it connects to a daemon through the
binding's ordinary public API (a thinclient.toml with a [Dial.Unix] or
[Dial.Tcp] section, Config, ThinClient.start) and calls encrypt_write, the
request the TypeScript client is timed on, with the same sizes (1 KiB
plaintext, 168-byte write cap, 104-byte box index):

    python python_driver.py --toml PATH [--concurrency 1] [--ms 1000] [--count N] [--warmup 50]

--concurrency 1 awaits one call after another; more runs that many loops
at once with asyncio.gather. --ms time-boxes the measurement (the default);
--count makes it N calls in all instead. Prints one JSON line:
{"ops": n, "seconds": s, "rate": ops_per_second, "version": "..."}.
Exits 2 with {"error": "..."} when the binding cannot be imported.
"""
import argparse
import asyncio
import json
import os
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--toml", required=True)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--ms", type=float, default=1000.0)
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=50)
    a = ap.parse_args()
    try:
        from katzenpost_thinclient import Config, ThinClient
        import importlib.metadata as md
        version = md.version("katzenpost_thinclient")
    except Exception as e:  # noqa: BLE001 - reported to the bench, not raised
        print(json.dumps({"error": f"cannot import katzenpost_thinclient: {e}"}), flush=True)
        return 2
    result = asyncio.run(run(Config, ThinClient, a))
    result["version"] = version
    print(json.dumps(result), flush=True)
    return 0


async def run(Config, ThinClient, a) -> dict:
    client = ThinClient(Config(a.toml))
    await client.start(asyncio.get_running_loop())
    try:
        plaintext = os.urandom(1024)
        write_cap = os.urandom(168)
        index = os.urandom(104)

        async def one() -> None:
            await client.encrypt_write(plaintext, write_cap, index)

        for _ in range(a.warmup):
            await one()

        n = 0
        t0 = time.perf_counter()
        if a.count > 0:
            per = [a.count // a.concurrency + (1 if i < a.count % a.concurrency else 0) for i in range(a.concurrency)]

            async def loop_count(k: int) -> None:
                nonlocal n
                for _ in range(k):
                    await one()
                    n += 1

            await asyncio.gather(*(loop_count(k) for k in per))
        else:
            end = t0 + a.ms / 1000.0

            async def loop_time() -> None:
                nonlocal n
                while time.perf_counter() < end:
                    await one()
                    n += 1

            await asyncio.gather(*(loop_time() for _ in range(a.concurrency)))
        seconds = time.perf_counter() - t0
        return {"ops": n, "seconds": seconds, "rate": n / seconds if seconds > 0 else 0.0}
    finally:
        client.stop()


if __name__ == "__main__":
    sys.exit(main())
