"""Hypothesis strategies for whole module-level cases (ModuleSpec), and the hypothesis profiles the suite uses.

``case_specs()`` draws world size, per-rank shard sizes (with zeros, all zeros, one rank holding everything, very
skewed), channel counts (1, primes, non-powers of two), spatial ranks and sizes, dtype, memory layout, momentum
(including None), eps, affine, track_running_stats, training and eval steps, the data distribution and process
groups, shard sizes that change between steps, eval phases between training steps, frozen affine parameters and
training-mode forwards under no_grad; with ``boundaries`` also the sizes where kernels break (a rank with more than
1024-4096 values per channel, more than 1024 channels, channels_last with C >= 32 not a multiple of 8), and world
sizes up to ``max_world``. How far each profile reaches: ``PROPERTY_REACH`` (quick stays within the world sizes and
sizes its catalogue has; default adds the boundaries and world size 5, whose pool its catalogue starts anyway;
thorough goes to world size 8). Every drawn case is valid by construction (ModuleSpec validates it again) and
meaningful for its dtype:

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

What a property test tried (``PropertyTally``), so that one that tried nothing does not read as a pass. Every drawn
example ends one way: a known deviation of the SUT (not run); in the region the SUT declared unsupported (not run:
``declared_region``, the features the SUT named with its declarations or that the conformance table infers from
the cases this process ran, harness.features, and any the SUT names during the test); run and declared
unsupported; run and judged (passed or failed); or not run because the test already spent its budget of
declared-unsupported runs (as many as it asks examples: a declaration costs a run like a judgement). The examples
that are not run or declared unsupported do not count, so hypothesis draws more, from the supported region.

    MINIMUM RULE: a property test must judge ``minimum_judged(N) = min(MIN_JUDGED_EXAMPLES, N)`` of its N examples
    (MIN_JUDGED_EXAMPLES = 10: fewer random cases than that cover almost none of the axes above together). One
    that judges fewer is "not exercised": not a pass, and not a failure of the run unless --strict-features (then
    every declared-unsupported example already fails it); its summary says why (how many were declared
    unsupported, drawn in the unsupported region, known deviations).

The summary also counts the judged examples that ran a synchronised training step (a group of two ranks or more in
a training step): a SyncBN property test whose judged examples never synchronised says so.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st

from .errors import CaseError
from .features import FEATURE_NAMES, declared_region, features_of
from .kinds import kind_of, subject_of
from .spec import ModuleSpec

__all__ = ["MAX_OFFSET_RATIO", "MAX_ABS", "MAX_VARIANCE", "LARGE_COUNT", "data_bound", "variance_bound", "meaningful",
           "shard_sizes", "process_groups", "case_specs", "register_hypothesis_profiles",
           "register_hypothesis_profile", "HARNESS_TO_HYPOTHESIS", "PROFILE_PREFIX", "MIN_JUDGED_EXAMPLES",
           "minimum_judged", "PropertyTally", "steering_region", "PROPERTY_REACH"]

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
# What the property tests draw under each harness profile (case_specs' keywords).
PROPERTY_REACH = {"quick": dict(max_world=4, boundaries=False), "default": dict(max_world=5, boundaries=True),
                  "thorough": dict(max_world=8, boundaries=True)}
LARGE_COUNTS = (1025, 2049, 2050, 3071, 4097, 4100)  # values per channel of one sample: past a block of 1024-4096
MANY_CHANNELS = (1031, 2053)  # primes past 1024 and 2048: exchange buffers of thousands of elements
VECTOR_CHANNELS = (33, 36, 37, 100)  # C >= 32 not a multiple of 8 (36, 100: multiples of 4 only)


def data_bound(spec: ModuleSpec) -> float:
    """A bound on |x| for the case's data (harness.data.make_input): offset, channel shift, tails or outliers."""
    return abs(spec.loc) + spec.scale * (1.0 + _TAIL.get(spec.data, 7.0))


def variance_bound(spec: ModuleSpec) -> float:
    """A bound on any variance a module holds for the case's data: the initial running_var and the unbiased batch
    variance of each group (see the module docstring)."""
    smallest = min(sum(spec.rank_count(r, p) for r in g) for g in spec.rank_groups for p in range(len(spec.phases)))
    if spec.data == "constant":
        factor = 2.0
    elif spec.data != "outliers" and smallest >= LARGE_COUNT:
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
def _sizes(draw, boundaries: bool) -> tuple[tuple[int, ...], int, int]:
    """(spatial, channels, largest shard): small sizes mostly; with ``boundaries`` sometimes a large per-rank count
    (one long spatial axis, 1-2 samples per rank), many channels with few values each, or a vector remainder."""
    kind = draw(st.sampled_from(("small",) * 5 + (("large", "many_channels", "vector_tail") if boundaries else ())))
    if kind == "large":
        return (draw(st.sampled_from(LARGE_COUNTS)),), draw(st.sampled_from((1, 2, 3))), 2
    if kind == "many_channels":
        return draw(st.sampled_from(((), (2,), (1, 2)))), draw(st.sampled_from(MANY_CHANNELS)), 3
    if kind == "vector_tail":
        rank = draw(st.integers(2, 3))
        spatial = tuple(draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank)))
        return spatial, draw(st.sampled_from(VECTOR_CHANNELS)), 4
    spatial_rank = draw(st.integers(0, 3))
    spatial = tuple(draw(st.lists(st.integers(1, 4), min_size=spatial_rank, max_size=spatial_rank)))
    return spatial, draw(st.sampled_from(CHANNELS)), 6


@st.composite
def case_specs(draw, *, max_world: int = 4, dtypes: tuple[str, ...] = ("float32", "float64"),
               boundaries: bool = False) -> ModuleSpec:
    """A whole ModuleSpec on CPU in one of ``dtypes``; see the module docstring for the axes and the meaningful-data
    rule."""
    world_size = draw(st.integers(1, max_world))
    spatial, channels, max_shard = draw(_sizes(boundaries))
    layouts = ["contiguous"] + {2: ["channels_last"], 3: ["channels_last_3d"]}.get(len(spatial), [])
    dtype = draw(st.sampled_from(dtypes))
    param_dtype = draw(st.sampled_from((None, "float32"))) if dtype in ("float16", "bfloat16") else None
    scale = draw(st.sampled_from(SCALES))
    loc = scale * draw(st.sampled_from(LOCS_IN_SCALES).filter(lambda k: abs(k) <= MAX_OFFSET_RATIO[dtype]))
    data = draw(st.sampled_from(("normal", "normal", "constant", "halfconst", "outliers")))
    steps = draw(st.integers(0, 3))
    eval_steps = draw(st.integers(1 if steps == 0 else 0, 2))
    affine = draw(st.booleans())
    no_grad = steps >= 1 and draw(st.integers(0, 4)) == 0
    later = steps + eval_steps - 1  # phases after the first: their shard sizes may change
    spec = ModuleSpec(
        shard_sizes=draw(shard_sizes(world_size, max_shard)),
        channels=channels,
        spatial=spatial,
        dtype=dtype,
        param_dtype=param_dtype,
        layout=draw(st.sampled_from(layouts)),
        affine=affine,
        track_running_stats=draw(st.booleans()),
        momentum=draw(st.sampled_from(MOMENTA)),
        eps=draw(st.sampled_from(EPSES)),
        steps=steps,
        eval_steps=eval_steps,
        data=data,
        loc=loc,
        scale=scale,
        seed=draw(st.integers(0, 2**16)),
        groups=draw(process_groups(world_size)),
        step_shard_sizes=tuple(draw(st.lists(shard_sizes(world_size, max_shard), min_size=1,
                                             max_size=min(later, 2)))) if later and draw(st.booleans()) else None,
        interleave_eval=False,
        frozen_affine=affine and not no_grad and draw(st.integers(0, 3)) == 0,
        no_grad=no_grad,
        tags=("property",),
    )
    if steps >= 2 and eval_steps >= 1 and draw(st.booleans()):
        # unless a rank raises in an eval phase before a training step (harness.spec: it cannot join it)
        with contextlib.suppress(CaseError):
            spec = spec.replace(interleave_eval=True)
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


MIN_JUDGED_EXAMPLES = 10  # the MINIMUM RULE of the module docstring


def minimum_judged(requested: int) -> int:
    """The judged examples a property test asking for ``requested`` must reach to count as exercised."""
    return max(1, min(MIN_JUDGED_EXAMPLES, requested))


def _result_record(result: Any, sut: str) -> dict[str, Any]:
    """The fields of a case record (harness.reports.results) that harness.features reads, from a CaseResult."""
    declared = bool(result.unsupported) and not result.failures
    return {"id": result.spec.id, "kind": kind_of(result.spec).name, "subject": subject_of(result.spec, sut),
            "params": result.spec.to_dict(),
            "outcome": "unsupported" if declared else ("passed" if result.passed else "failed"),
            "unsupported": result.unsupported, "unsupported_features": list(result.unsupported_features)}


def steering_region(results: Iterable[Any], sut: str) -> frozenset[str]:
    """The features the SUT declared unsupported, from the case results this process has (harness.features
    .declared_region: named by the SUT, or inferred when the evidence allows)."""
    return declared_region([_result_record(r, sut) for r in results])


@dataclass
class PropertyTally:
    """What one property test tried (module docstring): ``requested`` examples asked, the region avoided, and how
    every drawn example ended."""

    requested: int
    region: set[str] = field(default_factory=set)  # features avoided (declared unsupported)
    deviation: int = 0  # known deviations of the SUT: drawn, not run
    avoided: int = 0  # drawn in the declared-unsupported region: not run
    unsupported: int = 0  # run, declared unsupported
    judged: int = 0  # run and judged
    passed: int = 0
    synced: int = 0  # judged examples with a synchronised training step
    unrun: int = 0  # not run: the budget of declared-unsupported runs was spent
    failed: bool = False

    @property
    def minimum(self) -> int:
        return minimum_judged(self.requested)

    @property
    def exercised(self) -> bool:
        return self.judged >= self.minimum

    @property
    def budget_spent(self) -> bool:
        return self.unsupported >= self.requested

    def avoids(self, spec: ModuleSpec) -> bool:
        return bool(self.region) and not self.region.isdisjoint(features_of(spec.to_dict(), "module"))

    def declared(self, features: Iterable[str]) -> None:
        """Features the SUT named with a declaration during the test: avoided from now on."""
        self.region.update(f for f in features if f in FEATURE_NAMES and not f.endswith(" cases"))

    def judged_example(self, spec: ModuleSpec, passed: bool) -> None:
        self.judged += 1
        self.passed += passed
        self.synced += bool(spec.synced_groups)

    @property
    def outcome(self) -> str:
        return "failed" if self.failed else ("passed" if self.exercised else "not exercised")

    def text(self) -> str:
        """'3 examples judged of 25 asked (minimum 10; 1 with a synchronised training step); 40 declared unsupported,
        12 drawn in the region declared unsupported (float16 input), 2 known deviations, not run'. More can be
        judged than asked: hypothesis runs a failing example's shrinks too."""
        text = (f"{self.judged} examples judged of {self.requested} asked (minimum {self.minimum}; "
                f"{self.synced} with a synchronised training step)")
        others = [(self.unsupported, "declared unsupported"),
                  (self.avoided, "drawn in the region declared unsupported"
                   + (f" ({', '.join(sorted(self.region))})" if self.region else "")),
                  (self.deviation, "known deviations, not run"),
                  (self.unrun, "not run (as many declared unsupported as examples asked)")]
        more = [f"{n} {what}" for n, what in others if n]
        return text + ("; " + ", ".join(more) if more else "")

    def record(self) -> dict[str, Any]:
        """The optional fields of a property test's summary (harness.reports.results)."""
        return {"judged_examples": self.judged, "unsupported_examples": self.unsupported,
                "deviation_examples": self.deviation, "avoided_examples": self.avoided,
                "unrun_examples": self.unrun, "synced_examples": self.synced, "minimum_judged": self.minimum,
                "avoided_features": sorted(self.region), "note": self.text()}
