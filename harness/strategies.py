"""Hypothesis strategies for whole module-level cases (ModuleSpec), and the hypothesis profiles the suite uses.

``case_specs()`` draws world size, per-rank shard sizes (with zeros, all zeros, one rank holding everything, very
skewed), channel counts (1, primes, non-powers of two), spatial ranks and sizes, dtype, memory layout, momentum
(including None), eps, affine, track_running_stats, training and eval steps, the data distribution and process
groups. Every drawn case is valid by construction (ModuleSpec validates it again) and meaningful for its dtype:

    MEANINGFUL RULE: the data's offset in units of its spread, kappa = |loc| / scale, must stay below
    MAX_OFFSET_RATIO[dtype] (float32 1e3, float64 1e6, float16 and bfloat16 3). Beyond that the dtype cannot
    resolve the spread on top of the offset (u·kappa > 6e-5 for float32; for the half types u·kappa reaches the
    1e-2 scale of their yardstick caps already at kappa ~ 20 (float16) and ~ 3 (bfloat16), and the catalogue's
    half cases stay at kappa <= 5/3) and the tolerances' yardstick cap rejects the case as meaningless (see
    harness.tolerances.YARDSTICK_CAP_REL); the catalogue's own offset cases stay inside the same bounds.
    Half-precision cases draw float32 parameters half of the time (mixed precision), else half modules.
    float16 also has RANGE RULES, for what a correct float16 BatchNorm does hold in float16. It never squares a
    raw value (statistics accumulate in float32 or wider, x - mean included), so |x| itself may go far beyond
    sqrt(65504) = 256: float16 BatchNorm on data at |x| ~ 300 is accurate to 7e-3 (an implementation that squares
    float16 values gets inf there: harness.mutants' squares_in_half, which the catalogue must catch). What it does
    hold in float16 is
    - the values, their means and the running mean: REPRESENTABLE rule, the data's bound (``data_bound``: offset,
      channel shift up to 1, normal tails inside 7, outliers at 50, in units of scale) within MAX_ABS["float16"] =
      8192, so x - mean (up to twice that) stays 4x below 65504;
    - the variance: a float16 module's running_var (and every statistic the gather kernel writes in the module's
      dtype). VARIANCE rule: ``variance_bound`` within MAX_VARIANCE["float16"] = 65504 / 2 (the momentum mix
      (1 - m)·running_var + m·var cannot exceed the larger of the two, and the 2x margin takes the rounding of the
      unbiased update and of var = 1/invstd² - eps). The bound is the larger of the initial running_var
      (scale²·U(0.5, 2) <= 2·scale²) and the unbiased batch variance: for outliers, or normal data with fewer
      than LARGE_COUNT = 200 values in some group, the worst case of data_bound's convention, every value within
      tail·scale of its channel's centre: var <= 2·(tail·scale)² (n/(n-1) <= 2); for normal data with >= 200
      values in every group, 2·scale² (an unbiased sample variance of n >= 200 normal draws exceeds twice its
      expectation with probability P(chi²_{n-1} > 2(n-1)) <= 2e-15, below the 7-sigma tails' 2.6e-12);
      a constant channel's variance is 0.
    The variance rule replaces a bound of 128 on |x| (squares of the data below 65504/4), which kept the variance
    in range but forbade data far from 0. It keeps the guard that bound was made for: a random thorough run drew
    scale 1e3 with outliers, the variance (~2.6e7) overflowed float16 and torch's float16 backward gave -inf (the
    data was out of range, not the kernel wrong): variance_bound 5e9, rejected.

Hypothesis profiles (chosen from the harness's --profile by ``register_hypothesis_profile``, registered as
``syncbn-<name>`` and applied to the property tests alone; the environment variable HYPOTHESIS_PROFILE wins, e.g.
``HYPOTHESIS_PROFILE=dev`` while developing):
- ``ci-quick`` / ``ci``: derandomized, 25 / 60 examples, no deadline, no example database (reproducible CI);
- ``dev``: random, 60 examples, the local example database (``.hypothesis/``) keeps and replays failures;
- ``thorough``: random, 300 examples, nightly.
``--property-examples N`` (env SYNCBN_PROPERTY_EXAMPLES) sets the number of examples of whichever profile; with
pytest's ``--hypothesis-seed S`` and ``--profile thorough`` it is the nightly soak (``tox -e soak``).
"""
from __future__ import annotations

import math
import os

from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st

from .spec import ModuleSpec

__all__ = ["MAX_OFFSET_RATIO", "MAX_ABS", "MAX_VARIANCE", "LARGE_COUNT", "data_bound", "variance_bound", "meaningful",
           "shard_sizes", "process_groups", "case_specs", "register_hypothesis_profiles",
           "register_hypothesis_profile", "HARNESS_TO_HYPOTHESIS", "PROFILE_PREFIX"]

MAX_OFFSET_RATIO = {"float32": 1e3, "float64": 1e6, "float16": 3.0, "bfloat16": 3.0}
# The float16 range rules (module docstring); the other dtypes' ranges hold every drawn case.
MAX_ABS = {"float16": 8192.0}
MAX_VARIANCE = {"float16": 65504.0 / 2}
LARGE_COUNT = 200
_TAIL = {"outliers": 50.0}  # |x - centre| / scale; 7 for normal tails
CHANNELS = (1, 2, 3, 4, 5, 6, 7, 11, 13)  # 1, primes, non-powers of two
SCALES = (1e-3, 1e-2, 1.0, 10.0, 1e3)
LOCS_IN_SCALES = (0.0, 0.5, -3.0, 100.0, -100.0, 1e3, 1e4, 1e6)  # offset as a multiple of the scale
EPSES = (1e-5, 1e-3, 0.1, 1.0)
MOMENTA = (None, 0.0, 0.01, 0.1, 0.5, 1.0)
HARNESS_TO_HYPOTHESIS = {"quick": "ci-quick", "default": "ci", "thorough": "thorough"}


def data_bound(spec: ModuleSpec) -> float:
    """A bound on |x| for the case's data (harness.data.make_input): offset, channel shift, tails or outliers."""
    return abs(spec.loc) + spec.scale * (1.0 + _TAIL.get(spec.data, 7.0))


def variance_bound(spec: ModuleSpec) -> float:
    """A bound on any variance a module holds for the case's data: the initial running_var and the unbiased batch
    variance of each group (see the module docstring)."""
    if spec.data == "constant":
        factor = 2.0
    elif spec.data != "outliers" and min(sum(spec.rank_count(r) for r in g) for g in spec.rank_groups) >= LARGE_COUNT:
        factor = 2.0
    else:
        factor = 2.0 * _TAIL.get(spec.data, 7.0) ** 2
    return spec.scale**2 * factor


def meaningful(spec: ModuleSpec) -> bool:
    """The documented rules above: the offset over the spread must be resolvable in the case's dtype, and the
    values and the variance must fit the dtype's range."""
    return (abs(spec.loc) / spec.scale <= MAX_OFFSET_RATIO.get(spec.dtype, 0.0)
            and data_bound(spec) <= MAX_ABS.get(spec.dtype, math.inf)
            and variance_bound(spec) <= MAX_VARIANCE.get(spec.dtype, math.inf))


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
def case_specs(draw, *, max_world: int = 4, dtypes: tuple[str, ...] = ("float32", "float64")) -> ModuleSpec:
    """A whole ModuleSpec on CPU in one of ``dtypes``; see the module docstring for the axes and the meaningful-data
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
    spec = ModuleSpec(
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


PROFILE_PREFIX = "syncbn-"  # hypothesis's profiles are process-wide: a project's own "ci" profile stays its own


def register_hypothesis_profiles() -> None:
    common = dict(deadline=None, suppress_health_check=_SUPPRESSED, print_blob=True)
    ci = settings(max_examples=60, derandomize=True, database=None, **common)
    for name, profile in (("ci", ci), ("ci-quick", settings(ci, max_examples=25)),
                          ("dev", settings(max_examples=60, **common)),
                          ("thorough", settings(max_examples=300, **common))):
        settings.register_profile(PROFILE_PREFIX + name, profile)


def register_hypothesis_profile(harness_profile: str, examples: int | None = None) -> str:
    """Register the hypothesis profile for the harness's --profile (HYPOTHESIS_PROFILE wins); ``examples`` (the
    --property-examples option) overrides its number of examples per property test. Returns its name. It is not
    loaded as the process's default: the property tests apply it to themselves (harness.pytest_plugin)."""
    register_hypothesis_profiles()
    name = os.environ.get("HYPOTHESIS_PROFILE") or HARNESS_TO_HYPOTHESIS.get(harness_profile, "ci")
    if name in (*HARNESS_TO_HYPOTHESIS.values(), "dev"):  # one of the harness's (registered with the prefix)
        name = PROFILE_PREFIX + name
    if examples is not None:
        settings.register_profile(f"{name}-{examples}", settings.get_profile(name), max_examples=examples)
        name = f"{name}-{examples}"
    return name
