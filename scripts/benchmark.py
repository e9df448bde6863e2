#!/usr/bin/env python
"""Speed of the harness, from one run on the same cases (a benchmark that prints figures, not a timed test).

Prints: cases per second through the persistent pool; the same cases with rank processes spawned per case (what
PyTorch's MultiProcessTestCase does); their ratio (goal: >= 50x on a 2-core machine); and the wall time of the
quick and default profiles of `python -m harness run`.

    python scripts/benchmark.py [--spawned N] [--skip-profiles]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.catalogue import module_cases  # noqa: E402
from harness.pool import PoolManager  # noqa: E402
from harness.kinds import run_case  # noqa: E402
from harness.kinds import RunConfig  # noqa: E402


def _time_profile(profile: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "harness", "run", "--profile", profile, "--report",
                    str(ROOT / "out" / f"bench-{profile}.html")], cwd=ROOT, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawned", type=int, default=6, help="cases to run with processes spawned per case")
    parser.add_argument("--skip-profiles", action="store_true", help="do not time the quick/default profiles")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
