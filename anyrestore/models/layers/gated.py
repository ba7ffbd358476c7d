"""Gated degradation adaptation (GatedDA), AnyIR Sec. 3.4 and Alg. 1.

A gated 1x1-conv block in the spirit of gated CNNs: the normalised input is expanded, split
into a scaled part (alpha, depthwise conv), an ego part (beta, kept as is) and a shifted part
(gamma, GELU gate). A temperature modulated by image-wide channel statistics scales the
depthwise branch, so the block responds to how strong the degradation is overall.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyrestore.models.layers.globalstats import GlobalStat
from anyrestore.models.layers.norm import LayerNorm2d


class GatedDA(nn.Module):
    """Alg. 1: normalise, expand to 2C, gate (alpha, beta, gamma) = (C/2, C/2, C), residual, project.

    Alg. 1 fixes the expansion ratio: gamma gates the output of W_gate and the result is added
    to the C-channel input (steps 9-10), so gamma has C channels; with the paper's
    (hidden/4, hidden/4, hidden/2) split that means hidden = 2C (r_expand = 2).
    """

    def __init__(
        self, dim: int, kernel_size: int = 7, bias: bool = False, delta: float = 1e-6
    ) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(
                f"GatedDA needs an even width (alpha and beta get dim/2 each), got {dim}"
            )
        hidden = 2 * dim
        self.split = (hidden // 4, hidden // 4, hidden // 2)  # (alpha, beta, gamma)
        self.delta = delta
        self.norm = LayerNorm2d(dim, bias=True)
        # Initial temperature tau, one per channel of the input, learned.
        self.tau = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.stats = GlobalStat()
        self.w_exp = nn.Conv2d(dim, hidden, 1, bias=bias)
        alpha = self.split[0]
        self.w_depth = nn.Conv2d(
            alpha, alpha, kernel_size, padding=kernel_size // 2, groups=alpha, bias=bias
        )
        self.w_gate = nn.Conv2d(hidden // 2, dim, 1, bias=bias)
        self.w_proj = nn.Conv2d(dim, dim, 1, bias=bias)

    def _temperature_scale(self, f_hat: torch.Tensor) -> torch.Tensor:
        # Image-wide statistics, in float32 so bf16 autocast does not round the variance away.
        f = f_hat.float()
        # Alg. 1 step 2: per-channel mean over all pixels
        mu = f.mean(dim=(2, 3), keepdim=True)
        # Alg. 1 step 3: per-channel std (+ delta); delta goes under the root here so the
        # gradient stays finite when a channel is constant (e.g. a 1x1 bottleneck).
        sigma = torch.sqrt((f - mu).square().mean(dim=(2, 3), keepdim=True) + self.delta)
        # Alg. 1 step 4: temperature adjustment factor Delta
        return torch.sigmoid(mu + sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Alg. 1 step 1: normalise
        f_hat = self.norm(x)
        delta = self.stats(lambda: self._temperature_scale(f_hat), batch=x.shape[0])
        # Alg. 1 step 5: tau_adj = tau * Delta (C channels), averaged over adjacent channel
        # pairs to alpha's C/2 channels (the paper leaves this mapping open).
        tau_adj = (self.tau * delta).unflatten(1, (self.split[0], -1)).mean(dim=2)
        # Alg. 1 step 6: channel expand
        f_exp = self.w_exp(f_hat)
        # Alg. 1 step 7: split into alpha (scaled), beta (ego), gamma (shifted)
        alpha, beta, gamma = torch.split(f_exp, self.split, dim=1)
        # Alg. 1 step 8: depthwise conv on alpha, scaled by (1 + tau_adj)
        alpha = self.w_depth(alpha) * (1 + tau_adj).to(alpha.dtype)
        # Alg. 1 step 9: GELU(gamma) gates concat(beta, alpha') W_gate
        f_gated = F.gelu(gamma) * self.w_gate(torch.cat((beta, alpha), dim=1))
        # Alg. 1 step 10: residual with the input, then W_proj
        return self.w_proj(f_gated + x)
