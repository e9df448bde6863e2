#!/usr/bin/env python
"""Speed of the harness, from one run on the same cases (a benchmark that prints figures, not a timed test).

Prints: cases per second through the persistent pool; the same cases with rank processes spawned per case (what
PyTorch's MultiProcessTestCase does); their ratio (goal: >= 50x on a 2-core machine); the wall time of the quick
and default profiles of `python -m harness run`; and the compiled lane: the quick profile under torch.compile
(`--compile inductor` by default) against the same profile eager, with the compile seconds, the graphs compiled
and the graph breaks from its results document (docs/compile.md). Compile times depend on inductor's cache
(TORCHINDUCTOR_CACHE_DIR): point it at an empty directory for a cold compile.

    python scripts/benchmark.py [--spawned N] [--skip-profiles] [--compile BACKEND | --compile off]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.catalogue import module_cases  # noqa: E402
from harness.compile_report import summary_lines, totals  # noqa: E402
from harness.pool import PoolManager  # noqa: E402
from harness.kinds import run_case  # noqa: E402
from harness.kinds import RunConfig  # noqa: E402


def _time_profile(profile: str, compile: str = "off") -> float:
    name = f"bench-{profile}" + (f"-{compile}" if compile != "off" else "")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness", "run", "--profile", profile, "--compile", compile, "--report",
                    str(ROOT / "out" / f"{name}.html"), "--json", str(ROOT / "out" / f"{name}.json")], cwd=ROOT,
                   check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _compiled_lane(backend: str) -> None:
    """The quick profile eager and compiled with ``backend``, from one run each: wall times, their ratio, and what
    the compiled run's results document says compiling took."""
    eager = _time_profile("quick")
    compiled = _time_profile("quick", backend)
    document = json.loads((ROOT / "out" / f"bench-quick-{backend}.json").read_text())
    total = totals(document["cases"]) or {}
    print(f"quick profile eager          : {eager:8.1f} s wall")
    print(f"quick profile --compile {backend:<9}: {compiled:8.1f} s wall ({compiled / eager:.1f}x eager)")
    print(f"  compile seconds            : {total.get('compile_s', 0.0):8.1f} s (each case's slowest rank, summed; "
          f"run {total.get('run_s', 0.0):.1f} s)")
    print(f"  graphs compiled            : {total.get('graphs', 0):8d} (all ranks; {total.get('cache_hits', 0)} "
          f"from inductor's cache, {total.get('cache_misses', 0)} compiled anew)")
    for line in summary_lines(document)[1:]:
        print(f"  {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawned", type=int, default=6, help="cases to run with processes spawned per case")
    parser.add_argument("--skip-profiles", action="store_true", help="do not time the quick/default profiles")
    parser.add_argument("--compile", default="inductor", choices=("off", "eager", "aot_eager", "inductor"),
                        help="the compiled lane's backend for the quick profile against eager (off: skip it)")
    args = parser.parse_args()

    # The same world-size-2 cases for both modes, so only the process handling differs.
    cases = [c for c in module_cases("default") if c.world_size == 2 and c.groups is None]
    manager = PoolManager()
    config = RunConfig.of(manager=manager)
    run_case(cases[0], config)  # start the pool once, outside the timing
    start = time.perf_counter()
    for case in cases:
        assert run_case(case, config).passed or True  # speed only: failures are the suite's business
    pooled = len(cases) / (time.perf_counter() - start)
    manager.close_all()

    spawned_cases = cases[: args.spawned]
    start = time.perf_counter()
    for case in spawned_cases:
        fresh = PoolManager()  # new rank processes and process group for this case alone
        run_case(case, RunConfig.of(manager=fresh))
        fresh.close_all()
    spawned = len(spawned_cases) / (time.perf_counter() - start)

    print(f"cases (world size 2, default profile): {len(cases)} pooled, {len(spawned_cases)} spawned")
    print(f"persistent pool      : {pooled:8.1f} cases/s")
    print(f"spawned per case     : {spawned:8.2f} cases/s")
    print(f"ratio                : {pooled / spawned:8.0f}x")
    if not args.skip_profiles:
        (ROOT / "out").mkdir(exist_ok=True)
        for profile in ("quick", "default"):
            print(f"profile {profile:<8}     : {_time_profile(profile):8.1f} s wall (python -m harness run)")
    if args.compile != "off":
        (ROOT / "out").mkdir(exist_ok=True)
        _compiled_lane(args.compile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
