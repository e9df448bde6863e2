"""The conformance case catalogue: one source of truth for which cases each profile runs.

Module cases come from feature areas, registered once in ``AREAS`` (name, generator, what it covers, and where the
self-test tries it); every case carries its areas as tags, the first one its primary area (reports count by it, and
``--area <name>`` selects it, exactly). Op cases and model cases have one generator each (areas "ops", "models").
``quick`` is a smoke test: it touches every item of the suite at least once (seconds on two cores) but leaves out
the boundaries area by design (large per-rank counts, many channels, vector remainders, world sizes 5-8), so it
misses boundary defects; ``default`` (CI, the gate) adds seeds, sizes, combinations and one cheap crossing of each
boundary; ``thorough`` (nightly) adds world sizes 5-8, larger shapes, more steps, every boundary in several dtypes
and layouts, and two more seeds of everything. With ``device="cuda"`` every case runs on the GPU, plus the CUDA-only
cases (autocast, large shapes, TF32 models).

Adding an area: a generator below and one ``Area`` entry in ``AREAS``; nothing else (cases/test_catalogue.py runs
every registered case, tests/test_catalogue.py checks every area is collected).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterator

from .errors import CaseError
from .options import PROFILES
from .spec import OP_NAMES, ModuleSpec, ModelSpec, OpSpec

__all__ = ["PROFILES", "AREAS", "Area", "module_cases", "op_cases", "model_cases", "check_profile", "area_names",
           "check_areas", "in_areas", "KIND_AREAS"]


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise CaseError(f"profile={profile!r}: must be one of {PROFILES}")
    return profile


def _case(*tags: str, **fields) -> ModuleSpec:
    fields.setdefault("spatial", () if "rank_spatial" in fields else (3, 2))
    fields.setdefault("channels", 3)
    fields.setdefault("steps", 2)
    return ModuleSpec(tags=tags, **fields)


def _world(profile: str) -> Iterator[ModuleSpec]:
    # World sizes 5-8 (beyond one node of 4 ranks: a tree or hierarchical combine's partial level) nightly; the
    # default profile's one is in the boundaries area.
    sizes = (1, 2, 3, 4) + ((5, 6, 7, 8) if profile == "thorough" else ())
    seeds = (0,) if profile == "quick" else (0, 1)
    for world, seed in itertools.product(sizes, seeds):
        yield _case("world", shard_sizes=(3,) * world, seed=seed, eval_steps=1)
    yield _case("world", shard_sizes=(1,) * 4, spatial=(), channels=5, steps=3)  # one sample per rank
    if profile == "thorough":
        yield _case("world", shard_sizes=(2, 0, 3, 1, 0, 4, 1, 2), channels=4, steps=3, eval_steps=1)
        yield _case("world", "rank_spatial", shard_sizes=(2, 0, 3, 1, 0, 4, 1, 2), channels=4, steps=3, eval_steps=1,
                    rank_spatial=((4, 5), (3, 3), (2, 3), (6, 2), (1, 1), (3, 4), (5, 5), (2, 2)))


def _steps(profile: str) -> Iterator[ModuleSpec]:
    """What carries from one step to the next, and the autograd modes no other case takes. Quick has them in two
    cases; default adds each alone and in combinations."""
    # Shard sizes that change between steps (the global count too: 6, 5, then 9): state captured at the first step
    # (counts, buffers sized to it) is stale from the second on. Eval between training steps, momentum None: eval
    # must leave alone what the cumulative average counts. Frozen weight and bias (fine-tuning): grad_input without
    # parameter gradients.
    yield _case("steps", "step_shards", "interleaved", "frozen", shard_sizes=(3, 1, 2),
                step_shard_sizes=((1, 4, 0), (5, 2, 2)), momentum=None, steps=3, eval_steps=2, interleave_eval=True,
                frozen_affine=True)
    # A training-mode forward under torch.no_grad() (precise-BN recomputing the statistics): synchronised statistics
    # and buffers, no backward.
    yield _case("steps", "no_grad", shard_sizes=(3, 1, 2), no_grad=True, momentum=None, steps=3, eval_steps=1)
    if profile == "quick":
        return
    yield _case("steps", "step_shards", shard_sizes=(3, 1, 2), step_shard_sizes=((1, 4, 0), (5, 2, 2)), steps=3,
                eval_steps=1)
    yield _case("steps", "interleaved", shard_sizes=(3, 1, 2), momentum=None, steps=3, eval_steps=2,
                interleave_eval=True)
    yield _case("steps", "frozen", shard_sizes=(3, 0, 2), frozen_affine=True, eval_steps=1)
    yield _case("steps", "step_shards", shard_sizes=(2, 3), step_shard_sizes=((4, 0), (1, 1)), spatial=(),
                momentum=None, steps=4, seed=1)
    yield _case("steps", "step_shards", "interleaved", shard_sizes=(3, 2, 1, 4), step_shard_sizes=((0, 4, 2, 2),),
                groups=((0, 1), (2, 3)), steps=3, eval_steps=2, interleave_eval=True, track_running_stats=False)
    yield _case("steps", "interleaved", shard_sizes=(4, 0, 2), spatial=(4,), momentum=None, steps=2, eval_steps=2,
                interleave_eval=True, seed=1)
    yield _case("steps", "frozen", shard_sizes=(3, 1, 2), spatial=(3, 4), layout="channels_last", channels=5,
                frozen_affine=True, steps=2, eval_steps=1, seed=1)
    yield _case("steps", "no_grad", shard_sizes=(2, 3, 1, 4), groups=((0, 2), (1, 3)), no_grad=True, steps=2,
                eval_steps=1, step_shard_sizes=((1, 4, 3, 0),))
    if profile != "thorough":
        return
    for dtype in ("float16", "bfloat16"):
        yield _case("steps", "step_shards", "mixed", shard_sizes=(6, 5), step_shard_sizes=((2, 9), (7, 7)),
                    spatial=(5, 4), channels=4, dtype=dtype, param_dtype="float32", momentum=None, steps=3,
                    eval_steps=1)
        yield _case("steps", "frozen", "mixed", shard_sizes=(6, 5), spatial=(5, 4), channels=4, dtype=dtype,
                    param_dtype="float32", frozen_affine=True, eval_steps=1)
        yield _case("steps", "no_grad", "half_module", shard_sizes=(6, 5), spatial=(5, 4), channels=4, dtype=dtype,
                    no_grad=True, eval_steps=1)
    yield _case("steps", "step_shards", "rank_spatial", shard_sizes=(2, 0, 3), step_shard_sizes=((1, 3, 0),),
                rank_spatial=((3, 4), (2, 2), (5, 3)), steps=3, eval_steps=2, interleave_eval=True, momentum=None)
    yield _case("steps", "interleaved", "frozen", shard_sizes=(2, 2, 2, 2), spatial=(4,), steps=4, eval_steps=3,
                interleave_eval=True, frozen_affine=True, momentum=None)
    yield _case("steps", "no_grad", "interleaved", shard_sizes=(5, 1, 2), no_grad=True, interleave_eval=True,
                steps=3, eval_steps=2, momentum=None, step_shard_sizes=((0, 3, 3), (2, 2, 2)))


def _boundaries(profile: str) -> Iterator[ModuleSpec]:
    """Where kernels break, each crossed with the cheapest shape (not in quick: a smoke test that misses boundary
    defects by design). Reductions in blocks of 1024-4096 values per channel: 4100 (4096 + 4) and 2050 values, one
    channel. Exchange buffers of thousands of elements: 1031 channels (prime) with few values each. A channels_last
    vector loop over C >= 32 channels with a remainder: 37 (not a multiple of 4 or 8). Beyond one node of 4 ranks,
    not a multiple of 4: 5 ranks with tiny shards, the last one not empty."""
    if profile == "quick":
        return
    yield _case("boundaries", "large_count", shard_sizes=(2, 1), spatial=(2050,), channels=1, eval_steps=1)
    yield _case("boundaries", "large_count", shard_sizes=(2, 1), spatial=(2050,), channels=1, dtype="float64",
                eval_steps=1)
    yield _case("boundaries", "many_channels", shard_sizes=(2, 1, 3), spatial=(), channels=1031, eval_steps=1)
    yield _case("boundaries", "vector_tail", shard_sizes=(3, 2), spatial=(2, 3), channels=37, layout="channels_last",
                eval_steps=1)
    yield _case("boundaries", "big_world", shard_sizes=(2, 1, 0, 3, 1), spatial=(3,), eval_steps=1)
    # A float64 constant channel over 4100 and 2050 values in eval without running statistics (each rank alone):
    # torch's native CPU BatchNorm sums it sequentially (a known deviation, harness/known_deviations.toml).
    yield _case("boundaries", "large_count", "constant", shard_sizes=(2, 1), spatial=(2050,), channels=1,
                dtype="float64", data="constant", loc=1.0, track_running_stats=False, steps=1, eval_steps=1)
    if profile != "thorough":
        return
    yield _case("boundaries", "large_count", "constant", shard_sizes=(1,), spatial=(4100,), channels=2,
                dtype="float64", data="constant", loc=3.0, eval_steps=1)
    # Every block size from 512 to 4096 and its neighbours, per rank; float64 and offset data at large counts.
    yield _case("boundaries", "large_count", shard_sizes=(1, 1, 1), rank_spatial=((4097,), (1025,), (3071,)),
                channels=2, steps=2, eval_steps=1)
    yield _case("boundaries", "large_count", shard_sizes=(3, 2), spatial=(37, 37), channels=3, dtype="float64",
                loc=100.0, eval_steps=1)
    yield _case("boundaries", "large_count", "mixed", shard_sizes=(2, 1), spatial=(2050,), channels=2,
                dtype="float16", param_dtype="float32", eval_steps=1)
    yield _case("boundaries", "large_count", "half_module", shard_sizes=(2, 1), spatial=(2050,), channels=2,
                dtype="bfloat16", eval_steps=1)
    yield _case("boundaries", "large_count", "step_shards", shard_sizes=(1, 2), step_shard_sizes=((3, 0),),
                spatial=(2050,), channels=1, dtype="float64", steps=2, eval_steps=1, momentum=None)
    yield _case("boundaries", "many_channels", shard_sizes=(2, 1), spatial=(1, 2), channels=1031,
                layout="channels_last", eval_steps=1)
    yield _case("boundaries", "many_channels", shard_sizes=(2, 1, 0, 3), spatial=(), channels=2053,
                groups=((0, 1), (2, 3)), eval_steps=1)
    yield _case("boundaries", "vector_tail", shard_sizes=(2, 1), spatial=(2, 2, 2), channels=37,
                layout="channels_last_3d", eval_steps=1)
    for channels in (33, 36, 100):  # odd (float64 vectors of 2), a multiple of 4 not of 8, a multiple of 4 again
        yield _case("boundaries", "vector_tail", shard_sizes=(3, 0, 2), spatial=(2, 3), channels=channels,
                    layout="channels_last", dtype="float64" if channels == 33 else "float32", eval_steps=1)
    yield _case("boundaries", "vector_tail", "mixed", shard_sizes=(3, 2), spatial=(3, 2), channels=36,
                layout="channels_last", dtype="float16", param_dtype="float32", eval_steps=1)
    for sizes in ((1, 0, 2, 1, 3, 1), (2, 1, 0, 3, 1, 2, 1), (1, 2, 0, 1, 3, 0, 2, 1)):
        yield _case("boundaries", "big_world", shard_sizes=sizes, spatial=(3,), momentum=None, steps=3,
                    eval_steps=1)
    yield _case("boundaries", "big_world", "groups", shard_sizes=(2, 1, 0, 3, 1, 2, 2), spatial=(3,),
                groups=((0, 1, 2, 3, 4), (5, 6)), eval_steps=1)


def _shards(profile: str) -> Iterator[ModuleSpec]:
    patterns = {
        "even": (4, 4), "uneven": (5, 2, 1), "empty_one": (3, 0, 2), "empty_two": (0, 4, 0, 3),
        "single_sample": (1, 1, 1), "single_and_empty": (1, 0, 2), "one_holds_all": (0, 0, 6, 0),
        "skewed": (9, 1), "first_empty": (0, 3),
    }
    shapes = [(3, 2), ()] if profile == "quick" else [(3, 2), (), (4,)]
    for (name, sizes), spatial in itertools.product(patterns.items(), shapes):
        yield _case("shards", name, shard_sizes=sizes, spatial=spatial, steps=2, eval_steps=1)
    # Ranks whose inputs differ in spatial size (detection training with per-GPU image sizes): rank r holds
    # N_r·prod(spatial_r) values per channel, so counting (Σ_r N_r)·prod(one rank's spatial) is wrong only here.
    yield _case("shards", "rank_spatial", shard_sizes=(3, 2), rank_spatial=((4, 5), (2, 3)), eval_steps=1)
    yield _case("shards", "rank_spatial", "empty_one", shard_sizes=(2, 0, 3), rank_spatial=((3, 4), (2, 2), (5, 3)),
                layout="channels_last", channels=4, eval_steps=1)
    if profile != "quick":
        yield _case("shards", "rank_spatial", shard_sizes=(1, 4, 2), rank_spatial=((7,), (2,), (3,)), momentum=None,
                    steps=3, eval_steps=1)
        yield _case("shards", "rank_spatial", shard_sizes=(2, 3), rank_spatial=((2, 3, 4), (3, 2, 2)),
                    layout="channels_last_3d", eval_steps=1, seed=1)
        yield _case("shards", "rank_spatial", "mixed", shard_sizes=(4, 3), rank_spatial=((6, 5), (4, 7)), channels=4,
                    dtype="float16", param_dtype="float32", eval_steps=1)
    if profile == "thorough":
        yield _case("shards", "uneven", shard_sizes=(17, 3, 0, 11), spatial=(5, 4), channels=7, steps=3)


def _shapes(profile: str) -> Iterator[ModuleSpec]:
    spatials = [(), (5,), (3, 4), (2, 3, 2)]
    channel_counts = (1, 2, 5) if profile == "quick" else (1, 2, 3, 5, 7)
    for spatial, channels in itertools.product(spatials, channel_counts):
        yield _case("shapes", shard_sizes=(3, 2), spatial=spatial, channels=channels, eval_steps=1)
    # More than 65504 elements per channel on each rank (4·128·128 = 65536): counts must stay exact in every
    # dtype. The float16 module is a known deviation of torch (pytorch/pytorch#70901).
    large = [("float16", "float32"), ("float16", None)]
    if profile != "quick":
        large += [("float32", None), ("bfloat16", None)]
    for dtype, param_dtype in large:
        yield _case("shapes", "large_count", shard_sizes=(4, 4), spatial=(128, 128), channels=2, dtype=dtype,
                    param_dtype=param_dtype, steps=1)
    if profile == "thorough":
        yield _case("shapes", shard_sizes=(16, 9, 12), spatial=(9, 11), channels=16, steps=2)
        yield _case("shapes", shard_sizes=(4, 5), spatial=(4, 6, 5), channels=8, steps=2)


def _layouts(profile: str) -> Iterator[ModuleSpec]:
    seeds = (0,) if profile == "quick" else (0, 1, 2)
    for seed in seeds:
        for sizes in ((3, 2), (4, 0, 1)):
            yield _case("layouts", shard_sizes=sizes, spatial=(3, 4), layout="channels_last", channels=5,
                        seed=seed, eval_steps=1)
            yield _case("layouts", shard_sizes=sizes, spatial=(2, 3, 2), layout="channels_last_3d", channels=5,
                        seed=seed, eval_steps=1)
    # Half precision in both channels-last layouts (no empty shard: that is the dtypes area's known deviation).
    half = (("float16", "float32"),) if profile == "quick" else (("float16", "float32"), ("bfloat16", "float32"),
                                                                  ("bfloat16", None))
    for dtype, param_dtype in half:
        yield _case("layouts", shard_sizes=(5, 3), spatial=(6, 5), channels=8, layout="channels_last", dtype=dtype,
                    param_dtype=param_dtype, eval_steps=1)
        yield _case("layouts", shard_sizes=(3, 1, 2), spatial=(3, 4, 5), channels=8, layout="channels_last_3d",
                    dtype=dtype, param_dtype=param_dtype, eval_steps=1)


def _affine(profile: str) -> Iterator[ModuleSpec]:
    for affine, trs in itertools.product((True, False), (True, False)):
        yield _case("affine", shard_sizes=(3, 0, 2), affine=affine, track_running_stats=trs, eval_steps=1)
        if profile != "quick":
            yield _case("affine", shard_sizes=(4, 1), spatial=(5,), affine=affine, track_running_stats=trs,
                        seed=1, eval_steps=1)


def _running_stats(profile: str) -> Iterator[ModuleSpec]:
    for trs, sizes in itertools.product((True, False), ((3, 2), (2, 0, 3))):
        yield _case("running_stats", shard_sizes=sizes, track_running_stats=trs, steps=3, eval_steps=1)
    if profile != "quick":
        yield _case("running_stats", shard_sizes=(2, 3, 1), steps=6, eval_steps=2, momentum=None)


def _eval(profile: str) -> Iterator[ModuleSpec]:
    # Eval straight from the loaded buffers, and eval after training; local statistics when not tracking.
    for trs in (True, False):
        yield _case("eval", shard_sizes=(3, 2), track_running_stats=trs, steps=0, eval_steps=2)
        yield _case("eval", shard_sizes=(3, 0, 2), track_running_stats=trs, steps=2, eval_steps=2)
        yield _case("eval", shard_sizes=(1, 4), spatial=(), track_running_stats=True, steps=1, eval_steps=1)
    yield _case("eval", shard_sizes=(2, 2, 2, 2), spatial=(4,), steps=3, eval_steps=3, seed=3)


def _momentum(profile: str) -> Iterator[ModuleSpec]:
    momenta = (None, 0.0, 0.1, 0.5, 1.0) if profile == "quick" else (None, 0.0, 0.01, 0.1, 0.5, 0.9, 1.0)
    for momentum in momenta:
        yield _case("momentum", shard_sizes=(3, 1, 2), momentum=momentum, steps=3, eval_steps=1)
    if profile != "quick":
        yield _case("momentum", shard_sizes=(2, 0, 3), momentum=None, steps=8)


def _eps(profile: str) -> Iterator[ModuleSpec]:
    for eps in (1e-5, 1e-3, 0.1, 1.0):
        yield _case("eps", shard_sizes=(3, 2), eps=eps, eval_steps=1)
    # Variance near eps: spread sqrt(eps), so var + eps is about 2·eps.
    for eps in (1e-5, 1e-4, 1e-3) if profile == "quick" else (1e-5, 1e-4, 1e-3, 1e-2):
        yield _case("eps", "near_eps", shard_sizes=(3, 2), eps=eps, scale=eps**0.5, eval_steps=1)


def _data(profile: str) -> Iterator[ModuleSpec]:
    # An offset with EVEN shards first: E[x²] - E[x]² cancellation is caught on its own, not only together with
    # uneven shards.
    yield _case("data", "offset", shard_sizes=(4, 4), loc=100.0, eval_steps=1)
    yield _case("data", "offset", shard_sizes=(4, 3), loc=100.0, eval_steps=1)
    yield _case("data", "offset", shard_sizes=(4, 3), loc=1e4, dtype="float64", eval_steps=1)
    yield _case("data", "offset", shard_sizes=(4, 3), loc=1e6, scale=1.0, dtype="float64", eval_steps=1)
    # Constant channels: x̂ = 0, so the output is the bias whatever invstd is, and only grad_input = (g - mean g)·w·
    # invstd shows invstd = 1/sqrt(eps) (magnitude ~1e3 at eps 1e-5; its tolerance ~1e-3, harness.expected).
    yield _case("data", "constant", shard_sizes=(3, 2), data="constant", eval_steps=1)
    yield _case("data", "constant", shard_sizes=(3, 0, 2), data="halfconst", channels=4, eval_steps=1)
    yield _case("data", "constant", shard_sizes=(3, 2), data="constant", loc=300.0, eval_steps=1)
    # Constant channels far from 0 (value ~1e3): var is 0, so running_var's only error is the means' rounding,
    # squared, through the combine (harness.tolerances); a hypothesis example found the tolerance lacked it.
    yield _case("data", "constant", shard_sizes=(1, 2, 1), spatial=(1, 1, 1), channels=1, data="constant",
                scale=1e3, momentum=None, affine=False, steps=1)
    # Spread far below eps (var 1e-4, eps 0.1) at an offset of 1e4: var's rounding is u·|mean|·std, not u·|mean|·
    # invstd; the soak (hypothesis, 10,000 examples) found a tolerance that counted the latter (harness.expected).
    yield _case("data", "offset", shard_sizes=(0, 0, 3), spatial=(1, 1, 1), channels=1, loc=1e4, scale=0.01, eps=0.1,
                dtype="float64", affine=False, momentum=None, steps=1)
    # A constant channel at 1e6 reduced over 240 values: the mean's rounding (49 u in torch's float64 CPU sum)
    # reaches grad_input squared through invstd, (n·u·kappa)² (harness.expected; found by the soak).
    yield _case("data", "constant", shard_sizes=(5,), spatial=(3, 4, 4), channels=2, data="constant", loc=1e6,
                scale=1e3, dtype="float64", affine=False, track_running_stats=False, momentum=None, steps=0,
                eval_steps=1)
    # Centred data of small spread: running_mean (9e-5) is far below the values it averages (1e-2), and its error
    # with them (u·mean|x|; found by the soak, seed 7334 puts the initial running_mean near 0).
    yield _case("data", "scale", shard_sizes=(0, 2, 1, 6), spatial=(1, 4), channels=1, scale=0.01, affine=False,
                momentum=None, steps=1, seed=7334, groups=((0, 1, 2, 3),))
    # Eval with running statistics off centre: the buffers' permitted errors (running_var's Chan combine, u·|mean|·
    # std) reach the eval output through invstd, times |x̂| = 50 for an outlier (found by the soak at 0.96x).
    # Constant float32 channels up to 1000, channels-last, 162 values: torch's mean is off by 15 u, so the variance
    # about it, running_var's only content, is (15·u·mean)² (found by the soak; harness.expected).
    yield _case("data", "constant", shard_sizes=(9,), spatial=(2, 3, 3), channels=4, data="constant", scale=1e3,
                layout="channels_last_3d", affine=False, momentum=None, steps=1)
    yield _case("data", "outliers", shard_sizes=(4, 3, 1), spatial=(1, 3), channels=1, data="outliers", loc=1e5,
                scale=10.0, dtype="float64", affine=False, momentum=1.0, eps=1.0, steps=1, eval_steps=2, seed=65536,
                groups=((0, 1, 2),))
    yield _case("data", "outliers", shard_sizes=(6, 5), spatial=(4, 4), data="outliers", eval_steps=1)
    yield _case("data", "scale", shard_sizes=(3, 2), scale=1e-3, eval_steps=1)
    yield _case("data", "scale", shard_sizes=(3, 2), scale=1e3, eval_steps=1)
    yield _case("data", "offset", shard_sizes=(5, 0, 4), loc=-300.0, scale=2.0, spatial=(4,), eval_steps=1)
    if profile != "quick":
        yield _case("data", "offset", shard_sizes=(4, 3), loc=1e3, eval_steps=1)
        yield _case("data", "offset", shard_sizes=(6, 0, 2), loc=-50.0, scale=0.1, eval_steps=1)
        yield _case("data", "constant", shard_sizes=(2, 2), data="constant", dtype="float64", eps=1e-3)


def _dtypes(profile: str) -> Iterator[ModuleSpec]:
    seeds = (0,) if profile == "quick" else (0, 1)
    for dtype, seed in itertools.product(("float64", "float32"), seeds):
        yield _case("dtypes", shard_sizes=(3, 0, 2), dtype=dtype, seed=seed, steps=3, eval_steps=1)
        yield _case("dtypes", shard_sizes=(4, 4), spatial=(2, 2, 2), dtype=dtype, seed=seed,
                    layout="channels_last_3d", eval_steps=1)
    yield from _half(profile)


def _half(profile: str) -> Iterator[ModuleSpec]:
    """float16 / bfloat16: half input with float32 parameters ("mixed", what AMP-converted nets feed SyncBN) and
    modules entirely in half precision (``model.half()``). On CPU they run through the harness's CPU kernels, which
    keep the CUDA kernels' accumulation types (float for half input) and dtype rules; on CUDA through the real
    kernels. Offsets stay within what the half type resolves (kappa <= 3, harness.strategies; beyond, harness.
    tolerances caps the yardstick), but not near 0: |x| ~ 300 (loc 300, scale 100), beyond float16's sqrt(65504) =
    256, where float16 BatchNorm is still accurate and squaring a raw float16 value gives inf. The empty-shard and
    no-running-stats cases are known deviations of torch."""
    for dtype in ("float16", "bfloat16"):
        yield _case("dtypes", "mixed", shard_sizes=(6, 5), spatial=(5, 4), channels=4, dtype=dtype,
                    param_dtype="float32", eval_steps=1)
        yield _case("dtypes", "half_module", shard_sizes=(6, 5), spatial=(5, 4), channels=4, dtype=dtype,
                    eval_steps=1)
        if profile == "quick" and dtype == "bfloat16":
            continue
        yield _case("dtypes", "mixed", "empty_shard", shard_sizes=(6, 0, 5), spatial=(5, 4), channels=4,
                    dtype=dtype, param_dtype="float32", eval_steps=1)
        yield _case("dtypes", "mixed", "no_running_stats", shard_sizes=(3, 2), dtype=dtype, param_dtype="float32",
                    track_running_stats=False, eval_steps=1)
        if profile != "quick":
            yield _case("dtypes", "mixed", shard_sizes=(11, 9), spatial=(9, 11), channels=16, dtype=dtype,
                        param_dtype="float32", loc=5.0, scale=3.0)
            yield _case("dtypes", "mixed", shard_sizes=(3, 1, 2), dtype=dtype, param_dtype="float32",
                        momentum=None, steps=3, eval_steps=1)
            yield _case("dtypes", "half_module", shard_sizes=(4, 3), spatial=(), channels=5, dtype=dtype,
                        affine=False, eval_steps=1, seed=1)
    # float16 far from 0 (220 and 270 values per channel per group: harness.strategies' variance rule).
    yield _case("dtypes", "half_module", "far", shard_sizes=(6, 5), spatial=(5, 4), channels=4, dtype="float16",
                loc=300.0, scale=100.0, eval_steps=1)
    if profile != "quick":
        yield _case("dtypes", "mixed", "far", shard_sizes=(6, 5), spatial=(5, 4), channels=4, dtype="float16",
                    param_dtype="float32", loc=300.0, scale=100.0, eval_steps=1)
        yield _case("dtypes", "half_module", "far", shard_sizes=(5, 4), spatial=(6, 5), channels=8, dtype="float16",
                    layout="channels_last", loc=-300.0, scale=100.0, momentum=None, steps=3, eval_steps=1)


def _groups(profile: str) -> Iterator[ModuleSpec]:
    yield _case("groups", shard_sizes=(3, 2, 1, 4), groups=((0, 1), (2, 3)), steps=3, eval_steps=1)
    yield _case("groups", shard_sizes=(3, 0, 0, 2), groups=((0, 2), (1, 3)), steps=2)
    yield _case("groups", shard_sizes=(2, 2, 2, 2), groups=((0,), (1, 2, 3)), steps=2, momentum=None)
    yield _case("groups", shard_sizes=(4, 1, 0, 3), groups=((0, 3), (1, 2)), spatial=(2, 3, 2),
                layout="channels_last_3d", steps=2, eval_steps=1)
    # The edge rules inside one group: every shard of group (0, 1) empty; a global count of 1 in group (0, 1).
    yield _case("groups", "all_empty", shard_sizes=(0, 0, 3, 2), groups=((0, 1), (2, 3)), steps=2, eval_steps=1)
    yield _case("groups", "global_count_1", shard_sizes=(1, 0, 2, 3), groups=((0, 1), (2, 3)), spatial=(),
                steps=1)
    if profile != "quick":
        yield _case("groups", shard_sizes=(2, 3, 1, 4), groups=((0, 1), (2, 3)), spatial=(3, 4),
                    layout="channels_last", steps=3, eval_steps=1, seed=1)
        yield _case("groups", "rank_spatial", shard_sizes=(2, 3, 1, 2), groups=((0, 2), (1, 3)), steps=2, eval_steps=1,
                    rank_spatial=((4, 3), (2, 2), (3, 5), (1, 4)))
    if profile == "thorough":
        yield _case("groups", shard_sizes=(1, 2, 3, 4, 0, 1, 2, 3), groups=((0, 1, 2, 3), (4, 5, 6, 7)), steps=3)


def _errors(profile: str) -> Iterator[ModuleSpec]:
    # SEMANTICS.md edge rules: a global count of 1 must raise; every shard empty leaves the statistics unchanged.
    yield _case("errors", "global_count_1", shard_sizes=(1, 0), spatial=(), steps=1)
    yield _case("errors", "global_count_1", shard_sizes=(0, 0, 1), spatial=(), steps=1)
    yield _case("errors", "all_empty", shard_sizes=(0, 0), steps=2)
    yield _case("errors", "all_empty", shard_sizes=(0, 0, 0), steps=1, eval_steps=1)
    yield _case("errors", "world1_count_1", shard_sizes=(1,), spatial=(), steps=1)


def _compile(profile: str) -> Iterator[ModuleSpec]:
    """The compiled lane's selection (``--area compile --compile inductor``, in CI): every class of input that makes
    torch.compile compile another graph, once, at the smallest sizes (harness.rank.compiled: a graph serves every
    size of its class), all on two ranks (one pool: a rank process pays inductor's start-up once). Training with
    synchronisation and without (each rank in a process group of its own: the world-size-1 path), eval with and
    without running statistics; 2-D to 5-D input, both channels-last layouts; float64, float32, half input with
    float32 parameters and a half module; affine off; momentum None (a graph break), another momentum and eps
    (constants of the graph); an empty shard, a rank with one sample, another spatial size per rank (sizes 0 and 1
    specialise); shard sizes that change between steps (to 1 and 0: the graphs of another size class, mid-run),
    eval between training steps, frozen weight and bias (parameters that need no gradient), a training forward under
    no_grad (grad mode is guarded). Twelve cases: the classes share cases where they can (each case's graphs cost a
    cold compile).
    Seed 16: no other area generates these ids. Every profile has them (in eager runs too)."""
    seed = 16
    yield _case("compile", "rank_spatial", shard_sizes=(3, 2), rank_spatial=((4, 5), (2, 3)), eval_steps=1, seed=seed)
    yield _case("compile", "empty_shard", shard_sizes=(3, 0), spatial=(5,), eval_steps=1, seed=seed)
    yield _case("compile", "single_sample", shard_sizes=(1, 4), spatial=(), channels=5, eval_steps=1, seed=seed)
    yield _case("compile", shard_sizes=(3, 2), spatial=(2, 3, 2), layout="channels_last_3d", dtype="float64",
                affine=False, eval_steps=1, seed=seed)
    yield _case("compile", "mixed", shard_sizes=(4, 3), spatial=(3, 4), layout="channels_last", channels=4,
                dtype="float16", param_dtype="float32", eval_steps=1, seed=seed)
    yield _case("compile", "half_module", shard_sizes=(4, 3), spatial=(3, 4), channels=4, dtype="bfloat16",
                momentum=0.5, eval_steps=1, seed=seed)
    yield _case("compile", "momentum_none", shard_sizes=(3, 1), momentum=None, steps=3, eval_steps=1, seed=seed)
    yield _case("compile", "no_running_stats", shard_sizes=(3, 2), track_running_stats=False, eps=1e-3,
                eval_steps=1, seed=seed)
    yield _case("compile", "groups", shard_sizes=(4, 2), groups=((0,), (1,)), eval_steps=1, seed=seed)
    yield _case("compile", "step_shards", "interleaved", "frozen", shard_sizes=(3, 2),
                step_shard_sizes=((1, 4), (0, 3)), momentum=None, steps=3, eval_steps=2, interleave_eval=True,
                frozen_affine=True, seed=seed)
    yield _case("compile", "no_grad", shard_sizes=(3, 2), no_grad=True, steps=2, eval_steps=1, seed=seed)
    # The same path in mixed precision: a known deviation of inductor on CPU (harness/known_deviations.toml).
    yield _case("compile", "groups", "mixed", shard_sizes=(4, 2), groups=((0,), (1,)), spatial=(3, 4), channels=4,
                dtype="bfloat16", param_dtype="float32", eval_steps=1, seed=seed)


@dataclass(frozen=True)
class Area:
    """A feature area of module cases. ``selftest_order``: the self-test tries areas whose cases catch most bugs
    cheaply first (uneven and empty shards, several steps, eval, momentum None, groups, channels_last, large eps,
    offset data, the edge errors). ``in_quick``: the quick profile has a case of it (False: a boundary area that
    quick, a smoke test, leaves out by design)."""

    name: str
    generate: Callable[[str], Iterator[ModuleSpec]]
    covers: str
    selftest_order: int
    in_quick: bool = True


AREAS: dict[str, Area] = {a.name: a for a in (
    Area("world", _world, "world sizes 1-4 (5-8 in thorough), one sample per rank", 12),
    Area("shards", _shards, "even, uneven, empty and single-sample shards, one rank holding the batch, ranks with "
         "different spatial sizes", 9),
    Area("steps", _steps, "shard sizes that change between steps, eval between training steps, frozen affine, "
         "training-mode forward under no_grad", 1),
    Area("boundaries", _boundaries, "block and tile boundaries: > 4096 values per channel on a rank, > 1024 "
         "channels, channels_last with C >= 32 not a multiple of 8, world sizes 5-8 (default and thorough only)", 2,
         in_quick=False),
    Area("shapes", _shapes, "(N,C), (N,C,L), 4-D and 5-D inputs, channel counts, > 65504 elements per channel", 13),
    Area("layouts", _layouts, "channels_last and channels_last_3d, half precision included", 4),
    Area("affine", _affine, "affine and track_running_stats on and off", 11),
    Area("running_stats", _running_stats, "running statistics over several steps", 10),
    Area("eval", _eval, "eval with and without running statistics, after training", 8),
    Area("momentum", _momentum, "momentum None (cumulative average), 0, 0.1, 0.5, 1", 0),
    Area("eps", _eps, "eps from 1e-5 to 1, variance near eps", 5),
    Area("data", _data, "offset, constant, outliers, tiny and huge spreads", 6),
    Area("dtypes", _dtypes, "float64, float32, float16/bfloat16 input with float32 parameters, half modules, "
         "float16 far from 0", 14),
    Area("groups", _groups, "process groups, with the edge rules inside one group", 3),
    Area("errors", _errors, "the edge rules: a global count of 1 raises, every shard empty", 7),
    Area("compile", _compile, "one case per class of input that makes torch.compile compile another graph (the "
         "compiled lane's CI selection)", 15),
)}


KIND_AREAS = ("ops", "models")  # the areas of the op and model cases (their specs' tags)


def area_names() -> tuple[str, ...]:
    """Every area a case can belong to: the module areas of AREAS, then the op and model cases'."""
    return (*AREAS, *KIND_AREAS)


def check_areas(areas: str | None) -> tuple[str, ...]:
    """The names of ``--area NAMES`` (comma-separated); CaseError naming an unknown one. Empty: every area."""
    names = tuple(n.strip() for n in (areas or "").split(",") if n.strip())
    unknown = [n for n in names if n not in area_names()]
    if unknown:
        raise CaseError(f"--area={areas!r}: unknown area(s) {unknown}; the areas are {', '.join(area_names())}")
    return names


def in_areas(cases: list, areas: str | None) -> list:
    """The cases whose area (their first tag: the area that generated them) is one of ``--area NAMES``, matched
    exactly; every case when no area is named."""
    names = check_areas(areas)
    return [c for c in cases if not names or (c.tags[:1] or ("",))[0] in names]


def module_cases(profile: str, area: str | None = None, device: str = "cpu") -> list[ModuleSpec]:
    """The profile's module-level cases (of one area, if given), each id once (a case two areas generate belongs
    to the first), on ``device`` (cuda: every case on the GPU plus the CUDA-only cases)."""
    check_profile(profile)
    if area is not None and area not in AREAS:
        raise CaseError(f"area={area!r}: must be one of {tuple(AREAS)}")
    if device not in ("cpu", "cuda"):
        raise CaseError(f"device={device!r}: must be 'cpu' or 'cuda'")
    seen: set[str] = set()
    cases = []
    for entry in AREAS.values():
        generated = list(entry.generate(profile))
        if profile == "thorough":  # nightly: every case again on two more seeds
            generated += [case.replace(seed=case.seed + offset) for offset in (10, 20) for case in generated]
        if device == "cuda":
            generated = [case.replace(device="cuda") for case in generated] + [
                case for case in _cuda_only(profile) if case.tags[0] == entry.name]
        for case in generated:
            if case.id not in seen:
                seen.add(case.id)
                if area is None or entry.name == area:
                    cases.append(case)
    return cases


def op_cases(profile: str, device: str = "cpu") -> list[OpSpec]:
    """Each op on small inputs: contiguous and channels_last, float64, float32 and half input (statistics, weight
    and bias in float32, as the Function passes them), offset data, uneven counts; on ``device`` (on CUDA: the
    real CUDA kernels against the same numpy references)."""
    check_profile(profile)
    variants = [dict(shard_sizes=(3, 2), spatial=(5,)),
                dict(shard_sizes=(4, 1, 2), spatial=(3, 2), layout="channels_last", dtype="float64"),
                dict(shard_sizes=(2, 2), spatial=(), loc=100.0, affine=False),
                dict(shard_sizes=(3, 2), spatial=(5,), dtype="float16")]
    if profile != "quick":
        variants += [dict(shard_sizes=(6, 3), spatial=(2, 3, 2), layout="channels_last_3d"),
                     dict(shard_sizes=(5,), spatial=(7,), scale=1e-2, eps=1e-3, seed=1),
                     dict(shard_sizes=(4, 3), spatial=(3, 2), layout="channels_last", dtype="bfloat16", loc=2.0)]
    return [OpSpec(op=op, channels=4, device=device, **variant) for op in OP_NAMES for variant in variants]


def _cuda_only(profile: str) -> list[ModuleSpec]:
    """Module cases that only exist on CUDA: autocast (CPU autocast is a different feature, bfloat16 with its own op
    lists) and shapes too large for the CPU run. Half precision itself runs on both devices (_half)."""
    cuda = dict(device="cuda")
    cases = [
        _case("dtypes", "autocast", shard_sizes=(4, 3), spatial=(3, 4), dtype="float32", autocast=True,
              eval_steps=1, **cuda),
        _case("dtypes", "autocast", shard_sizes=(4, 3), spatial=(3, 4), dtype="float16", param_dtype="float32",
              autocast=True, eval_steps=1, **cuda),
    ]
    if profile != "quick":
        cases.append(_case("shapes", "medium", shard_sizes=(8, 8), spatial=(28, 28), channels=64, steps=2,
                           eval_steps=1, **cuda))
        cases.append(_case("shapes", "medium", shard_sizes=(8, 8), spatial=(28, 28), channels=64, dtype="float16",
                           param_dtype="float32", steps=2, **cuda))
    if profile == "thorough":
        cases.append(_case("shapes", "large", shard_sizes=(32, 32), spatial=(56, 56), channels=256, steps=1,
                           **cuda))
    return cases


def model_cases(profile: str, device: str = "cpu") -> list[ModelSpec]:
    """Even and uneven shards, an empty rank, cumulative momentum, float64 ranks (exact up to summation order);
    on CUDA also a float32 network with TF32 convolutions allowed (what users train with by default)."""
    check_profile(profile)
    cases = [ModelSpec((4, 4)), ModelSpec((6, 2), seed=1), ModelSpec((5, 0, 3), seed=2),
             ModelSpec((3, 2, 4), momentum=None, seed=3), ModelSpec((4, 3), dtype="float64", seed=4)]
    if device == "cuda":
        cases = [case.replace(device="cuda") for case in cases] + [ModelSpec((4, 4), device="cuda", tf32=True)]
    return cases
