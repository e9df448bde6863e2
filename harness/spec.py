"""Case specifications: one frozen record per conformance case, validated, with a stable readable id.

The id is a complete encoding of the spec (``CaseSpec.from_id(spec.id) == spec``), so any failing case, from the
fixed catalogue or from a hypothesis example, can be rerun from its id alone::

    w3_n4.0.2_c5_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k3_ev1_normal_loc0_sd1_s7_cpu

tokens, in order: world size, shard sizes (samples per rank), channels, input shape kind and spatial sizes,
dtype (``f16pf32``: parameters in another dtype), memory layout, affine, track_running_stats,
momentum (``mNone``: cumulative average), eps, training steps, eval steps after training, data distribution,
its offset and spread, seed, device, then optional ``g0.1+2.3`` (process groups) and ``ac`` (autocast).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import CaseError

__all__ = [
    "CaseSpec",
    "OpSpec",
    "DTYPES",
    "LAYOUTS",
    "DATA_KINDS",
    "OP_NAMES",
    "parse_any_id",
]

DTYPES = ("float64", "float32", "float16", "bfloat16")
_DTYPE_TOKENS = {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16"}
_TOKEN_DTYPES = {v: k for k, v in _DTYPE_TOKENS.items()}
LAYOUTS = ("contiguous", "channels_last", "channels_last_3d")
_LAYOUT_TOKENS = {"contiguous": "contig", "channels_last": "cl", "channels_last_3d": "cl3d"}
_TOKEN_LAYOUTS = {v: k for k, v in _LAYOUT_TOKENS.items()}
_SHAPE_TOKENS = {0: "nc", 1: "ncl", 2: "nchw", 3: "ncdhw"}
DATA_KINDS = ("normal", "constant", "outliers", "halfconst")
DEVICES = ("cpu", "cuda")
OP_NAMES = (
    "batch_norm_stats",
    "batch_norm_gather_stats_with_counts",
    "batch_norm_elemt",
    "batch_norm_backward_reduce",
    "batch_norm_backward_elemt",
)


def _fmt_float(value: float) -> str:
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def _check(condition: bool, name: str, value: Any, rule: str) -> None:
    if not condition:
        raise CaseError(f"{name}={value!r}: {rule}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool), name, value, "must be an int")
    _check(value >= minimum, name, value, f"must be >= {minimum}")


@dataclass(frozen=True)
class CaseSpec:
    """One module-level case: W ranks, each with its own shard, running K training steps then E eval steps.

    ``shard_sizes[r]`` is rank r's batch size N_r; the input of rank r at step k is (N_r, channels, *spatial),
    drawn from ``seed`` (see harness.data) so a rank builds its own shard and the reference rebuilds the same.
    """

    shard_sizes: tuple[int, ...]
    channels: int
    spatial: tuple[int, ...] = ()
    dtype: str = "float32"
    param_dtype: str | None = None  # None: same as dtype
    layout: str = "contiguous"
    affine: bool = True
    track_running_stats: bool = True
    momentum: float | None = 0.1
    eps: float = 1e-5
    steps: int = 1
    eval_steps: int = 0
    data: str = "normal"
    loc: float = 0.0
    scale: float = 1.0
    seed: int = 0
    device: str = "cpu"
    groups: tuple[tuple[int, ...], ...] | None = None
    autocast: bool = False
    tags: tuple[str, ...] = field(default=(), compare=False)  # feature areas, for reports; not in the id

    def __post_init__(self) -> None:
        object.__setattr__(self, "shard_sizes", tuple(self.shard_sizes))
        object.__setattr__(self, "spatial", tuple(self.spatial))
        if self.groups is not None:
            object.__setattr__(self, "groups", tuple(tuple(g) for g in self.groups))
        object.__setattr__(self, "tags", tuple(self.tags))
        if self.param_dtype == self.dtype:
            object.__setattr__(self, "param_dtype", None)  # one spelling per case, so ids round-trip
        self.validate()

    # -- validation ---------------------------------------------------------------------------------------
    def validate(self) -> None:
        _check(len(self.shard_sizes) >= 1, "shard_sizes", self.shard_sizes, "needs at least one rank")
        for rank, size in enumerate(self.shard_sizes):
            _check_int(f"shard_sizes[{rank}]", size, 0)
        _check_int("channels", self.channels, 1)
        _check(len(self.spatial) <= 3, "spatial", self.spatial, "at most 3 spatial dims (N,C,D,H,W)")
        for axis, size in enumerate(self.spatial):
            _check_int(f"spatial[{axis}]", size, 1)
        _check(self.dtype in DTYPES, "dtype", self.dtype, f"must be one of {DTYPES}")
        _check(self.param_dtype is None or self.param_dtype in DTYPES, "param_dtype", self.param_dtype,
               f"must be None or one of {DTYPES}")
        _check(self.layout in LAYOUTS, "layout", self.layout, f"must be one of {LAYOUTS}")
        if self.layout == "channels_last":
            _check(len(self.spatial) == 2, "layout", self.layout, "channels_last needs a 4-d input (2 spatial dims)")
        if self.layout == "channels_last_3d":
            _check(len(self.spatial) == 3, "layout", self.layout,
                   "channels_last_3d needs a 5-d input (3 spatial dims)")
        if self.momentum is not None:
            _check(isinstance(self.momentum, (int, float)) and 0.0 <= self.momentum <= 1.0, "momentum",
                   self.momentum, "must be None or a float in [0, 1]")
        _check(isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps > 0, "eps", self.eps,
               "must be a finite float > 0")
        _check_int("steps", self.steps, 0)
        _check_int("eval_steps", self.eval_steps, 0)
        _check(self.steps + self.eval_steps >= 1, "steps", self.steps, "steps + eval_steps must be >= 1")
        _check(self.data in DATA_KINDS, "data", self.data, f"must be one of {DATA_KINDS}")
        _check(math.isfinite(self.loc), "loc", self.loc, "must be finite")
        _check(math.isfinite(self.scale) and self.scale > 0, "scale", self.scale, "must be finite and > 0")
        _check_int("seed", self.seed, 0)
        _check(self.device in DEVICES, "device", self.device, f"must be one of {DEVICES}")
        if self.groups is not None:
            members = sorted(r for g in self.groups for r in g)
            _check(members == list(range(self.world_size)), "groups", self.groups,
                   f"must partition the ranks 0..{self.world_size - 1}, each rank in exactly one group")
            _check(all(len(g) >= 1 for g in self.groups), "groups", self.groups, "groups must not be empty")
        if self.device == "cpu":
            _check(not self.autocast, "autocast", self.autocast, "autocast cases need device='cuda'")

    # -- derived ------------------------------------------------------------------------------------------
    @property
    def world_size(self) -> int:
        return len(self.shard_sizes)

    @property
    def effective_param_dtype(self) -> str:
        return self.param_dtype or self.dtype

    @property
    def rank_groups(self) -> tuple[tuple[int, ...], ...]:
        """The process groups, as rank tuples; one group of every rank when ``groups`` is None."""
        return self.groups if self.groups is not None else (tuple(range(self.world_size)),)

    @property
    def elements_per_sample(self) -> int:
        return math.prod(self.spatial)

    def input_shape(self, rank: int) -> tuple[int, ...]:
        return (self.shard_sizes[rank], self.channels, *self.spatial)

    # -- id -----------------------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        shape = _SHAPE_TOKENS[len(self.spatial)] + "x".join(str(s) for s in self.spatial)
        dtype = _DTYPE_TOKENS[self.dtype]
        if self.param_dtype is not None and self.param_dtype != self.dtype:
            dtype += "p" + _DTYPE_TOKENS[self.param_dtype]
        tokens = [
            f"w{self.world_size}",
            "n" + ".".join(str(s) for s in self.shard_sizes),
            f"c{self.channels}",
            shape,
            dtype,
            _LAYOUT_TOKENS[self.layout],
            "aff" if self.affine else "noaff",
            "trs" if self.track_running_stats else "notrs",
            "mNone" if self.momentum is None else "m" + _fmt_float(self.momentum),
            "e" + _fmt_float(self.eps),
            f"k{self.steps}",
            f"ev{self.eval_steps}",
            self.data,
            "loc" + _fmt_float(self.loc),
            "sd" + _fmt_float(self.scale),
            f"s{self.seed}",
            self.device,
        ]
        if self.groups is not None:
            tokens.append("g" + "+".join(".".join(str(r) for r in g) for g in self.groups))
        if self.autocast:
            tokens.append("ac")
        return "_".join(tokens)

    @classmethod
    def from_id(cls, case_id: str) -> CaseSpec:
        """Parse an id written by ``CaseSpec.id``; a malformed id raises CaseError naming the bad token."""
        tokens = case_id.split("_")
        if len(tokens) < 17:
            raise CaseError(f"case id {case_id!r}: expected at least 17 '_'-separated tokens, got {len(tokens)}")
        try:
            return cls._from_tokens(tokens)
        except CaseError:
            raise
        except (ValueError, KeyError, IndexError) as exc:
            raise CaseError(f"case id {case_id!r}: cannot parse ({exc})") from None

    @classmethod
    def _from_tokens(cls, tokens: list[str]) -> CaseSpec:
        def strip(token: str, prefix: str) -> str:
            if not token.startswith(prefix):
                raise CaseError(f"case id token {token!r}: expected it to start with {prefix!r}")
            return token[len(prefix):]

        world_size = int(strip(tokens[0], "w"))
        shard_sizes = tuple(int(s) for s in strip(tokens[1], "n").split("."))
        if len(shard_sizes) != world_size:
            raise CaseError(f"case id: w{world_size} disagrees with {len(shard_sizes)} shard sizes in {tokens[1]!r}")
        channels = int(strip(tokens[2], "c"))
        shape_token = tokens[3]
        for kind in ("ncdhw", "nchw", "ncl", "nc"):
            if shape_token.startswith(kind):
                rest = shape_token[len(kind):]
                spatial = tuple(int(s) for s in rest.split("x")) if rest else ()
                if len(spatial) != {"nc": 0, "ncl": 1, "nchw": 2, "ncdhw": 3}[kind]:
                    raise CaseError(f"case id token {shape_token!r}: {kind} needs "
                                    f"{ {'nc': 0, 'ncl': 1, 'nchw': 2, 'ncdhw': 3}[kind]} sizes")
                break
        else:
            raise CaseError(f"case id token {shape_token!r}: expected nc, ncl<L>, nchw<H>x<W> or ncdhw<D>x<H>x<W>")
        dtype_token, _, param_token = tokens[4].partition("p")
        dtype = _TOKEN_DTYPES[dtype_token]
        param_dtype = _TOKEN_DTYPES[param_token] if param_token else None
        momentum_text = strip(tokens[8], "m")
        kwargs: dict[str, Any] = dict(
            shard_sizes=shard_sizes,
            channels=channels,
            spatial=spatial,
            dtype=dtype,
            param_dtype=param_dtype,
            layout=_TOKEN_LAYOUTS[tokens[5]],
            affine={"aff": True, "noaff": False}[tokens[6]],
            track_running_stats={"trs": True, "notrs": False}[tokens[7]],
            momentum=None if momentum_text == "None" else float(momentum_text),
            eps=float(strip(tokens[9], "e")),
            steps=int(strip(tokens[10], "k")),
            eval_steps=int(strip(tokens[11], "ev")),
            data=tokens[12],
            loc=float(strip(tokens[13], "loc")),
            scale=float(strip(tokens[14], "sd")),
            seed=int(strip(tokens[15], "s")),
            device=tokens[16],
        )
        for token in tokens[17:]:
            if token == "ac":
                kwargs["autocast"] = True
            elif token.startswith("g"):
                kwargs["groups"] = tuple(tuple(int(r) for r in g.split(".")) for g in token[1:].split("+"))
            else:
                raise CaseError(f"case id token {token!r}: unknown (expected g<ranks> or ac)")
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseSpec:
        return cls(**data)

    def replace(self, **changes: Any) -> CaseSpec:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class OpSpec:
    """One op-level case: a single op against its numpy reference, on inputs drawn from ``seed``.

    ``shard_sizes`` only matters for the ops that see several shards' statistics (gather, backward_elemt);
    the others run on a shard of ``shard_sizes[0]`` samples.
    """

    op: str
    shard_sizes: tuple[int, ...]
    channels: int
    spatial: tuple[int, ...] = ()
    dtype: str = "float32"
    layout: str = "contiguous"
    affine: bool = True
    eps: float = 1e-5
    momentum: float = 0.1
    loc: float = 0.0
    scale: float = 1.0
    seed: int = 0
    device: str = "cpu"
    tags: tuple[str, ...] = field(default=("ops",), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shard_sizes", tuple(self.shard_sizes))
        object.__setattr__(self, "spatial", tuple(self.spatial))
        object.__setattr__(self, "tags", tuple(self.tags))
        _check(self.op in OP_NAMES, "op", self.op, f"must be one of {OP_NAMES}")
        # Reuse CaseSpec's field rules for the fields the two share.
        CaseSpec(shard_sizes=self.shard_sizes, channels=self.channels, spatial=self.spatial, dtype=self.dtype,
                 layout=self.layout, affine=self.affine, eps=self.eps, momentum=self.momentum, loc=self.loc,
                 scale=self.scale, seed=self.seed, device=self.device)
        _check(self.shard_sizes[0] * math.prod(self.spatial) >= 1, "shard_sizes[0]", self.shard_sizes[0],
               "op cases need a non-empty first shard")

    @property
    def id(self) -> str:
        shape = _SHAPE_TOKENS[len(self.spatial)] + "x".join(str(s) for s in self.spatial)
        return "_".join([
            "op-" + self.op.replace("_", "-"),
            "n" + ".".join(str(s) for s in self.shard_sizes),
            f"c{self.channels}",
            shape,
            _DTYPE_TOKENS[self.dtype],
            _LAYOUT_TOKENS[self.layout],
            "aff" if self.affine else "noaff",
            "e" + _fmt_float(self.eps),
            "m" + _fmt_float(self.momentum),
            "loc" + _fmt_float(self.loc),
            "sd" + _fmt_float(self.scale),
            f"s{self.seed}",
            self.device,
        ])

    @classmethod
    def from_id(cls, case_id: str) -> OpSpec:
        tokens = case_id.split("_")
        if len(tokens) != 13 or not tokens[0].startswith("op-"):
            raise CaseError(f"op case id {case_id!r}: expected 13 '_'-separated tokens starting with 'op-'")
        try:
            shape_token = tokens[3]
            kind = next(k for k in ("ncdhw", "nchw", "ncl", "nc") if shape_token.startswith(k))
            rest = shape_token[len(kind):]
            return cls(
                op=tokens[0][3:].replace("-", "_"),
                shard_sizes=tuple(int(s) for s in tokens[1][1:].split(".")),
                channels=int(tokens[2][1:]),
                spatial=tuple(int(s) for s in rest.split("x")) if rest else (),
                dtype=_TOKEN_DTYPES[tokens[4]],
                layout=_TOKEN_LAYOUTS[tokens[5]],
                affine={"aff": True, "noaff": False}[tokens[6]],
                eps=float(tokens[7][1:]),
                momentum=float(tokens[8][1:]),
                loc=float(tokens[9][3:]),
                scale=float(tokens[10][2:]),
                seed=int(tokens[11][1:]),
                device=tokens[12],
            )
        except CaseError:
            raise
        except (ValueError, KeyError, StopIteration) as exc:
            raise CaseError(f"op case id {case_id!r}: cannot parse ({exc!r})") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpSpec:
        return cls(**data)


def parse_any_id(case_id: str) -> CaseSpec | OpSpec:
    """A module-level or op-level case from its id."""
    return OpSpec.from_id(case_id) if case_id.startswith("op-") else CaseSpec.from_id(case_id)
