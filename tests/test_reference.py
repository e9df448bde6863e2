"""Self-tests of the numpy reference: against torch float64 BatchNorm, shard invariance, finite differences, edges."""
from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.reference import (
    Buffers,
    batch_norm_backward_elemt,
    batch_norm_backward_reduce,
    batch_norm_elemt,
    batch_norm_gather_stats_with_counts,
    batch_norm_stats,
    combine_stats,
    shard_stats,
    syncbn_backward,
    syncbn_forward,
    syncbn_run_steps,
)

CHANNELS = 3
EPS = 1e-5
SPATIAL = {"N,C": (), "N,C,L": (5,), "N,C,H,W": (3, 4), "N,C,D,H,W": (2, 3, 2)}
BATCHNORM = {0: torch.nn.BatchNorm1d, 1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d, 3: torch.nn.BatchNorm3d}
SHARD_SIZES = (3, 0, 2, 4)  # uneven, one empty shard, every non-empty shard has > 1 value per channel


# ---------------------------------------------------------------------------------------------------------- helpers

def make_batch(rng: np.random.Generator, n: int, spatial: tuple[int, ...], offset: float = 2.0) -> np.ndarray:
    """Data whose channels differ in mean and scale."""
    loc = offset * rng.uniform(-1, 1, CHANNELS).reshape((1, -1) + (1,) * len(spatial))
    scale = rng.uniform(0.5, 3.0, CHANNELS).reshape((1, -1) + (1,) * len(spatial))
    return loc + scale * rng.standard_normal((n, CHANNELS, *spatial))


def split(x: np.ndarray, sizes: tuple[int, ...]) -> list[np.ndarray]:
    return np.split(x, np.cumsum(sizes)[:-1])


def compositions(total: int, parts: int):
    """Every tuple of `parts` non-negative ints summing to `total` (stars and bars)."""
    for bars in itertools.combinations(range(total + parts - 1), parts - 1):
        edges = (-1, *bars, total + parts - 1)
        yield tuple(right - left - 1 for left, right in zip(edges, edges[1:]))


def assert_close(actual, expected, what: str, *, rtol: float = 1e-11, atol: float = 1e-11) -> None:
    __tracebackhide__ = True
    actual = actual.detach().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    expected = expected.detach().numpy() if isinstance(expected, torch.Tensor) else np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def torch_batch_norm(x: np.ndarray, grad: np.ndarray, weight, bias, *, training: bool = True,
                     running_mean=None, running_var=None):
    """(y, dx, dweight, dbias) of F.batch_norm in float64 for the loss Σ grad·y."""
    x_t = torch.tensor(x, requires_grad=True)
    w_t = None if weight is None else torch.tensor(weight, requires_grad=True)
    b_t = None if bias is None else torch.tensor(bias, requires_grad=True)
    rm = None if running_mean is None else torch.tensor(running_mean)
    rv = None if running_var is None else torch.tensor(running_var)
    y = F.batch_norm(x_t, rm, rv, w_t, b_t, training=training, eps=EPS)
    (y * torch.tensor(grad)).sum().backward()
    return (y.detach().numpy(), x_t.grad.numpy(), None if w_t is None else w_t.grad.numpy(),
            None if b_t is None else b_t.grad.numpy())


def assert_buffers_equal(actual: Buffers, expected: Buffers, what: str) -> None:
    __tracebackhide__ = True
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_array_equal(getattr(actual, name), getattr(expected, name), err_msg=f"{what}: {name}")


def random_buffers(rng: np.random.Generator, tracked: int = 0) -> Buffers:
    return Buffers(rng.normal(size=CHANNELS), rng.uniform(0.5, 2.0, CHANNELS), tracked)


# ------------------------------------------------------------------------------------- (a) against torch BatchNorm

TORCH_CASES = [
    pytest.param(spatial, affine, momentum, track,
                 id=f"{name}-{'affine' if affine else 'no_affine'}-"
                    f"{'track-momentum=' + str(momentum) if track else 'no_track'}")
    for name, spatial in SPATIAL.items()
    for affine in (True, False)
    for track, momentum in ((True, None), (True, 0.1), (True, 0.7), (False, 0.1))
]


@pytest.mark.parametrize("spatial, affine, momentum, track", TORCH_CASES)
def test_matches_torch_batchnorm_module(spatial, affine, momentum, track):
    """3 training steps then one eval step, each forward + backward, against torch.nn.BatchNormXd in float64."""
    rng = np.random.default_rng(0)
    module = BATCHNORM[len(spatial)](CHANNELS, eps=EPS, momentum=momentum, affine=affine,
                                     track_running_stats=track, dtype=torch.float64)
    weight = bias = None
    if affine:
        weight, bias = rng.uniform(0.5, 2.0, CHANNELS), rng.normal(size=CHANNELS)
        with torch.no_grad():
            module.weight.copy_(torch.tensor(weight))
            module.bias.copy_(torch.tensor(bias))
    buffers = Buffers(np.zeros(CHANNELS), np.ones(CHANNELS), 0) if track else None
    n = sum(SHARD_SIZES)
    batches = [make_batch(rng, n, spatial) for _ in range(4)]
    grads = [rng.standard_normal(batch.shape) for batch in batches]

    def torch_step(x, g):
        x_t = torch.tensor(x, requires_grad=True)
        module.zero_grad()
        y = module(x_t)
        (y * torch.tensor(g)).sum().backward()
        return y, x_t.grad, module.weight.grad if affine else None, module.bias.grad if affine else None

    steps = syncbn_run_steps([split(x, SHARD_SIZES) for x in batches[:3]], [split(g, SHARD_SIZES) for g in grads[:3]],
                             weight=weight, bias=bias, buffers=buffers, momentum=momentum, eps=EPS,
                             track_running_stats=track)
    for k, step in enumerate(steps):
        y, dx, dw, db = torch_step(batches[k], grads[k])
        assert step.forward.mode == "train"
        assert_close(np.concatenate(step.forward.outputs), y, f"step {k} output")
        assert_close(np.concatenate(step.backward.grad_inputs), dx, f"step {k} grad_input")
        if affine:
            assert_close(step.backward.grad_weight, dw, f"step {k} grad_weight")
            assert_close(step.backward.grad_bias, db, f"step {k} grad_bias")
        else:
            assert step.backward.grad_weight is None and step.backward.grad_bias is None
        buffers = step.forward.buffers
        if track:
            assert_close(buffers.running_mean, module.running_mean, f"step {k} running_mean")
            assert_close(buffers.running_var, module.running_var, f"step {k} running_var")
            assert buffers.num_batches_tracked == int(module.num_batches_tracked) == k + 1
        else:
            assert buffers == Buffers(None, None, None)

    module.eval()
    x_shards, g_shards = split(batches[3], SHARD_SIZES), split(grads[3], SHARD_SIZES)
    forward = syncbn_forward(x_shards, weight=weight, bias=bias, buffers=buffers if track else None,
                             momentum=momentum, eps=EPS, training=False, track_running_stats=track)
    backward = syncbn_backward(x_shards, g_shards, weight=weight, forward=forward)
    if track:  # running statistics: the global batch and the shards agree row for row
        assert forward.mode == "eval_running"
        expected = [torch_step(batches[3], grads[3])]
        actual = [(np.concatenate(forward.outputs), np.concatenate(backward.grad_inputs))]
        assert_close(forward.buffers.running_var, module.running_var, "eval leaves running_var")
        assert forward.buffers.num_batches_tracked == len(steps)
    else:  # no running statistics: torch normalises each shard with its own batch statistics
        assert forward.mode == "eval_local"
        shards = [(x, g) for x, g in zip(x_shards, g_shards) if len(x)]
        expected = [torch_step(x, g) for x, g in shards]
        actual = [(y, dx) for y, dx, x in zip(forward.outputs, backward.grad_inputs, x_shards) if len(x)]
    for (y, dx, _, _), (ref_y, ref_dx) in zip(expected, actual):
        assert_close(ref_y, y, "eval output")
        assert_close(ref_dx, dx, "eval grad_input")
    if affine:
        assert_close(backward.grad_weight, sum(e[2].numpy() for e in expected), "eval grad_weight (global sum)")
        assert_close(backward.grad_bias, sum(e[3].numpy() for e in expected), "eval grad_bias (global sum)")


# ------------------------------------------------------------------------------------------- (b) shard invariance

INVARIANCE_CASES = [pytest.param(sizes, id="sizes=" + "-".join(map(str, sizes)))
                    for world in (1, 2, 3, 4) for sizes in compositions(4, world)]


@pytest.mark.parametrize("sizes", INVARIANCE_CASES)
def test_every_split_and_shard_order_gives_the_single_shard_result(sizes):
    rng = np.random.default_rng(1)
    x, g = make_batch(rng, 4, (2, 3)), rng.standard_normal((4, CHANNELS, 2, 3))
    weight, bias, buffers = rng.uniform(0.5, 2, CHANNELS), rng.normal(size=CHANNELS), random_buffers(rng, 2)
    common = dict(weight=weight, bias=bias, momentum=None, eps=EPS, track_running_stats=True)
    single = syncbn_run_steps([[x]], [[g]], buffers=buffers, **common)[0]
    single_eval = syncbn_forward([x], buffers=buffers, training=False, **common)
    rows = split(np.arange(4), sizes)
    for order in set(itertools.permutations(range(len(sizes)))):
        where = f"sizes={sizes} order={order}"
        x_shards = [x[rows[i]] for i in order]
        step = syncbn_run_steps([x_shards], [[g[rows[i]] for i in order]], buffers=buffers, **common)[0]
        evaluated = syncbn_forward(x_shards, buffers=buffers, training=False, **common)
        for rank, i in enumerate(order):
            assert_close(step.forward.outputs[rank], single.forward.outputs[0][rows[i]], f"{where} output",
                         rtol=1e-12, atol=1e-12)
            assert_close(step.backward.grad_inputs[rank], single.backward.grad_inputs[0][rows[i]],
                         f"{where} grad_input", rtol=1e-12, atol=1e-12)
            assert_close(evaluated.outputs[rank], single_eval.outputs[0][rows[i]], f"{where} eval output",
                         rtol=1e-12, atol=1e-12)
        for name in ("grad_weight", "grad_bias"):
            assert_close(getattr(step.backward, name), getattr(single.backward, name), f"{where} {name}",
                         rtol=1e-12, atol=1e-12)
        for name in ("running_mean", "running_var"):
            assert_close(getattr(step.forward.buffers, name), getattr(single.forward.buffers, name),
                         f"{where} {name}", rtol=1e-12, atol=1e-12)
        assert step.forward.buffers.num_batches_tracked == 3


# -------------------------------------------------------------------------------------- (c) finite differences

@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("mode", ["train", "eval_local", "eval_running"])
def test_backward_matches_central_differences(mode, affine):
    rng = np.random.default_rng(2)
    sizes = (2, 0, 3)
    x, g = make_batch(rng, 5, (3,)), rng.standard_normal((5, CHANNELS, 3))
    weight = rng.uniform(0.5, 2, CHANNELS) if affine else None
    bias = rng.normal(size=CHANNELS) if affine else None
    track = mode != "eval_local"
    options = dict(buffers=random_buffers(rng) if track else None, momentum=0.1, eps=EPS,
                   training=mode == "train", track_running_stats=track)

    def loss(x, weight, bias):
        outputs = syncbn_forward(split(x, sizes), weight=weight, bias=bias, **options).outputs
        return float(np.sum(np.concatenate(outputs) * g))

    forward = syncbn_forward(split(x, sizes), weight=weight, bias=bias, **options)
    assert forward.mode == mode
    backward = syncbn_backward(split(x, sizes), split(g, sizes), weight=weight, forward=forward)

    def central_difference(array: np.ndarray, evaluate, h: float = 1e-6) -> np.ndarray:
        gradient = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            plus, minus = array.copy(), array.copy()
            plus[index] += h
            minus[index] -= h
            gradient[index] = (evaluate(plus) - evaluate(minus)) / (2 * h)
        return gradient

    numeric_dx = central_difference(x, lambda value: loss(value, weight, bias))
    assert_close(np.concatenate(backward.grad_inputs), numeric_dx, "grad_input", rtol=1e-6, atol=1e-7)
    if affine:
        numeric_dw = central_difference(weight, lambda value: loss(x, value, bias))
        numeric_db = central_difference(bias, lambda value: loss(x, weight, value))
        assert_close(backward.grad_weight, numeric_dw, "grad_weight", rtol=1e-6, atol=1e-7)
        assert_close(backward.grad_bias, numeric_db, "grad_bias", rtol=1e-6, atol=1e-7)
    else:
        assert backward.grad_weight is None and backward.grad_bias is None


# ------------------------------------------------------------------------------------------------ (d) edge rules

def test_all_shards_empty_keeps_running_stats_and_counts_the_batch():
    rng = np.random.default_rng(3)
    shards = [np.zeros((0, CHANNELS, 2, 2))] * 3
    buffers = random_buffers(rng, tracked=5)
    weight = rng.uniform(0.5, 2, CHANNELS)
    forward = syncbn_forward(shards, weight=weight, bias=rng.normal(size=CHANNELS), buffers=buffers, momentum=0.1,
                             eps=EPS, training=True, track_running_stats=True)
    assert [out.shape for out in forward.outputs] == [shard.shape for shard in shards]
    assert forward.buffers.num_batches_tracked == 6 and buffers.num_batches_tracked == 5
    np.testing.assert_array_equal(forward.buffers.running_mean, buffers.running_mean)
    np.testing.assert_array_equal(forward.buffers.running_var, buffers.running_var)
    # torch's BatchNorm on an empty batch agrees: running statistics unchanged
    module = torch.nn.BatchNorm2d(CHANNELS, momentum=0.1, dtype=torch.float64)
    with torch.no_grad():
        module.running_mean.copy_(torch.tensor(buffers.running_mean))
        module.running_var.copy_(torch.tensor(buffers.running_var))
    module(torch.zeros(0, CHANNELS, 2, 2, dtype=torch.float64))
    assert_close(forward.buffers.running_mean, module.running_mean, "torch running_mean on an empty batch")
    assert_close(forward.buffers.running_var, module.running_var, "torch running_var on an empty batch")
    backward = syncbn_backward(shards, shards, weight=weight, forward=forward)
    assert [grad.shape for grad in backward.grad_inputs] == [shard.shape for shard in shards]
    np.testing.assert_array_equal(backward.grad_weight, np.zeros(CHANNELS))
    np.testing.assert_array_equal(backward.grad_bias, np.zeros(CHANNELS))


@pytest.mark.parametrize("sizes, spatial", [
    pytest.param((1,), (), id="one-shard-(1,C)"),
    pytest.param((0, 1, 0), (), id="three-shards-(1,C)-among-empty"),
    pytest.param((1, 0), (1, 1), id="two-shards-(1,C,1,1)"),
])
def test_global_count_one_raises_in_training(sizes, spatial):
    shards = split(np.ones((sum(sizes), CHANNELS, *spatial)), sizes)
    with pytest.raises(ValueError) as torch_error:
        F.batch_norm(torch.ones(1, CHANNELS, *spatial, dtype=torch.float64), None, None, training=True)
    prefix = "Expected more than 1 value per channel when training"
    assert str(torch_error.value).startswith(prefix)
    for track in (True, False):
        with pytest.raises(ValueError, match=f"^{prefix}, got input size 1$"):
            syncbn_forward(shards, weight=None, bias=None, buffers=Buffers(np.zeros(CHANNELS), np.ones(CHANNELS), 0)
                           if track else None, momentum=0.1, eps=EPS, training=True, track_running_stats=track)
    with pytest.raises(ValueError, match=prefix):  # eval without running stats normalises the shard on its own
        syncbn_forward(shards, weight=None, bias=None, buffers=None, momentum=0.1, eps=EPS, training=False,
                       track_running_stats=False)
    buffers = Buffers(np.zeros(CHANNELS), np.ones(CHANNELS), 0)
    evaluated = syncbn_forward(shards, weight=None, bias=None, buffers=buffers, momentum=0.1, eps=EPS,
                               training=False, track_running_stats=True)
    assert_close(np.concatenate(evaluated.outputs), np.ones((1, CHANNELS, *spatial)) / np.sqrt(1 + EPS),
                 "eval with running stats accepts one value")


@pytest.mark.parametrize("track", [True, False], ids=["eval_running", "eval_local"])
def test_eval_has_no_cross_shard_dependence(track):
    rng = np.random.default_rng(4)
    shards = [make_batch(rng, size, (2,)) for size in (3, 0, 4)]
    weight, bias = rng.uniform(0.5, 2, CHANNELS), rng.normal(size=CHANNELS)
    buffers = random_buffers(rng, 7) if track else None
    options = dict(weight=weight, bias=bias, buffers=buffers, momentum=0.1, eps=EPS, training=False,
                   track_running_stats=track)
    together = syncbn_forward(shards, **options)
    changed = syncbn_forward([shards[0], shards[1], 10 * shards[2] + 5], **options)
    alone = syncbn_forward([shards[0]], **options)
    assert_close(together.outputs[0], alone.outputs[0], "shard 0 with others vs alone", rtol=0, atol=0)
    assert_close(changed.outputs[0], alone.outputs[0], "shard 0 after changing shard 2", rtol=0, atol=0)
    assert together.outputs[1].shape == shards[1].shape
    if track:
        mean, var = buffers.running_mean, buffers.running_var
        expected = F.batch_norm(torch.tensor(shards[2]), torch.tensor(mean), torch.tensor(var), torch.tensor(weight),
                                torch.tensor(bias), training=False, eps=EPS)
        assert_buffers_equal(together.buffers, buffers, "eval leaves the buffers unchanged")
        assert together.buffers.running_mean is not buffers.running_mean
        assert together.population == [0, 0, 0]
    else:
        expected = F.batch_norm(torch.tensor(shards[2]), None, None, torch.tensor(weight), torch.tensor(bias),
                                training=True, eps=EPS)
        assert together.population == [3 * 2, 0, 4 * 2]
    assert_close(together.outputs[2], expected, "shard 2 vs torch F.batch_norm on the shard alone")


def test_training_does_not_mutate_its_inputs():
    rng = np.random.default_rng(5)
    shards = [make_batch(rng, size, ()) for size in (2, 3)]
    weight, bias, buffers = rng.uniform(0.5, 2, CHANNELS), rng.normal(size=CHANNELS), random_buffers(rng, 1)
    copies = [shard.copy() for shard in shards], weight.copy(), bias.copy(), buffers.copy()
    forward = syncbn_forward(shards, weight=weight, bias=bias, buffers=buffers, momentum=None, eps=EPS,
                             training=True, track_running_stats=True)
    syncbn_backward(shards, shards, weight=weight, forward=forward)
    for shard, copy in zip(shards, copies[0]):
        np.testing.assert_array_equal(shard, copy)
    np.testing.assert_array_equal(weight, copies[1])
    np.testing.assert_array_equal(bias, copies[2])
    assert_buffers_equal(buffers, copies[3], "input buffers")
    assert not np.array_equal(forward.buffers.running_mean, buffers.running_mean)


@pytest.mark.parametrize("mean, std", [(1e6, 1.0), (1e3, 1e-3)], ids=["mean=1e6-std=1", "mean=1e3-std=1e-3"])
def test_combine_stats_is_stable_when_mean_is_1e6_times_std(mean, std):
    rng = np.random.default_rng(6)
    sizes = (7, 0, 130, 1, 62)
    x = mean + std * rng.standard_normal((sum(sizes), CHANNELS, 4))
    shards = split(x, sizes)
    total, combined_mean, m2 = combine_stats(*zip(*(shard_stats(shard) for shard in shards)))
    two_pass_mean = x.mean(axis=(0, 2))
    two_pass_var = np.square(x - two_pass_mean[None, :, None]).mean(axis=(0, 2))
    var = m2 / total
    assert total == x.shape[0] * 4
    assert np.all(var > 0)
    assert np.max(np.abs(var / two_pass_var - 1)) < 1e-6
    assert_close(combined_mean, two_pass_mean, "mean", rtol=1e-14, atol=0)
    # the case is hard: the textbook E[x²] - E[x]² loses the variance here
    naive_var = np.square(x).mean(axis=(0, 2)) - np.square(x.mean(axis=(0, 2)))
    assert np.max(np.abs(naive_var / two_pass_var - 1)) > 1e-6
    # module level: running_var gets the unbiased global variance
    forward = syncbn_forward(shards, weight=None, bias=None, buffers=Buffers(np.zeros(CHANNELS), np.zeros(CHANNELS), 0),
                             momentum=1.0, eps=EPS, training=True, track_running_stats=True)
    unbiased = two_pass_var * total / (total - 1)
    assert np.max(np.abs(forward.buffers.running_var / unbiased - 1)) < 1e-6


# ------------------------------------------------------------------------------------- the five ops against torch

def torch_axes(spatial: tuple[int, ...]) -> list[int]:
    return [0, *range(2, 2 + len(spatial))]


@pytest.mark.parametrize("spatial", SPATIAL.values(), ids=SPATIAL.keys())
def test_batch_norm_stats(spatial):
    x = make_batch(np.random.default_rng(7), 5, spatial)
    var, mean = torch.var_mean(torch.tensor(x), dim=torch_axes(spatial), correction=0)
    ref_mean, ref_invstd = batch_norm_stats(x, EPS)
    assert_close(ref_mean, mean, "mean")
    assert_close(ref_invstd, 1 / torch.sqrt(var + EPS), "invstd")


@pytest.mark.parametrize("momentum", [0.1, 1.0])
@pytest.mark.parametrize("spatial", SPATIAL.values(), ids=SPATIAL.keys())
def test_batch_norm_gather_stats_with_counts(spatial, momentum):
    rng = np.random.default_rng(8)
    shards = [make_batch(rng, size, spatial) for size in SHARD_SIZES]
    per_element = int(np.prod(spatial, dtype=int))
    counts = np.array([len(shard) * per_element for shard in shards], dtype=np.float64)
    stats = [batch_norm_stats(shard, EPS) if len(shard) else (np.full(CHANNELS, 123.0), np.full(CHANNELS, 0.5))
             for shard in shards]  # the empty shard's row is garbage: count 0 must skip it
    running_mean, running_var = rng.normal(size=CHANNELS), rng.uniform(0.5, 2, CHANNELS)
    updated_mean, updated_var = running_mean.copy(), running_var.copy()
    mean, invstd = batch_norm_gather_stats_with_counts(shards[0], np.stack([s[0] for s in stats]),
                                                       np.stack([s[1] for s in stats]), updated_mean, updated_var,
                                                       momentum, EPS, counts)
    batch = torch.tensor(np.concatenate(shards))
    var, expected_mean = torch.var_mean(batch, dim=torch_axes(spatial), correction=0)
    unbiased = torch.var(batch, dim=torch_axes(spatial), correction=1)
    assert_close(mean, expected_mean, "mean")
    assert_close(invstd, 1 / torch.sqrt(var + EPS), "invstd")
    assert_close(updated_mean, (1 - momentum) * torch.tensor(running_mean) + momentum * expected_mean, "running_mean")
    assert_close(updated_var, (1 - momentum) * torch.tensor(running_var) + momentum * unbiased, "running_var")


def test_batch_norm_gather_stats_with_all_counts_zero():
    running_mean, running_var = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    mean, invstd = batch_norm_gather_stats_with_counts(
        np.zeros((0, CHANNELS)), np.zeros((2, CHANNELS)), np.zeros((2, CHANNELS)), running_mean, running_var, 0.1,
        EPS, np.zeros(2))
    assert np.all(np.isnan(mean)) and np.all(np.isnan(invstd))
    np.testing.assert_array_equal(running_mean, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(running_var, [4.0, 5.0, 6.0])


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("spatial", SPATIAL.values(), ids=SPATIAL.keys())
def test_batch_norm_elemt(spatial, affine):
    rng = np.random.default_rng(9)
    x = make_batch(rng, 4, spatial)
    mean, invstd = rng.normal(size=CHANNELS), rng.uniform(0.2, 2, CHANNELS)
    weight, bias = (rng.uniform(0.5, 2, CHANNELS), rng.normal(size=CHANNELS)) if affine else (None, None)
    as_tensor = (lambda value: None if value is None else torch.tensor(value))
    expected = F.batch_norm(torch.tensor(x), torch.tensor(mean), torch.tensor(1 / invstd ** 2 - EPS),
                            as_tensor(weight), as_tensor(bias), training=False, eps=EPS)
    assert_close(batch_norm_elemt(x, weight, bias, mean, invstd, EPS), expected, "output")


@pytest.mark.parametrize("spatial", SPATIAL.values(), ids=SPATIAL.keys())
def test_batch_norm_backward_reduce(spatial):
    rng = np.random.default_rng(10)
    x, weight, bias = make_batch(rng, 5, spatial), rng.uniform(0.5, 2, CHANNELS), rng.normal(size=CHANNELS)
    g = rng.standard_normal(x.shape)
    mean, invstd = batch_norm_stats(x, EPS)
    sum_dy, sum_dy_xmu, grad_weight, grad_bias = batch_norm_backward_reduce(g, x, mean, invstd, weight,
                                                                            True, True, True)
    _, _, dw, db = torch_batch_norm(x, g, weight, bias)
    g_t, x_t, axes = torch.tensor(g), torch.tensor(x), torch_axes(spatial)
    centred = x_t - x_t.mean(dim=axes, keepdim=True)
    assert_close(sum_dy, g_t.sum(dim=axes), "sum_dy")
    assert_close(sum_dy_xmu, (g_t * centred).sum(dim=axes), "sum_dy_xmu")
    assert_close(grad_weight, dw, "grad_weight")
    assert_close(grad_bias, db, "grad_bias")
    flags_off = batch_norm_backward_reduce(g, x, mean, invstd, weight, False, False, False)
    assert flags_off == (None, None, None, None)
    only_weight = batch_norm_backward_reduce(g, x, mean, invstd, weight, False, True, False)
    assert only_weight[0] is None and only_weight[1] is None and only_weight[3] is None
    assert_close(only_weight[2], dw, "grad_weight alone")


@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("spatial", SPATIAL.values(), ids=SPATIAL.keys())
def test_batch_norm_backward_elemt_over_shards(spatial, affine):
    """Per-shard dx from the globally summed sums equals the rows of autograd on the concatenated batch."""
    rng = np.random.default_rng(11)
    x = make_batch(rng, sum(SHARD_SIZES), spatial)
    g = rng.standard_normal(x.shape)
    weight, bias = (rng.uniform(0.5, 2, CHANNELS), rng.normal(size=CHANNELS)) if affine else (None, None)
    mean, invstd = batch_norm_stats(x, EPS)  # the global statistics
    x_shards, g_shards = split(x, SHARD_SIZES), split(g, SHARD_SIZES)
    sums = [batch_norm_backward_reduce(gs, xs, mean, invstd, weight, True, False, False)[:2]
            for gs, xs in zip(g_shards, x_shards)]
    sum_dy, sum_dy_xmu = np.sum([s[0] for s in sums], axis=0), np.sum([s[1] for s in sums], axis=0)
    per_element = int(np.prod(spatial, dtype=int))
    count = np.array([[size * per_element] for size in SHARD_SIZES], dtype=np.int32)  # torch's (W, 1) int32
    grad_inputs = [batch_norm_backward_elemt(gs, xs, mean, invstd, weight, sum_dy, sum_dy_xmu, count)
                   for gs, xs in zip(g_shards, x_shards)]
    _, dx, _, _ = torch_batch_norm(x, g, weight, bias)
    assert_close(np.concatenate(grad_inputs), dx, "grad_input")


@pytest.mark.parametrize("momentum", [0.1, 0.9])
def test_op_level_gather_matches_module_level(momentum):
    """The torch protocol (stats per shard, empty shards as zero rows with count 0, gather) = syncbn_forward."""
    rng = np.random.default_rng(12)
    shards = [make_batch(rng, size, (3,)) for size in (0, *SHARD_SIZES)]
    buffers = random_buffers(rng, 4)
    rows = [batch_norm_stats(shard, EPS) if len(shard) else (np.zeros(CHANNELS), np.zeros(CHANNELS))
            for shard in shards]
    counts = np.array([len(shard) * 3 for shard in shards], dtype=np.float64)
    running_mean, running_var = buffers.running_mean.copy(), buffers.running_var.copy()
    mean, invstd = batch_norm_gather_stats_with_counts(shards[1], np.stack([r[0] for r in rows]),
                                                       np.stack([r[1] for r in rows]), running_mean, running_var,
                                                       momentum, EPS, counts)
    forward = syncbn_forward(shards, weight=None, bias=None, buffers=buffers, momentum=momentum, eps=EPS,
                             training=True, track_running_stats=True)
    assert forward.population == [int(counts.sum())] * len(shards)
    for rank in range(len(shards)):
        assert_close(forward.shard_mean[rank], mean, f"shard {rank} mean", rtol=1e-12, atol=1e-12)
        assert_close(forward.shard_invstd[rank], invstd, f"shard {rank} invstd", rtol=1e-12, atol=1e-12)
    assert_close(forward.buffers.running_mean, running_mean, "running_mean", rtol=1e-12, atol=1e-12)
    assert_close(forward.buffers.running_var, running_var, "running_var", rtol=1e-12, atol=1e-12)
    for rank, shard in enumerate(shards):
        if len(shard):
            assert_close(forward.outputs[rank], batch_norm_elemt(shard, None, None, mean, invstd, EPS),
                         f"shard {rank} output", rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------- validation

@pytest.mark.processes
def test_reference_does_not_import_torch():
    code = "import sys, harness.reference; assert 'torch' not in sys.modules, 'harness.reference imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def _forward(shards, **overrides):
    options = dict(weight=None, bias=None, buffers=None, momentum=0.1, eps=EPS, training=True,
                   track_running_stats=False)
    return syncbn_forward(shards, **{**options, **overrides})


GOOD = np.ones((2, CHANNELS, 2))


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: _forward([]), "shards", id="no-shards"),
    pytest.param(lambda: _forward([GOOD, np.ones((2, CHANNELS + 1, 2))]), r"C and the number of dims: shards\[1\]",
                 id="channels-disagree"),
    pytest.param(lambda: _forward([GOOD, np.ones((2, CHANNELS, 2, 2))]), r"C and the number of dims: shards\[1\]",
                 id="dims-disagree"),
    pytest.param(lambda: _forward([np.ones(4)]), r"shards\[0\].*\(N, C, \*spatial\)", id="one-dimensional-shard"),
    pytest.param(lambda: _forward([GOOD], weight=np.ones(CHANNELS + 1)), r"weight must have shape \(3,\)",
                 id="weight-shape"),
    pytest.param(lambda: _forward([GOOD], bias=np.ones((1, CHANNELS))), r"bias must have shape \(3,\)",
                 id="bias-shape"),
    pytest.param(lambda: _forward([GOOD], eps=-1e-5), r"eps=-1e-05 must be >= 0", id="negative-eps"),
    pytest.param(lambda: _forward([GOOD], momentum=float("nan")), "momentum=nan", id="nan-momentum"),
    pytest.param(lambda: _forward([GOOD], track_running_stats=True), "buffers must be given", id="missing-buffers"),
    pytest.param(lambda: _forward([GOOD], buffers=Buffers(np.zeros(CHANNELS), np.ones(CHANNELS), 0)),
                 "track_running_stats=False", id="buffers-without-tracking"),
    pytest.param(lambda: _forward([GOOD], track_running_stats=True, buffers=Buffers(np.zeros(2), np.ones(3), 0)),
                 r"buffers.running_mean must have shape \(3,\)", id="running-mean-shape"),
    pytest.param(lambda: _forward([GOOD], track_running_stats=True,
                                  buffers=Buffers(np.zeros(3), np.ones(3), -1)),
                 "num_batches_tracked=-1", id="negative-num-batches-tracked"),
    pytest.param(lambda: syncbn_backward([GOOD], [np.ones((3, CHANNELS, 2))], weight=None, forward=_forward([GOOD])),
                 r"grad_outputs\[0\].shape", id="grad-output-shape"),
    pytest.param(lambda: syncbn_backward([GOOD], [], weight=None, forward=_forward([GOOD])),
                 "one array per shard", id="grad-output-count"),
    pytest.param(lambda: combine_stats([1, -1], np.zeros((2, 3)), np.zeros((2, 3))), "non-negative whole",
                 id="negative-count"),
    pytest.param(lambda: batch_norm_gather_stats_with_counts(GOOD, np.zeros((2, 3)), np.ones((3, 3)), None, None,
                                                             0.1, EPS, np.ones(2)), r"invstd must have shape \(W, C\)",
                 id="gather-row-shape"),
])
def test_invalid_arguments_raise_value_errors_naming_the_rule(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_shards_of_different_spatial_sizes_count_element_by_element():
    """Ranks with different image sizes: the statistics are those of every element of every shard, exactly what a
    BatchNorm over the shards flattened to (1, C, L) and concatenated computes."""
    rng = np.random.default_rng(5)
    shards = [rng.normal(2.0, 3.0, (2, CHANNELS, 3, 4)), rng.normal(-1.0, 0.5, (3, CHANNELS, 5, 2)),
              np.zeros((0, CHANNELS, 1, 1))]
    grads = [rng.standard_normal(s.shape) for s in shards]
    flat = lambda arrays: np.concatenate([np.moveaxis(a, 1, 0).reshape(CHANNELS, -1) for a in arrays], 1)[None]  # noqa: E731
    weight, bias = rng.normal(1, 0.2, CHANNELS), rng.normal(0, 0.2, CHANNELS)
    buffers = Buffers(np.zeros(CHANNELS), np.ones(CHANNELS), 0)
    options = dict(weight=weight, bias=bias, momentum=0.1, eps=EPS, training=True, track_running_stats=True)
    forward = syncbn_forward(shards, buffers=buffers, **options)
    whole = syncbn_forward([flat(shards)], buffers=buffers, **options)
    np.testing.assert_allclose(flat(forward.outputs), whole.outputs[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(forward.buffers.running_var, whole.buffers.running_var, rtol=1e-12)
    backward = syncbn_backward(shards, grads, weight=weight, forward=forward)
    whole_backward = syncbn_backward([flat(shards)], [flat(grads)], weight=weight, forward=whole)
    np.testing.assert_allclose(flat(backward.grad_inputs), whole_backward.grad_inputs[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(backward.grad_weight, whole_backward.grad_weight, rtol=1e-10)
