"""The comparator: every check can fail, NaN/inf positions must agree, messages say what, where and how much."""
from __future__ import annotations

import math

import numpy as np
import pytest

from harness.compare import Tolerance, compare_agreement, compare_arrays, compare_exact
from harness.verdict import describe
from harness.tolerances import (FLOOR_ULPS, UNIT_ROUNDOFF, YARDSTICK_CAP_REL, YARDSTICK_MULTIPLE, YARDSTICK_TRUST,
                                module_tolerance, op_tolerance)

COMMON = dict(quantity="output", phase="train0", rank=1, ranks=(1,), dtype="float32")


def test_identical_arrays_pass_and_a_single_wrong_element_fails_with_its_location():
    expected = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    assert compare_arrays(expected.copy(), expected, Tolerance(1e-6), **COMMON).passed
    actual = expected.copy()
    actual[1, 2, 3] += 1e-3
    result = compare_arrays(actual, expected, Tolerance(1e-6), sample_offset=5, **COMMON)
    assert not result.passed and result.mismatched == 1 and result.total == 24
    assert result.worst["index"] == (1, 2, 3) and result.worst["global_sample"] == 6
    message = "\n".join(describe(result.record()))
    for text in ("output at train0, rank 1", "1 / 24 (4.2%)", "rank 1, sample 1 (global 6), channel 2, position (3,)",
                 "greatest absolute difference 0.001", "allowed (float32): |err| <= 1e-06"):
        assert text in message
    assert result.channel_ratio[2] == pytest.approx(1e-3 / 1e-6, rel=1e-6)
    assert result.channel_ratio[0] == 0.0


@pytest.mark.parametrize(("actual", "expected"), [
    ([np.nan, 1.0], [1.0, 1.0]), ([1.0, 1.0], [np.nan, 1.0]), ([np.inf, 1.0], [-np.inf, 1.0]),
    ([np.inf, 1.0], [1.0, 1.0])])
def test_nonfinite_positions_must_agree(actual, expected):
    result = compare_arrays(np.array(actual), np.array(expected), Tolerance(1.0), **COMMON)
    assert not result.passed and "NaN/inf positions differ" in result.note


def test_matching_nonfinite_values_pass():
    values = np.array([np.nan, np.inf, -np.inf, 2.0])
    assert compare_arrays(values.copy(), values, Tolerance(0.0), **COMMON).passed


def test_missing_and_misshapen_results_fail():
    expected = np.zeros((2, 3))
    assert not compare_arrays(None, expected, Tolerance(1.0), **COMMON).passed
    result = compare_arrays(np.zeros((3, 2)), expected, Tolerance(1.0), **COMMON)
    assert not result.passed and "shape mismatch" in result.note


def test_rtol_and_atol_combine_elementwise():
    expected = np.array([1.0, 100.0])
    tolerance = Tolerance(atol=0.1, rtol=0.01)
    assert compare_arrays(np.array([1.1, 101.1]), expected, tolerance, **COMMON).passed
    assert not compare_arrays(np.array([1.2, 100.0]), expected, tolerance, **COMMON).passed
    with pytest.raises(ValueError, match="atol=-1"):
        Tolerance(atol=-1)


def test_exact_comparison_reads_as_a_plain_statement():
    assert compare_exact(3, 3, reason="counter", **COMMON).passed
    result = compare_exact(3, 4, reason="a counter", **{**COMMON, "quantity": "num_batches_tracked"})
    assert not result.passed and result.exact and result.error_ratio == math.inf
    assert describe(result.record()) == ["num_batches_tracked is 3 on rank 1 at train0, expected 4 (a counter)"]
    dtype = compare_exact("float32", "bfloat16", reason="r", **{**COMMON, "quantity": "output.dtype"})
    assert describe(dtype.record())[0].startswith("output dtype is float32 on rank 1 at train0, expected bfloat16")


def test_agreement_says_in_how_many_channels_and_by_how_much():
    reference = np.array([1.0, 2.0, 3.0, np.nan])
    assert compare_agreement(reference.copy(), reference, quantity="running_var.agreement", phase="train1", rank=2,
                             first=0, dtype="float32", reason="r").passed
    differing = reference + np.array([0.0, 1.2e-3, -4e-4, 0.0])
    result = compare_agreement(differing, reference, quantity="running_var.agreement", phase="train1", rank=2,
                               first=0, dtype="float32", reason="bit for bit")
    assert not result.passed and result.mismatched == 2
    assert describe(result.record()) == ["running_var on rank 2 differs from rank 0's in 2 of 4 channels at train1, "
                                         "by up to 0.0012 (bit for bit)"]


def test_module_tolerance_is_floor_or_a_trusted_yardstick_multiple():
    u = UNIT_ROUNDOFF["float32"]
    floor = FLOOR_ULPS * u * 2.0
    assert module_tolerance("output", dtype="float32", scale=2.0, yardstick=None).atol == floor
    trusted = module_tolerance("output", dtype="float32", scale=2.0, yardstick=4 * floor)
    assert trusted.atol == YARDSTICK_MULTIPLE * 4 * floor and "single-process BatchNorm" in trusted.reason
    suspect = module_tolerance("output", dtype="float32", scale=2.0, yardstick=(YARDSTICK_TRUST + 1) * floor)
    assert suspect.atol == floor and "yardstick suspect" in suspect.reason
    # bfloat16: the floor (16 u = 6%) is above the cap (3%): a trusted yardstick beyond the cap is capped
    capped = module_tolerance("output", dtype="bfloat16", scale=1.0, yardstick=0.05)
    assert capped.atol == YARDSTICK_MULTIPLE * YARDSTICK_CAP_REL["bfloat16"] and "capped" in capped.reason
    with pytest.raises(KeyError, match="quantity='loss'"):
        module_tolerance("loss", dtype="float32", scale=1.0, yardstick=None)


def test_float32_quantities_of_half_input_take_no_yardstick():
    u = UNIT_ROUNDOFF["float32"]
    plain = module_tolerance("grad_bias", dtype="float32", scale=1.0, yardstick=2 * FLOOR_ULPS * u)
    assert plain.atol > FLOOR_ULPS * u
    mixed = module_tolerance("grad_bias", dtype="float32", scale=1.0, yardstick=2 * FLOOR_ULPS * u,
                             input_dtype="bfloat16")
    assert mixed.atol == FLOOR_ULPS * u and "no yardstick" in mixed.reason
    same = module_tolerance("grad_bias", dtype="float16", scale=1.0, yardstick=1e-3, input_dtype="float16")
    assert same.atol == YARDSTICK_MULTIPLE * 1e-3


def test_op_tolerance_grows_with_sqrt_n_and_dtype():
    small = op_tolerance(dtype="float32", count=4, scale=1.0).atol
    assert op_tolerance(dtype="float32", count=400, scale=1.0).atol == pytest.approx(10 * small)
    assert op_tolerance(dtype="float64", count=4, scale=1.0).atol < small


def test_an_empty_shard_passes_and_keeps_its_channels_for_the_heat_map():
    empty = np.zeros((0, 3, 2))
    result = compare_arrays(empty, empty, Tolerance(1e-6), **COMMON)
    assert result.passed and result.total == 0 and result.channel_ratio == [0.0, 0.0, 0.0]
