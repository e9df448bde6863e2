"""Property test: hypothesis draws whole cases (harness.strategies.case_specs) and runs them through the pool.

Sized by the harness's --profile (hypothesis profile ci-quick / ci / thorough; HYPOTHESIS_PROFILE=dev keeps failing
examples in the local database). A failing example's message is the case report, ending with the command that
reruns it alone. Cases matching a known deviation of the SUT under test are expected failures and skipped. With
--device cuda the drawn cases run on the GPU.
"""
from __future__ import annotations

import pytest
from hypothesis import assume, given, note, reject
from hypothesis import strategies as st

from harness.deviations import load_known_deviations
from harness.pytest_plugin import NEEDS_CUDA, cuda_available, options
from harness.strategies import PROPERTY_REACH, case_specs

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
    assume(not any(d.matches(sut, case.id) for d in _DEVIATIONS))
    note(f"case id: {case.id}")
    result = run_case(case)
    if result.unsupported and not result.failures:
        reject()  # the SUT declares this configuration unsupported (harness.sut.Unsupported): not an example
    if not result.passed:
        report = result.report()
        note(report)
        raise AssertionError(report)


def _draw(data, pytestconfig, **keywords):
    """A case drawn as far as the run's --profile reaches (harness.strategies.PROPERTY_REACH: world sizes, the
    boundary sizes)."""
    return data.draw(case_specs(**PROPERTY_REACH[options(pytestconfig).profile], **keywords), label="case")


@given(data=st.data())
def test_generated_case(data, run_case, pytestconfig):
    _check(_draw(data, pytestconfig), run_case, pytestconfig)


@given(data=st.data())
def test_generated_half_case(data, run_case, pytestconfig):
    """float16 / bfloat16 input, with float32 or half parameters (on CPU: the CPU copies of the CUDA kernels)."""
    _check(_draw(data, pytestconfig, dtypes=("float16", "bfloat16")), run_case, pytestconfig)
