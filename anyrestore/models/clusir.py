"""ClusIR: cluster-guided all-in-one image restoration (Sec. 3, Tab. 7).

Sec. 3.1: a 3x3 conv embedding, a 4-stage encoder where every stage is wavelet-based
transformer blocks (WTB) followed by a mixture-of-experts block routed by PCGRM (Sec. 3.2),
and a decoder in which each level is modulated in frequency by DAFMM (Sec. 3.3) with a
semantic prompt built from the encoder's per-stage degradation prompts. The text lost its
equations; the reconstruction and every choice the paper leaves open are listed in
docs/architectures.md ("ClusIR"). Variants differ only in ``dim`` (Tab. 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from anyrestore.models.base import RestorationModel
from anyrestore.models.layers.dafmm import DAFMM
from anyrestore.models.layers.padding import pad_to_multiple
from anyrestore.models.layers.prompts import SemanticPrompt
from anyrestore.models.layers.routing import ClusterMoE, load_balance_loss
from anyrestore.models.layers.sampling import Downsample, Upsample
from anyrestore.models.layers.wtb import WaveletTransformerBlock
from anyrestore.models.registry import register_arch, register_model

__all__ = ["ClusIRConfig", "ClusIR"]

LEVELS = 4
#: WTB keys/values lie on a 1/32-resolution grid at every level (7x7 at 224, as in Wave-ViT).
KV_REDUCTION = 32


@dataclass(frozen=True)
class ClusIRConfig:
    """Sizes of a ClusIR network; ``dim`` is the level-1 width, doubled at every level down."""

    dim: int = 48
    #: WTBs per encoder stage; decoder levels 1-3 reuse the counts of the same level.
    blocks: tuple[int, int, int, int] = (1, 1, 1, 1)
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion: float = 2.66
    refinement_blocks: int = 1
    #: Cluster prototypes per stage and how many each image uses (Sec. 4.1: 3 and 2).
    num_clusters: int = 3
    top_clusters: int = 2
    experts_per_cluster: int = 15
    top_experts: int = 2
    expert_expansion: float = 1.25
    #: Width of the prompt tokens the decoder's cross-attention mixes (fixed, as PromptIR's).
    prompt_dim: int = 256
    #: Learned components mixed by each decoder level's prompt generation block.
    prompt_len: int = 5
    wavelet: str = "haar"
    #: Our additions, not the paper's (which gives neither weight; its loss is L1 + MS-SSIM).
    orth_loss_weight: float = 0.1
    balance_loss_weight: float = 0.01
    #: Training-time routing heuristics of ours (docs/architectures.md): every cluster gets
    #: an image of the batch, and an expert no image chose runs on the image rating it highest.
    #: Both off trains exactly the paper's top-k routing; neither ever runs in eval.
    cover_clusters: bool = True
    explore_idle: bool = True

    #: How a checkpoint was trained, not what network it is: not part of a variant's identity.
    TRAINING_FIELDS: ClassVar[tuple[str, ...]] = (
        "orth_loss_weight",
        "balance_loss_weight",
        "cover_clusters",
        "explore_idle",
    )

    def __post_init__(self) -> None:
        if len(self.blocks) != LEVELS or len(self.heads) != LEVELS:
            raise ValueError("ClusIR has 4 levels: blocks and heads need 4 entries each")
        if self.dim < 4 or self.dim % 4:
            raise ValueError(f"dim must be a positive multiple of 4, got {self.dim}")
        if min(self.blocks) < 0 or self.refinement_blocks < 0:
            raise ValueError("block counts must be >= 0")
        for level, heads in enumerate(self.heads):
            if heads < 1 or (self.dim * 2**level) % heads:
                raise ValueError(
                    f"level {level + 1}: {heads} heads do not divide {self.dim * 2**level}"
                )
        if self.prompt_dim % self.heads[-1]:
            raise ValueError(
                f"heads[-1] = {self.heads[-1]} must divide prompt_dim {self.prompt_dim}"
            )
        if not 1 <= self.top_clusters <= self.num_clusters <= self.dim:
            raise ValueError("need 1 <= top_clusters <= num_clusters <= dim")
        if not 1 <= self.top_experts <= self.experts_per_cluster:
            raise ValueError("need 1 <= top_experts <= experts_per_cluster")


def _wtbs(dim: int, heads: int, count: int, kv_stride: int, cfg: ClusIRConfig) -> nn.Sequential:
    return nn.Sequential(
        *(
            WaveletTransformerBlock(dim, heads, kv_stride, cfg.ffn_expansion, cfg.wavelet)
            for _ in range(count)
        )
    )


class ClusIR(RestorationModel):
    """The ClusIR U-Net (Fig. 2); accepts any input size and pads internally."""

    arch = "clusir"
    #: Three down-samplings and the DWT inside the latent DAFMM.
    pad_multiple = 16
    tile_overlap_hint = 64
    #: Tiled inference records the WTB keys/values and DAFMM's spectral modulation on the
    #: whole image up to this side (exact replay), on a downscaled copy above it.
    reference_side = 1024

    def __init__(self, config: ClusIRConfig) -> None:
        super().__init__()
        self.config = cfg = config
        widths = [cfg.dim * 2**level for level in range(LEVELS)]
        # The DWT halves the resolution, the key/value conv strides the rest of the way.
        strides = [max(KV_REDUCTION // 2 ** (level + 1), 1) for level in range(LEVELS)]
        token_dim = cfg.prompt_dim
        self.patch_embed = nn.Conv2d(3, cfg.dim, 3, padding=1)
        self.encoders = nn.ModuleList(
            _wtbs(widths[i], cfg.heads[i], cfg.blocks[i], strides[i], cfg) for i in range(LEVELS)
        )
        self.experts = nn.ModuleList(
            ClusterMoE(
                widths[i],
                cfg.heads[i],
                cfg.num_clusters,
                cfg.top_clusters,
                cfg.experts_per_cluster,
                cfg.top_experts,
                cfg.expert_expansion,
                cover_clusters=cfg.cover_clusters,
                explore_idle=cfg.explore_idle,
            )
            for i in range(LEVELS)
        )
        self.downs = nn.ModuleList(Downsample(widths[i]) for i in range(LEVELS - 1))
        # Stage prompts become tokens of one width for the decoder's cross-attention.
        self.prompt_tokens = nn.ModuleList(nn.Linear(widths[i], token_dim) for i in range(LEVELS))
        # Decoder, deepest first: DAFMM at level i+1, upsample to level i, merge skip, WTBs.
        order = range(LEVELS - 2, -1, -1)
        self.semantic_prompts = nn.ModuleList(
            SemanticPrompt(widths[i + 1], token_dim, cfg.heads[-1], cfg.prompt_len) for i in order
        )
        self.dafmm = nn.ModuleList(DAFMM(widths[i + 1], cfg.wavelet) for i in order)
        self.ups = nn.ModuleList(Upsample(widths[i + 1]) for i in order)
        self.merges = nn.ModuleList(nn.Conv2d(2 * widths[i], widths[i], 1) for i in order)
        self.decoders = nn.ModuleList(
            _wtbs(widths[i], cfg.heads[i], cfg.blocks[i], strides[i], cfg) for i in order
        )
        self.refinement = _wtbs(cfg.dim, cfg.heads[0], cfg.refinement_blocks, strides[0], cfg)
        self.output = nn.Conv2d(cfg.dim, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, return_aux: bool = False) -> Any:
        h, w = x.shape[-2:]
        inp = pad_to_multiple(x, self.pad_multiple)
        feat = self.patch_embed(inp)
        skips, routes = [], []
        for i in range(LEVELS):
            feat, route = self.experts[i](self.encoders[i](feat))
            routes.append(route)
            if i < LEVELS - 1:
                skips.append(feat)
                feat = self.downs[i](feat)
        # Sec. 3.1: multi-scale prompts P_1..P_4 as tokens for the semantic prompts
        tokens = torch.stack(
            [proj(r["prompt"]) for proj, r in zip(self.prompt_tokens, routes, strict=True)], dim=1
        )
        for j in range(LEVELS - 1):
            prompt = self.semantic_prompts[j](feat, tokens)
            feat = self.ups[j](self.dafmm[j](feat, prompt))
            feat = self.merges[j](torch.cat([feat, skips.pop()], dim=1))
            feat = self.decoders[j](feat)
        out = self.output(self.refinement(feat)) + inp
        out = out[..., :h, :w]
        if not return_aux:
            return out
        return out, self._aux(routes)

    def _aux(self, routes: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        cfg = self.config
        orth = torch.stack([moe.router.orthogonality_loss() for moe in self.experts]).mean()
        balance = torch.stack([load_balance_loss(r, r["running"]) for r in routes]).mean()
        n, e = cfg.num_clusters, cfg.experts_per_cluster
        routing = [
            {
                "cluster_posterior": r["posterior"].detach(),
                "clusters": r["clusters"],
                "expert_probs": r["expert_probs"].detach(),
                "experts": r["experts"],
                "expert_weights": r["weights"].detach().reshape(-1, n, e),
                "expert_usage": r["running"].reshape(-1, n, e),
            }
            for r in routes
        ]
        losses = {
            "orthogonality": cfg.orth_loss_weight * orth,
            "load_balance": cfg.balance_loss_weight * balance,
        }
        return {"losses": losses, "routing": routing}


register_arch("clusir", ClusIRConfig, ClusIR)


@register_model("clusir_t", arch="clusir")
def clusir_t() -> ClusIRConfig:
    """ClusIR-Tiny (Tab. 7): embedding dim 16."""
    return ClusIRConfig(dim=16)


@register_model("clusir_s", arch="clusir")
def clusir_s() -> ClusIRConfig:
    """ClusIR-Small (Tab. 7): embedding dim 32."""
    return ClusIRConfig(dim=32)


@register_model("clusir_b", arch="clusir")
def clusir_b() -> ClusIRConfig:
    """ClusIR-Base (Tab. 7): embedding dim 48."""
    return ClusIRConfig(dim=48)
