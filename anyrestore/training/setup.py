"""Building a run before its first step: paths, device, precision, the model and its first
weights, and what a resume may change (the loop in ``loop`` runs the steps)."""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import platform
from pathlib import Path

import torch

from anyrestore.compute import choose_path, cuda_build_runs_here, cuda_kernels_missing
from anyrestore.errors import ConfigError, DeviceError, UsageError
from anyrestore.files import missing_folders, remove_empty
from anyrestore.models.layers.pointwise import pointwise_kernel
from anyrestore.models.registry import create_model
from anyrestore.training.config import Config, known_values, load_config, resolve, tomllib
from anyrestore.weights.checkpoint import load_checkpoint
from anyrestore.weights.resolve import resolve_weights


def absolute_paths(config: Config) -> Config:
    """``config`` with ``data.root`` and a file named by ``train.init_from`` or
    ``distill.teacher`` made absolute (a weights name stays a name).

    The run's config.toml is what a resume without ``--config`` and an export read: relative
    paths there meant another dataset, or none, from another folder, and an export that lost
    the starting checkpoint's lineage.
    """

    def absolute(value: str, file_only: bool) -> str:
        path = Path(value).expanduser()  # "~/photos" too: nothing later expands it
        if not value or Path(value).is_absolute() or (file_only and not path.is_file()):
            return value  # an absolute path as written: what a resume compares with
        return os.path.abspath(path)

    config = copy.deepcopy(config)
    config.data.root = absolute(config.data.root, file_only=False)
    config.train.init_from = absolute(config.train.init_from, file_only=True)
    config.distill.teacher = absolute(config.distill.teacher, file_only=True)
    return config


def same_run(out: Path, resume: str | Path) -> bool:
    """Whether ``out`` is the folder of the run ``resume`` names (the folder or a file in it)."""
    try:
        source = Path(resume).resolve()  # a link to a run's last.pt is that run
        folder = source if source.is_dir() else source.parent
        return folder == out.resolve()
    except OSError:
        return False


def load_scaler(scaler: torch.amp.GradScaler, saved: dict) -> None:
    """The loss scaler's saved state, if it had one: a bf16 or fp32 run saves an empty one,
    which an fp16 scaler (a run resumed on a GPU without bf16) refuses; it starts afresh."""
    if saved:
        scaler.load_state_dict(saved)


#: Settings whose saved state a resume restores over the config (the optimizer, scheduler and
#: EMA), so a new value would be recorded in config.toml but never used.
_KEPT_ON_RESUME = {"optim": None, "schedule": None, "train": ("ema_decay",)}
#: Of those, settings the loop reads afresh each step (the gradient clip is no saved state).
_FREE_ON_RESUME = {"optim.grad_clip"}


def check_resumable(config: Config, state: dict, resume: str | Path | None, arch: str) -> None:
    """Refuse new optimizer, schedule or EMA settings on resume: the optimizer's, scheduler's
    and EMA's saved state would override them while config.toml recorded them as used."""
    if "config_toml" not in state:
        return
    recorded = known_values(state["config_toml"])[0]  # less settings since removed
    # A setting newer than the run counts as its default, which is what the run had.
    then = load_config(base=recorded)
    before = tomllib.loads(then.to_toml())
    now = tomllib.loads(config.to_toml())  # both as TOML reads them: lists, not tuples
    changed = [
        f"{section}.{key}"
        for section, only in _KEPT_ON_RESUME.items()
        for key in sorted(only or set(before.get(section, {})) | set(now.get(section, {})))
        if before.get(section, {}).get(key) != now.get(section, {}).get(key)
        and f"{section}.{key}" not in _FREE_ON_RESUME
    ]
    # An "auto" schedule is the loss recipe's: a new recipe would reshape the learning rate.
    old, new = resolve(then, arch), resolve(config, arch)
    if (old.schedule, old.warmup) != (new.schedule, new.warmup) and not changed:
        changed.append("loss.recipe (it sets the schedule left at auto)")
    if changed:
        raise ConfigError(
            f"{', '.join(changed)} cannot change when resuming (the run's optimizer, "
            f"schedule and EMA state carry on); start a new run from its weights instead: "
            f"anyrestore train export {resume} -o W.safetensors, then --set "
            f"train.init_from=W.safetensors"
        )
    # The network the weights were built as, and where they started: a new value that keeps
    # the tensors' shapes (ClusIR's top_experts, say) would load and silently change the run,
    # and an export would claim it for all of it.
    rebuilt = [
        key
        for key in _FIXED_ON_RESUME
        if _dotted(recorded, key) is not _MISSING  # a setting newer than the run: not judged
        and _dotted(recorded, key) != _dotted(now, key)
    ]
    if rebuilt:
        raise ConfigError(
            f"{', '.join(rebuilt)} cannot change when resuming (the run's weights were built "
            f"and started that way); start a new run from its weights instead: anyrestore "
            f"train export {resume} -o W.safetensors, then --set train.init_from=W.safetensors"
        )


#: Settings that make the network and its start, fixed for a run's whole length.
_FIXED_ON_RESUME = (
    "model",
    "model_overrides",
    "train.init_from",
    "train.init_reset",
    "train.init_partial",
)


_MISSING = object()


def _dotted(values: object, key: str) -> object:
    for part in key.split("."):
        if not isinstance(values, dict) or part not in values:
            return _MISSING
        values = values[part]
    return values


def check_writable(out: Path) -> None:
    """Try a file in the run folder, before minutes go into the model and data.

    Folders made for the try are removed again: the run makes them when it has something to
    put in them, so a run that fails to start (no data, a bad setting) leaves none behind.
    """
    import tempfile

    made = missing_folders(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write the run folder {out}: {exc.strerror or exc}") from None
    finally:
        remove_empty(made)


def freeze_batch_norms(model: torch.nn.Module) -> int:
    """Put ``model``'s BatchNorm layers in eval mode (``train.freeze_batchnorm``); how many.

    In eval mode a norm uses, and leaves alone, its running statistics; its scale and shift
    still learn. ``Module.train()`` undoes this, so the loop calls it again after validation.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.eval()
    return len(norms)


def build_model(config: Config) -> torch.nn.Module:
    try:
        return create_model(config.model, **config.model_overrides)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model_overrides for {config.model}: {exc}") from None


def load_initial_weights(
    model: torch.nn.Module,
    ref: str,
    reset: list[str] | tuple[str, ...] = (),
    partial: bool = False,
) -> list[str]:
    """Copy weights from a checkpoint (a file or a weights name) of the same architecture and
    config.

    Parameters matching a ``reset`` pattern keep the model's fresh initialisation. With
    ``partial`` the checkpoint may hold another config of the architecture: tensors whose name
    and shape match are copied and the rest stay fresh. Returns the names copied.
    """
    source = load_checkpoint(resolve_weights(ref), expect_arch=model.arch)
    same = json.dumps(source.config_dict(), sort_keys=True) == json.dumps(
        model.config_dict(), sort_keys=True
    )
    if not same and not partial:
        raise ConfigError(
            f"train.init_from {ref} has another {model.arch} config than the model "
            "(train.init_partial = true copies the tensors that still fit)"
        )
    state, fresh = source.state_dict(), model.state_dict()
    for pattern in reset:
        matched = [key for key in fresh if fnmatch.fnmatchcase(key, pattern)]
        if not matched:
            raise ConfigError(f"train.init_reset pattern {pattern!r} matches no parameter")
        for key in matched:
            state.pop(key, None)
    carried = [k for k in fresh if k in state and state[k].shape == fresh[k].shape]
    fresh.update((key, state[key]) for key in carried)
    model.load_state_dict(fresh)
    return carried


def pick_device(name: str) -> torch.device:
    """The training device: ``auto`` is CUDA when it is there and this torch build has kernels
    for it (else the CPU, as for inference); a GPU named without kernels is a DeviceError."""
    if name == "auto":
        usable = torch.cuda.is_available() and cuda_build_runs_here()
        return torch.device("cuda" if usable else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was requested but no GPU is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DeviceError(
            f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"training runs on cpu or cuda, not {name!r}")
    missing = cuda_kernels_missing(device.index or 0) if device.type == "cuda" else None
    if missing:  # it would fail at the first kernel, an internal error
        raise DeviceError(f"{missing}: install a torch build for it, or train on device cpu")
    return device


def pick_precision(
    config: Config, device: torch.device, model: torch.nn.Module
) -> tuple[str, bool, str]:
    """Precision, channels-last and why: ``anyrestore.compute``'s policy, as for inference.

    On CUDA ``auto`` is bf16 where supported, else fp16 (with loss scaling).
    """
    precision = config.train.precision
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision = fp16 needs a GPU; use bf16 or fp32 on CPU")
    try:
        path = choose_path(
            device,
            precision,
            model=model if device.type == "cpu" else None,
            kernel_scope=pointwise_kernel,
        )
    except UsageError as exc:
        raise ConfigError(f"train.precision: {exc}") from None
    channels_last = config.train.channels_last
    if channels_last == "auto":
        channels_last = path.channels_last
    return path.precision, bool(channels_last), path.reason


def find_unused(config: Config, model: torch.nn.Module) -> bool:
    """Whether DDP must look for parameters without a gradient (``auto``): ClusIR routes each
    sample to its top-k experts, and a distillation that learns only matched blocks leaves
    the layers after the last one untouched (teacher forcing freezes those instead)."""
    value = config.train.find_unused_parameters
    if value != "auto":
        return bool(value)
    k = config.distill
    blocks_only = bool(k.teacher) and not (k.output_weight or k.target_weight or k.teacher_forcing)
    return model.arch == "clusir" or blocks_only


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"
