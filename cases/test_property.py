"""Property test: hypothesis draws whole cases (harness.strategies.case_specs) and runs them through the pool.

Sized by the harness's --profile (hypothesis profile ci-quick / ci / thorough, applied to these tests alone;
HYPOTHESIS_PROFILE=dev keeps failing examples in the local database). A failing example's message is the case
report, ending with the command that reruns it alone. Each example goes through ``property_example``
(harness.pytest_plugin): cases matching a known deviation of the SUT under test, and cases in the region the SUT
declared unsupported, are not run (hypothesis draws others); a test that judged fewer examples than its minimum
reads "not exercised" (harness.strategies). With --device cuda the drawn cases run on the GPU.
"""
from __future__ import annotations

import pytest
from hypothesis import given

from harness.pytest_plugin import hypothesis_settings
from harness.strategies import case_specs

pytestmark = pytest.mark.property


@hypothesis_settings()
@given(case=case_specs())
def test_generated_case(case, property_example):
    property_example(case)


@hypothesis_settings()
@given(case=case_specs(dtypes=("float16", "bfloat16")))
def test_generated_half_case(case, property_example):
    """float16 / bfloat16 input, with float32 or half parameters (on CPU: the CPU copies of the CUDA kernels)."""
    property_example(case)
