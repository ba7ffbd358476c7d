"""Probabilistic cluster-guided routing (PCGRM) and the mixture of experts it drives.

ClusIR Sec. 3.2. Routing is hierarchical: a pooled feature is compared with a bank of unit
prototypes to get a cluster posterior (Eq. 4-5); the top clusters are kept (Eq. 6), each
carrying a Gaussian prior from which a degradation prompt is sampled (Eq. 7); the prompt
attends over the features to gate the experts owned by each cluster (Eq. 8-9), and the top
experts of every selected cluster run (Eq. 10), weighted by both posteriors (Eq. 3).

Decisions are per image (global average pooling), so every image in a batch routes on its
own and only its selected experts run on it. The whole decision goes through a
``GlobalStat`` so tiled inference can reuse a whole-image routing on every tile.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anyrestore.models.layers.ffn import GatedDconvFFN
from anyrestore.models.layers.globalstats import GlobalStat
from anyrestore.models.layers.init import init_unless_meta
from anyrestore.models.layers.norm import LayerNorm2d

# Side of the grid the features are pooled to before the gating cross-attention (Eq. 8).
GATE_GRID = 4


def select_top_k(scores: torch.Tensor, k: int, cover: bool = False) -> torch.Tensor:
    """Indices of the ``k`` best columns per row, best first.

    With ``cover`` (training only) the choice is repaired so that, when the batch has enough
    slots, every column is chosen by some row: an unused column replaces the weakest choice
    of the row that scores it highest, taken from a column other rows also chose. Rows keep
    exactly ``k`` choices; with realistic batches this rarely fires, but it means no cluster
    prior is left without data (and a gradient) in a small batch.
    """
    idx = scores.topk(k, dim=1).indices
    rows, cols = scores.shape
    if not cover or rows * k < cols:
        return idx
    s = scores.detach()
    mask = torch.zeros_like(s, dtype=torch.bool).scatter_(1, idx, True)
    while True:
        counts = mask.sum(0)
        unused = int(counts.argmin())
        if counts[unused] > 0:
            break
        # Some column is chosen twice (rows * k >= cols), and its rows lack ``unused``.
        donors = mask & (counts > 1)
        row = int(s[:, unused].masked_fill(~donors.any(1), -math.inf).argmax())
        col = int(s[row].masked_fill(~donors[row], math.inf).argmin())
        mask[row, col] = False
        mask[row, unused] = True
    return s.masked_fill(~mask, -math.inf).topk(k, dim=1).indices


class ClusterRouter(nn.Module):
    """PCGRM for one encoder stage: cluster posterior, prompt and per-cluster expert gates."""

    def __init__(
        self,
        dim: int,
        heads: int,
        num_clusters: int,
        top_clusters: int,
        experts_per_cluster: int,
        top_experts: int,
        cover_clusters: bool = True,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        if num_clusters > dim:
            raise ValueError(f"{num_clusters} orthogonal prototypes need dim >= {num_clusters}")
        self.heads = heads
        self.cover_clusters = cover_clusters
        self.num_clusters, self.top_clusters = num_clusters, top_clusters
        self.experts_per_cluster, self.top_experts = experts_per_cluster, top_experts
        self.stat = GlobalStat()
        self.embed = nn.Linear(dim, dim)
        # Orthonormal rows.
        bank = init_unless_meta(torch.empty(num_clusters, dim), nn.init.orthogonal_)
        self.prototypes = nn.Parameter(bank)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        # Gaussian cluster priors: centres start on the prototypes, spread at 0.1.
        self.mu = nn.Parameter(bank.clone())
        self.log_sigma = nn.Parameter(torch.full((num_clusters, dim), math.log(0.1)))
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.attn_out = nn.Linear(dim, dim)
        experts = num_clusters * experts_per_cluster
        self.gate = nn.Linear(dim, experts)  # W_k of Eq. (9), all clusters stacked
        self.noise = nn.Linear(dim, experts)  # scale of the interference term

    def unit_prototypes(self) -> torch.Tensor:
        """The prototype bank on the unit hypersphere, (num_clusters, dim)."""
        return F.normalize(self.prototypes, dim=-1)

    def orthogonality_loss(self) -> torch.Tensor:
        """Mean squared cosine between distinct prototypes (0 when orthogonal)."""
        m = self.unit_prototypes().float()
        with torch.autocast(m.device.type, enabled=False):  # bf16 would swamp cosines near 0
            gram = m @ m.t()
        off = gram - torch.eye(len(m), device=m.device, dtype=gram.dtype)
        return off.pow(2).sum() / max(len(m) * (len(m) - 1), 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.stat(lambda: self._route(x), x.shape[0])

    def _route(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c = x.shape[:2]
        n, e = self.num_clusters, self.experts_per_cluster
        z = F.normalize(self.embed(x.mean(dim=(2, 3))), dim=-1)
        # Eq. (4): s_k = <z, m_k> / (|z| |m_k|), cosine similarity to each prototype
        similarity = z @ self.unit_prototypes().t()
        # Eq. (5): p(k|x) = softmax_k(s_k / tau), tau learned
        posterior = (similarity * self.logit_scale.exp().clamp(max=100.0)).softmax(dim=-1)
        # Eq. (6): S = TopK(p(k|x)); p^_k = p(k|x) / sum_{j in S} p(j|x)
        clusters = select_top_k(
            posterior, self.top_clusters, cover=self.training and self.cover_clusters
        )
        chosen = posterior.gather(1, clusters)
        cluster_weights = chosen / chosen.sum(dim=1, keepdim=True)
        # Eq. (7): P = sum_{k in S} p^_k (mu_k + sigma_k * eps), eps ~ N(0, I) while training
        centres = self.mu[clusters]
        if self.training:
            centres = centres + self.log_sigma.exp()[clusters] * torch.randn_like(centres)
        prompt = (cluster_weights.unsqueeze(-1) * centres).sum(dim=1)
        # Eq. (8): h = softmax(W_q P (W_k T)^T / sqrt(d)) W_v T over pooled feature tokens T
        tokens = F.adaptive_avg_pool2d(x, GATE_GRID).flatten(2).transpose(1, 2)
        heads, d = self.heads, c // self.heads
        q = self.query(prompt).reshape(b, heads, 1, d)
        k, v = self.key_value(tokens).reshape(b, -1, 2, heads, d).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) / math.sqrt(d)).softmax(dim=-1)
        h = self.attn_out((attn @ v).reshape(b, c))
        # Eq. (9): p(e|k,x) = softmax_e(W_k h + eps'), eps' = N(0,1) * softplus(W_n h) in training
        logits = self.gate(h)
        if self.training:
            logits = logits + torch.randn_like(logits) * F.softplus(self.noise(h))
        logits = logits.reshape(b, n, e)
        expert_probs = logits.softmax(dim=-1)
        experts = expert_probs.detach().topk(self.top_experts, dim=-1).indices
        # Eq. (10): p^(e|k) = p(e|k,x) / sum_{e' in TopK} p(e'|k,x) over the selected experts
        top = expert_probs.gather(2, experts)
        expert_weights = top / top.sum(dim=-1, keepdim=True)
        return {
            "posterior": posterior,
            "clusters": clusters,
            "cluster_weights": cluster_weights,
            "expert_probs": expert_probs,
            "experts": experts,
            "expert_weights": expert_weights,
            "prompt": prompt,
        }


def dispatch(route: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and expert: the Eq. (3) weight p^_k p^(e|k) and whether it runs, (b, n*e) each."""
    b, n, e = route["expert_probs"].shape
    device = route["experts"].device
    within = torch.zeros(b, n, e, device=device)
    within = within.scatter(2, route["experts"], route["expert_weights"].float())
    per_cluster = torch.zeros(b, n, device=device)
    per_cluster = per_cluster.scatter(1, route["clusters"], route["cluster_weights"].float())
    picked = torch.zeros(b, n, dtype=torch.bool, device=device)
    picked = picked.scatter(1, route["clusters"], True)
    running = torch.zeros(b, n, e, dtype=torch.bool, device=device)
    running = running.scatter(2, route["experts"], True) & picked.unsqueeze(-1)
    weights = per_cluster.unsqueeze(-1) * within
    return weights.reshape(b, n * e), running.reshape(b, n * e)


def explore_idle_experts(
    route: dict[str, torch.Tensor], weights: torch.Tensor, running: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training only: an expert no image selected also runs on the image that rates it highest.

    Its output is weighted by that image's joint probability p(k|x) p(e|k,x), so the expert,
    its gate and its prototype keep learning while the top-k choice is concentrated elsewhere
    (a batch selects at most ``b * top_clusters * top_experts`` experts). It adds at most one
    expert call per idle expert and never runs in eval.
    """
    idle = ~running.any(dim=0)
    if not bool(idle.any()):
        return weights, running
    joint = (route["posterior"].unsqueeze(-1) * route["expert_probs"]).flatten(1).float()
    rows = joint.detach().argmax(dim=0)
    extra = torch.zeros_like(running)
    cols = idle.nonzero().squeeze(1)
    extra[rows[cols], cols] = True
    return torch.where(extra, joint, weights), running | extra


def load_balance_loss(route: dict[str, torch.Tensor], running: torch.Tensor) -> torch.Tensor:
    """Switch-style balance: n_experts * sum_j (share of dispatches_j) * (mean probability_j).

    The probability is the full joint p(k|x) p(e|k,x), so gates and prototypes get a gradient
    even for experts that were not selected. Equals 1 when routing is uniform.
    """
    joint = route["posterior"].unsqueeze(-1) * route["expert_probs"]
    importance = joint.mean(dim=0).flatten()
    load = running.float().sum(dim=0)
    load = load / load.sum().clamp(min=1.0)
    return importance.numel() * (importance * load).sum()


class ClusterMoE(nn.Module):
    """Pre-norm residual mixture of experts routed by ``ClusterRouter``; only chosen experts run."""

    def __init__(
        self,
        dim: int,
        heads: int,
        num_clusters: int,
        top_clusters: int,
        experts_per_cluster: int,
        top_experts: int,
        expansion: float,
        *,
        cover_clusters: bool = True,
        explore_idle: bool = True,
    ) -> None:
        super().__init__()
        self.explore_idle = explore_idle
        self.norm = LayerNorm2d(dim)
        self.router = ClusterRouter(
            dim, heads, num_clusters, top_clusters, experts_per_cluster, top_experts, cover_clusters
        )
        self.experts = nn.ModuleList(
            GatedDconvFFN(dim, expansion) for _ in range(num_clusters * experts_per_cluster)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        y = self.norm(x)
        route = self.router(y)
        weights, running = dispatch(route)
        route = dict(route, weights=weights, running=running)
        if self.training and self.explore_idle:
            weights, running = explore_idle_experts(route, weights, running)
        return x + self.run_experts(y, weights, running).to(x.dtype), route

    def run_experts(
        self, y: torch.Tensor, weights: torch.Tensor, running: torch.Tensor
    ) -> torch.Tensor:
        """Eq. (3): y = sum_{k in S} p^_k sum_{e in TopK} p^(e|k) E_{k,e}(x), per image.

        Images that run the same experts (a batch of one, or tiles replaying one routing) run
        together, and an image's experts run as one wider GDFN whose weights are the chosen
        experts' stacked, so a stage costs three convolutions whatever the pool size.
        """
        if any(e.project_in.bias is not None for e in self.experts):
            return self._run_experts_one_by_one(y, weights, running)
        patterns, group_of = torch.unique(running, dim=0, return_inverse=True)
        if len(patterns) == 1:
            return self._run_group(y, weights, patterns[0])
        out: torch.Tensor | None = None
        for g, pattern in enumerate(patterns):
            idx = (group_of == g).nonzero().squeeze(1)
            part = self._run_group(y[idx], weights[idx], pattern)
            if out is None:  # the experts' dtype, which autocast may have lowered from y's
                out = torch.zeros_like(y, dtype=part.dtype)  # and y's layout (channels-last)
            out = out.index_copy(0, idx, part)
        assert out is not None
        return out

    def _run_group(
        self, y: torch.Tensor, weights: torch.Tensor, running: torch.Tensor
    ) -> torch.Tensor:
        """The experts marked in ``running`` (n*e,) on every image of ``y``, weighted and summed."""
        cols = running.nonzero().squeeze(1)
        if len(cols) == 0:
            return torch.zeros_like(y)
        experts = [self.experts[j] for j in cols.tolist()]
        b = y.shape[0]
        hidden = experts[0].project_out.weight.shape[1]
        w_out = torch.cat([e.project_out.weight for e in experts], dim=1)
        scale = weights[:, cols].to(y.dtype).repeat_interleave(hidden, dim=1)  # (b, n * hidden)
        if b == 1:  # fold the Eq. (3) weights into the output projection
            w_out = w_out * scale.to(w_out.dtype)[..., None, None]

        def branch(index: int) -> torch.Tensor:
            # GDFN branch ``index`` (0: GELU, 1: value) of every expert at once, their rows of
            # project_in and dwconv stacked; each branch a dense map of its own (GELU and the
            # product are slower on a strided channel slice of a channels-last map)
            rows = slice(index * hidden, (index + 1) * hidden)
            w_in = torch.cat([e.project_in.weight[rows] for e in experts])
            w_dw = torch.cat([e.dwconv.weight[rows] for e in experts])
            return F.conv2d(F.conv2d(y, w_in), w_dw, padding=1, groups=w_dw.shape[0])

        z = F.gelu(branch(0))  # GDFN's gate, every expert at once
        z = z.mul_(branch(1)) if not torch.is_grad_enabled() else z * branch(1)
        if b > 1:
            z = z * scale[:, :, None, None]
        return F.conv2d(z, w_out)

    def _run_experts_one_by_one(
        self, y: torch.Tensor, weights: torch.Tensor, running: torch.Tensor
    ) -> torch.Tensor:
        out = torch.zeros_like(y)
        for j, expert in enumerate(self.experts):
            idx = running[:, j].nonzero().squeeze(1)
            if len(idx) == 0:
                continue
            contribution = expert(y.index_select(0, idx)) * weights[idx, j].view(-1, 1, 1, 1)
            out = out.index_add(0, idx, contribution.to(out.dtype))
        return out
