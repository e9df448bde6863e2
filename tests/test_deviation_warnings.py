"""Known deviations whose pattern matches no case of any profile are warned about at collection."""
from __future__ import annotations

import pytest

from harness.deviations import KnownDeviation, all_profile_case_ids, load_known_deviations, unmatched_deviations
from harness.errors import CaseError
from harness.pytest_plugin import warn_unmatched_deviations


def test_current_file_has_no_stale_entries():
    assert unmatched_deviations(load_known_deviations(), all_profile_case_ids()) == []


def test_unmatched_entry_is_found():
    stale = KnownDeviation(sut="torch", case="^w9_never_", reason="r", link="l")
    live = KnownDeviation(sut="torch", case="^w2_n0.0_", reason="r", link="l")
    ids = {"w2_n0.0_c3_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k2_ev0_normal_loc0_sd1_s0_cpu"}
    assert unmatched_deviations([stale, live], ids) == [stale]


def test_device_filter_counts(tmp_path):
    cpu_id = "w2_n0.0_c3_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k2_ev0_normal_loc0_sd1_s0_cpu"
    cuda_only = KnownDeviation(sut="torch", case="^w2_n0.0_", reason="r", link="l", device="cuda")
    assert unmatched_deviations([cuda_only], {cpu_id}) == [cuda_only]


def test_warning_is_a_pytest_warning(tmp_path):
    path = tmp_path / "known_deviations.toml"
    path.write_text('[[deviation]]\nsut = "torch"\ncase = "^w9_nothing_matches_"\nreason = "r"\nlink = "l"\n')
    with pytest.warns(pytest.PytestWarning, match="matches no case of any profile"):
        unmatched = warn_unmatched_deviations(path)
    assert [d.case for d in unmatched] == ["^w9_nothing_matches_"]


W4_GROUPS = "c3_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k2_ev0_normal_loc0_sd1_s0_cpu_g0.1+2.3"


@pytest.mark.parametrize(("condition", "case_id", "expected"), [
    # every shard of a synchronising group empty: group (0, 1) here, not the whole world
    ("empty_group", f"w4_n0.0.3.2_{W4_GROUPS}", True),
    ("empty_group", f"w4_n0.3.0.2_{W4_GROUPS}", False),
    ("empty_group", "w2_n0.0_c3_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k0_ev2_normal_loc0_sd1_s0_cpu", False),  # eval
    ("empty_group", "w3_n0.0.2_c1_nc_f32_contig_noaff_trs_mNone_e1e-05_k1_ev0_normal_loc0_sd0.001_s0_cpu_g0.1+2",
     True),  # the example hypothesis found
    ("empty_group", "w2_n0.2_c1_nc_f32_contig_aff_trs_m0.1_e1e-05_k1_ev0_normal_loc0_sd1_s0_cpu_g0+1", False),  # 1-rank
    ("group_count_one", "w4_n1.0.2.3_c3_nc_f32_contig_aff_trs_m0.1_e1e-05_k1_ev0_normal_loc0_sd1_s0_cpu_g0.1+2.3",
     True),
    ("group_count_one", "w1_n1_c3_nc_f32_contig_aff_trs_m0.1_e1e-05_k1_ev0_normal_loc0_sd1_s0_cpu", False),
    ("half_input_empty_shard", "w3_n6.0.5_c4_nchw5x4_bf16pf32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu",
     True),
    ("half_input_empty_shard", "w3_n6.0.5_c4_nchw5x4_f32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu",
     False),
    ("half_input_no_running_stats",
     "w2_n3.2_c3_nchw3x2_f16_contig_aff_notrs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu", True),
    ("float16_module_count_over_65504",
     "w2_n4.4_c2_nchw128x128_f16_contig_aff_trs_m0.1_e1e-05_k1_ev0_normal_loc0_sd1_s0_cpu", True),
    ("float16_module_count_over_65504",
     "w2_n4.4_c2_nchw128x128_f16pf32_contig_aff_trs_m0.1_e1e-05_k1_ev0_normal_loc0_sd1_s0_cpu", False),
    ("empty_group", "model_w2_n4.4_k3_float32_m0.1_s0_cpu", False),  # not a module case: conditions never match
    # CUDA half reduction: half input, float32 parameters, affine, a phase with a half-rounding backward
    ("cuda_half_reduction", "w2_n6.5_c4_nchw5x4_bf16pf32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cuda",
     True),
    ("cuda_half_reduction", "w2_n6.5_c4_nchw5x4_bf16pf32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu",
     False),  # the harness's CPU kernels accumulate in float
    ("cuda_half_reduction", "w2_n6.5_c4_nchw5x4_f16_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cuda",
     False),  # half parameters: their own tolerance is half's
    ("cuda_half_reduction", "w2_n6.5_c4_nchw5x4_f16pf32_contig_noaff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cuda",
     False),  # no parameter gradients
    ("cuda_half_reduction", "w1_n6_c4_nchw5x4_f16pf32_contig_aff_trs_m0.1_e1e-05_k2_ev0_normal_loc0_sd1_s0_cuda",
     False),  # one rank, training only: cuDNN's float16 BatchNorm, accurate
    ("cuda_half_reduction", "w1_n6_c4_nchw5x4_bf16pf32_contig_aff_trs_m0.1_e1e-05_k2_ev0_normal_loc0_sd1_s0_cuda",
     True),  # bfloat16 takes the native kernel
    # per-step shard sizes: a later training phase's empty group counts
    ("empty_group", f"w4_n1.0.3.2_{W4_GROUPS}_nstep0.0.3.2", True),
    ("half_input_empty_shard", "w2_n6.5_c4_nchw5x4_f16pf32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu"
     "_nstep6.0", True),
    ("half_input_empty_shard", "w2_n6.5_c4_nchw5x4_f16pf32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s0_cpu"
     "_nstep6.5+6.0", False),  # the empty shard only in the eval phase: no collective there
    # torch's float64 CPU BatchNorm sums sequentially: a native batch-statistics phase over > 512 constant values
    ("cpu_float64_sequential_sum", "w2_n2.1_c1_ncl2050_f64_contig_aff_notrs_m0.1_e1e-05_k1_ev1_constant_loc1_sd1_s0"
     "_cpu", True),  # eval without running statistics: each rank alone
    ("cpu_float64_sequential_sum", "w2_n2.1_c1_ncl2050_f32_contig_aff_notrs_m0.1_e1e-05_k1_ev1_constant_loc1_sd1_s0"
     "_cpu", False),  # float32 is summed in double
    ("cpu_float64_sequential_sum", "w2_n2.1_c1_ncl2050_f64_contig_aff_trs_m0.1_e1e-05_k1_ev1_constant_loc1_sd1_s0"
     "_cpu", False),  # synchronised training: the harness's kernels; eval with running statistics: no sum
    ("cpu_float64_sequential_sum", "w1_n1_c2_ncl4100_f64_contig_aff_trs_m0.1_e1e-05_k2_ev1_constant_loc3_sd1_s0_cpu",
     True),  # a one-rank group trains on the native kernel
    ("cpu_float64_sequential_sum", "w1_n1_c2_ncl512_f64_contig_aff_trs_m0.1_e1e-05_k2_ev1_constant_loc3_sd1_s0_cpu",
     False),  # n/2 = 256 roundings at most: within the trusted yardstick
    ("cpu_float64_sequential_sum", "w1_n1_c2_ncl4100_f64_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc3_sd1_s0_cpu",
     False),  # varying values round both ways: the error grows like sqrt(n)
    ("cpu_float64_sequential_sum", "w1_n1_c2_ncl4100_f64_contig_aff_trs_m0.1_e1e-05_k2_ev1_constant_loc3_sd1_s0_cuda",
     False),
    # compiled lanes: a rank normalising its own batch of one value per channel (training alone, local eval)
    ("local_count_one", "w1_n1_c3_nc_f32_contig_aff_trs_m0.1_e1e-05_k1_ev0_normal_loc0_sd1_s0_cpu", True),
    ("local_count_one", "w2_n1.3_c3_nc_f32_contig_aff_trs_m0.1_e1e-05_k1_ev0_normal_loc0_sd1_s0_cpu_g0+1", True),
    ("local_count_one", "w2_n1.3_c3_nc_f32_contig_aff_trs_m0.1_e1e-05_k1_ev0_normal_loc0_sd1_s0_cpu", False),  # synced
    ("local_count_one", "w1_n1_c1_nc_f32_contig_noaff_notrs_mNone_e1e-05_k0_ev1_normal_loc0_sd0.001_s0_cpu", True),
    ("local_count_one", "w1_n1_c1_nc_f32_contig_noaff_trs_mNone_e1e-05_k0_ev1_normal_loc0_sd0.001_s0_cpu", False),
    # inductor on CPU: half input with float32 parameters normalised by its own batch statistics
    ("cpu_mixed_local_batch_stats",
     "w2_n4.2_c4_nchw3x4_bf16pf32_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s16_cpu_g0+1", True),
    ("cpu_mixed_local_batch_stats",
     "w2_n4.3_c4_nchw3x4_f16pf32_cl_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s16_cpu", False),  # synced, eval: trs
    ("cpu_mixed_local_batch_stats",
     "w2_n6.5_c4_nchw5x4_bf16pf32_contig_aff_notrs_m0.1_e1e-05_k0_ev1_normal_loc0_sd1_s16_cpu", True),  # local eval
    ("cpu_mixed_local_batch_stats",
     "w2_n4.2_c4_nchw3x4_bf16_contig_aff_trs_m0.1_e1e-05_k2_ev1_normal_loc0_sd1_s16_cpu_g0+1", False),  # half module
])
def test_conditions(condition, case_id, expected):
    assert KnownDeviation(sut="torch", condition=condition, reason="r", link="l").matches("torch", case_id) is expected
    assert not KnownDeviation(sut="torch", condition=condition, reason="r", link="l").matches("other", case_id)


def test_case_and_condition_must_both_hold():
    both = KnownDeviation(sut="torch", case="_bf16", condition="half_input_empty_shard", reason="r", link="l")
    assert both.matches("torch", "w2_n0.2_c4_nc_bf16_contig_aff_trs_m0.1_e1e-05_k1_ev0_normal_loc0_sd1_s0_cpu")
    assert not both.matches("torch", "w2_n0.2_c4_nc_f16_contig_aff_trs_m0.1_e1e-05_k1_ev0_normal_loc0_sd1_s0_cpu")


@pytest.mark.parametrize(("body", "message"), [
    ('sut = "torch"\nreason = "r"\nlink = "l"\n', r"lacks \['case or condition'\]"),
    ('sut = "torch"\ncondition = "empty"\nreason = "r"\nlink = "l"\n', r"condition='empty': must be one of \["),
    ('sut = "torch"\ncase = "("\nreason = "r"\nlink = "l"\n', r"case='\(' is not a regular expression"),
    ('sut = "torch"\ncase = "x"\nreason = "r"\nlink = "l"\ncases = "y"\n', r"unknown field\(s\) \['cases'\]"),
    ('sut = "torch"\ncase = "x"\nreason = "r"\nlink = "l"\ndevice = "gpu"\n', r"device='gpu': must be 'cpu' or"),
    ('sut = "torch"\ncase = "x"\nreason = "r"\nlink = "l"\naborts = "yes"\n', r"aborts='yes': must be true or"),
])
def test_bad_entries_name_the_field(tmp_path, body, message):
    path = tmp_path / "known_deviations.toml"
    path.write_text("[[deviation]]\n" + body)
    with pytest.raises(CaseError, match=r"known_deviations.toml: deviation\[0\]" + r"[\s\S]*" + message):
        load_known_deviations(path)


def _result(failed_quantities=(), passed_quantities=("output",), failures=()):
    from harness.compare import compare_exact
    from harness.result import CaseResult, Failure
    from harness.spec import ModuleSpec

    result = CaseResult(ModuleSpec(shard_sizes=(3, 2), channels=2))
    for q in failed_quantities:
        result.comparisons.append(compare_exact(1, 2, quantity=q, phase="train0", rank=0, ranks=(0,), dtype="-",
                                                reason="r"))
    for q in passed_quantities:
        result.comparisons.append(compare_exact(1, 1, quantity=q, phase="train0", rank=0, ranks=(0,), dtype="-",
                                                reason="r"))
    result.failures.extend(Failure("raised", "boom", rank=0) for _ in failures)
    return result


@pytest.mark.parametrize(("failed", "failures", "expected"), [
    (("grad_bias",), (), "xfailed"),                     # only what the entry names departs
    (("grad_weight", "grad_bias"), (), "xfailed"),
    ((), (), "xpassed"),                                 # fixed upstream: strict, the entry must go
    (("grad_bias", "output"), (), "failed"),             # something else failed too: not excused
    (("grad_bias",), ("raised",), "failed"),             # a rank raised: not excused
])
def test_a_quantity_scoped_deviation_excuses_only_its_quantities(failed, failures, expected):
    scoped = KnownDeviation(sut="torch", case="x", reason="r", link="l", quantities=["grad_weight", "grad_bias"])
    assert scoped.outcome(_result(failed, failures=failures)) == expected
    whole = KnownDeviation(sut="torch", case="x", reason="r", link="l")
    assert whole.outcome(_result(failed, failures=failures)) == ("xpassed" if not failed and not failures
                                                                  else "xfailed")


def test_quantities_must_be_known(tmp_path):
    path = tmp_path / "known_deviations.toml"
    path.write_text('[[deviation]]\nsut = "torch"\ncase = "x"\nreason = "r"\nlink = "l"\nquantities = ["grad_bais"]\n')
    with pytest.raises(CaseError, match=r"quantities=\['grad_bais'\]: must name quantities"):
        load_known_deviations(path)
