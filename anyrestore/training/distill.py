"""Learning from a trained model (the teacher) as well as from the clean photos.

Used to carry a trained network across a layout change: the student (e.g. AnyIR's released
layout) starts with whatever tensors still fit and learns to compute what the teacher (the
preview layout's trained weights) computes, which takes a small fraction of the steps that
learning the same function from the clean targets alone takes.

Every term is an L1 distance measured *relative to how much the teacher changes its input*
(``|student - teacher| / |teacher_out - teacher_in|``), so the blocks of every level of a
U-Net and the final output count alike whatever the scale of their features:

- **output**: the student's restored image against the teacher's;
- **blocks**: the output of each matched block (modules that both models have under the same
  name) against the teacher's; with ``teacher_forcing`` each student block is fed the
  teacher's input to that block, so every block learns on its own from the first step (and
  only the blocks are trained: everything around them is taken from the teacher, so that
  the blocks see, when the student runs alone, the inputs they were trained on); without it
  the student runs on its own and its blocks are pulled toward the teacher's path;
- **target**: the recipe's usual loss against the clean photo; for the crops of
  ``teacher_kinds`` against the teacher's output instead (a damage the teacher leaves nearly
  as it is, such as blur, is then learnt as the teacher's near-identity rather than as a
  hedge toward a sharp photo the student cannot reach).
"""

from __future__ import annotations

import fnmatch
from typing import Any

import torch
from torch import Tensor, nn

from anyrestore.data.degradations import kind_key
from anyrestore.errors import ConfigError
from anyrestore.training.config import DistillConfig
from anyrestore.weights.checkpoint import load_checkpoint
from anyrestore.weights.resolve import resolve_weights

__all__ = ["Distiller", "describe_terms", "matched_blocks", "relative_l1", "teacher_targets"]


def relative_l1(pred: Tensor, target: Tensor, source: Tensor) -> Tensor:
    """``mean|pred - target| / mean|target - source|``: the error as a fraction of the change."""
    pred, target, source = pred.float(), target.float(), source.float()
    scale = (target - source).abs().mean() if source.shape == target.shape else target.abs().mean()
    return (pred - target).abs().mean() / scale.clamp_min(1e-3)


def matched_blocks(student: nn.Module, teacher: nn.Module, patterns: list[str]) -> list[str]:
    """Names of the outermost student modules matching a pattern that the teacher also has."""
    teacher_names = {name for name, _ in teacher.named_modules()}
    chosen: list[str] = []
    for name, _ in student.named_modules():
        if not name or any(name.startswith(parent + ".") for parent in chosen):
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            if name not in teacher_names:
                raise ConfigError(f"distill.blocks: the teacher has no module {name!r}")
            chosen.append(name)
    if patterns and not chosen:
        raise ConfigError(f"distill.blocks {patterns} match no module of the model")
    return chosen


def teacher_targets(gt: Tensor, wanted: Tensor, kinds: list[str], chosen: list[str]) -> Tensor:
    """``gt`` with the crops whose kind is in ``chosen`` replaced by the teacher's output."""
    if not chosen or not kinds:
        return gt
    keys = {kind_key(k) for k in chosen}  # CDD-11 items say "L+H" for "low_light+haze"
    mask = torch.tensor([kind_key(k) in keys for k in kinds], device=gt.device)
    if not bool(mask.any()):
        return gt
    return torch.where(mask[:, None, None, None], wanted.detach().to(gt.dtype).clamp(0, 1), gt)


def describe_terms(cfg: DistillConfig, blocks: int) -> list[str]:
    """What a distillation run learns from, for its log: only the terms with a weight."""
    terms = []
    if cfg.matches_blocks():
        terms.append(f"{blocks} blocks" + (" (teacher-forced)" if cfg.teacher_forcing else ""))
    if cfg.matches_output():
        terms.append("the output")
    if cfg.target_weight:
        kinds = f" ({cfg.teacher_kinds_phrase()})" if cfg.teacher_kinds else ""
        terms.append("the clean photos" + kinds)
    return terms


class Distiller(nn.Module):
    """Student plus frozen teacher; ``forward(lq)`` gives the student's output and the match loss.

    The student's output is None with teacher forcing (it never runs end to end). The parts
    (for the log) are the unweighted terms.
    """

    def __init__(self, student: nn.Module, cfg: DistillConfig) -> None:
        super().__init__()
        self.student = student
        teacher = load_checkpoint(resolve_weights(cfg.teacher)).float().eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = teacher
        self.cfg = cfg
        self.blocks = matched_blocks(student, teacher, cfg.blocks)
        s_mods, t_mods = dict(student.named_modules()), dict(teacher.named_modules())
        self._seen: dict[tuple[str, str], Any] = {}
        for name in self.blocks:
            t_mods[name].register_forward_hook(self._keep("teacher", name))
            if not cfg.teacher_forcing:
                s_mods[name].register_forward_hook(self._keep("student", name))
        self._student_blocks = [s_mods[name] for name in self.blocks]
        if cfg.teacher_forcing:
            self._take_the_rest_from_teacher()

    def _keep(self, side: str, name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if not isinstance(output, Tensor):  # ClusIR's experts.N: (features, routing)
                raise ConfigError(
                    f"distill.blocks: {name} returns a {type(output).__name__}, not one feature "
                    "map; name blocks inside it, or around it"
                )
            self._seen[(side, name)] = (inputs, output)

        return hook

    def _take_the_rest_from_teacher(self) -> None:
        """Copy the teacher's tensors outside the matched blocks and freeze them."""
        inside = tuple(name + "." for name in self.blocks)
        teacher_state = self.teacher.state_dict()
        state = self.student.state_dict()
        for key, value in state.items():
            if key.startswith(inside):
                continue
            source = teacher_state.get(key)
            if source is None or source.shape != value.shape:
                raise ConfigError(
                    f"distill.teacher_forcing: the teacher has no tensor {key!r} of shape "
                    f"{tuple(value.shape)} (everything outside distill.blocks comes from it)"
                )
            state[key] = source
        self.student.load_state_dict(state)
        for key, p in self.student.named_parameters():
            p.requires_grad_(key.startswith(inside))

    def _teacher_output(self, lq: Tensor, kinds: list[str] | None) -> Tensor:
        """The teacher's restoration of the crops some term reads (see ``forward``)."""
        cfg = self.cfg
        if kinds is None or self.blocks or cfg.matches_output():
            return self.teacher(lq)
        keys = {kind_key(k) for k in cfg.teacher_kinds}
        chosen = [i for i, kind in enumerate(kinds) if kind_key(kind) in keys]
        if len(chosen) == len(kinds):
            return self.teacher(lq)
        wanted = lq.detach().clone()
        if chosen:
            index = torch.tensor(chosen, device=lq.device)
            wanted[index] = self.teacher(lq[index]).to(wanted.dtype)
        return wanted

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        self.teacher.eval()  # always: its norms use their recorded statistics
        return self

    def forward(
        self, lq: Tensor, kinds: list[str] | None = None
    ) -> tuple[Tensor | None, Any, Tensor, dict[str, Tensor], Tensor]:
        """(student output or None, the student's aux, weighted match loss, parts, the
        teacher's output).

        When only ``teacher_kinds`` need the teacher (no output or block term) and ``kinds``
        names each crop's kind, the teacher restores only the crops of those kinds and the
        returned "output" is the input elsewhere (``teacher_targets`` reads no other crop): no
        time goes into restoring crops that learn the clean photo.
        """
        cfg = self.cfg
        self._seen.clear()
        with torch.no_grad():
            wanted = self._teacher_output(lq, kinds)
        parts: dict[str, Tensor] = {}
        pred, aux = None, None
        if not cfg.teacher_forcing:
            pred, aux = self.student(lq, return_aux=True)
            if cfg.matches_output():
                parts["teacher_output"] = relative_l1(pred, wanted, lq)
        errors = []
        for name, block in zip(self.blocks, self._student_blocks, strict=True):
            t_ins, t_out = self._seen[("teacher", name)]
            # forced: the block run on the teacher's inputs (ClusIR's DAFMM and semantic prompts
            # take two); else its output on the student's path
            got = block(*t_ins) if cfg.teacher_forcing else self._seen[("student", name)][1]
            errors.append(relative_l1(got, t_out, t_ins[0]))
        if errors:
            parts["teacher_blocks"] = torch.stack(errors).mean()
        weights = {"teacher_output": cfg.output_weight, "teacher_blocks": cfg.block_weight}
        total = sum(
            (weights[k] * v for k, v in parts.items()), lq.new_zeros((), dtype=torch.float32)
        )
        self._seen.clear()
        return pred, aux, total, {k: v.detach() for k, v in parts.items()}, wanted
