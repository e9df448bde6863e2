"""Every compared quantity, in one registry: what it is, where it is read, how it is judged, what it depends on.

The rank side reads each quantity from ``source`` (harness.rank.module), the reference provides its expected value
(harness.expected), harness.tolerances picks the tolerance from ``dtype_role`` and ``exact``, the comparison is one
loop over ``MODULE_QUANTITIES`` (harness.kinds.module.compare_case), and the verdict (harness.verdict) uses
``computed_from`` to tell a root failure from its knock-on failures. Adding a quantity is one entry here plus, if it
is read in a new way, one ``source`` branch in harness.rank.module.

Fields:
- ``dtype_role``: the dtype the value lives in: "input" (the case's dtype), "param" (the parameters' dtype),
  "acc" (the kernels' accumulation dtype: op level), "int64" (a counter), "none" (a name or a flag).
- ``scope``: "rank" (each rank's own value), "group_sum" (the sum of the ranks' shares over a process group,
  like DDP's reduction), "group" (one value per group, e.g. a loss), "pair" (rank r against the first rank of its
  group: bit-for-bit agreement).
- ``exact``: compared for equality (a counter, a dtype, agreement, a required error); else under a tolerance.
- ``phases``: the phase kinds it is compared in: "train", "eval" (module), "op", "step" (model).
- ``needs``: the case field or property that must be true for it to exist ("track_running_stats",
  "input_gradients": a backward runs, "parameter_gradients": affine, not frozen, a backward runs), or None.
- ``computed_from``: per phase kind, the quantities it is computed from, each with "same" (this phase) or
  "previous" (the phase before: state carried over). A failure whose inputs failed is a knock-on of theirs. In an
  eval phase the layer normalises with the running statistics carried from the phase before, so everything eval
  computes from them (the output, grad_input, grad_weight) lists them: a wrong running_var is the root of a wrong
  grad_weight at eval even when the output stays within its tolerance there. Cross-rank agreement checks
  (``*.agreement``, ``state.agreement``) list nothing: ranks that hold different buffers are a defect of their own,
  which no wrong input of the same value on every rank can cause, so they are always roots.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

__all__ = ["Quantity", "QUANTITIES", "MODULE_QUANTITIES", "quantity", "inputs_of", "is_known"]

SAME, PREVIOUS = "same", "previous"


@dataclass(frozen=True)
class Quantity:
    name: str
    description: str
    dtype_role: str
    scope: str = "rank"
    exact: bool = False
    phases: tuple[str, ...] = ("train", "eval")
    needs: str | None = None
    source: str | None = None  # how a rank reads it (module level); None: not read on a rank
    computed_from: Mapping[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def applies(self, case) -> bool:
        """Whether ``case`` (a ModuleSpec) has this quantity."""
        return self.needs is None or bool(getattr(case, self.needs))


def _carried(name: str) -> tuple[tuple[str, str], ...]:
    return ((name, PREVIOUS),)


_BUFFERS_USED = (("running_mean", PREVIOUS), ("running_var", PREVIOUS))  # what eval normalises with
_EVAL_FROM_OUTPUT = (("output", SAME), *_BUFFERS_USED)  # eval gradients: through the output and invstd(running_var)

# Module level, in the order a reader wants them: the forward, the backward, the state.
MODULE_QUANTITIES: tuple[Quantity, ...] = (
    Quantity("output", "the layer's output y, per rank", "input", source="output",
             computed_from={"eval": _BUFFERS_USED}),
    Quantity("output.dtype", "the output's dtype: the input's (SEMANTICS: mixed precision; batch_norm is not an "
             "autocast op)", "none", exact=True, source="output.dtype"),
    Quantity("grad_input", "dL/dx, per rank", "input", needs="input_gradients", source="input.grad",
             computed_from={"train": (("output", SAME),), "eval": _EVAL_FROM_OUTPUT}),
    Quantity("grad_weight", "dL/dweight, the ranks' shares summed over the group", "param", scope="group_sum",
             needs="parameter_gradients", source="weight.grad",
             computed_from={"train": (("output", SAME),), "eval": _EVAL_FROM_OUTPUT}),
    Quantity("grad_bias", "dL/dbias, the ranks' shares summed over the group", "param", scope="group_sum",
             needs="parameter_gradients", source="bias.grad"),
    Quantity("grad_weight.dtype", "the weight gradient's dtype: the parameters'", "none", exact=True,
             needs="parameter_gradients", source="weight.grad.dtype"),
    Quantity("grad_bias.dtype", "the bias gradient's dtype: the parameters'", "none", exact=True,
             needs="parameter_gradients", source="bias.grad.dtype"),
    Quantity("running_mean", "the running mean after the phase, per rank", "param", needs="track_running_stats",
             source="running_mean",
             computed_from={"train": (("output", SAME), ("running_mean", PREVIOUS)), "eval": _carried("running_mean")}),
    Quantity("running_var", "the running variance (unbiased with the global count) after the phase, per rank",
             "param", needs="track_running_stats", source="running_var",
             computed_from={"train": (("output", SAME), ("running_var", PREVIOUS)), "eval": _carried("running_var")}),
    Quantity("num_batches_tracked", "the counter: +1 per training forward", "int64", exact=True,
             needs="track_running_stats", source="num_batches_tracked",
             computed_from={"train": _carried("num_batches_tracked"), "eval": _carried("num_batches_tracked")}),
    Quantity("running_mean.agreement", "every rank of a group holds the first rank's running_mean bit for bit",
             "param", scope="pair", exact=True, needs="track_running_stats"),  # a root: see computed_from above
    Quantity("running_var.agreement", "every rank of a group holds the first rank's running_var bit for bit",
             "param", scope="pair", exact=True, needs="track_running_stats"),
    Quantity("error", "an error the specification requires (e.g. a global count of 1 in training)", "none",
             exact=True),
)

_OP_OUTPUTS = (
    ("mean", "batch_norm_stats / gather: the per-channel mean"),
    ("invstd", "batch_norm_stats / gather: 1/sqrt(var + eps)"),
    ("sum_dy", "batch_norm_backward_reduce: Σ dy over the shard"),
    ("sum_dy_xmu", "batch_norm_backward_reduce: Σ dy·(x - mean) over the shard"),
)
_OP_LEVEL = tuple(Quantity(name, text, "acc", phases=("op",)) for name, text in _OP_OUTPUTS)
# Op-level checks of any op output (the module quantities above double as op outputs: output, grad_input, ...).
_OP_CHECKS = (
    Quantity("op.dtype", "an op output's dtype: the CUDA kernel's", "none", exact=True, phases=("op",)),
    Quantity("op.absent", "an output not asked for is None or empty, like CUDA's", "none", exact=True,
             phases=("op",)),
)
_MODEL = (
    Quantity("loss", "the global mean loss of a training step (Σ_r loss_r / W)", "input", scope="group",
             phases=("step",), computed_from={"step": (("parameter", PREVIOUS), ("buffer", PREVIOUS))}),
    Quantity("parameter", "a network parameter after an SGD step, per rank", "input", phases=("step",),
             computed_from={"step": (("loss", SAME), ("parameter", PREVIOUS), ("buffer", PREVIOUS))}),
    Quantity("buffer", "a BatchNorm buffer after a step, per rank", "input", phases=("step",),
             computed_from={"step": (("loss", SAME), ("buffer", PREVIOUS), ("parameter", PREVIOUS))}),
    Quantity("state.agreement", "DDP ranks hold identical parameters and buffers", "input", scope="pair",
             exact=True, phases=("step",)),  # a root, like the module's *.agreement
)

# The collective audit's exact checks (harness.collectives), module and model kinds: not read from a rank's result
# like the quantities above, but from the log of what the ranks said to each other.
_COLLECTIVES = (
    Quantity("collectives.sequence", "the ranks of a group issue the same collectives (op, dtype, shape) in the same "
             "order at every phase", "none", scope="pair", exact=True, phases=("train", "eval", "step")),
    Quantity("collectives.precision", "statistics and backward sums travel in at least float32 (float64 for float64 "
             "input)", "none", exact=True, phases=("train", "eval", "step")),
)

QUANTITIES: dict[str, Quantity] = {q.name: q for q in (*MODULE_QUANTITIES, *_OP_LEVEL, *_OP_CHECKS, *_MODEL,
                                                        *_COLLECTIVES)}


def quantity(name: str) -> Quantity:
    """The registry entry of ``name`` (an op output's ``mean.dtype`` is the op.dtype check)."""
    if name in QUANTITIES:
        return QUANTITIES[name]
    base, _, check = name.rpartition(".")
    if check in ("dtype", "absent") and base:
        return QUANTITIES[f"op.{check}"]
    raise KeyError(f"quantity={name!r}: not in harness.quantities.QUANTITIES (known: {sorted(QUANTITIES)})")


def is_known(name: str) -> bool:
    try:
        quantity(name)
    except KeyError:
        return False
    return True


def inputs_of(name: str, phase_kind: str) -> tuple[tuple[str, str], ...]:
    """What ``name`` is computed from in a phase of kind ``phase_kind`` (empty for unknown names)."""
    return quantity(name).computed_from.get(phase_kind, ()) if is_known(name) else ()
