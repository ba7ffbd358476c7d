"""Gated degradation adaptation (GatedDA), AnyIR Sec. 3.4 and Alg. 1.

A gated 1x1-conv block in the spirit of gated CNNs: the normalised input is expanded and
split into a shifted part (gamma, the gate), an ego part (beta, kept as is) and a scaled part
(alpha, depthwise conv). A temperature modulated by image-wide channel statistics scales the
depthwise branch, so the block responds to how strong the degradation is overall.

``GatedDA`` follows the authors' released code (layout 2); ``PreviewGatedDA`` is the reading
of the paper text that the preview weights (layout 1) were trained with. docs/architectures.md
lists the differences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from anyrestore.models.layers.bands import in_bands
from anyrestore.models.layers.depthwise import DepthwiseConv2d
from anyrestore.models.layers.globalstats import GlobalStat
from anyrestore.models.layers.norm import LayerNorm2d
from anyrestore.models.layers.pointwise import PointwiseConv, pointwise

#: The released code expands to 8/3 C: gamma and beta take C each, alpha the rest.
EXPANSION = 8 / 3


class _BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that falls back to its running statistics when a batch has one value per
    channel (one image whose map is 1x1, e.g. a tiny crop at the deepest level), where batch
    statistics do not exist."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


def channel_var_mean(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Population variance and mean of each image's channels over all pixels, (b, c, 1, 1) fp32.

    ``torch.var_mean`` over (h, w) of a channels-last map is a strided one-pass reduction,
    several times slower on the CPU than two passes of matrix products: the mean is a row of
    1/n times the (pixels, channels) view, the variance the same row times the squared
    deviations from it (as accurate: two-pass, fp32 accumulation).
    """
    b, c, h, w = x.shape
    rows = x.float().permute(0, 2, 3, 1).reshape(b, h * w, c)  # a view of a channels-last map
    average = rows.new_full((b, 1, h * w), 1.0 / (h * w))
    # Autocast would run the products in bf16: a channel's spread of 0.01 around 10 would
    # come out three times too wide.
    with torch.autocast(x.device.type, enabled=False):
        mu = torch.bmm(average, rows)
        dev = rows - mu
        dev = dev * dev if torch.is_grad_enabled() else dev.square_()
        var = torch.bmm(average, dev)
    return var.view(b, c, 1, 1), mu.view(b, c, 1, 1)


def temperature_factor(f_hat: torch.Tensor, delta: float, as_written: bool = False) -> torch.Tensor:
    """Alg. 1 steps 2-4: Delta = sigmoid(mu + sigma) per image and channel, in float32.

    Image-wide statistics, so computed in float32: bf16 would round the variance away.
    ``as_written`` takes them with ``torch.var_mean`` (no multiply-accumulates to count)
    instead of the faster matrix products.
    """
    # Alg. 1 steps 2-3: per-channel mean and (population) variance over all pixels; delta
    # under the root keeps the gradient finite when a channel is constant (e.g. a 1x1
    # bottleneck)
    if as_written:
        var, mu = torch.var_mean(f_hat.float(), dim=(2, 3), correction=0, keepdim=True)
    else:
        var, mu = channel_var_mean(f_hat)
    sigma = torch.sqrt(var + delta)
    # Alg. 1 step 4: temperature adjustment factor
    return torch.sigmoid(mu + sigma)


class _GatedBody(nn.Module):
    """Alg. 1 for both layouts: the layouts differ in their norm, widths, tau_adj and gate.

    ``parts`` names the (first row, rows) of W_exp that give gamma, beta and alpha. Each part
    is computed as its own map, instead of one map split into channel slices, so that every
    map is dense: the gate's activation and the products run much slower on a strided slice
    of a channels-last map. ``W_gate(cat(beta, alpha'))`` is the sum of W_gate's two column
    blocks applied to beta and alpha' (no concatenated copy). Same function as the written
    steps.
    """

    #: Set by ``anyrestore.models.base.step_by_step``: the statistics as Alg. 1 writes them.
    step_by_step: bool = False
    parts: dict[str, tuple[int, int]]
    delta: float
    norm: nn.Module
    stats: GlobalStat
    w_exp: PointwiseConv
    w_depth: nn.Conv2d
    w_gate: PointwiseConv
    w_proj: PointwiseConv

    @property
    def split(self) -> tuple[int, ...]:
        """The parts' widths in W_exp's row order."""
        return tuple(rows for _, rows in sorted(self.parts.values()))

    def _tau_alpha(self, delta: torch.Tensor) -> torch.Tensor:
        """Alg. 1 step 5: tau_adj = tau * Delta, brought to alpha's width."""
        raise NotImplementedError

    def _gate(self, gamma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Alg. 1 step 1: normalise
        f_hat = self.norm(x)
        delta = self.stats(
            lambda: temperature_factor(f_hat, self.delta, self.step_by_step), batch=x.shape[0]
        )
        scale = 1 + self._tau_alpha(delta)
        # The rest is pixel-local but for W_depth: in bands of rows without gradients.
        return in_bands(
            lambda f, res: self._body(f, res, scale), (f_hat, x), halo=self.w_depth.padding[0]
        )

    def _part(self, f_hat: torch.Tensor, name: str) -> torch.Tensor:
        # Alg. 1 steps 6-7: the rows of the channel expansion that make up part ``name``
        first, rows = self.parts[name]
        w, b = self.w_exp.weight.flatten(1)[first : first + rows], self.w_exp.bias
        return pointwise(f_hat, w, None if b is None else b[first : first + rows])

    def _body(self, f_hat: torch.Tensor, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        inplace = not torch.is_grad_enabled()
        # Alg. 1 step 8: depthwise conv on alpha, scaled by (1 + tau_adj)
        alpha = self.w_depth(self._part(f_hat, "alpha"))
        alpha = alpha.mul_(scale.to(alpha.dtype)) if inplace else alpha * scale.to(alpha.dtype)
        # Alg. 1 step 9: the gate times concat(beta, alpha') W_gate
        w, bias = self.w_gate.weight.flatten(1), self.w_gate.bias
        beta_cols = self.parts["beta"][1]
        mixed = pointwise(
            self._part(f_hat, "beta"),
            w[:, :beta_cols],
            bias,
            add=pointwise(alpha, w[:, beta_cols:]),
        )
        gate = self._gate(self._part(f_hat, "gamma"))
        # Alg. 1 step 10: residual with the input, then W_proj
        if inplace:
            return self.w_proj(gate.mul_(mixed).add_(x))
        return self.w_proj(gate * mixed + x)


class GatedDA(_GatedBody):
    """Alg. 1 as released: BatchNorm, expand to 8/3 C, sigmoid gate, split (C, C, 2C/3)."""

    def __init__(
        self, dim: int, kernel_size: int = 7, bias: bool = False, delta: float = 1e-6
    ) -> None:
        super().__init__()
        hidden = round(EXPANSION * dim)
        alpha = hidden - 2 * dim
        if alpha < 1:
            raise ValueError(f"GatedDA needs dim >= 2, got {dim}")
        self.parts = {"gamma": (0, dim), "beta": (dim, dim), "alpha": (2 * dim, alpha)}
        self.delta = delta
        # Batch statistics while training, running statistics (a per-channel affine) in eval.
        self.norm = _BatchNorm2d(dim)
        # Initial temperature tau, one per channel of the input, learned.
        self.tau = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.stats = GlobalStat()
        self.w_exp = PointwiseConv(dim, hidden, bias=bias)
        self.w_depth = DepthwiseConv2d(alpha, kernel_size, bias=bias)
        self.w_gate = PointwiseConv(dim + alpha, dim, bias=bias)
        self.w_proj = PointwiseConv(dim, dim, bias=bias)

    def _tau_alpha(self, delta: torch.Tensor) -> torch.Tensor:
        # tau_adj has C channels and alpha about 2C/3; alpha's channel j takes channel j (the
        # released code cuts tau_adj to alpha's width).
        return (self.tau * delta)[:, : self.parts["alpha"][1]]

    def _gate(self, gamma: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid_(gamma) if not torch.is_grad_enabled() else torch.sigmoid(gamma)


class PreviewGatedDA(_GatedBody):
    """Layout 1: LayerNorm, expand to 2C, split (C/2, C/2, C) as (alpha, beta, gamma), GELU gate."""

    def __init__(
        self, dim: int, kernel_size: int = 7, bias: bool = False, delta: float = 1e-6
    ) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(
                f"GatedDA needs an even width (alpha and beta get dim/2 each), got {dim}"
            )
        hidden = 2 * dim
        alpha = hidden // 4
        self.parts = {"alpha": (0, alpha), "beta": (alpha, alpha), "gamma": (2 * alpha, 2 * alpha)}
        self.delta = delta
        self.norm = LayerNorm2d(dim, bias=True)
        self.tau = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.stats = GlobalStat()
        self.w_exp = PointwiseConv(dim, hidden, bias=bias)
        self.w_depth = DepthwiseConv2d(alpha, kernel_size, bias=bias)
        self.w_gate = PointwiseConv(hidden // 2, dim, bias=bias)
        self.w_proj = PointwiseConv(dim, dim, bias=bias)

    def _tau_alpha(self, delta: torch.Tensor) -> torch.Tensor:
        # tau_adj averaged over adjacent channel pairs to alpha's C/2 channels.
        return (self.tau * delta).unflatten(1, (self.parts["alpha"][1], -1)).mean(dim=2)

    def _gate(self, gamma: torch.Tensor) -> torch.Tensor:
        return F.gelu(gamma)
