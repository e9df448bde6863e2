"""Case specifications: one frozen record per case, validated, with a stable readable id that parses back.

Three kinds (harness.kinds registers each with its catalogue and runner), each id a complete encoding of its spec
(``Spec.from_id(spec.id) == spec``), so any failing case can be rerun from its id alone:

- module (``ModuleSpec``): one SyncBatchNorm layer on W ranks, K training steps then E eval steps::

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
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from harness.reference.ops import OP_NAMES

from .errors import CaseError

__all__ = ["ModuleSpec", "OpSpec", "ModelSpec", "Token", "DTYPES", "LAYOUTS", "DATA_KINDS", "DEVICES", "OP_NAMES",
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


@dataclass(frozen=True)
class Token:
    """One '_'-separated part of a case id, written once: how it is printed from a spec (``write``: None leaves an
    optional token out) and which fields it sets when read back (``read``: a dict of field values; a key starting
    with '_' is a cross-check the spec's ``_check_tokens`` makes). A required token stands at its position; an
    optional one (``optional``: a regular expression it matches in full) may follow the required ones."""

    name: str  # what it encodes, for messages
    write: Callable[[Any], str | None]
    read: Callable[[str], dict[str, Any]]
    optional: str | None = None


def _field(name: str, prefix: str, field_name: str | None = None, *, show: Callable[[Any], str] = str,
           parse: Callable[[str], Any] = int) -> Token:
    """``<prefix><value>`` for one field (``k3``, ``s7``, ``e1e-05``)."""
    attr = field_name or name
    return Token(name, lambda spec: prefix + show(getattr(spec, attr)),
                 lambda token: {attr: _read_number(parse, _strip(token, prefix), token, name)})


def _read_number(parse: Callable[[str], Any], text: str, token: str, name: str) -> Any:
    try:
        return parse(text)
    except ValueError:
        kind = "a whole number" if parse is int else "a number"
        raise CaseError(f"case id token {token!r}: {name} must be {kind}, got {text!r}") from None


def _flag(name: str, attr: str, yes: str, no: str) -> Token:
    return Token(name, lambda spec: yes if getattr(spec, attr) else no,
                 lambda token: {attr: _bool_token(token, yes, no)})


def _choice(name: str, attr: str, table: dict[str, str]) -> Token:
    return Token(name, lambda spec: table[getattr(spec, attr)], lambda token: {attr: _reverse(table, token, name)})


def _sizes(text: str, token: str) -> tuple[int, ...]:
    return tuple(_read_number(int, part, token, "a shard size") for part in text.split("."))


def _momentum_token(spec: Any) -> str:
    return "mNone" if spec.momentum is None else "m" + _fmt_float(spec.momentum)


def _read_momentum(token: str) -> dict[str, Any]:
    text = _strip(token, "m")
    return {"momentum": None if text == "None" else _read_number(float, text, token, "momentum")}


def _read_id(cls: type, kind: str, case_id: str, tokens_table: tuple[Token, ...], fixed: dict[str, Any] | None = None
             ) -> Any:
    """A spec of ``cls`` from ``case_id`` through its token table: the required tokens in order, then optional ones
    (each at most once); CaseError naming the id and the bad token."""
    parts = case_id.split("_")
    required = [t for t in tokens_table if t.optional is None]
    optional = [t for t in tokens_table if t.optional is not None]
    shape = "_".join(t.name.replace(" ", "-") for t in required)
    try:
        if len(parts) < len(required):
            raise CaseError(f"expected {len(required)} '_'-separated tokens ({shape}"
                            + (", then optional " + ", ".join(t.name for t in optional) if optional else "")
                            + f"), got {len(parts)}")
        fields: dict[str, Any] = dict(fixed or {})
        for token, part in zip(required, parts):
            fields.update(token.read(part))
        seen: set[str] = set()
        for part in parts[len(required):]:
            match = next((t for t in optional if re.fullmatch(t.optional, part)), None)
            if match is None or match.name in seen:
                expected = ", ".join(f"{t.name} ({t.optional})" for t in optional) or "nothing"
                raise CaseError(f"case id token {part!r}: unknown or repeated (after the {len(required)} required "
                                f"tokens the id may have: {expected})")
            seen.add(match.name)
            fields.update(match.read(part))
        checks = {k: fields.pop(k) for k in list(fields) if k.startswith("_")}
        cls._check_tokens(fields, checks)
        return cls(**fields)
    except CaseError as exc:
        raise CaseError(f"{kind} case id {case_id!r}: {exc}") from None
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise CaseError(f"{kind} case id {case_id!r}: cannot parse ({exc})") from None


def _write_id(spec: Any, tokens_table: tuple[Token, ...]) -> str:
    return "_".join(text for text in (t.write(spec) for t in tokens_table) if text is not None)


class _Spec:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        return cls(**data)

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    @classmethod
    def _check_tokens(cls, fields: dict[str, Any], checks: dict[str, Any]) -> None:
        """Cross-checks between tokens of an id being read (e.g. the world size against the shard sizes)."""
        world = checks.get("_world")
        if world is not None and len(fields["shard_sizes"]) != world:
            raise CaseError(f"w{world} disagrees with {len(fields['shard_sizes'])} shard sizes")

    @property
    def id(self) -> str:
        return _write_id(self, self.TOKENS)  # type: ignore[attr-defined]

    @classmethod
    def from_id(cls, case_id: str):
        """Parse an id written by ``id``; a malformed id raises CaseError naming the bad token."""
        return _read_id(cls, cls.KIND, case_id, cls.TOKENS)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class ModuleSpec(_Spec):
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

    @classmethod
    def _check_tokens(cls, fields: dict[str, Any], checks: dict[str, Any]) -> None:
        super()._check_tokens(fields, checks)
        world, count = len(fields["shard_sizes"]), checks.get("_spatial_count", 1)
        if count not in (1, world):
            raise CaseError(f"shape token: one spatial shape, or one per rank ({world}), got {count}")

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


def _world_token() -> Token:
    return Token("world size", lambda spec: f"w{spec.world_size}",
                 lambda token: {"_world": _read_number(int, _strip(token, "w"), token, "world size")})


def _shard_token() -> Token:
    return Token("shard sizes", lambda spec: "n" + ".".join(map(str, spec.shard_sizes)),
                 lambda token: {"shard_sizes": _sizes(_strip(token, "n"), token)})


def _read_spatials(token: str) -> dict[str, Any]:
    spatials = _parse_shape(token)
    return {"spatial": spatials[0], "rank_spatial": spatials if len(spatials) > 1 else None,
            "_spatial_count": len(spatials)}


def _dtype_token(spec: Any) -> str:
    return _DTYPE_TOKENS[spec.dtype] + (f"p{_DTYPE_TOKENS[spec.param_dtype]}" if spec.param_dtype else "")


def _read_dtype(token: str) -> dict[str, Any]:
    dtype, _, param = token.partition("p")
    return {"dtype": _reverse(_DTYPE_TOKENS, dtype, "dtype"),
            "param_dtype": _reverse(_DTYPE_TOKENS, param, "parameter dtype") if param else None}


def _groups_token(spec: Any) -> str | None:
    return None if spec.groups is None else "g" + "+".join(".".join(map(str, g)) for g in spec.groups)


def _read_groups(token: str) -> dict[str, Any]:
    return {"groups": tuple(tuple(int(r) for r in g.split(".")) for g in token[1:].split("+"))}


_TEXT = lambda attr: (lambda spec: getattr(spec, attr), lambda token: {attr: token})  # noqa: E731

# The module id, token by token: w3_n4.0.2_c5_nchw3x2_f32_contig_aff_trs_m0.1_e1e-05_k3_ev1_normal_loc0_sd1_s7_cpu,
# then the optional tokens.
ModuleSpec.KIND = "module"
ModuleSpec.TOKENS = (
    _world_token(), _shard_token(), _field("channels", "c"),
    Token("shape", lambda spec: _shape_token(spec.rank_spatial or (spec.spatial,)), _read_spatials),
    Token("dtype", _dtype_token, _read_dtype), _choice("layout", "layout", _LAYOUT_TOKENS),
    _flag("affine", "affine", "aff", "noaff"), _flag("running statistics", "track_running_stats", "trs", "notrs"),
    Token("momentum", _momentum_token, _read_momentum), _field("eps", "e", show=_fmt_float, parse=float),
    _field("training steps", "k", "steps"), _field("eval steps", "ev", "eval_steps"), Token("data", *_TEXT("data")),
    _field("offset", "loc", "loc", show=_fmt_float, parse=float),
    _field("spread", "sd", "scale", show=_fmt_float, parse=float), _field("seed", "s"),
    Token("device", *_TEXT("device")),
    Token("process groups", _groups_token, _read_groups, optional=r"g\d+(\.\d+)*(\+\d+(\.\d+)*)*"),
    Token("autocast", lambda spec: "ac" if spec.autocast else None, lambda token: {"autocast": True},
          optional="ac"),
)


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
        # The fields shared with ModuleSpec obey ModuleSpec's rules.
        ModuleSpec(shard_sizes=self.shard_sizes, channels=self.channels, spatial=self.spatial, dtype=self.dtype,
                 layout=self.layout, affine=self.affine, eps=self.eps, momentum=self.momentum, loc=self.loc,
                 scale=self.scale, seed=self.seed, device=self.device)
        check_field(self.shard_sizes[0] * math.prod(self.spatial) >= 1, "shard_sizes[0]", self.shard_sizes[0],
                    "op cases need a non-empty first shard")

    @property
    def world_size(self) -> int:
        return 1  # the op runs in one process; the other shards only feed its statistics

    def input_shape(self, rank: int) -> tuple[int, ...]:
        return (self.shard_sizes[rank], self.channels, *self.spatial)


# The op id: op-batch-norm-stats_n3.2_c4_ncl5_f16_contig_aff_e1e-05_m0.1_loc0_sd1_s0_cpu.
OpSpec.KIND = "op"
OpSpec.TOKENS = (
    Token("op", lambda spec: "op-" + spec.op.replace("_", "-"),
          lambda token: {"op": _strip(token, "op-").replace("-", "_")}),
    _shard_token(), _field("channels", "c"),
    Token("shape", lambda spec: _shape_token((spec.spatial,)), lambda token: {"spatial": _parse_shape(token)[0]}),
    _choice("dtype", "dtype", _DTYPE_TOKENS), _choice("layout", "layout", _LAYOUT_TOKENS),
    _flag("affine", "affine", "aff", "noaff"), _field("eps", "e", show=_fmt_float, parse=float),
    _field("momentum", "m", show=_fmt_float, parse=float), _field("offset", "loc", "loc", show=_fmt_float, parse=float),
    _field("spread", "sd", "scale", show=_fmt_float, parse=float), _field("seed", "s"),
    Token("device", *_TEXT("device")),
)


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


def _read_literal(word: str) -> Callable[[str], dict[str, Any]]:
    def read(token: str) -> dict[str, Any]:
        if token != word:
            raise CaseError(f"case id token {token!r}: expected {word!r}")
        return {}

    return read


# The model id: model_w2_n4.4_k3_float32_m0.1_s0_cpu, then _tf32 (TF32 allowed, CUDA only).
ModelSpec.KIND = "model"
ModelSpec.TOKENS = (
    Token("kind", lambda spec: "model", _read_literal("model")), _world_token(), _shard_token(),
    _field("training steps", "k", "steps"), Token("dtype", *_TEXT("dtype")), Token("momentum", _momentum_token,
                                                                                  _read_momentum),
    _field("seed", "s"), Token("device", *_TEXT("device")),
    Token("TF32", lambda spec: "tf32" if spec.tf32 else None, lambda token: {"tf32": True}, optional="tf32"),
)
