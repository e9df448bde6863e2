"""Measured error table: SyncBatchNorm (W ranks, the harness pools) next to single-process BatchNorm on the global
batch, both against the float64 reference, per dtype, data and quantity, as max |error| / max |expected|.

    python scripts/gpu_error_table.py [--device cuda] [--sut torch] [--out DIR]

Writes DIR/error_table.md (the table for docs/gpu.md) and DIR/error_table.json; exit 1 when a row could not be
measured. On CPU the SyncBN is CpuSyncBatchNorm (the harness's CPU kernels) and the single-process BatchNorm is
torch's CPU kernel; on CUDA, torch.nn.SyncBatchNorm and the best of the yardstick's configurations
(harness.yardstick: cuDNN on and off, both memory layouts).

Each row also shows how the harness judges SyncBN's parameter gradients on that data: the verdict ratio of
grad_weight and grad_bias, max |error| / allowed under harness.tolerances.module_tolerance with the case's scales
and yardstick (harness.expected.expected_module_case), and which term set the allowed error: "floor" (the analytic
16 u x scale), "8 bn" (8x the yardstick) or "floor, bn suspect" (a yardstick above YARDSTICK_TRUST x the floor,
which does not widen the tolerance). Above 1 the suite fails that comparison (a known deviation may expect it).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUANTITIES = ("output", "grad_input", "grad_weight", "grad_bias", "running_var")
JUDGED = ("grad_weight", "grad_bias")  # the verdict columns: the quantities the CUDA half-input defect shows in
# (label, dtype, param_dtype, loc, scale): half types only on data they can resolve (no large offsets).
ROWS = [
    ("N(0,1)", "float32", None, 0.0, 1.0),
    ("offset 100", "float32", None, 100.0, 1.0),
    ("std 1e-3", "float32", None, 0.0, 1e-3),
    ("N(0,1)", "float16", "float32", 0.0, 1.0),
    ("mean 5, std 3", "float16", "float32", 5.0, 3.0),
    ("N(0,1)", "float16", "float16", 0.0, 1.0),
    ("N(0,1)", "bfloat16", "float32", 0.0, 1.0),
    ("mean 5, std 3", "bfloat16", "float32", 5.0, 3.0),
    ("N(0,1)", "bfloat16", "bfloat16", 0.0, 1.0),
]
SHAPES = {"small": ((9, 9), 16, (9, 11)), "big": ((32, 32), 64, (32, 32))}


def _rel(error: float, expected: list[np.ndarray]) -> float:
    scale = max((float(np.max(np.abs(e))) for e in expected if e is not None and np.size(e)), default=0.0)
    return error / scale if scale > 0 else error


def measure(spec, sut: str, pools) -> tuple[dict[str, tuple[float, float]], dict[str, dict]]:
    """(quantity -> (SyncBN relative error, BatchNorm relative error), quantity -> verdict), training step 0; the
    verdict of each JUDGED quantity as the suite computes it (harness.kinds.module: same tolerance, same sum)."""
    from harness.expected import expected_module_case
    from harness.options import RankOptions
    from harness.rank import module as rank_module

    expected = expected_module_case(spec)
    actual = pools.get(spec.world_size, spec.device).run(
        rank_module.run, {"spec": spec.to_dict(), "options": RankOptions(sut=sut)}, timeout=300)
    for rank, result in enumerate(actual):
        if result["error"]:
            raise RuntimeError(result["error"].describe(rank))
    phase = expected.phases[0]
    records = [r["phases"][0] for r in actual]
    want = {
        "output": [phase.per_rank["output"][r] for r in range(spec.world_size)],
        "grad_input": [phase.per_rank["grad_input"][r] for r in range(spec.world_size)],
        "grad_weight": [phase.per_group["grad_weight"][0]],
        "grad_bias": [phase.per_group["grad_bias"][0]],
        "running_var": [phase.per_rank["running_var"][0]],
    }
    got = {
        "output": [rec["output"] for rec in records],
        "grad_input": [rec["grad_input"] for rec in records],
        "grad_weight": [np.sum([rec["grad_weight"] for rec in records], axis=0)],
        "grad_bias": [np.sum([rec["grad_bias"] for rec in records], axis=0)],
        "running_var": [records[0]["running_var"]],
    }
    table, verdicts = {}, {}
    for quantity in QUANTITIES:
        error = max(float(np.max(np.abs(a - e))) if e.size else 0.0 for a, e in zip(got[quantity], want[quantity]))
        table[quantity] = (_rel(error, want[quantity]), _rel(phase.yardstick.get((0, quantity), float("nan")),
                                                             want[quantity]))
        if quantity in JUDGED:
            verdicts[quantity] = verdict(quantity, error, spec, phase)
    return table, verdicts


def verdict(quantity: str, error: float, spec, phase) -> dict:
    """How the harness judges SyncBN's max |error| of ``quantity`` (a group sum in the parameters' dtype)."""
    from harness.tolerances import FLOOR_ULPS, UNIT_ROUNDOFF, module_tolerance

    dtype = spec.effective_param_dtype
    tolerance = module_tolerance(quantity, dtype=dtype, scale=phase.scales.get((0, quantity), 1.0),
                                 yardstick=phase.yardstick.get((0, quantity)))
    floor = FLOOR_ULPS * UNIT_ROUNDOFF[dtype] * tolerance.scale
    if "yardstick suspect" in tolerance.reason:
        source = "floor, bn suspect"
    else:
        source = "8 bn" if tolerance.atol > floor else "floor"
    return {"ratio": error / tolerance.atol if tolerance.atol > 0 else float("inf"), "atol": tolerance.atol,
            "source": source, "reason": tolerance.reason}


def _verdict_cell(v: dict) -> str:
    ratio = f"**{v['ratio']:.2g}**" if v["ratio"] > 1 else f"{v['ratio']:.2g}"
    return f"{ratio} ({v['source']})"


def _tf32_words(state: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in state.items() if k != "api")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
    parser.add_argument("--sut", default="torch")
    parser.add_argument("--out", default=os.environ.get("OUT") or "out")
    parser.add_argument("--shapes", default="small,big", help="comma-separated: small (9,16,9,11 per rank), big "
                        "(32,64,32,32 per rank)")
    args = parser.parse_args(argv)
    from harness.pool import default_manager
    from harness.spec import ModuleSpec
    from harness.tf32 import set_tf32

    set_tf32(False)  # this process computes the yardstick: float32 as the suite's controller has it (harness.tf32)

    pools = default_manager()
    rows, lines, failed = [], [], []
    header = ("| shape (per rank, 2 ranks) | data | dtype / params | "
              + " | ".join(f"{q} sync / bn" for q in QUANTITIES) + " | "
              + " | ".join(f"{q} err / allowed" for q in JUDGED) + " |")
    lines += [header, "|" + "---|" * (3 + len(QUANTITIES) + len(JUDGED))]
    start = time.monotonic()
    try:
        for shape_name in args.shapes.split(","):
            shards, channels, spatial = SHAPES[shape_name]
            for label, dtype, param_dtype, loc, scale in ROWS:
                spec = ModuleSpec(shard_sizes=shards, channels=channels, spatial=spatial, dtype=dtype,
                                param_dtype=param_dtype, loc=loc, scale=scale, steps=1, device=args.device)
                try:
                    table, verdicts = measure(spec, args.sut, pools)
                except Exception as exc:  # noqa: BLE001 - one failed row must not lose the rest of the table
                    failed.append(f"{shape_name} {label} {dtype}/{param_dtype}: {type(exc).__name__}: {exc}")
                    print(failed[-1], flush=True)
                    continue
                cells = " | ".join(f"{s:.2g} / {b:.2g}" for s, b in table.values()) + " | " + " | ".join(
                    _verdict_cell(verdicts[q]) for q in JUDGED)
                shape = f"({shards[0]}, {channels}, {', '.join(map(str, spatial))})"
                # A float16 module counts in float16: a global count above 65504 is the known pytorch#70901.
                remark = ("global count > 65504, pytorch#70901" if (param_dtype or dtype) == "float16"
                          and sum(spec.rank_count(r) for r in range(spec.world_size)) > 65504 else "")
                line = (f"| {shape} | {label}{f' ({remark})' if remark else ''} | {dtype} / {param_dtype or dtype} "
                        f"| {cells} |")
                lines.append(line)
                print(line, flush=True)
                rows.append({"shape": shape, "data": label, "remark": remark, "dtype": dtype,
                             "param_dtype": param_dtype or dtype,
                             "errors": {q: {"syncbn": s, "batchnorm": b} for q, (s, b) in table.items()},
                             "verdict": verdicts})
    finally:
        pools.close_all()
    import torch

    from harness.tf32 import tf32_state

    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" and torch.cuda.is_available() else "cpu"
    note = (f"max |error| / max |expected| against float64, training step 0; SyncBN: {args.sut}, 2 ranks on "
            f"{device_name}, torch {torch.__version__}; bn: single-process torch BatchNorm in the same dtypes on "
            f"the global batch (the best of harness.yardstick's configurations); err / allowed: SyncBN's max |error| "
            f"over the suite's tolerance (> 1 fails; set by the floor or by 8x bn); TF32 {_tf32_words(tf32_state())} "
            f"({time.monotonic() - start:.0f}s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "error_table.md").write_text(note + "\n\n" + "\n".join(lines) + "\n"
                                        + "".join(f"\nnot measured: {f}" for f in failed))
    (out / "error_table.json").write_text(json.dumps({"note": note, "rows": rows, "failed": failed}, indent=1))
    print(note)
    print(f"wrote {out / 'error_table.md'}")
    return 0 if rows and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
