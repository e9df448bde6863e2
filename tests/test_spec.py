"""Case specs: ids are stable, readable and round-trip; bad input names the field and the rule."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.catalogue import PROFILES, module_cases
from harness.kinds import catalogue_cases, parse_case_id
from harness.errors import CaseError
from harness.spec import DTYPES, ModuleSpec, OpSpec
from harness.strategies import MAX_VARIANCE, meaningful, variance_bound


@st.composite
def specs(draw) -> ModuleSpec:
    world = draw(st.integers(1, 8))
    spatial = draw(st.lists(st.integers(1, 5), max_size=3).map(tuple))
    layout = {2: draw(st.sampled_from(["contiguous", "channels_last"])),
              3: draw(st.sampled_from(["contiguous", "channels_last_3d"]))}.get(len(spatial), "contiguous")
    device = draw(st.sampled_from(["cpu", "cuda"]))
    groups = None
    if world == 4 and draw(st.booleans()):
        groups = ((0, 1), (2, 3))
    rank_spatial = None
    if spatial and draw(st.booleans()):  # per-rank spatial sizes, same number of dims
        rank_spatial = tuple(draw(st.lists(st.integers(1, 5), min_size=len(spatial), max_size=len(spatial))
                                  .map(tuple)) for _ in range(world))
        spatial = rank_spatial[0]
    steps, eval_steps = draw(st.integers(1, 5)), draw(st.integers(0, 3))
    sizes = st.lists(st.integers(2, 9), min_size=world, max_size=world).map(tuple)  # >= 2: interleaving stays valid
    affine, no_grad = draw(st.booleans()), draw(st.booleans())
    return ModuleSpec(
        shard_sizes=draw(sizes),
        channels=draw(st.integers(1, 64)), spatial=spatial, dtype=draw(st.sampled_from(DTYPES)),
        param_dtype=draw(st.sampled_from([None, *DTYPES])), layout=layout, affine=affine,
        track_running_stats=draw(st.booleans()),
        momentum=draw(st.one_of(st.none(), st.floats(0, 1))), eps=draw(st.floats(1e-12, 10)),
        steps=steps, eval_steps=eval_steps,
        data=draw(st.sampled_from(["normal", "constant", "outliers", "halfconst"])),
        loc=draw(st.floats(-1e6, 1e6)), scale=draw(st.floats(1e-6, 1e6)), seed=draw(st.integers(0, 2**31)),
        device=device, groups=groups, autocast=device == "cuda" and draw(st.booleans()), rank_spatial=rank_spatial,
        step_shard_sizes=tuple(draw(st.lists(sizes, min_size=1, max_size=steps + eval_steps - 1)))
        if steps + eval_steps > 1 and draw(st.booleans()) else None,
        interleave_eval=steps >= 2 and eval_steps >= 1 and draw(st.booleans()),
        frozen_affine=affine and not no_grad and draw(st.booleans()), no_grad=no_grad)


@settings(max_examples=200, deadline=None)
@given(specs())
def test_id_round_trips(spec):
    assert ModuleSpec.from_id(spec.id) == spec
    assert parse_case_id(spec.id) == spec


@pytest.mark.parametrize("profile", PROFILES)
def test_catalogue_ids_are_unique_and_parse(profile):
    cases = catalogue_cases(profile, "cpu") + catalogue_cases(profile, "cuda")
    ids = [case.id for case in cases]
    assert len(ids) == len(set(ids))
    assert all(parse_case_id(i) == case for i, case in zip(ids, cases))


def test_quick_profile_touches_every_area_and_has_at_least_100_cases():
    """Every area but the boundaries, which quick (a smoke test) leaves out by design; default has every area."""
    from harness.catalogue import AREAS

    cases = catalogue_cases("quick")
    assert len(cases) >= 100
    assert {case.tags[0] for case in module_cases("quick")} == {name for name, a in AREAS.items() if a.in_quick}
    assert {case.tags[0] for case in module_cases("default")} == set(AREAS)
    assert not AREAS["boundaries"].in_quick


@pytest.mark.parametrize(("fields", "message"), [
    (dict(shard_sizes=(3, -1), channels=2), "shard_sizes[1]=-1: must be >= 0"),
    (dict(shard_sizes=(3,), channels=0), "channels=0: must be >= 1"),
    (dict(shard_sizes=(), channels=2), "needs at least one rank"),
    (dict(shard_sizes=(3,), channels=2, spatial=(3,), layout="channels_last"), "channels_last needs a 4-d input"),
    (dict(shard_sizes=(3,), channels=2, autocast=True), "autocast cases need device='cuda'"),
    (dict(shard_sizes=(3,), channels=2, momentum=1.5), "momentum=1.5"),
    (dict(shard_sizes=(3,), channels=2, eps=0.0), "eps=0.0: must be a finite float > 0"),
    (dict(shard_sizes=(3, 3), channels=2, groups=((0,), (0, 1))), "must partition the ranks"),
    (dict(shard_sizes=(3,), channels=2, spatial=(0,)), "spatial[0]=0: must be >= 1"),
    (dict(shard_sizes=(3,), channels=2, steps=0, eval_steps=0), "steps + eval_steps must be >= 1"),
    (dict(shard_sizes=(3,), channels=2, data="uniform"), "data='uniform': must be one of"),
    (dict(shard_sizes=(3, 2), channels=2, steps=2, step_shard_sizes=((1,),)), "entry 0 needs one size per rank (2)"),
    (dict(shard_sizes=(3, 2), channels=2, steps=2, step_shard_sizes=((1, -1),)), "step_shard_sizes[0][1]=-1"),
    (dict(shard_sizes=(3, 2), channels=2, steps=2, step_shard_sizes=((1, 2), (2, 2))),
     "gives the sizes of phases 1..2, but the case has 2 phase(s)"),
    (dict(shard_sizes=(3, 2), channels=2, steps=2, step_shard_sizes=3), "must be a sequence of per-rank sizes"),
    (dict(shard_sizes=(3, 2), channels=2, steps=1, eval_steps=2, interleave_eval=True),
     "eval between training steps needs steps >= 2 and eval_steps >= 1"),
    (dict(shard_sizes=(3, 2), channels=2, affine=False, frozen_affine=True), "frozen_affine=True: needs affine=True"),
    (dict(shard_sizes=(3, 2), channels=2, steps=0, eval_steps=1, no_grad=True), "needs steps >= 1"),
    (dict(shard_sizes=(3, 2), channels=2, no_grad=True, frozen_affine=True), "changes nothing under no_grad"),
    (dict(shard_sizes=(3, 1), channels=2, spatial=(), steps=2, eval_steps=1, track_running_stats=False,
          interleave_eval=True), "rank 1 holds one value per channel at eval0"),
])
def test_invalid_case_names_the_field_and_rule(fields, message):
    with pytest.raises(CaseError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)").replace(".", r"\.").replace("+", r"\+")):
        ModuleSpec(**fields)


_TAIL = "_f32_contig_aff_trs_m0.1_e1e-05_k1_ev0_normal_loc0_sd1_s0_cpu"


@pytest.mark.parametrize("bad_id", [
    "",
    "w2_n3_c2",
    "w2_n3.2.1_c2_nc" + _TAIL,  # three shard sizes for w2
    "w2_n3.2_c2_nchw4" + _TAIL,  # nchw needs two sizes
    "w2_n3.2_c2_nc" + _TAIL + "_zz",  # unknown trailing token
])
def test_malformed_ids_raise_case_error(bad_id):
    with pytest.raises(CaseError):
        ModuleSpec.from_id(bad_id)


def test_rank_spatial_id_token_and_counts():
    spec = ModuleSpec(shard_sizes=(3, 2), channels=3, rank_spatial=((4, 5), (2, 3)))
    assert "_nchw4x5.2x3_" in spec.id and ModuleSpec.from_id(spec.id) == spec
    assert [spec.input_shape(r) for r in (0, 1)] == [(3, 3, 4, 5), (2, 3, 2, 3)]
    assert [spec.rank_count(r) for r in (0, 1)] == [60, 12]
    same = ModuleSpec(shard_sizes=(3, 2), channels=3, rank_spatial=((4, 5), (4, 5)))
    assert same.rank_spatial is None and same.id == ModuleSpec(shard_sizes=(3, 2), channels=3, spatial=(4, 5)).id
    with pytest.raises(CaseError, match="every rank needs the same number of spatial dims"):
        ModuleSpec(shard_sizes=(3, 2), channels=3, rank_spatial=((4, 5), (2,)))


def _f16(**fields) -> ModuleSpec:
    fields.setdefault("shard_sizes", (6, 5))
    fields.setdefault("spatial", (5, 4))
    return ModuleSpec(channels=4, dtype="float16", **fields)


@pytest.mark.parametrize(("spec", "ok"), [
    (_f16(loc=300.0, scale=100.0), True),  # |x| ~ 300 with 220 values per group: the variance (1e4) fits
    (_f16(loc=-300.0, scale=100.0, param_dtype="float32"), True),
    (_f16(shard_sizes=(1, 1), spatial=(), loc=300.0, scale=100.0), False),  # 2 values: variance up to 9.8e5
    (_f16(scale=1e3, data="outliers"), False),  # the thorough run's -inf: variance ~2.6e7 overflowed float16
    (_f16(scale=2.5, data="outliers"), True),
    (_f16(scale=3.0, data="outliers"), False),  # two opposite outliers could reach 5000·9 > 65504 / 2
    (_f16(scale=10.0, shard_sizes=(1, 1), spatial=()), True),  # worst case 98·100 = 9800
    (_f16(loc=3e4, scale=1e4), False),  # values beyond MAX_ABS (8192)
    (_f16(loc=400.0, scale=100.0), False),  # offset 4 spreads: float16 cannot resolve it (MAX_OFFSET_RATIO)
    (ModuleSpec(shard_sizes=(1, 1), channels=2, dtype="float32", scale=1e3, data="outliers"), True),
])
def test_float16_range_rules_bound_the_variance_not_the_values(spec, ok):
    """harness.strategies: a float16 module holds the variance in float16, never the squares of raw values, so data
    far from 0 is meaningful while a variance that could overflow is not."""
    assert meaningful(spec) is ok, (spec.id, variance_bound(spec), MAX_VARIANCE)


def test_op_spec_round_trips_and_validates():
    spec = OpSpec(op="batch_norm_elemt", shard_sizes=(3, 2), channels=4, spatial=(2, 3), layout="channels_last")
    assert OpSpec.from_id(spec.id) == spec
    with pytest.raises(CaseError, match="op='batch_norm_nope'"):
        OpSpec(op="batch_norm_nope", shard_sizes=(3,), channels=2)


@pytest.mark.parametrize("profile", PROFILES)
def test_catalogue_cases_obey_the_meaningful_data_rules(profile):
    """The rules the property tests draw under (harness.strategies: offset resolvable in the dtype, float16 range)
    hold for the catalogue too: no hand-written case is outside what the tolerances are reasoned for."""
    outside = [case.id for case in module_cases(profile) if not meaningful(case)]
    assert outside == []


def test_phase_schedule_interleaved_eval_and_per_step_shard_sizes():
    """Interleaved: an eval phase after each training step; per-step shard sizes from phase 1 on, the last
    repeating, one spelling per schedule (a trailing repeat and a schedule equal to shard_sizes drop out)."""
    spec = ModuleSpec(shard_sizes=(3, 1, 2), channels=2, steps=3, eval_steps=2, interleave_eval=True,
                      step_shard_sizes=((1, 4, 0), (5, 2, 2), (5, 2, 2)))
    assert [name for name, _ in spec.phases] == ["train0", "eval0", "train1", "eval1", "train2"]
    assert [spec.training(p) for p in range(5)] == [True, False, True, False, True]
    assert spec.step_shard_sizes == ((1, 4, 0), (5, 2, 2))
    assert spec.phase_shard_sizes == ((3, 1, 2), (1, 4, 0), (5, 2, 2), (5, 2, 2), (5, 2, 2))
    assert spec.input_shape(1, 1) == (4, 2) and spec.rank_count(2, 1) == 0
    assert "_cpu_nstep1.4.0+5.2.2_interleaved" in spec.id and ModuleSpec.from_id(spec.id) == spec
    plain = ModuleSpec(shard_sizes=(3, 1), channels=2, steps=2, eval_steps=1, step_shard_sizes=((3, 1),))
    assert plain.step_shard_sizes is None and plain.id == ModuleSpec(shard_sizes=(3, 1), channels=2, steps=2,
                                                                     eval_steps=1).id
    assert [name for name, _ in plain.phases] == ["train0", "train1", "eval0"]
    longer_eval = ModuleSpec(shard_sizes=(3, 1), channels=2, steps=2, eval_steps=3, interleave_eval=True)
    assert [name for name, _ in longer_eval.phases] == ["train0", "eval0", "train1", "eval1", "eval2"]


def test_gradient_dimensions_decide_which_quantities_exist():
    """harness.quantities ``needs``: frozen affine has no parameter gradients, a no-grad forward no gradients."""
    from harness.quantities import MODULE_QUANTITIES

    def names(**fields):
        spec = ModuleSpec(shard_sizes=(3, 2), channels=2, **fields)
        return {q.name for q in MODULE_QUANTITIES if q.applies(spec)}

    grads = {"grad_weight", "grad_bias", "grad_weight.dtype", "grad_bias.dtype"}
    assert grads | {"grad_input", "output", "running_mean"} <= names()
    assert not grads & names(frozen_affine=True) and "grad_input" in names(frozen_affine=True)
    assert not (grads | {"grad_input"}) & names(no_grad=True)
    assert {"output", "running_mean", "running_var", "num_batches_tracked"} <= names(no_grad=True)
    assert ModuleSpec.from_id(ModuleSpec(shard_sizes=(3, 2), channels=2, frozen_affine=True).id).frozen_affine
