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
from hypothesis import strategies as st

from harness.pytest_plugin import hypothesis_settings, options
from harness.strategies import PROPERTY_REACH, case_specs

pytestmark = pytest.mark.property


def _draw(data, pytestconfig, **keywords):
    """A case drawn as far as the run's --profile reaches (harness.strategies.PROPERTY_REACH: world sizes, the
    boundary sizes)."""
    return data.draw(case_specs(**PROPERTY_REACH[options(pytestconfig).profile], **keywords), label="case")


@hypothesis_settings()
@given(data=st.data())
def test_generated_case(data, property_example, pytestconfig):
    property_example(_draw(data, pytestconfig))


@hypothesis_settings()
@given(data=st.data())
def test_generated_half_case(data, property_example, pytestconfig):
    """float16 / bfloat16 input, with float32 or half parameters (on CPU: the CPU copies of the CUDA kernels)."""
    property_example(_draw(data, pytestconfig, dtypes=("float16", "bfloat16")))
