"""Property test: hypothesis draws whole cases (harness.strategies.case_specs) and runs them through the pool.

Sized by the harness's --profile (hypothesis profile ci-quick / ci / thorough, applied to these tests alone;
HYPOTHESIS_PROFILE=dev keeps failing examples in the local database). A failing example's message is the case
report, ending with the command that reruns it alone. Cases matching a known deviation of the SUT under test are
expected failures and skipped. With --device cuda the drawn cases run on the GPU.
"""
from __future__ import annotations

import pytest
from hypothesis import assume, given, note, reject

from harness.deviations import load_known_deviations
from harness.pytest_plugin import NEEDS_CUDA, cuda_available, hypothesis_settings, options
from harness.strategies import case_specs

pytestmark = pytest.mark.property
_DEVIATIONS = load_known_deviations()


def _check(case, run_case, pytestconfig) -> None:
    """Run the drawn case on the run's --device (on CUDA: the real kernels), unless it is a known deviation."""
    opts = options(pytestconfig)
    if opts.device == "cuda":
        if not cuda_available():
            pytest.skip(NEEDS_CUDA)
        case = case.replace(device="cuda")
    sut = opts.sut
    assume(not any(d.matches(sut, case.id, opts.compile) for d in _DEVIATIONS))
    note(f"case id: {case.id}")
    result = run_case(case)
    if result.unsupported and not result.failures:
        reject()  # the SUT declares this configuration unsupported (harness.sut.Unsupported): not an example
    if not result.passed:
        report = result.report()
        note(report)
        raise AssertionError(report)


@hypothesis_settings()
@given(case=case_specs())
def test_generated_case(case, run_case, pytestconfig):
    _check(case, run_case, pytestconfig)


@hypothesis_settings()
@given(case=case_specs(dtypes=("float16", "bfloat16")))
def test_generated_half_case(case, run_case, pytestconfig):
    """float16 / bfloat16 input, with float32 or half parameters (on CPU: the CPU copies of the CUDA kernels)."""
    _check(case, run_case, pytestconfig)
