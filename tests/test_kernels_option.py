"""--kernels: a kernel author substitutes one op; the module and op cases gate exactly that change."""
from __future__ import annotations

import textwrap

import pytest

from harness.errors import CaseError
from harness.pool import PoolManager
from harness.kinds import run_case
from harness.kinds import RunConfig
from harness.spec import ModuleSpec, OpSpec
from harness.sut import load_module
from harness.kernel_table import load_kernel_overrides

MODULE_CASE = ModuleSpec(shard_sizes=(3, 0, 2), channels=3, spatial=(3, 2), steps=2, eval_steps=1)


@pytest.fixture(scope="module")
def manager():
    pools = PoolManager()
    yield pools
    pools.close_all()


def _kernels(tmp_path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return str(path)


@pytest.mark.processes
def test_a_faithful_substitute_passes(tmp_path, manager):
    path = _kernels(tmp_path, "same_elemt", """
        from harness import cpu_kernels

        def batch_norm_elemt(input, weight, bias, mean, invstd, eps):
            return cpu_kernels.batch_norm_elemt(input, weight, bias, mean, invstd, eps)
    """)
    config = RunConfig.of(kernels=path, manager=manager)
    assert run_case(MODULE_CASE, config).passed
    assert run_case(OpSpec(op="batch_norm_elemt", shard_sizes=(3, 2), channels=4, spatial=(5,)), config).passed


@pytest.mark.processes
def test_a_kernel_off_by_one_ulp_per_thousand_fails_module_and_op_cases(tmp_path, manager):
    path = _kernels(tmp_path, "bad_elemt", """
        from harness import cpu_kernels

        def batch_norm_elemt(input, weight, bias, mean, invstd, eps):
            out = cpu_kernels.batch_norm_elemt(input, weight, bias, mean, invstd, eps)
            return out + 1e-4 * out.abs()
    """)
    config = RunConfig.of(kernels=path, manager=manager)
    module = run_case(MODULE_CASE, config)
    assert not module.passed and "output at train0" in module.report() and "--kernels" in module.report()
    op = run_case(OpSpec(op="batch_norm_elemt", shard_sizes=(3, 2), channels=4, spatial=(5,)), config)
    assert not op.passed and any(c.quantity == "output" and not c.passed for c in op.comparisons)
    untouched = run_case(OpSpec(op="batch_norm_stats", shard_sizes=(3, 2), channels=4, spatial=(5,)), config)
    assert untouched.passed
    # The substitute is per run: the next run without it is clean again in the same rank processes.
    assert run_case(MODULE_CASE, RunConfig.of(manager=manager)).passed
    assert not run_case(MODULE_CASE, config).passed


@pytest.mark.processes
def test_a_backward_kernel_that_ignores_the_global_sums_fails(tmp_path, manager):
    path = _kernels(tmp_path, "bad_backward", """
        from harness import cpu_kernels

        def batch_norm_backward_elemt(grad_out, input, mean, invstd, weight, sum_dy, sum_dy_xmu, count):
            return cpu_kernels.batch_norm_backward_elemt(grad_out, input, mean, invstd, weight, 0 * sum_dy,
                                                       0 * sum_dy_xmu, count)
    """)
    result = run_case(MODULE_CASE, RunConfig.of(kernels=path, manager=manager))
    assert not result.passed and "grad_input" in result.report()


def test_a_module_without_any_op_is_rejected(tmp_path):
    path = _kernels(tmp_path, "nothing", "x = 1\n")
    with pytest.raises(ValueError, match="batch_norm"):
        load_kernel_overrides(load_module(path))
    with pytest.raises(CaseError, match="does not exist"):
        load_module(str(tmp_path / "missing.py"))
