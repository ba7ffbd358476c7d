"""The training loop, top to bottom: set up, (resume,) step, log, validate, checkpoint.

Follows AnyIR App. A.2 and ClusIR Sec. 4.1 (see ``config.RECIPES``). The same code runs as
one process or as one of N under ``torchrun`` (see ``distributed``).
"""

from __future__ import annotations

import hashlib
import math
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import Tensor

from anyrestore.compute import (
    autocast,
    is_out_of_memory,
    reuse_freed_memory,
    set_threads,
    training_pointwise,
)
from anyrestore.errors import (
    STOP_SIGNALS,
    ConfigError,
    DataError,
    DeviceError,
    Interrupted,
    TrainingDiverged,
    forget_hung_up_terminal,
)
from anyrestore.files import atomic_write, remove_stale_temps
from anyrestore.models.layers.pointwise import pointwise_kernel
from anyrestore.models.registry import get_spec
from anyrestore.training import distributed
from anyrestore.training.batches import (
    ResumableSampler,
    SeededItems,
    build_data,
    close_loader,
    degrade_on_device,
    item_seed,
    make_loader,
    start_batches,
    to_device,
)
from anyrestore.training.config import Config, resolve, validate
from anyrestore.training.distill import Distiller, describe_terms, teacher_targets
from anyrestore.training.ema import EMA
from anyrestore.training.evaluate import evaluate
from anyrestore.training.export import start_lineage
from anyrestore.training.losses import RestorationLoss
from anyrestore.training.optim import build_optimizer, build_scheduler
from anyrestore.training.report import Reporter
from anyrestore.training.setup import (
    absolute_paths,
    build_model,
    check_resumable,
    check_writable,
    device_name,
    find_unused,
    freeze_batch_norms,
    load_initial_weights,
    load_scaler,
    pick_device,
    pick_precision,
    same_run,
)
from anyrestore.training.state import load_state, rng_state, save_state, set_rng_state


@dataclass
class Progress:
    """Where the run is; saved in every resume checkpoint."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    samples: int = 0
    wall_time: float = 0.0
    val_psnr: float | None = None
    kinds: list[str] = field(default_factory=list)
    #: The run ended: its last step was validated and saved (a resume has nothing to do).
    finished: bool = False


@dataclass
class TrainResult:
    out: Path
    checkpoint: Path
    step: int
    total_steps: int
    val_psnr: float | None
    finished: bool
    #: False on ranks other than 0 of a distributed run (they print nothing).
    is_main: bool = True


def train(
    config: Config,
    *,
    resume: str | Path | None = None,
    stop_at: int = 0,
    console: Console | None = None,
) -> TrainResult:
    """Train ``config`` (optionally continuing ``resume``); returns where things were written.

    ``stop_at`` ends this invocation after that many total steps with a resume checkpoint,
    leaving the schedule of the full run unchanged.
    """
    validate(config)
    config = absolute_paths(config)
    device = pick_device(config.device)
    dist = distributed.setup(device.type)
    try:
        if device.type == "cuda" and dist.enabled:
            device = torch.device("cuda", dist.local_rank)
        return _run(config, device, dist, resume, stop_at, console)
    except RuntimeError as exc:  # torch's OutOfMemoryError is one too
        if not is_out_of_memory(exc):
            raise
        raise DeviceError(
            f"out of memory on {device} training {config.model} ({config.train.batch_size} "
            f"crops of {config.data.crop} px a step); raise train.accumulate and resume (the "
            "same run, a step in smaller parts), or lower train.batch_size or data.crop"
        ) from None
    finally:
        distributed.teardown(dist)


#: Steps in a row whose loss or gradients are NaN or infinite before a run stops. Such a step
#: is skipped (one bad batch should not end days of training); a run that keeps producing them
#: has diverged and stops before it could save anything but the weights it had.
MAX_NONFINITE_STEPS = 10
#: An fp16 loss scale below this (it starts at 2**16 and halves on each overflow) means the
#: gradients overflow whatever the scale: the scaler's skipped steps count as non-finite.
MIN_LOSS_SCALE = 2.0**-16


def _finite_step(loss: Tensor, grad_norm: Tensor | None, model: torch.nn.Module) -> bool:
    """Whether a step's loss and gradients are all finite (``grad_norm``: clipping's, if any)."""
    if grad_norm is None:
        norms = [torch.linalg.vector_norm(p.grad) for p in model.parameters() if p.grad is not None]
        grad_norm = torch.stack(norms).sum() if norms else torch.zeros(())
    return bool(torch.isfinite(loss.float()).all() and torch.isfinite(grad_norm))


def _restore(buffers: list[Tensor], kept: list[Tensor]) -> None:
    """Put back the buffers (norms' running statistics) a skipped step's forward pass moved."""
    with torch.no_grad():
        for buffer, value in zip(buffers, kept, strict=True):
            buffer.copy_(value)


def _diverged(step: int, nonfinite: int, last_ckpt: Path, saved_step: int) -> TrainingDiverged:
    """The error that stops a run whose last ``nonfinite`` steps, to ``step``, were skipped."""
    applied = step - nonfinite  # the last step whose update reached the weights
    if not last_ckpt.exists():
        held = "no checkpoint was written"
    elif saved_step > applied:
        held = f"{last_ckpt} holds step {saved_step} with the weights of step {applied}"
    else:
        held = f"{last_ckpt} holds step {saved_step}"
    return TrainingDiverged(
        f"training diverged: the loss or its gradients were NaN or infinite for {nonfinite} "
        f"steps in a row (to step {step}); {held}. Resume with --set optim.grad_clip=1, or "
        "lower optim.lr in a new run from its weights (train.init_from)"
    )


def _run(
    config: Config,
    device: torch.device,
    dist: distributed.Dist,
    resume: str | Path | None,
    stop_at: int,
    console: Console | None,
) -> TrainResult:
    out = Path(config.out)
    _check_out(out, resume)
    if dist.is_main:
        check_writable(out)
    if config.train.threads:
        set_threads(config.train.threads)  # warns when more than the cores
    if device.type == "cpu":
        reuse_freed_memory()
    state = load_state(resume) if resume is not None else None
    if state is not None:
        check_resumable(config, state, resume, get_spec(config.model).arch)

    # Model: the same initial weights on every rank (DDP also broadcasts rank 0's).
    torch.manual_seed(config.seed)
    model = build_model(config)
    carried: list[str] = []
    if config.train.init_from and state is None:
        carried = load_initial_weights(
            model, config.train.init_from, config.train.init_reset, config.train.init_partial
        )
    recipe = resolve(config, model.arch)
    precision, channels_last, why = pick_precision(config, device, model)
    kernel, kernel_why = training_pointwise(device, precision)
    why = f"{why}; {kernel_why}" if kernel_why else why
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    # Before the optimizer and the EMA: teacher forcing freezes what it takes from the teacher.
    distiller = (
        Distiller(model, config.distill).to(device=device, memory_format=memory_format)
        if config.distill.teacher
        else None
    )

    frozen = freeze_batch_norms(model) if config.train.freeze_batchnorm else 0

    # Data: global batch split over ranks; full batches only.
    train_set, val_set, on_device = build_data(config, device)
    batch = _rank_batch(config, dist)
    if len(train_set) == 0:
        raise DataError(f"no training images under {config.data.root}")
    held_out = _split_digest(val_set)
    split_changed = state is not None and state.get("val_split") not in (None, held_out)
    repeat = math.ceil(config.train.batch_size / len(train_set))
    items = SeededItems(train_set, config.seed, repeat=repeat)
    sampler = ResumableSampler(
        items, num_replicas=dist.world_size, rank=dist.rank, seed=config.seed
    )
    steps_per_epoch = sampler.num_samples // batch  # >= 1: tiny folders are cycled
    total_steps = config.train.steps or math.ceil(config.train.epochs * steps_per_epoch)
    reached = state["progress"]["step"] if state is not None else 0
    if reached > total_steps:  # its schedule would be cut and the run called finished
        raise ConfigError(
            f"the run is at step {reached}, past the {total_steps} steps asked for now; give "
            f"at least {reached} (or export it as it is: anyrestore train export)"
        )

    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, recipe, config.schedule, total_steps)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    ema = EMA(model, config.train.ema_decay) if config.train.ema_decay > 0 else None
    criterion = RestorationLoss(
        **recipe.terms(), aux=recipe.aux, fourier_norm=config.loss.fourier_norm
    )
    if state is not None:
        assert resume is not None
        run = _load_resume(state, resume, config.model, model, optimizer, scheduler, scaler, ema)
        if run.batch_in_epoch >= steps_per_epoch:
            # A larger batch or fewer images since: the saved place is past this epoch's end
            # (and an epoch that starts there would yield nothing, for ever). The next begins.
            run.epoch += 1
            run.batch_in_epoch = 0
        rngs = state["rng"]
        set_rng_state(rngs[dist.rank] if dist.rank < len(rngs) else rngs[0])
    else:
        run = Progress()
        torch.manual_seed(item_seed(config.seed, dist.rank))

    net = distributed.wrap(distiller or model, dist, device, find_unused(config, model))
    if config.train.compile:
        # The step's forward (and so its backward) only: validation, the EMA and the
        # checkpoints keep using ``model`` itself, under its own parameter names.
        net = torch.compile(net, mode=config.train.compile)
    reporter = Reporter(
        out,
        total=total_steps,
        start=run.step,
        active=dist.is_main,
        progress=config.log.progress,
        console=console,
    )
    if split_changed:
        reporter.message(
            "warning: the validation split differs from the one this run started with "
            "(another data.root, split_seed or val_fraction, or photos added or removed): "
            "validation scores no longer compare with the earlier ones, and photos held out "
            "before may now be trained on"
        )
    if state is not None and state.get("precision") not in (None, precision):
        reporter.message(
            f"warning: the run began in {state['precision']} and continues in {precision} "
            f"(train.precision {config.train.precision} chose it on this machine); set "
            f"train.precision={state['precision']} to keep the run's"
        )
    if state is not None and state.get("total_steps") not in (None, total_steps):
        reporter.message(
            f"the run now has {total_steps} steps (it had {state['total_steps']}: another "
            "train.steps or epochs, batch size or number of photos); the learning-rate "
            "schedule is stretched to fit"
        )
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out / "last.pt")
        atomic_write(out / "config.toml", config.to_toml().encode())  # never left half-written
        if carried:
            reporter.message(
                f"init_from: {len(carried)} of {len(model.state_dict())} tensors carried over"
            )
        if distiller is not None:
            reporter.message(
                f"distilling from {Path(config.distill.teacher).name}: "
                + ", ".join(describe_terms(config.distill, len(distiller.blocks)))
            )
        reporter.message(
            f"training {config.model} on {device} ({precision}"
            f"{', channels_last' if channels_last else ''}: {why}; {dist.world_size} process"
            f"{'es' if dist.enabled else ''}"
            f"{f'; compiled, {config.train.compile}' if config.train.compile else ''}): "
            f"{len(train_set)} items, "
            f"{steps_per_epoch} steps/epoch, {total_steps} steps"
            + (f", resuming at step {run.step}" if state is not None else "")
        )
        if config.train.freeze_batchnorm:
            reporter.message(
                f"freeze_batchnorm: {frozen} BatchNorm layers keep their recorded statistics"
                if frozen
                else f"freeze_batchnorm: {config.model} has no BatchNorm; nothing to freeze"
            )

    facts = {
        "model_name": config.model,
        "arch": model.arch,
        "model_config": model.config_dict(),
        "config_toml": config.to_toml(),
        "total_steps": total_steps,
        "precision": precision,
        "world_size": dist.world_size,
        "device": device_name(device),
        "torch": str(torch.__version__),  # of the session that wrote it (a plain str: loadable)
        "val_split": held_out,
        # Where the weights started, as that file was then (it may be re-exported later).
        "init_lineage": (
            state.get("init_lineage")
            if state is not None
            else (start_lineage(config.train.init_from) if config.train.init_from else None)
        ),
    }
    kinds_seen = set(run.kinds)
    # The signal that asked the run to stop after its step, None until one arrives
    stop_requested: dict[str, int | None] = {"signum": None}
    last_ckpt = out / "last.pt"

    def checkpoint() -> Path:
        run.kinds = sorted(set().union(*distributed.gather(dist, sorted(kinds_seen))))
        rngs = distributed.gather(dist, rng_state())
        if dist.is_main:
            save_state(
                {
                    **facts,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "ema": ema.state_dict() if ema is not None else None,
                    "progress": run.__dict__.copy(),
                    "rng": rngs,
                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                },
                last_ckpt,
            )
        distributed.barrier(dist)
        return last_ckpt

    def validate_now() -> float | None:
        eval_model = ema.model if ema is not None else model
        value = evaluate(eval_model, val_set, config.data.val_items, device, dist, precision)
        if config.train.freeze_batchnorm:
            freeze_batch_norms(model)  # evaluate put the whole model back in training mode
        if value is not None:
            run.val_psnr = value
            reporter.record(
                {"step": run.step, "val_psnr": value}, f"step {run.step}: val PSNR {value:.2f} dB"
            )
        return value

    stepper = _Stepper(
        config=config,
        device=device,
        dist=dist,
        precision=precision,
        kernel=kernel,
        model=model,
        net=net,
        distiller=distiller,
        criterion=criterion,
        optimizer=optimizer,
        scaler=scaler,
        ema=ema,
    )
    quantize = bool(config.data.options.get("quantize", True))
    finished = False
    start_step = run.step
    nonfinite = 0  # steps in a row skipped for a NaN or infinite loss or gradient
    saved_step = run.step  # the step last.pt holds
    tic = time.perf_counter()
    saved_at = time.monotonic()  # for log.ckpt_minutes
    window = _Window()
    signalled = False  # whether any rank has had a stop signal
    loader = make_loader(items, sampler, batch, config, device)
    with _stop_on_signals(stop_requested):
        try:
            # --stop-at ends this invocation there, and at once for a run resumed at or past it.
            while run.step < total_steps and not (stop_at and run.step >= stop_at):
                sampler.set_epoch(run.epoch)
                sampler.set_start(run.batch_in_epoch * batch)
                t0 = time.perf_counter()
                for data in start_batches(loader):
                    lq, gt, kinds = to_device(data, device, memory_format)
                    if on_device:
                        lq = degrade_on_device(
                            gt, kinds, config.seed, run.step, dist.rank, quantize
                        )
                        lq = lq.contiguous(memory_format=memory_format)
                    kinds_seen.update(kinds)
                    loss, parts, bad = stepper.step(lq, gt, kinds)
                    if bad:
                        nonfinite += 1
                        reporter.message(
                            f"step {run.step + 1}: the loss or its gradients are NaN or "
                            "infinite; the step is skipped"
                        )
                        if nonfinite >= MAX_NONFINITE_STEPS:
                            raise _diverged(run.step + 1, nonfinite, last_ckpt, saved_step)
                    else:
                        nonfinite = 0
                    lr = scheduler.get_last_lr()[0]  # the rate this step took, for its row
                    scheduler.step()  # the schedule follows the step count either way

                    run.step += 1
                    run.finished = False  # a run given more steps: they end it anew
                    run.batch_in_epoch += 1
                    run.samples += batch * dist.world_size
                    if run.batch_in_epoch == steps_per_epoch:
                        run.epoch += 1
                        run.batch_in_epoch = 0

                    # Bookkeeping (averaged over the log window and, when logged, over ranks).
                    window.add(time.perf_counter() - t0, batch * dist.world_size, loss, parts, bad)
                    row = None
                    if run.step % config.log.every == 0 or run.step == total_steps:
                        row = window.row(run, lr, total_steps, dist, device)
                        window = _Window()
                    reporter.step(run.step, row)

                    done = run.step >= total_steps
                    if config.log.val_every and run.step % config.log.val_every == 0 and not done:
                        validate_now()
                    # Whether any rank got a stop signal or is due a timed checkpoint: one
                    # collective for both, so every rank stops and saves at the same step.
                    minutes = config.log.ckpt_minutes
                    due = bool(minutes) and time.monotonic() - saved_at >= 60 * minutes
                    signalled, overdue = (
                        total > 0
                        for total in distributed.all_sum(
                            dist, [float(stop_requested["signum"] is not None), float(due)], device
                        )
                    )
                    stop = run.step == stop_at or signalled
                    if (config.log.ckpt_every and run.step % config.log.ckpt_every == 0) or (
                        (stop or overdue) and not done
                    ):
                        run.wall_time += time.perf_counter() - tic
                        tic = time.perf_counter()
                        checkpoint()
                        saved_at = time.monotonic()
                        saved_step = run.step
                    if done or stop:
                        break
                    t0 = time.perf_counter()
                # The shared signal, which every rank has: a rank that got none would start the
                # next epoch and wait in a collective the others never join. One that came after
                # the epoch's last step was shared is shared, and saved, at the next step.
                if signalled:
                    break
            finished = run.step >= total_steps
            if finished and run.finished and run.step == start_step:
                reporter.message(
                    f"already finished ({run.step} steps); export with: anyrestore train "
                    f"export {out} -o model.safetensors"
                )
            elif finished:
                validate_now()
                run.wall_time += time.perf_counter() - tic
                tic = time.perf_counter()
                run.finished = True
                checkpoint()
                reporter.message(
                    f"finished {run.step} steps; export with: anyrestore train export {out} "
                    "-o model.safetensors"
                )
            else:
                reporter.message(f"stopped at step {run.step}; resume with --resume {last_ckpt}")
        finally:
            reporter.close()
            close_loader(loader)
    signum = stop_requested["signum"]
    if signum is not None and not finished:
        raise Interrupted(signum)  # the CLI exits 128 + signum (130, 143 or 129)
    return TrainResult(out, last_ckpt, run.step, total_steps, run.val_psnr, finished, dist.is_main)


# ----------------------------------------------------------------------------- pieces


def _split_digest(val_set: object) -> str:
    """A short fingerprint of which photos the validation split holds (their names)."""
    names = sorted(f"{s.kind}:{s.name}" for s in getattr(val_set, "samples", []))
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def _check_out(out: Path, resume: str | Path | None) -> None:
    """Refuse a run folder that is a file, or that holds a run this one would write over."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out {out} is a file, not a run folder")
    if resume is None and (out / "last.pt").exists():
        raise ConfigError(
            f"{out} already holds a run (last.pt); continue it with --resume {out}, or give "
            "another --out"
        )
    if resume is not None and (out / "last.pt").exists() and not same_run(out, resume):
        raise ConfigError(
            f"{out} already holds another run (last.pt); resuming {resume} there would write "
            f"over it: give another --out, or continue that run with --resume {out}"
        )


def _rank_batch(config: Config, dist: distributed.Dist) -> int:
    """Crops per process and step: the global batch split over the ranks, whole, and whole
    parts of it for ``train.accumulate``."""
    if config.train.batch_size % dist.world_size:
        raise ConfigError(
            f"train.batch_size {config.train.batch_size} is not divisible by the "
            f"{dist.world_size} processes"
        )
    batch = config.train.batch_size // dist.world_size
    if batch % config.train.accumulate:
        raise ConfigError(
            f"train.batch_size {config.train.batch_size} over {dist.world_size} process"
            f"{'es' if dist.enabled else ''} gives {batch} crops each, which "
            f"train.accumulate {config.train.accumulate} does not divide"
        )
    return batch


def _load_resume(
    state: dict[str, Any],
    resume: str | Path,
    model_name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    ema: EMA | None,
) -> Progress:
    """Put a resume checkpoint's weights, optimizer, schedule, scaler and EMA back in place;
    where the run was."""
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise ConfigError(
            f"{resume} was trained as {state.get('model_name')} with other settings; "
            f"it does not fit {model_name} with these model_overrides"
        ) from None
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError:  # other parameters train now: distill.teacher_forcing changed
        raise ConfigError(
            f"{resume}: its optimizer state does not fit the parameters this run trains "
            "(distill.teacher_forcing or distill.blocks changed?); start a new run from "
            f"its weights instead: anyrestore train export {resume} -o W.safetensors, "
            "then --set train.init_from=W.safetensors"
        ) from None
    scheduler.load_state_dict(state["scheduler"])
    load_scaler(scaler, state["scaler"])
    if ema is not None and state.get("ema") is not None:
        ema.load_state_dict(state["ema"])
    return Progress(**state["progress"])


@dataclass
class _Stepper:
    """One optimizer step: forward under autocast and the losses in fp32 (with
    ``train.accumulate``, one forward and backward per part of the batch), clipping, the
    check for NaN or infinite values, then the update and the EMA, or no trace at all."""

    config: Config
    device: torch.device
    dist: distributed.Dist
    precision: str
    kernel: str
    model: torch.nn.Module
    net: torch.nn.Module  # the model as it trains: wrapped by DDP, a distiller, compiled
    distiller: Distiller | None
    criterion: RestorationLoss
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: EMA | None

    def __post_init__(self) -> None:
        self.buffers = list(self.model.buffers())

    def step(self, lq: Tensor, gt: Tensor, kinds: list[str]) -> tuple[Tensor, dict, bool]:
        """The step's loss and its terms for the log, and whether it was skipped for a NaN
        or infinite loss or gradient (bad; an fp16 overflow the scaler skips is not bad)."""
        optimizer, scaler, parts_per_step = (
            self.optimizer,
            self.scaler,
            self.config.train.accumulate,
        )
        optimizer.zero_grad(set_to_none=True)
        # A skipped step leaves no trace, the norms' running statistics included.
        kept = [b.clone() for b in self.buffers]
        loss: Any = 0.0
        parts: dict[str, Any] = {}
        for i, (lq_part, gt_part, kinds_part) in enumerate(
            _split_batch(lq, gt, kinds, parts_per_step)
        ):
            # DDP averages gradients over ranks on the last part's backward only.
            last = i == parts_per_step - 1
            with _maybe_no_sync(self.net, not last):
                part_loss, part_terms = self.loss(lq_part, gt_part, kinds_part)
                scaler.scale(part_loss / parts_per_step).backward()
            loss = loss + part_loss.detach() / parts_per_step
            for k, v in part_terms.items():
                parts[k] = parts.get(k, 0.0) + v / parts_per_step
        grad_norm = None
        if self.config.optim.grad_clip > 0:
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), self.config.optim.grad_clip
            )
        if scaler.is_enabled():
            # fp16: the loss scaler skips a step whose gradients overflow and lowers its
            # scale (that is how it finds one); only a loss that is itself NaN or infinite
            # counts toward divergence.
            bad = not bool(torch.isfinite(loss).all())
        else:
            bad = not _finite_step(loss, grad_norm, self.model)
        if self.dist.enabled:  # a NaN loss on one rank: every rank skips the step
            bad = distributed.all_sum(self.dist, [float(bad)], self.device)[0] > 0
        if bad:
            optimizer.zero_grad(set_to_none=True)
            if scaler.is_enabled():  # forget the unscale_ done for clipping
                scaler.update(scaler.get_scale())
            _restore(self.buffers, kept)
        else:
            scale = scaler.get_scale()  # 1.0 unless fp16
            scaler.step(optimizer)
            scaler.update()
            if scaler.get_scale() < scale:  # fp16 overflow: the step was skipped
                _restore(self.buffers, kept)
                # Gradients that overflow at every scale (NaN from a finite loss) would drive
                # the scale to zero and skip every step for ever: past a floor no healthy run
                # reaches, they count toward divergence.
                bad = scaler.get_scale() < MIN_LOSS_SCALE
            elif self.ema is not None:
                self.ema.update(self.model)
        return loss, parts, bad

    def loss(self, lq: Tensor, gt: Tensor, kinds: list[str]) -> tuple[Tensor, dict]:
        """The training loss of one batch (or part of one) and its terms for the log."""
        config = self.config
        with autocast(self.device, self.precision), pointwise_kernel(self.kernel):
            if self.distiller is None:
                pred, aux = self.net(lq, return_aux=True)
                loss, parts, target_weight = None, {}, 1.0
            else:
                pred, aux, loss, parts, wanted = self.net(lq, kinds)
                target_weight = config.distill.target_weight
                gt = teacher_targets(gt, wanted, kinds, config.distill.teacher_kinds)
        if target_weight:  # the recipe's loss against the clean photo
            target, target_parts = self.criterion(pred, gt, aux.get("losses") if aux else None)
            target = target_weight * target
            loss = target if loss is None else loss + target
            parts = {**parts, **target_parts}
        return loss, parts


def _split_batch(
    lq: Tensor, gt: Tensor, kinds: list[str], parts: int
) -> Iterator[tuple[Tensor, Tensor, list[str]]]:
    """``parts`` equal slices of a batch, in order (the whole batch when ``parts`` is 1)."""
    size = lq.shape[0] // parts
    for i in range(parts):
        cut = slice(i * size, (i + 1) * size)
        yield lq[cut], gt[cut], kinds[cut]


def _maybe_no_sync(net: torch.nn.Module, skip: bool) -> Any:
    """DDP's ``no_sync`` for a part whose gradients the next part's backward will carry."""
    if skip and hasattr(net, "no_sync"):
        return net.no_sync()
    return nullcontext()


@dataclass
class _Window:
    """The steps since the last log row: time, crops, and the sums of the taken steps' loss
    terms (a step skipped for a NaN or infinite value counts for the rate, not the averages)."""

    samples: int = 0
    time: float = 0.0
    steps: int = 0
    count: int = 0
    sums: dict[str, Any] = field(default_factory=dict)

    def add(self, seconds: float, samples: int, loss: Tensor, parts: dict, bad: bool) -> None:
        self.time += seconds
        self.samples += samples
        self.steps += 1
        if not bad:  # the log averages the steps taken
            self.count += 1
            self.sums["loss"] = self.sums.get("loss", 0.0) + loss.detach()
            for k, v in parts.items():
                self.sums[k] = self.sums.get(k, 0.0) + v

    def row(
        self,
        run: Progress,
        lr: float,
        total_steps: int,
        dist: distributed.Dist,
        device: torch.device,
    ) -> dict[str, Any]:
        """The log row: the terms averaged over the window's taken steps and the ranks."""
        names = sorted(self.sums)
        values = [float(self.sums[k]) / self.count for k in names]
        values = [v / dist.world_size for v in distributed.all_sum(dist, values, device)]
        rate = self.samples / max(self.time, 1e-9)
        return {
            "step": run.step,
            "epoch": run.epoch,
            "samples": run.samples,
            **{k: round(v, 6) for k, v in zip(names, values, strict=True)},
            "lr": lr,  # the last step's
            "samples_per_s": round(rate, 2),
            "eta_s": round((total_steps - run.step) * self.samples / self.steps / rate, 1),
        }


@contextmanager
def _stop_on_signals(flag: dict[str, int | None]) -> Iterator[None]:
    """Ctrl-C / SIGTERM finish the current step, write a resume checkpoint, then stop."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    first_at = [0.0]

    def handler(signum: int, frame: Any) -> None:
        if flag["signum"] is not None:  # a second Ctrl-C: stop now
            if signum == flag["signum"] == signal.SIGTERM and time.monotonic() - first_at[0] < 1:
                # The same stop sent twice: GNU timeout signals its child, then the child's
                # process group, and the two need not arrive as one.
                return
            raise Interrupted(signum)
        flag["signum"] = signum
        first_at[0] = time.monotonic()
        forget_hung_up_terminal(signum)  # its messages would fail; the checkpoint must not

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
