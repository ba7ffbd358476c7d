"""Training objectives of the two papers.

AnyIR (App. A.2): L1 + Fourier loss. The Fourier term is the L1 distance between the
``rfft2`` spectra of output and target, real and imaginary parts stacked (the ``FFTLoss`` of
the AdaIR / MoCE-IR code AnyIR follows), weighted 0.1. ClusIR (Sec. 4.1): L1 + MS-SSIM
(as ``1 - MS-SSIM``), plus the model's own auxiliary losses (prototype orthogonality, load
balance), which the model returns already weighted.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from anyrestore.metrics import ms_ssim


def fourier_l1(pred: Tensor, target: Tensor, norm: str = "backward") -> Tensor:
    """Mean absolute difference of the real and imaginary parts of the 2-D spectra."""
    pred_f = torch.view_as_real(torch.fft.rfft2(pred.float(), norm=norm))
    target_f = torch.view_as_real(torch.fft.rfft2(target.float(), norm=norm))
    return F.l1_loss(pred_f, target_f)


def ms_ssim_loss(pred: Tensor, target: Tensor) -> Tensor:
    """``1 - MS-SSIM``, averaged over the batch (outputs are clamped to [0, 1] for the SSIM)."""
    return 1.0 - ms_ssim(pred.float().clamp(0, 1), target.float()).mean()


class RestorationLoss:
    """Weighted sum of L1, Fourier, MS-SSIM and the model's auxiliary losses.

    Returns the total (for ``backward``) and the detached parts (for the log). Terms with a
    zero weight are not computed.
    """

    def __init__(
        self,
        l1: float = 1.0,
        fourier: float = 0.0,
        ms_ssim: float = 0.0,
        aux: float = 1.0,
        fourier_norm: str = "backward",
    ) -> None:
        if not (l1 or fourier or ms_ssim):
            raise ValueError("at least one of the l1, fourier and ms_ssim weights must be non-zero")
        self.weights = {"l1": l1, "fourier": fourier, "ms_ssim": ms_ssim}
        self.aux = aux
        self.fourier_norm = fourier_norm

    def __call__(
        self, pred: Tensor, target: Tensor, aux_losses: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, float | Tensor]]:
        pred = pred.float()  # losses in fp32 even under autocast (rfft2 has no bf16 kernel)
        target = target.float()
        parts: dict[str, Tensor] = {}
        if self.weights["l1"]:
            parts["l1"] = F.l1_loss(pred, target)
        if self.weights["fourier"]:
            parts["fourier"] = fourier_l1(pred, target, self.fourier_norm)
        if self.weights["ms_ssim"]:
            parts["ms_ssim"] = ms_ssim_loss(pred, target)
        total = sum(self.weights[k] * v for k, v in parts.items())
        assert isinstance(total, Tensor)
        if self.aux and aux_losses:
            for name, value in aux_losses.items():
                parts[f"aux_{name}"] = value.float()
                total = total + self.aux * value.float()
        return total, {k: v.detach() for k, v in parts.items()}
