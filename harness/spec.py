"""Case specifications: one frozen record per case, validated, with a stable readable id that parses back.

Three kinds (harness.kinds registers each with its catalogue and runner), each id a complete encoding of its spec
(``Spec.from_id(spec.id) == spec``), so any failing case can be rerun from its id alone:

- module (``CaseSpec``): one SyncBatchNorm layer on W ranks, K training steps then E eval steps::

      w3_n4.0.2_c5_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k3_ev1_normal_loc0_sd1_s7_cpu

  tokens: world size, samples per rank, channels, input shape kind and spatial sizes (``nchw3x2.5x4``: one size
  per rank when the ranks' spatial sizes differ), dtype (``f16pf32``: parameters in another dtype), layout,
  affine, track_running_stats, momentum (``mNone``: cumulative average), eps, training steps, eval steps, data
  distribution, its offset and spread, seed, device, then optional ``g0.1+2.3`` (process groups), ``ac``
  (autocast);
- op (``OpSpec``): one of the five kernels alone: ``op-batch-norm-stats_n3.2_c4_ncl5_f16_contig_aff_...``;
- model (``ModelSpec``): a small network under DDP: ``model_w2_n4.4_k3_float32_m0.1_s0_cpu`` (``_tf32``: TF32
  convolutions and matmuls allowed, CUDA only).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from reference.ops import OP_NAMES

from .errors import CaseError

__all__ = ["CaseSpec", "OpSpec", "ModelSpec", "DTYPES", "LAYOUTS", "DATA_KINDS", "DEVICES", "OP_NAMES",
           "check_field"]

DTYPES = ("float64", "float32", "float16", "bfloat16")
LAYOUTS = ("contiguous", "channels_last", "channels_last_3d")
DATA_KINDS = ("normal", "constant", "outliers", "halfconst")
DEVICES = ("cpu", "cuda")
_DTYPE_TOKENS = {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16"}
_LAYOUT_TOKENS = {"contiguous": "contig", "channels_last": "cl", "channels_last_3d": "cl3d"}
_SHAPE_KINDS = {"nc": 0, "ncl": 1, "nchw": 2, "ncdhw": 3}
_SHAPE_TOKENS = {rank: kind for kind, rank in _SHAPE_KINDS.items()}


def check_field(condition: bool, name: str, value: Any, rule: str) -> None:
    """Raise CaseError ``name=value: rule`` unless ``condition``."""
    if not condition:
        raise CaseError(f"{name}={value!r}: {rule}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    check_field(isinstance(value, int) and not isinstance(value, bool), name, value, "must be an int")
    check_field(value >= minimum, name, value, f"must be >= {minimum}")


def _fmt_float(value: float) -> str:
    short = f"{value:g}"
    return short if float(short) == value else repr(float(value))


def _reverse(table: dict[str, str], token: str, what: str) -> str:
    for name, spelled in table.items():
        if spelled == token:
            return name
    raise CaseError(f"case id token {token!r}: unknown {what} (expected one of {sorted(table.values())})")


def _strip(token: str, prefix: str) -> str:
    if not token.startswith(prefix):
        raise CaseError(f"case id token {token!r}: expected it to start with {prefix!r}")
    return token[len(prefix):]


def _shape_token(spatials: tuple[tuple[int, ...], ...]) -> str:
    return _SHAPE_TOKENS[len(spatials[0])] + ".".join("x".join(map(str, s)) for s in spatials)


def _parse_shape(token: str) -> tuple[tuple[int, ...], ...]:
    """``nchw3x2`` -> ((3, 2),); ``nchw3x2.5x4`` -> ((3, 2), (5, 4)) (one entry per rank)."""
    for kind in sorted(_SHAPE_KINDS, key=len, reverse=True):
        if token.startswith(kind):
            rest, rank = token[len(kind):], _SHAPE_KINDS[kind]
            spatials = tuple(tuple(int(s) for s in part.split("x")) if part else () for part in rest.split("."))
            if any(len(s) != rank for s in spatials):
                raise CaseError(f"case id token {token!r}: {kind} needs {rank} size(s) per entry")
            return spatials
    raise CaseError(f"case id token {token!r}: expected nc, ncl<L>, nchw<H>x<W> or ncdhw<D>x<H>x<W>")


def _bool_token(token: str, yes: str, no: str) -> bool:
    if token not in (yes, no):
        raise CaseError(f"case id token {token!r}: expected {yes!r} or {no!r}")
    return token == yes


def _parse(kind: str, case_id: str, build) -> Any:
    """Run ``build`` (which parses tokens), turning any low-level parse error into a CaseError naming the id."""
    try:
        return build()
    except CaseError as exc:
        raise CaseError(f"{kind} case id {case_id!r}: {exc}") from None
    except (ValueError, KeyError, IndexError) as exc:
        raise CaseError(f"{kind} case id {case_id!r}: cannot parse ({exc})") from None


class _Spec:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        return cls(**data)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class CaseSpec(_Spec):
    """One module-level case: W ranks, each with its own shard, running K training steps then E eval steps.

    ``shard_sizes[r]`` is rank r's batch size N_r; the input of rank r at step k is (N_r, channels, *spatial_r),
    drawn from ``seed`` (harness.data) so a rank builds its own shard and the reference rebuilds the same.
    ``spatial_r`` is ``rank_spatial[r]`` when the ranks' spatial sizes differ (detection training with per-GPU
    image sizes), else ``spatial``.
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
    rank_spatial: tuple[tuple[int, ...], ...] | None = None  # per rank; None: every rank has ``spatial``
    tags: tuple[str, ...] = field(default=(), compare=False)  # feature areas, for reports; not in the id

    def __post_init__(self) -> None:
        object.__setattr__(self, "shard_sizes", tuple(self.shard_sizes))
        object.__setattr__(self, "spatial", tuple(self.spatial))
        if self.groups is not None:
            object.__setattr__(self, "groups", tuple(tuple(g) for g in self.groups))
        object.__setattr__(self, "tags", tuple(self.tags))
        if self.param_dtype == self.dtype:
            object.__setattr__(self, "param_dtype", None)  # one spelling per case, so ids round-trip
        if self.rank_spatial is not None:
            rank_spatial = tuple(tuple(s) for s in self.rank_spatial)
            check_field(len(rank_spatial) == len(self.shard_sizes), "rank_spatial", self.rank_spatial,
                        f"needs one spatial shape per rank ({len(self.shard_sizes)})")
            check_field(self.spatial in ((), rank_spatial[0]), "spatial", self.spatial,
                        "must be rank_spatial[0] (or left out) when rank_spatial is given")
            object.__setattr__(self, "spatial", rank_spatial[0])
            same = all(s == rank_spatial[0] for s in rank_spatial)
            object.__setattr__(self, "rank_spatial", None if same else rank_spatial)
        self.validate()

    def validate(self) -> None:
        check_field(len(self.shard_sizes) >= 1, "shard_sizes", self.shard_sizes, "needs at least one rank")
        for rank, size in enumerate(self.shard_sizes):
            _check_int(f"shard_sizes[{rank}]", size, 0)
        _check_int("channels", self.channels, 1)
        for rank, spatial in enumerate(self.rank_spatial or (self.spatial,)):
            name = "spatial" if self.rank_spatial is None else f"rank_spatial[{rank}]"
            check_field(len(spatial) <= 3, name, spatial, "at most 3 spatial dims (N,C,D,H,W)")
            check_field(len(spatial) == len(self.spatial), name, spatial, "every rank needs the same number of "
                        "spatial dims")
            for axis, size in enumerate(spatial):
                _check_int(f"{name}[{axis}]", size, 1)
        check_field(self.dtype in DTYPES, "dtype", self.dtype, f"must be one of {DTYPES}")
        check_field(self.param_dtype is None or self.param_dtype in DTYPES, "param_dtype", self.param_dtype,
                    f"must be None or one of {DTYPES}")
        check_field(self.layout in LAYOUTS, "layout", self.layout, f"must be one of {LAYOUTS}")
        if self.layout == "channels_last":
            check_field(len(self.spatial) == 2, "layout", self.layout,
                        "channels_last needs a 4-d input (2 spatial dims)")
        if self.layout == "channels_last_3d":
            check_field(len(self.spatial) == 3, "layout", self.layout,
                        "channels_last_3d needs a 5-d input (3 spatial dims)")
        if self.momentum is not None:
            check_field(isinstance(self.momentum, (int, float)) and 0.0 <= self.momentum <= 1.0, "momentum",
                        self.momentum, "must be None or a float in [0, 1]")
        check_field(isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps > 0, "eps",
                    self.eps, "must be a finite float > 0")
        _check_int("steps", self.steps, 0)
        _check_int("eval_steps", self.eval_steps, 0)
        check_field(self.steps + self.eval_steps >= 1, "steps", self.steps, "steps + eval_steps must be >= 1")
        check_field(self.data in DATA_KINDS, "data", self.data, f"must be one of {DATA_KINDS}")
        check_field(math.isfinite(self.loc), "loc", self.loc, "must be finite")
        check_field(math.isfinite(self.scale) and self.scale > 0, "scale", self.scale, "must be finite and > 0")
        _check_int("seed", self.seed, 0)
        check_field(self.device in DEVICES, "device", self.device, f"must be one of {DEVICES}")
        if self.groups is not None:
            members = sorted(r for g in self.groups for r in g)
            check_field(members == list(range(self.world_size)), "groups", self.groups,
                        f"must partition the ranks 0..{self.world_size - 1}, each rank in exactly one group")
            check_field(all(len(g) >= 1 for g in self.groups), "groups", self.groups, "groups must not be empty")
        if self.device == "cpu":
            check_field(not self.autocast, "autocast", self.autocast, "autocast cases need device='cuda'")

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

    def spatial_of(self, rank: int) -> tuple[int, ...]:
        return self.rank_spatial[rank] if self.rank_spatial is not None else self.spatial

    def input_shape(self, rank: int) -> tuple[int, ...]:
        return (self.shard_sizes[rank], self.channels, *self.spatial_of(rank))

    def phase_name(self, phase: int) -> str:
        """train0, train1, ... for the training steps, then eval0, eval1, ..."""
        return f"train{phase}" if phase < self.steps else f"eval{phase - self.steps}"

    def rank_count(self, rank: int) -> int:
        """Rank ``rank``'s elements per channel: N_r·prod(spatial_r)."""
        return self.shard_sizes[rank] * math.prod(self.spatial_of(rank))

    # -- id -----------------------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        dtype = _DTYPE_TOKENS[self.dtype] + (f"p{_DTYPE_TOKENS[self.param_dtype]}" if self.param_dtype else "")
        tokens = [
            f"w{self.world_size}", "n" + ".".join(map(str, self.shard_sizes)), f"c{self.channels}",
            _shape_token(self.rank_spatial or (self.spatial,)), dtype, _LAYOUT_TOKENS[self.layout],
            "aff" if self.affine else "noaff", "trs" if self.track_running_stats else "notrs",
            "mNone" if self.momentum is None else "m" + _fmt_float(self.momentum), "e" + _fmt_float(self.eps),
            f"k{self.steps}", f"ev{self.eval_steps}", self.data, "loc" + _fmt_float(self.loc),
            "sd" + _fmt_float(self.scale), f"s{self.seed}", self.device,
        ]
        if self.groups is not None:
            tokens.append("g" + "+".join(".".join(map(str, g)) for g in self.groups))
        if self.autocast:
            tokens.append("ac")
        return "_".join(tokens)

    @classmethod
    def from_id(cls, case_id: str) -> CaseSpec:
        """Parse an id written by ``CaseSpec.id``; a malformed id raises CaseError naming the bad token."""
        tokens = case_id.split("_")
        if len(tokens) < 17:
            raise CaseError(f"module case id {case_id!r}: expected at least 17 '_'-separated tokens, "
                            f"got {len(tokens)}")
        return _parse("module", case_id, lambda: cls._from_tokens(tokens))

    @classmethod
    def _from_tokens(cls, tokens: list[str]) -> CaseSpec:
        world_size = int(_strip(tokens[0], "w"))
        shard_sizes = tuple(int(s) for s in _strip(tokens[1], "n").split("."))
        if len(shard_sizes) != world_size:
            raise CaseError(f"w{world_size} disagrees with {len(shard_sizes)} shard sizes in {tokens[1]!r}")
        spatials = _parse_shape(tokens[3])
        if len(spatials) not in (1, world_size):
            raise CaseError(f"shape token {tokens[3]!r}: one spatial shape, or one per rank ({world_size})")
        dtype_token, _, param_token = tokens[4].partition("p")
        momentum = _strip(tokens[8], "m")
        kwargs: dict[str, Any] = dict(
            shard_sizes=shard_sizes, channels=int(_strip(tokens[2], "c")), spatial=spatials[0],
            rank_spatial=spatials if len(spatials) > 1 else None,
            dtype=_reverse(_DTYPE_TOKENS, dtype_token, "dtype"),
            param_dtype=_reverse(_DTYPE_TOKENS, param_token, "dtype") if param_token else None,
            layout=_reverse(_LAYOUT_TOKENS, tokens[5], "layout"), affine=_bool_token(tokens[6], "aff", "noaff"),
            track_running_stats=_bool_token(tokens[7], "trs", "notrs"),
            momentum=None if momentum == "None" else float(momentum), eps=float(_strip(tokens[9], "e")),
            steps=int(_strip(tokens[10], "k")), eval_steps=int(_strip(tokens[11], "ev")), data=tokens[12],
            loc=float(_strip(tokens[13], "loc")), scale=float(_strip(tokens[14], "sd")),
            seed=int(_strip(tokens[15], "s")), device=tokens[16],
        )
        for token in tokens[17:]:
            if token == "ac":
                kwargs["autocast"] = True
            elif token.startswith("g"):
                kwargs["groups"] = tuple(tuple(int(r) for r in g.split(".")) for g in token[1:].split("+"))
            else:
                raise CaseError(f"case id token {token!r}: unknown (expected g<ranks> or ac)")
        return cls(**kwargs)


@dataclass(frozen=True)
class OpSpec(_Spec):
    """One op-level case: a single op against its numpy reference, on inputs drawn from ``seed``.

    ``shard_sizes`` only matters for the ops that see several shards' statistics (gather, backward_elemt); the
    others run on a shard of ``shard_sizes[0]`` samples.
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
        check_field(self.op in OP_NAMES, "op", self.op, f"must be one of {OP_NAMES}")
        # The fields shared with CaseSpec obey CaseSpec's rules.
        CaseSpec(shard_sizes=self.shard_sizes, channels=self.channels, spatial=self.spatial, dtype=self.dtype,
                 layout=self.layout, affine=self.affine, eps=self.eps, momentum=self.momentum, loc=self.loc,
                 scale=self.scale, seed=self.seed, device=self.device)
        check_field(self.shard_sizes[0] * math.prod(self.spatial) >= 1, "shard_sizes[0]", self.shard_sizes[0],
                    "op cases need a non-empty first shard")

    @property
    def world_size(self) -> int:
        return 1  # the op runs in one process; the other shards only feed its statistics

    def input_shape(self, rank: int) -> tuple[int, ...]:
        return (self.shard_sizes[rank], self.channels, *self.spatial)

    @property
    def id(self) -> str:
        return "_".join([
            "op-" + self.op.replace("_", "-"), "n" + ".".join(map(str, self.shard_sizes)), f"c{self.channels}",
            _shape_token((self.spatial,)), _DTYPE_TOKENS[self.dtype], _LAYOUT_TOKENS[self.layout],
            "aff" if self.affine else "noaff", "e" + _fmt_float(self.eps), "m" + _fmt_float(self.momentum),
            "loc" + _fmt_float(self.loc), "sd" + _fmt_float(self.scale), f"s{self.seed}", self.device,
        ])

    @classmethod
    def from_id(cls, case_id: str) -> OpSpec:
        tokens = case_id.split("_")
        if len(tokens) != 13 or not tokens[0].startswith("op-"):
            raise CaseError(f"op case id {case_id!r}: expected 13 '_'-separated tokens starting with 'op-'")
        return _parse("op", case_id, lambda: cls(
            op=tokens[0][3:].replace("-", "_"), shard_sizes=tuple(int(s) for s in _strip(tokens[1], "n").split(".")),
            channels=int(_strip(tokens[2], "c")), spatial=_parse_shape(tokens[3])[0],
            dtype=_reverse(_DTYPE_TOKENS, tokens[4], "dtype"), layout=_reverse(_LAYOUT_TOKENS, tokens[5], "layout"),
            affine=_bool_token(tokens[6], "aff", "noaff"), eps=float(_strip(tokens[7], "e")),
            momentum=float(_strip(tokens[8], "m")), loc=float(_strip(tokens[9], "loc")),
            scale=float(_strip(tokens[10], "sd")), seed=int(_strip(tokens[11], "s")), device=tokens[12]))


@dataclass(frozen=True)
class ModelSpec(_Spec):
    """A network with BatchNorm1d/2d/3d converted to the SUT and trained ``steps`` SGD steps under DDP:
    ``shard_sizes[r]`` samples on rank r, ranks computing in ``dtype`` on ``device``. ``tf32``: convolutions and
    matmuls may use TF32 (PyTorch's default for cuDNN convolutions on Ampere and later); off by default."""

    shard_sizes: tuple[int, ...]
    steps: int = 3
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0
    momentum: float | None = 0.1
    tf32: bool = False
    tags: tuple[str, ...] = field(default=("models",), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shard_sizes", tuple(self.shard_sizes))
        object.__setattr__(self, "tags", tuple(self.tags))
        check_field(len(self.shard_sizes) >= 1, "shard_sizes", self.shard_sizes, "needs at least one rank")
        for rank, size in enumerate(self.shard_sizes):
            _check_int(f"shard_sizes[{rank}]", size, 0)
        check_field(sum(self.shard_sizes) >= 2, "shard_sizes", self.shard_sizes, "needs 2 samples or more")
        _check_int("steps", self.steps, 1)
        check_field(self.dtype in ("float32", "float64"), "dtype", self.dtype, "must be float32 or float64")
        check_field(self.device in DEVICES, "device", self.device, f"must be one of {DEVICES}")
        _check_int("seed", self.seed, 0)
        if self.momentum is not None:
            check_field(0.0 <= self.momentum <= 1.0, "momentum", self.momentum, "must be None or in [0, 1]")
        if self.tf32:
            check_field(self.device == "cuda" and self.dtype == "float32", "tf32", self.tf32,
                        "TF32 cases need device='cuda' and dtype='float32'")

    @property
    def world_size(self) -> int:
        return len(self.shard_sizes)

    @property
    def id(self) -> str:
        momentum = "mNone" if self.momentum is None else "m" + _fmt_float(self.momentum)
        return "_".join(["model", f"w{self.world_size}", "n" + ".".join(map(str, self.shard_sizes)), f"k{self.steps}",
                         self.dtype, momentum, f"s{self.seed}", self.device] + (["tf32"] if self.tf32 else []))

    @classmethod
    def from_id(cls, case_id: str) -> ModelSpec:
        tokens = case_id.split("_")
        if len(tokens) not in (8, 9) or tokens[0] != "model" or tokens[8:] not in ([], ["tf32"]):
            raise CaseError(f"model case id {case_id!r}: expected model_w<W>_n<sizes>_k<steps>_<dtype>_m<momentum>"
                            f"_s<seed>_<device>[_tf32]")

        def build() -> ModelSpec:
            world = int(_strip(tokens[1], "w"))
            sizes = tuple(int(s) for s in _strip(tokens[2], "n").split("."))
            if len(sizes) != world:
                raise CaseError(f"w{world} disagrees with {len(sizes)} shard sizes in {tokens[2]!r}")
            momentum = _strip(tokens[5], "m")
            return cls(shard_sizes=sizes, steps=int(_strip(tokens[3], "k")), dtype=tokens[4],
                       momentum=None if momentum == "None" else float(momentum), seed=int(_strip(tokens[6], "s")),
                       device=tokens[7], tf32=len(tokens) == 9)

        return _parse("model", case_id, build)
