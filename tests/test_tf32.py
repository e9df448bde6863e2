"""TF32 under the harness's control (harness/tf32.py), on this CPU torch: the fp32_precision API exists (torch 2.9
and later), so set_tf32 / tf32_mode / tf32_state use it alone and never touch the legacy allow_tf32 flags (mixing
the two raises). The TF32 model case (ids ending in _tf32), its TF32 tolerance, and the results' "tf32" record."""
from __future__ import annotations

import pytest
import torch

from harness.catalogue import model_cases
from harness.errors import CaseError
from harness.kinds import parse_case_id
from harness.spec import ModelSpec
from harness.tf32 import set_tf32, tf32_mode, tf32_state
from harness.tolerances import MODEL_FLOOR_ULPS, TF32_ULPS, TF32_UNIT_ROUNDOFF, UNIT_ROUNDOFF, model_tolerance

OFF = {"api": "fp32_precision", "matmul": "ieee", "cudnn_conv": "ieee"}
ON = {"api": "fp32_precision", "matmul": "tf32", "cudnn_conv": "tf32"}
TF32_ID = "model_w2_n4.4_k3_float32_m0.1_s0_cuda_tf32"


@pytest.fixture(autouse=True)
def restore_precision():
    """Each test leaves this process's fp32 precision settings as it found them."""
    keys = [("cuda", "matmul"), ("cuda", "conv"), ("cuda", "rnn")]
    before = {key: torch._C._get_fp32_precision_getter(*key) for key in keys}
    yield
    for key, value in before.items():
        torch._C._set_fp32_precision_setter(*key, value)


def test_this_torch_has_the_fp32_precision_api():
    assert hasattr(torch.backends.cuda.matmul, "fp32_precision")
    assert hasattr(torch.backends.cudnn.conv, "fp32_precision")


def test_set_tf32_and_state_round_trip():
    set_tf32(False)
    assert tf32_state() == OFF
    set_tf32(True)
    assert tf32_state() == ON
    assert torch.backends.cudnn.rnn.fp32_precision == "tf32"  # cuDNN RNNs follow the same switch
    set_tf32(False)
    assert tf32_state() == OFF and torch.backends.cudnn.rnn.fp32_precision == "ieee"


@pytest.mark.parametrize("outside, inside", [(False, True), (True, False), (False, False), (True, True)])
def test_tf32_mode_sets_inside_and_restores_after(outside, inside):
    set_tf32(outside)
    with tf32_mode(inside):
        assert tf32_state() == (ON if inside else OFF)
    assert tf32_state() == (ON if outside else OFF)


def test_tf32_mode_restores_after_an_exception():
    set_tf32(False)
    with pytest.raises(RuntimeError, match="inside"), tf32_mode(True):
        assert tf32_state() == ON
        raise RuntimeError("inside")
    assert tf32_state() == OFF


def test_no_legacy_flag_is_touched(monkeypatch):
    """The legacy allow_tf32 flags are neither set nor read while the fp32_precision API exists."""
    touched = []

    def spy(name):
        def call(*args):
            touched.append((name, args))
            raise AssertionError(f"legacy TF32 flag used: {name}{args}")
        return call

    # torch.backends.cuda.matmul.allow_tf32 looks these up at every access; torch.backends.cudnn.allow_tf32 is a
    # property of the module's class, holding its own references.
    monkeypatch.setattr(torch._C, "_get_cublas_allow_tf32", spy("_get_cublas_allow_tf32"))
    monkeypatch.setattr(torch._C, "_set_cublas_allow_tf32", spy("_set_cublas_allow_tf32"))
    cudnn_class = type(torch.backends.cudnn)
    legacy = cudnn_class.__dict__["allow_tf32"]  # not getattr: reading it runs the (raising) getter
    cudnn_class.allow_tf32 = property(spy("cudnn.allow_tf32 (get)"), spy("cudnn.allow_tf32 (set)"))
    try:
        for enabled in (True, False):
            set_tf32(enabled)
            tf32_state()
            with tf32_mode(not enabled):
                tf32_state()
    finally:
        cudnn_class.allow_tf32 = legacy
    assert touched == []


def test_tf32_model_ids_parse_and_validate():
    spec = parse_case_id(TF32_ID)
    assert isinstance(spec, ModelSpec) and spec.tf32 and spec.device == "cuda" and spec.dtype == "float32"
    assert spec.id == TF32_ID
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert not parse_case_id(TF32_ID.removesuffix("_tf32")).tf32
    for bad in ("model_w2_n4.4_k3_float32_m0.1_s0_cpu_tf32",  # TF32 is a CUDA feature
                "model_w2_n4.4_k3_float64_m0.1_s0_cuda_tf32",  # and a float32 one
                "model_w2_n4.4_k3_float32_m0.1_s0_cuda_tf16"):  # not a known token
        with pytest.raises(CaseError):
            parse_case_id(bad)
    with pytest.raises(CaseError, match="tf32"):
        ModelSpec((4, 4), tf32=True)
    with pytest.raises(CaseError, match="tf32"):
        ModelSpec((4, 4), device="cuda", dtype="float64", tf32=True)


def test_the_cuda_catalogue_has_a_tf32_model_case():
    cuda = model_cases("quick", "cuda")
    assert [case.id for case in cuda if case.tf32] == [TF32_ID]
    assert not any(case.tf32 for case in model_cases("quick", "cpu"))
    assert sum(not case.tf32 and case.dtype == "float32" for case in cuda) >= 1  # float32 with TF32 off as well


def test_model_tolerance_with_tf32_uses_the_tf32_unit_roundoff():
    assert TF32_UNIT_ROUNDOFF == 2.0**-11
    scale = 0.25
    plain = model_tolerance("conv.weight", dtype="float32", scale=scale, yardstick=0.0)
    tf32 = model_tolerance("conv.weight", dtype="float32", scale=scale, yardstick=0.0, tf32=True)
    assert plain.atol == pytest.approx(MODEL_FLOOR_ULPS * UNIT_ROUNDOFF["float32"] * scale)
    assert tf32.atol == pytest.approx(TF32_ULPS * 2.0**-11 * scale)
    assert tf32.atol > plain.atol and "u(TF32)" in tf32.reason and "u(TF32)" not in plain.reason
    # The yardstick (the same training in one process, TF32 as the case says) still widens it where it is trusted.
    widened = model_tolerance("conv.weight", dtype="float32", scale=scale, yardstick=tf32.atol / 4, tf32=True)
    assert widened.atol == pytest.approx(2 * tf32.atol)


def test_results_environment_records_tf32():
    from harness.reports.results import environment

    set_tf32(False)  # what every harness controller does (harness.pytest_plugin, harness.launch)
    env = environment(sut="torch", kernels=None, profile="quick", backend=None)
    assert env["tf32"] == OFF == tf32_state()


def test_the_yardstick_cudnn_off_configuration_runs_with_tf32_off(monkeypatch):
    """harness.yardstick's cuDNN-off configuration (CUDA only) added to a CPU case, TF32 off as in every harness
    process, an eval phase over two shards. Before 9452ca6 it used torch.backends.cudnn.flags(), which reads the
    legacy allow_tf32 flag (raises once the fp32_precision API set conv and RNN to "ieee") and is a single-use
    context manager entered once per eval shard: every CUDA module case failed in the yardstick on the H100."""
    from harness import yardstick
    from harness.expected import expected_module_case
    from harness.spec import ModuleSpec

    original = yardstick.Yardstick.__init__

    def with_cudnn_off(self, spec, weight, bias, buffers):
        original(self, spec, weight, bias, buffers)
        self.variants.append(yardstick._Variant(yardstick._module(spec, weight, bias, buffers), spec.layout, False))

    monkeypatch.setattr(yardstick.Yardstick, "__init__", with_cudnn_off)
    set_tf32(False)
    expected = expected_module_case(ModuleSpec(shard_sizes=(3, 2), channels=3, spatial=(3, 2), steps=1, eval_steps=1))
    assert expected.phases[-1].yardstick
