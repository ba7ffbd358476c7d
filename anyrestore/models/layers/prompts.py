"""Semantic prompts for ClusIR's decoder (Sec. 3.1).

The per-stage degradation prompts of the encoder routers are tokens; a decoder level
queries them with its own pooled features by multi-head cross-attention, and a prompt
generation block (PGB, after PromptIR) refines the result as a softmax-weighted mix of
learned prompt components. The prompts are vectors (one per image), so they broadcast over
any image or tile size; the whole computation is image-wide and goes through a
``GlobalStat``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from anyrestore.models.layers.globalstats import GlobalStat
from anyrestore.models.layers.init import init_unless_meta


class SemanticPrompt(nn.Module):
    """(b, dim, h, w) features + (b, t, token_dim) stage prompts -> (b, dim) semantic prompt."""

    def __init__(self, dim: int, token_dim: int, heads: int, prompt_len: int) -> None:
        super().__init__()
        if token_dim % heads:
            raise ValueError(f"token dim {token_dim} is not divisible by heads {heads}")
        self.heads = heads
        self.stat = GlobalStat()
        self.query = nn.Linear(dim, token_dim)
        self.key_value = nn.Linear(token_dim, 2 * token_dim)
        self.attn_out = nn.Linear(token_dim, dim)
        # PGB: weights over learned prompt components, then a projection.
        self.component_logits = nn.Linear(dim, prompt_len)
        components = init_unless_meta(
            torch.empty(prompt_len, dim), nn.init.normal_, std=1 / math.sqrt(dim)
        )
        self.components = nn.Parameter(components)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.stat(lambda: self._prompt(x, tokens), x.shape[0])

    def _prompt(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        b, t, dim = tokens.shape
        heads, d = self.heads, dim // self.heads
        q = self.query(x.mean(dim=(2, 3))).reshape(b, heads, 1, d)
        k, v = self.key_value(tokens).reshape(b, t, 2, heads, d).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) / math.sqrt(d)).softmax(dim=-1)
        semantic = self.attn_out((attn @ v).reshape(b, dim))
        weights = self.component_logits(semantic).softmax(dim=-1)
        return semantic + self.proj(weights @ self.components.to(weights.dtype))
