"""Hypothesis strategies for whole module-level cases (CaseSpec), and the hypothesis profiles the suite uses.

``case_specs()`` draws world size, per-rank shard sizes (with zeros, all zeros, one rank holding everything, very
skewed), channel counts (1, primes, non-powers of two), spatial ranks and sizes, dtype, memory layout, momentum
(including None), eps, affine, track_running_stats, training and eval steps, the data distribution and process
groups. Every drawn case is valid by construction (CaseSpec validates it again) and meaningful for its dtype:

    MEANINGFUL RULE: the data's offset in units of its spread, kappa = |loc| / scale, must stay below
    MAX_OFFSET_RATIO[dtype] (float32 1e3, float64 1e6, float16 and bfloat16 3). Beyond that the dtype cannot
    resolve the spread on top of the offset (u·kappa > 6e-5 for float32; for the half types u·kappa reaches the
    1e-2 scale of their yardstick caps already at kappa ~ 20 (float16) and ~ 3 (bfloat16), and the catalogue's
    half cases stay at kappa <= 5/3) and the tolerances' yardstick cap rejects the case as meaningless (see
    harness.tolerances.YARDSTICK_CAP_REL); the catalogue's own offset cases stay inside the same bounds.
    Half-precision cases draw float32 parameters half of the time (mixed precision), else half modules.
    float16 also has a RANGE RULE: squares of the data must stay far below its largest value 65504 (a float16
    module holds the variance in float16, and float16 reductions of squares overflow), so the data's bound
    |loc| + scale·(1 + 50 with outliers, else 1 + 7) (channel shift up to 1, outliers at 50, normal tails inside 7)
    must stay within MAX_ABS["float16"] = 128, whose square is 1/4 of 65504 (a random thorough run drew scale 1e3
    with outliers and torch's float16 backward gave -inf: the data was out of range, not the kernel wrong).

Hypothesis profiles (chosen from the harness's --profile by ``load_hypothesis_profile``; the environment variable
HYPOTHESIS_PROFILE wins, e.g. ``HYPOTHESIS_PROFILE=dev`` while developing):
- ``ci-quick`` / ``ci``: derandomized, 25 / 60 examples, no deadline, no example database (reproducible CI);
- ``dev``: random, 60 examples, the local example database (``.hypothesis/``) keeps and replays failures;
- ``thorough``: random, 300 examples, nightly.
"""
from __future__ import annotations

import math
import os

from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st

from .spec import CaseSpec

__all__ = ["MAX_OFFSET_RATIO", "MAX_ABS", "data_bound", "meaningful", "shard_sizes", "process_groups", "case_specs",
           "register_hypothesis_profiles", "load_hypothesis_profile", "HARNESS_TO_HYPOTHESIS"]

MAX_OFFSET_RATIO = {"float32": 1e3, "float64": 1e6, "float16": 3.0, "bfloat16": 3.0}
MAX_ABS = {"float16": 128.0}  # the float16 range rule; the other dtypes' ranges hold every drawn case
CHANNELS = (1, 2, 3, 4, 5, 6, 7, 11, 13)  # 1, primes, non-powers of two
SCALES = (1e-3, 1e-2, 1.0, 10.0, 1e3)
LOCS_IN_SCALES = (0.0, 0.5, -3.0, 100.0, -100.0, 1e3, 1e4, 1e6)  # offset as a multiple of the scale
EPSES = (1e-5, 1e-3, 0.1, 1.0)
MOMENTA = (None, 0.0, 0.01, 0.1, 0.5, 1.0)
HARNESS_TO_HYPOTHESIS = {"quick": "ci-quick", "default": "ci", "thorough": "thorough"}


def data_bound(spec: CaseSpec) -> float:
    """A bound on |x| for the case's data (harness.data.make_input): offset, channel shift, tails or outliers."""
    return abs(spec.loc) + spec.scale * (1.0 + (50.0 if spec.data == "outliers" else 7.0))


def meaningful(spec: CaseSpec) -> bool:
    """The documented rules above: the offset over the spread must be resolvable in the case's dtype, and the
    data must fit the dtype's range."""
    return (abs(spec.loc) / spec.scale <= MAX_OFFSET_RATIO.get(spec.dtype, 0.0)
            and data_bound(spec) <= MAX_ABS.get(spec.dtype, math.inf))


@st.composite
def shard_sizes(draw, world_size: int, max_shard: int = 6) -> tuple[int, ...]:
    """Per-rank batch sizes: random (zeros likely), all zero, one rank with everything, or very skewed."""
    pattern = draw(st.sampled_from(("random", "random", "all_zero", "one_holds_all", "skewed")))
    if pattern == "all_zero":
        return (0,) * world_size
    if pattern == "one_holds_all":
        sizes = [0] * world_size
        sizes[draw(st.integers(0, world_size - 1))] = draw(st.integers(1, 2 * max_shard))
        return tuple(sizes)
    if pattern == "skewed":
        sizes = [draw(st.integers(0, 1)) for _ in range(world_size)]
        sizes[draw(st.integers(0, world_size - 1))] = draw(st.integers(3 * max_shard // 2, 3 * max_shard))
        return tuple(sizes)
    return tuple(draw(st.lists(st.integers(0, max_shard), min_size=world_size, max_size=world_size)))


@st.composite
def process_groups(draw, world_size: int) -> tuple[tuple[int, ...], ...] | None:
    """None (one group of all ranks), or a random partition of the ranks (ranks sorted within a group)."""
    if world_size < 2 or draw(st.booleans()):
        return None
    labels = draw(st.lists(st.integers(0, world_size - 1), min_size=world_size, max_size=world_size))
    groups: dict[int, list[int]] = {}
    for rank, label in enumerate(labels):
        groups.setdefault(label, []).append(rank)
    return tuple(tuple(members) for _, members in sorted(groups.items(), key=lambda item: item[1][0]))


@st.composite
def case_specs(draw, *, max_world: int = 4, dtypes: tuple[str, ...] = ("float32", "float64")) -> CaseSpec:
    """A whole CaseSpec on CPU in one of ``dtypes``; see the module docstring for the axes and the meaningful-data
    rule."""
    world_size = draw(st.integers(1, max_world))
    spatial_rank = draw(st.integers(0, 3))
    spatial = tuple(draw(st.lists(st.integers(1, 4), min_size=spatial_rank, max_size=spatial_rank)))
    layouts = ["contiguous"] + {2: ["channels_last"], 3: ["channels_last_3d"]}.get(spatial_rank, [])
    dtype = draw(st.sampled_from(dtypes))
    param_dtype = draw(st.sampled_from((None, "float32"))) if dtype in ("float16", "bfloat16") else None
    scale = draw(st.sampled_from(SCALES))
    loc = scale * draw(st.sampled_from(LOCS_IN_SCALES).filter(lambda k: abs(k) <= MAX_OFFSET_RATIO[dtype]))
    data = draw(st.sampled_from(("normal", "normal", "constant", "halfconst", "outliers")))
    steps = draw(st.integers(0, 3))
    spec = CaseSpec(
        shard_sizes=draw(shard_sizes(world_size)),
        channels=draw(st.sampled_from(CHANNELS)),
        spatial=spatial,
        dtype=dtype,
        param_dtype=param_dtype,
        layout=draw(st.sampled_from(layouts)),
        affine=draw(st.booleans()),
        track_running_stats=draw(st.booleans()),
        momentum=draw(st.sampled_from(MOMENTA)),
        eps=draw(st.sampled_from(EPSES)),
        steps=steps,
        eval_steps=draw(st.integers(1 if steps == 0 else 0, 2)),
        data=data,
        loc=loc,
        scale=scale,
        seed=draw(st.integers(0, 2**16)),
        groups=draw(process_groups(world_size)),
        tags=("property",),
    )
    assume(meaningful(spec))  # the offset filter above guarantees the first rule; float16's range may reject
    return spec


_SUPPRESSED = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much]


def register_hypothesis_profiles() -> None:
    common = dict(deadline=None, suppress_health_check=_SUPPRESSED, print_blob=True)
    settings.register_profile("ci", max_examples=60, derandomize=True, database=None, **common)
    settings.register_profile("ci-quick", settings.get_profile("ci"), max_examples=25)
    settings.register_profile("dev", max_examples=60, **common)
    settings.register_profile("thorough", max_examples=300, **common)


def load_hypothesis_profile(harness_profile: str) -> str:
    """Load the hypothesis profile for the harness's --profile (HYPOTHESIS_PROFILE wins); returns its name."""
    register_hypothesis_profiles()
    name = os.environ.get("HYPOTHESIS_PROFILE") or HARNESS_TO_HYPOTHESIS.get(harness_profile, "ci")
    settings.load_profile(name)
    return name
