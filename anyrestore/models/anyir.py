"""AnyIR (Ren et al., TMLR): all-in-one restoration by spatial-frequency degradation adaptation.

Sec. 3.2: a 4-level U-shaped encoder-decoder of degradation adaptation blocks (DAB) behind a
3x3 conv patch embedding, with refinement blocks at full resolution and a global skip.
Sec. 3.3 (Eq. 6-8): a DAB skip-splits its channels, runs transposed attention on one half
and GatedDA (Sec. 3.4, Alg. 1) on the other, fuses them in space and frequency (Sec. 3.5,
Alg. 2, Eq. 9) and finishes with norm + FFN. Variant sizes follow App. A.2, Tab. 11.
Choices the paper leaves open are listed in docs/architectures.md ("AnyIR").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from anyrestore.models.base import RestorationModel
from anyrestore.models.layers.attention import TransposedAttention
from anyrestore.models.layers.ffn import GatedDconvFFN
from anyrestore.models.layers.fusion import SpatialFrequencyFusion
from anyrestore.models.layers.gated import GatedDA, PreviewGatedDA
from anyrestore.models.layers.norm import LayerNorm2d
from anyrestore.models.layers.padding import pad_to_multiple
from anyrestore.models.layers.pointwise import PointwiseConv
from anyrestore.models.layers.sampling import Downsample, Upsample
from anyrestore.models.layers.tracing import in_graph_form
from anyrestore.models.registry import register_arch, register_model

__all__ = ["AnyIRConfig", "AnyIR", "DegradationAdaptationBlock", "skip_split"]


@dataclass(frozen=True)
class AnyIRConfig:
    """Sizes of an AnyIR network; ``dim`` is the level-1 width, doubled at every level down."""

    dim: int = 28
    blocks: tuple[int, int, int, int] = (3, 5, 5, 7)
    #: Attention heads per level; the attention half of a level has dim * 2**level / 2 channels.
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion: float = 2.0
    refinement_blocks: int = 4
    #: Kernel of GatedDA's depthwise conv W_depth (Alg. 1 step 8); the paper gives none.
    gate_kernel: int = 7
    #: True gives every convolution a bias, GatedDA's and the patch embedding's included
    #: (the released code keeps those two without); no shipped variant sets it.
    bias: bool = False
    #: 2: the authors' released code (GatedDA with BatchNorm, 8/3 C expansion and a sigmoid
    #: gate; no output projection after the channel attention; interleaved frequency
    #: channels). 1: the preview layout (docs/architectures.md); checkpoints that predate this
    #: field hold layout 1.
    layout: int = 2

    #: Values of fields a checkpoint written before the field existed was built with.
    LEGACY_DEFAULTS: ClassVar[dict[str, Any]] = {"layout": 1}

    def __post_init__(self) -> None:
        if self.layout not in (1, 2):
            raise ValueError(f"unknown AnyIR layout {self.layout}; this version knows 1 and 2")
        if len(self.blocks) != 4 or len(self.heads) != 4:
            raise ValueError("AnyIR has 4 levels: blocks and heads need 4 entries each")
        if self.dim < 4 or self.dim % 4:
            # Skip-split halves C; layout 1's GatedDA then gives alpha and beta C/4 each.
            raise ValueError(f"dim must be a positive multiple of 4, got {self.dim}")
        if self.gate_kernel < 1 or self.gate_kernel % 2 == 0:
            # An even depthwise kernel with padding k // 2 grows the map by a pixel.
            raise ValueError(f"gate_kernel must be odd and positive, got {self.gate_kernel}")
        if min(self.blocks) < 1 or self.refinement_blocks < 0:
            raise ValueError("every level needs at least one block; refinement_blocks >= 0")
        for level, heads in enumerate(self.heads):
            half = self.dim * 2**level // 2
            if heads < 1 or half % heads:
                raise ValueError(
                    f"level {level + 1}: {heads} heads do not divide the {half} attention channels "
                    f"(dim {self.dim}); choose heads that divide dim * 2**level / 2"
                )


def skip_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (6): 1-based odd channels (2k-1) go to attention, even channels (2k) to the gate.

    With gradients both halves come back dense and channels-last, made in one pass over
    ``x``: every channel slice of a channels-last map is strided, and the layers after the
    split (BatchNorm, the 1x1 convolutions' GEMMs) either copied it themselves or ran slower
    on it, forward and backward. Without gradients they are views: the layers after
    the split run large maps in bands of rows and copy a band at a time, where a whole-map
    copy would raise the peak memory of a large pass.
    """
    b, c, h, w = x.shape
    if in_graph_form():  # a split along a new axis, not two strided slices (slow there)
        first, second = x.reshape(b, c // 2, 2, h, w).unbind(2)
        return first, second
    if not torch.is_grad_enabled():
        return x[:, 0::2], x[:, 1::2]
    pairs = x.permute(0, 2, 3, 1).reshape(b, h, w, c // 2, 2)  # a view when channels-last
    halves = pairs.movedim(-1, 0).contiguous()  # (2, b, h, w, c/2)
    return halves[0].permute(0, 3, 1, 2), halves[1].permute(0, 3, 1, 2)


class DegradationAdaptationBlock(nn.Module):
    """DAB (Sec. 3.3): skip-split, attention || GatedDA, spatial-frequency fusion, norm + FFN."""

    def __init__(self, dim: int, heads: int, cfg: AnyIRConfig) -> None:
        super().__init__()
        half = dim // 2
        released = cfg.layout == 2
        self.norm1 = LayerNorm2d(dim, bias=True)
        self.attn = TransposedAttention(half, heads, bias=cfg.bias, project=not released)
        gate = GatedDA if released else PreviewGatedDA
        self.gate = gate(half, cfg.gate_kernel, bias=cfg.bias)
        self.fusion = SpatialFrequencyFusion(dim, bias=cfg.bias, interleave=released)
        self.norm2 = LayerNorm2d(dim, bias=True)
        self.ffn = GatedDconvFFN(dim, cfg.ffn_expansion, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Eq. (6): skip-split of the normalised input into interleaved halves
        f_att, f_gate = skip_split(self.norm1(x))
        # Eq. (7): transposed (channel) attention on one half
        f_att = self.attn(f_att)
        # Sec. 3.4 / Alg. 1: GatedDA on the other half
        f_gate = self.gate(f_gate)
        # Alg. 2 + Eq. (9): F_fuse = Conv_{W_fuse}(fusion) + F_in
        f_fuse = self.fusion(f_att, f_gate, residual=x)
        # Eq. (8): F_out = FFN(Norm(F_fuse)) + F_fuse
        return self.ffn(self.norm2(f_fuse), residual=f_fuse)


def _stage(dim: int, heads: int, count: int, cfg: AnyIRConfig) -> nn.Sequential:
    return nn.Sequential(*(DegradationAdaptationBlock(dim, heads, cfg) for _ in range(count)))


class AnyIR(RestorationModel):
    """The U-shaped AnyIR network (Fig. 2a); accepts any input size and pads internally.

    Features are kept channels-last: its 1x1 convolutions and per-pixel norms run several
    times faster that way on CPUs, and no slower on GPUs.
    """

    arch = "anyir"
    pad_multiple = 8
    traceable = True
    tile_overlap_hint = 64
    #: Tiled inference records the image-wide statistics (GatedDA's Delta, the attention
    #: maps) on the whole image up to this side (exact replay), on a downscaled copy above it.
    #: A 1024x768 reference pass peaks at about 2 GB in fp32 (the FFN runs in bands).
    reference_side = 1024

    def __init__(self, config: AnyIRConfig) -> None:
        super().__init__()
        self.config = cfg = config
        d = cfg.dim
        nb, nh = cfg.blocks, cfg.heads
        # Sec. 3.2: shallow 3x3 conv patch embedding, H x W x C
        self.patch_embed = nn.Conv2d(3, d, 3, padding=1, bias=cfg.bias)
        # Encoder: each level doubles channels and halves resolution.
        self.encoder1 = _stage(d, nh[0], nb[0], cfg)
        self.down1_2 = Downsample(d)
        self.encoder2 = _stage(2 * d, nh[1], nb[1], cfg)
        self.down2_3 = Downsample(2 * d)
        self.encoder3 = _stage(4 * d, nh[2], nb[2], cfg)
        self.down3_4 = Downsample(4 * d)
        self.latent = _stage(8 * d, nh[3], nb[3], cfg)
        # Decoder: upsample, concat the skip, merge by a linear (1x1) projection.
        # The bottleneck is first projected to 4C, so the 3x3 upsampling conv runs at 4C -> 8C
        # (a 16C-wide conv here would alone hold ~15% of the paper's parameter budget).
        self.reduce_latent = PointwiseConv(8 * d, 4 * d, bias=cfg.bias)
        self.up4_3 = Upsample(4 * d)
        self.reduce3 = PointwiseConv(6 * d, 4 * d, bias=cfg.bias)
        self.decoder3 = _stage(4 * d, nh[2], nb[2], cfg)
        self.up3_2 = Upsample(4 * d)
        self.reduce2 = PointwiseConv(4 * d, 2 * d, bias=cfg.bias)
        self.decoder2 = _stage(2 * d, nh[1], nb[1], cfg)
        self.up2_1 = Upsample(2 * d)
        # Level 1 keeps the concatenated 2C width, as in Restormer/PromptIR (no reduction).
        self.decoder1 = _stage(2 * d, nh[0], nb[0], cfg)
        self.refinement = _stage(2 * d, nh[0], cfg.refinement_blocks, cfg)
        self.output = nn.Conv2d(2 * d, 3, 3, padding=1, bias=cfg.bias)

    def forward(self, x: torch.Tensor, return_aux: bool = False) -> Any:
        h, w = x.shape[-2:]
        inp = pad_to_multiple(x, self.pad_multiple).contiguous(memory_format=torch.channels_last)
        e1 = self.encoder1(self.patch_embed(inp))
        e2 = self.encoder2(self.down1_2(e1))
        e3 = self.encoder3(self.down2_3(e2))
        z = self.latent(self.down3_4(e3))
        d3 = self.decoder3(self.reduce3(torch.cat((self.up4_3(self.reduce_latent(z)), e3), dim=1)))
        d2 = self.decoder2(self.reduce2(torch.cat((self.up3_2(d3), e2), dim=1)))
        d1 = self.decoder1(torch.cat((self.up2_1(d2), e1), dim=1))
        # Sec. 3.2: refinement at full resolution, then the global skip (input added to output)
        out = self.output(self.refinement(d1)) + inp
        out = out[..., :h, :w]
        return (out, {"losses": {}}) if return_aux else out


register_arch("anyir", AnyIRConfig, AnyIR)


@register_model("anyir_t", arch="anyir")
def anyir_t() -> AnyIRConfig:
    """AnyIR-Tiny (Tab. 11): blocks [3,5,5,7], dim 28, FFN x2, 4 refinement blocks."""
    return AnyIRConfig(dim=28, blocks=(3, 5, 5, 7), ffn_expansion=2.0, refinement_blocks=4)


@register_model("anyir_s", arch="anyir")
def anyir_s() -> AnyIRConfig:
    """AnyIR-Small (Tab. 11): blocks [4,6,6,8], dim 32, FFN x2, 4 refinement blocks."""
    return AnyIRConfig(dim=32, blocks=(4, 6, 6, 8), ffn_expansion=2.0, refinement_blocks=4)
