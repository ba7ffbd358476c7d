"""Training configuration: a TOML file, then ``--set section.key=value`` overrides.

One dataclass per TOML table; unknown keys and wrong types are a ``ConfigError`` naming the
key, so a typo never silently trains the wrong recipe. Values left at ``None`` or ``"auto"``
are resolved from the model's architecture (AnyIR or ClusIR recipe) by ``resolve``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from anyrestore.errors import ConfigError

log = logging.getLogger("anyrestore")

LAYOUTS = ("paired", "synthetic", "three", "five", "cdd11")
#: ``train.compile``: "" (eager) or a ``torch.compile`` mode.
COMPILE_MODES = ("", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class DataConfig:
    """``[data]``: where images come from and how they are cut."""

    layout: str = "synthetic"
    root: str = ""
    #: Degradation kinds to train on (a list, or kind -> sampling weight for "synthetic");
    #: empty means every kind the layout offers.
    kinds: list[str] | dict[str, float] = field(default_factory=list)
    crop: int = 128
    flips: bool = True
    val_fraction: float = 0.15
    #: Seed of the validation split; not the run's seed, so that a run continuing another
    #: (a new seed, the same images) holds out the images that one never trained on.
    split_seed: int = 0
    #: Validation items scored each time (0 = the whole validation split).
    val_items: int = 64
    #: Repeat factor per degradation kind for "three"/"five" (ClusIR/AdaIR "data expansion"):
    #: true = the papers' ratios (noise 3, rain 120, blur 5, low_light 200, haze 1), a table
    #: overrides some of them, false repeats nothing.
    expansion: bool | dict[str, int] = True
    #: DataLoader worker processes per training process.
    workers: int = 2
    #: Synthesize degradations on the device batch instead of in the workers ("auto": on CUDA).
    degrade_on_device: bool | str = "auto"
    #: "synthetic": probability that a training crop of a kind without low light is first
    #: darkened (target too), so dark photos are not taken for under-exposed ones (0 = off).
    dark_scenes: float = 0.0
    #: "synthetic": probability that a training crop of a kind without haze is veiled in a light
    #: mist (target too), so misty photos are not taken for hazy ones (0 = off).
    misty_scenes: float = 0.0
    #: "synthetic": probability that a training crop of a kind without haze gets a high-key
    #: tone curve (target too), so pale, flat scenes are not taken for hazy ones (0 = off).
    pale_scenes: float = 0.0
    #: "synthetic": strength j of a random exposure (exp(U(-j, j))) and white-balance
    #: (exp(U(-j/2, j/2)) per channel) change of each training crop, target too (0 = off).
    color_jitter: float = 0.0
    #: Extra keyword arguments for ``anyrestore.data.build_dataset``.
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    """``[loss]``: the recipe, and weights that override it."""

    #: "auto" (by architecture), "anyir" (L1 + 0.1 Fourier), "clusir" (L1 + MS-SSIM + aux).
    recipe: str = "auto"
    l1: float | None = None
    fourier: float | None = None
    ms_ssim: float | None = None
    #: Scale on the model's own auxiliary losses (ClusIR orthogonality, load balance).
    aux: float | None = None
    #: ``torch.fft.rfft2`` normalisation of the Fourier term ("backward" as in AdaIR/MoCE-IR code).
    fourier_norm: str = "backward"


@dataclass
class OptimConfig:
    """``[optim]``: Adam(W) and gradient clipping."""

    name: str = "adam"
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0
    #: Max global gradient norm; 0 disables clipping.
    grad_clip: float = 0.0


@dataclass
class ScheduleConfig:
    """``[schedule]``: learning-rate shape over the whole run (fractions of total steps)."""

    #: "auto" (cosine for AnyIR, step for ClusIR), "cosine", "step" or "constant".
    kind: str = "auto"
    #: Linear warmup length as a fraction of the run.
    warmup: float | None = None
    #: Final learning rate of the cosine decay.
    min_lr: float = 0.0
    #: Fractions of the run where the "step" schedule multiplies the rate by ``gamma``.
    milestones: list[float] = field(default_factory=lambda: [0.5])
    gamma: float = 0.5


@dataclass
class TrainConfig:
    """``[train]``: how long, how big, what precision."""

    epochs: float = 1.0
    #: Total optimizer steps; overrides ``epochs`` when > 0.
    steps: int = 0
    #: Global batch size, split evenly over the processes of a distributed run.
    batch_size: int = 32
    #: Run each process's share of a batch as this many equal parts, one forward and backward
    #: each, and step once on their summed gradients: a batch that does not fit in memory at
    #: once (16 crops of 256 px on a 24 GB CPU machine). The gradient is the whole batch's
    #: except for what is computed across a batch: BatchNorm's statistics (AnyIR layout 2;
    #: not with ``freeze_batchnorm``) and ClusIR's routing losses then see one part at a time.
    accumulate: int = 1
    #: Keep every BatchNorm (AnyIR layout 2) on its recorded statistics: it normalises with
    #: the running mean and variance it was loaded with, which stay as they are, and only its
    #: scale and shift learn. A fine-tune from trained weights then computes what inference
    #: computes, whatever its batch, and ``accumulate`` gives exactly the whole batch's
    #: gradient. Off: the norms use each batch's (or part's) statistics, as in pre-training.
    freeze_batchnorm: bool = False
    #: "auto", "fp32", "bf16" or "fp16" (fp16 only on CUDA, with loss scaling). "auto" is
    #: the inference policy of anyrestore.compute: bf16 on GPUs that have it and on CPUs
    #: where it measures faster (AMX), fp32 elsewhere.
    precision: str = "auto"
    #: Channels-last features ("auto": yes, the fast layout on every CPU and GPU measured).
    channels_last: bool | str = "auto"
    #: EMA decay of the weights (e.g. 0.999); 0 disables EMA. Export writes EMA weights.
    ema_decay: float = 0.0
    #: torch intra-op threads per process; 0 keeps torch's default.
    threads: int = 0
    #: ``torch.compile`` the model's training pass in this mode ("default", "reduce-overhead",
    #: "max-autotune", "max-autotune-no-cudagraphs"); "" trains eager. The first step then
    #: takes minutes. It is for GPUs, where both models are bound by launching kernels; on
    #: the CPUs measured it gained 5% at most (docs/performance.md).
    compile: str = ""
    #: DDP's find_unused_parameters; "auto" turns it on for models with top-k routing (ClusIR).
    find_unused_parameters: bool | str = "auto"
    #: Start from these weights instead of a random initialisation: a .safetensors file or, as
    #: for ``--weights``, a weights name (e.g. "anyir_t-synthetic-v6", found wherever the run
    #: starts); optimizer and schedule start fresh.
    init_from: str = ""
    #: Parameter names (fnmatch patterns, e.g. "dafmm.*.amplitude.*") that keep their fresh
    #: initialisation instead of init_from's values: for layers whose meaning has changed.
    init_reset: list[str] = field(default_factory=list)
    #: Let init_from be another config of the same architecture (e.g. an older layout): only
    #: tensors whose name and shape match are copied, the rest keep their fresh values.
    init_partial: bool = False


@dataclass
class DistillConfig:
    """``[distill]``: also learn from a trained model (anyrestore.training.distill)."""

    #: The teacher: a .safetensors file or a weights name (any architecture); empty: none.
    teacher: str = ""
    #: Weight of the student's output against the teacher's (relative L1).
    output_weight: float = 1.0
    #: fnmatch patterns naming blocks both models have (e.g. "encoder*.*"); the outermost
    #: module a pattern matches is one block, its output matched against the teacher's.
    blocks: list[str] = field(default_factory=list)
    #: Weight of the mean block term (relative L1 per block).
    block_weight: float = 1.0
    #: Feed each student block the teacher's input to it and train the blocks alone, taking
    #: everything else from the teacher (the output and target terms are then not available).
    teacher_forcing: bool = False
    #: Weight of the recipe's loss against the clean photo ([loss]); 0 learns from the
    #: teacher alone.
    target_weight: float = 0.0
    #: Degradation kinds (``[data.kinds]`` names) whose target is the teacher's output
    #: instead of the clean photo.
    teacher_kinds: list[str] = field(default_factory=list)

    def matches_output(self) -> bool:
        """Whether the output term counts (with teacher forcing the student never runs end
        to end, so there is no output to match)."""
        return not self.teacher_forcing and self.output_weight > 0

    def matches_blocks(self) -> bool:
        """Whether the block term counts."""
        return bool(self.blocks) and self.block_weight > 0

    def teacher_kinds_phrase(self) -> str:
        """How logs and exported facts name the kinds whose target is the teacher's output."""
        return f"the teacher's output for {', '.join(self.teacher_kinds)}"


@dataclass
class LogConfig:
    """``[log]``: progress, metrics, validation and checkpoint cadence (in steps)."""

    every: int = 50
    progress: bool = True
    #: Steps between validations; 0 validates only at the end.
    val_every: int = 0
    #: Steps between resume checkpoints; 0 writes one only at the end (and on interrupt).
    ckpt_every: int = 1000
    #: Also write one when this many minutes have passed since the last (0: off), so a run
    #: that is killed outright (a machine taken back, a session ending) loses at most that.
    #: Wall time: a paused (SIGSTOP) run checkpoints at its first step after it goes on.
    ckpt_minutes: float = 30.0


@dataclass
class Config:
    """The whole training recipe."""

    model: str = ""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    out: str = "runs/train"
    seed: int = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return dump_toml(self.to_dict())

    def digest(self) -> str:
        """sha256 of the canonical TOML text, to name a recipe in checkpoint metadata: where
        a run was written and how it logged (``out``, ``log``) are not part of the recipe."""
        recipe = {k: v for k, v in self.to_dict().items() if k not in ("out", "log")}
        return hashlib.sha256(dump_toml(recipe).encode()).hexdigest()


# ----------------------------------------------------------------------------- loading


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    base: dict[str, Any] | None = None,
) -> Config:
    """Read ``path`` (or start from ``base``), apply ``key=value`` overrides, validate."""
    values: dict[str, Any] = {} if base is None else _deep_copy(base)
    if path is not None:
        values = _merge(values, read_toml(Path(path)))
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(values, key, value)
    return _build(Config, values, "")


def recorded_config(text: str) -> dict[str, Any]:
    """A run's recorded recipe (``last.pt``'s ``config_toml``) as values ``load_config`` takes,
    less the settings this version no longer has: a run saved by an older version (its
    ``data.plain_scenes``, say) still resumes and exports. What is left out is named."""
    values, dropped = known_values(text)
    if dropped:
        log.warning(
            "the run's recipe has settings this version no longer knows (%s); left out",
            ", ".join(dropped),
        )
    return values


def known_values(text: str) -> tuple[dict[str, Any], list[str]]:
    """A recorded recipe's values that this version knows, and the dotted names of the rest."""
    return _known(tomllib.loads(text), Config, "")


def _known(values: dict[str, Any], cls: type, prefix: str) -> tuple[dict[str, Any], list[str]]:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in values.items():
        if key not in names:
            dropped.append(prefix + key)
        elif dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            kept[key], more = _known(value, hints[key], f"{prefix}{key}.")
            dropped += more
        else:
            kept[key] = value
    return kept, dropped


def read_toml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's values, with ``extends = "other.toml"`` resolved.

    ``extends`` names a parent file (relative to this one); this file's values are merged over
    the parent's, table by table and key by key, so a later stage of a recipe lists only what it
    changes. Chains are allowed, cycles are an error.
    """
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    except UnicodeDecodeError:  # a checkpoint or an image given as the recipe
        raise ConfigError(f"{path}: not a TOML recipe (not UTF-8 text)") from None
    except OSError as exc:  # unreadable: permissions, a failing disk
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    parent = values.pop("extends", None)
    if parent is None:
        return values
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends must be a file name, got {parent!r}")
    parent_path = (path.parent / parent).resolve()
    chain = (*_seen, path.resolve())
    if not parent_path.is_file():
        raise ConfigError(f"{path}: extends {parent!r}, which is not a file")
    if parent_path in chain:
        raise ConfigError(f"{path}: extends {parent!r} makes a cycle")
    return _merge(read_toml(parent_path, chain), values)


def parse_override(item: str) -> tuple[str, Any]:
    """``"optim.lr=1e-4"`` -> ``("optim.lr", 1e-4)``; the value is read as TOML, else a string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare words: --set model=clusir_t, --set data.root=/data/x
    return key, value


def _set_dotted(values: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = values
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a table")
        node = child
    node[parts[-1]] = value


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _deep_copy(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in d.items()}


def _build(cls: type, values: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``values``, checking keys and types."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.')} must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        known = ", ".join(prefix + k for k in fields)
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r} (known: {known})")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")
        else:
            kwargs[name] = _check(value, hint, prefix + name)
    return cls(**kwargs)


def _check(value: Any, hint: Any, key: str) -> Any:
    """Return ``value`` coerced to ``hint`` (int -> float only), or raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = None  # the error of an item inside the right kind of container, if any
        for option in typing.get_args(hint):
            try:
                return _check(value, option, key)
            except ConfigError as exc:
                if not str(exc).startswith(f"config key {key!r}:"):
                    inner = exc  # e.g. 'data.expansion.rain': 1.5 is not an integer
        if inner is not None:
            raise inner
        raise ConfigError(f"config key {key!r}: {value!r} is not {_describe(hint)}")
    if hint is type(None):
        if value is None:
            return None
    elif hint is Any:
        return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is bool or hint is str:
        if isinstance(value, hint):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif origin is list:
        if isinstance(value, (list, tuple)):
            (item,) = typing.get_args(hint)
            return [_check(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            _, item = typing.get_args(hint)
            return {str(k): _check(v, item, f"{key}.{k}") for k, v in value.items()}
    raise ConfigError(f"config key {key!r}: {value!r} is not {_describe(hint)}")


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "unset"
    origin = typing.get_origin(hint)
    if origin is list:
        return "a list"
    if origin is dict:
        return "a table"
    return {bool: "true/false", str: "a string", int: "an integer", float: "a number"}.get(
        hint, str(hint)
    )


# ----------------------------------------------------------------------------- resolving


@dataclass(frozen=True)
class Recipe:
    """The concrete loss weights and schedule after ``"auto"`` values are resolved."""

    l1: float
    fourier: float
    ms_ssim: float
    aux: float
    schedule: str
    warmup: float

    def terms(self) -> dict[str, float]:
        """The weights of the summed loss terms, by ``RestorationLoss`` keyword, in log order."""
        return {"l1": self.l1, "fourier": self.fourier, "ms_ssim": self.ms_ssim}


#: The papers' recipes. AnyIR (App. A.2): L1 + Fourier, Adam 2e-4, cosine decay; the warmup
#: (10% of the run) follows the PromptIR code AnyIR builds on. ClusIR (Sec. 4.1): L1 + MS-SSIM,
#: rate halved after half the epochs; the paper gives no MS-SSIM weight, so the two are summed.
RECIPES = {
    "anyir": Recipe(l1=1.0, fourier=0.1, ms_ssim=0.0, aux=1.0, schedule="cosine", warmup=0.1),
    "clusir": Recipe(l1=1.0, fourier=0.0, ms_ssim=1.0, aux=1.0, schedule="step", warmup=0.0),
}


def resolve(config: Config, arch: str) -> Recipe:
    """Fill ``auto`` loss and schedule choices from the architecture's paper recipe."""
    name = config.loss.recipe
    if name == "auto":
        name = "clusir" if arch == "clusir" else "anyir"
    if name not in RECIPES:
        raise ConfigError(f"loss.recipe must be auto, {', '.join(RECIPES)}; got {name!r}")
    base = RECIPES[name]
    loss = config.loss
    kind = config.schedule.kind if config.schedule.kind != "auto" else base.schedule
    warmup = config.schedule.warmup if config.schedule.warmup is not None else base.warmup
    recipe = Recipe(
        l1=base.l1 if loss.l1 is None else loss.l1,
        fourier=base.fourier if loss.fourier is None else loss.fourier,
        ms_ssim=base.ms_ssim if loss.ms_ssim is None else loss.ms_ssim,
        aux=base.aux if loss.aux is None else loss.aux,
        schedule=kind,
        warmup=warmup,
    )
    terms = recipe.terms()
    if not any(terms.values()):
        raise ConfigError(f"loss: at least one of {', '.join(terms)} must have a non-zero weight")
    if not all(math.isfinite(w) and w >= 0 for w in (*terms.values(), recipe.aux)):
        raise ConfigError("loss weights must be finite numbers >= 0")
    return recipe


def validate(config: Config) -> None:
    """Check values that types alone cannot (ranges, choices, the model name)."""
    from anyrestore.models.registry import list_models

    if not config.model:
        raise ConfigError(
            "config key 'model' is required (one of: " + ", ".join(list_models()) + ")"
        )
    if config.model not in list_models():
        raise ConfigError(f"unknown model {config.model!r} (known: {', '.join(list_models())})")
    d, t, o, s, lg = config.data, config.train, config.optim, config.schedule, config.log
    checks = [
        (
            config.out.strip() != "",
            "out must name a run folder (an empty value: an unset variable?)",
        ),
        (d.layout in LAYOUTS, f"data.layout must be one of {', '.join(LAYOUTS)}"),
        (d.crop >= 8, "data.crop must be >= 8"),
        (0.0 <= d.val_fraction < 1.0, "data.val_fraction must be in [0, 1)"),
        (d.val_items >= 0, "data.val_items must be >= 0"),
        (d.workers >= 0, "data.workers must be >= 0"),
        (0.0 <= d.dark_scenes <= 1.0, "data.dark_scenes must be a probability in [0, 1]"),
        (0.0 <= d.misty_scenes <= 1.0, "data.misty_scenes must be a probability in [0, 1]"),
        (0.0 <= d.pale_scenes <= 1.0, "data.pale_scenes must be a probability in [0, 1]"),
        (0.0 <= d.color_jitter <= 1.0, "data.color_jitter must be in [0, 1]"),
        (
            isinstance(d.expansion, bool) or all(v >= 1 for v in d.expansion.values()),
            "data.expansion ratios must be >= 1",
        ),
        (
            d.degrade_on_device in (True, False, "auto"),
            'data.degrade_on_device must be true, false or "auto"',
        ),
        (
            config.loss.fourier_norm in ("backward", "ortho", "forward"),
            "loss.fourier_norm must be backward, ortho or forward",
        ),
        (o.name in ("adam", "adamw"), "optim.name must be adam or adamw"),
        (o.lr > 0 and math.isfinite(o.lr), "optim.lr must be > 0"),
        (
            len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
            "optim.betas must be two numbers in [0, 1)",
        ),
        (o.eps > 0 and math.isfinite(o.eps), "optim.eps must be > 0"),
        (
            o.weight_decay >= 0 and math.isfinite(o.weight_decay),
            "optim.weight_decay must be >= 0",
        ),
        (o.grad_clip >= 0, "optim.grad_clip must be >= 0"),
        (
            s.kind in ("auto", "cosine", "step", "constant"),
            "schedule.kind must be auto, cosine, step or constant",
        ),
        (s.warmup is None or 0 <= s.warmup < 1, "schedule.warmup must be in [0, 1)"),
        (all(0 < m < 1 for m in s.milestones), "schedule.milestones must be fractions in (0, 1)"),
        (0 < s.gamma <= 1, "schedule.gamma must be in (0, 1]"),
        (0 <= s.min_lr <= o.lr, "schedule.min_lr must be in [0, optim.lr]"),
        (t.epochs > 0 or t.steps > 0, "train.epochs or train.steps must be > 0"),
        (t.steps > 0 or math.isfinite(t.epochs), "train.epochs must be a finite number"),
        (t.steps >= 0, "train.steps must be >= 0"),
        (t.batch_size >= 1, "train.batch_size must be >= 1"),
        (t.accumulate >= 1, "train.accumulate must be >= 1"),
        (
            t.batch_size % t.accumulate == 0,
            "train.batch_size must be a multiple of train.accumulate",
        ),
        (
            t.precision in ("auto", "fp32", "bf16", "fp16"),
            "train.precision must be auto, fp32, bf16 or fp16",
        ),
        (
            t.channels_last in (True, False, "auto"),
            'train.channels_last must be true, false or "auto"',
        ),
        (0 <= t.ema_decay < 1, "train.ema_decay must be in [0, 1)"),
        (t.threads >= 0, "train.threads must be >= 0"),
        (
            t.compile in COMPILE_MODES,
            "train.compile must be empty (eager) or one of "
            + ", ".join(m for m in COMPILE_MODES if m),
        ),
        (
            t.find_unused_parameters in (True, False, "auto"),
            'train.find_unused_parameters must be true, false or "auto"',
        ),
        (lg.every >= 1, "log.every must be >= 1"),
        (lg.val_every >= 0 and lg.ckpt_every >= 0, "log.val_every and log.ckpt_every must be >= 0"),
        (lg.ckpt_minutes >= 0, "log.ckpt_minutes must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    _validate_distill(config.distill, list(config.data.kinds))
    if config.loss.recipe not in ("auto", *RECIPES):
        raise ConfigError(
            f"loss.recipe must be auto, {', '.join(RECIPES)}; got {config.loss.recipe!r}"
        )


def _validate_distill(k: DistillConfig, kinds: list[str]) -> None:
    if not k.teacher:
        if k.teacher_kinds:
            raise ConfigError("distill.teacher_kinds needs distill.teacher")
        return
    if k.teacher_kinds:
        if not k.target_weight:
            raise ConfigError(
                "distill.teacher_kinds changes the target: it needs target_weight > 0"
            )
        from anyrestore.data.degradations import kind_key

        named = {kind_key(name) for name in kinds}  # any spelling: "L+H", "low_light+haze"
        unknown = [name for name in k.teacher_kinds if kind_key(name) not in named]
        if unknown:
            raise ConfigError(
                f"distill.teacher_kinds {unknown} are not kinds of [data.kinds] "
                f"({', '.join(kinds) or 'none named'})"
            )
    if not all(
        math.isfinite(w) and w >= 0 for w in (k.output_weight, k.block_weight, k.target_weight)
    ):
        raise ConfigError("distill weights must be finite numbers >= 0")
    if k.teacher_forcing:
        if not k.blocks:
            raise ConfigError("distill.teacher_forcing needs distill.blocks to name the blocks")
        if k.output_weight or k.target_weight:
            raise ConfigError(
                "distill.teacher_forcing trains the blocks alone: set distill.output_weight "
                "and distill.target_weight to 0"
            )
    used = k.output_weight + k.target_weight + (k.block_weight if k.blocks else 0.0)
    if not used:
        raise ConfigError("distill: every term has weight 0; nothing would be learned")


# ----------------------------------------------------------------------------- TOML output


def dump_toml(values: dict[str, Any]) -> str:
    """Write the config's plain values back as TOML (scalars first, then one table each)."""
    lines: list[str] = []
    _dump_table(values, [], lines)
    return "\n".join(lines).strip() + "\n"


def _dump_table(values: dict[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in values.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in values.items() if isinstance(v, dict)}
    if path:
        lines.append("")
        lines.append("[" + ".".join(path) + "]")
    for k, v in scalars.items():
        if v is None:
            continue  # TOML has no null: an absent key means "auto"
        lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in tables.items():
        _dump_table(v, [*path, _key(k)], lines)


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _value(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")
