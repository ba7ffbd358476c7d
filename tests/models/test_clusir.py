"""ClusIR specifics: paper calibration, PCGRM routing, wavelets, frozen statistics, bf16."""

from __future__ import annotations

import math

import pytest
import pywt
import torch
import torch.nn.functional as F
from tinymodels import TINY_CLUSIR as TINY
from torch.utils.flop_counter import FlopCounterMode

from anyrestore.bench.complexity import count_macs, count_params
from anyrestore.engine import Restorer
from anyrestore.metrics import psnr
from anyrestore.models import create_model
from anyrestore.models.layers.dafmm import DAFMM
from anyrestore.models.layers.globalstats import GlobalStat, frozen_global_stats
from anyrestore.models.layers.routing import (
    ClusterRouter,
    dispatch,
    explore_idle_experts,
    select_top_k,
)
from anyrestore.models.layers.wavelets import DWT, IDWT
from anyrestore.models.layers.wtb import attention
from anyrestore.models.registry import config_from_dict

# Tab. 7 / Tab. 8 of the paper: parameters (M) and FLOPs (GMACs at 224 x 224).
PAPER = {"clusir_t": (6.89, 3.79), "clusir_s": (25.03, 13.42), "clusir_b": (54.66, 28.85)}
# This reading's exact figures (docs/architectures.md and the README quote them).
EXACT = {
    "clusir_t": (6_803_722, 3_993_667_136),
    "clusir_s": (25_045_076, 14_545_747_584),
    "clusir_b": (55_121_834, 31_631_642_592),
}


def tiny(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("clusir_t", **{**TINY, **overrides}).eval()


@pytest.mark.parametrize("name", sorted(PAPER))
def test_size_and_compute_match_the_paper(name: str, built_model) -> None:
    params, macs = PAPER[name]
    model = built_model(name)
    counted = count_params(model), count_macs(model, 224)
    assert counted == EXACT[name]  # a dropped bias or a rounding change shows here
    assert counted[0] / 1e6 == pytest.approx(params, rel=0.03)
    assert counted[1] / 1e9 == pytest.approx(macs, rel=0.15)


def test_only_selected_experts_are_counted() -> None:
    # One image runs top_clusters * top_experts experts per stage, whatever the pool size.
    few, many = tiny(experts_per_cluster=2), tiny(experts_per_cluster=6)
    assert count_params(many) > 1.3 * count_params(few)
    # Only the per-image gate (a linear over all experts) grows with the pool.
    assert count_macs(many, 64) == pytest.approx(count_macs(few, 64), rel=1e-4)


def test_prototypes_are_unit_norm_and_start_orthogonal() -> None:
    routers = [m for m in tiny().modules() if isinstance(m, ClusterRouter)]
    assert len(routers) == 4
    for router in routers:
        bank = router.unit_prototypes()
        assert bank.shape[0] == 3
        torch.testing.assert_close(bank.norm(dim=1), torch.ones(3))
        torch.testing.assert_close(bank @ bank.t(), torch.eye(3), atol=1e-6, rtol=0)
        # Orthogonal initialisation, not only normalisation of a random bank.
        torch.testing.assert_close(router.prototypes.norm(dim=1), torch.ones(3))
        assert router.orthogonality_loss() < 1e-12
    with torch.no_grad():
        routers[0].prototypes[1] = 3 * routers[0].prototypes[0]  # two parallel prototypes
    # Mean over the 6 ordered pairs of squared cosines: the parallel pair gives 2/6.
    assert routers[0].orthogonality_loss().item() == pytest.approx(1 / 3, abs=1e-5)


def test_routing_is_hierarchical_top_k_per_image(make_images) -> None:
    model = tiny()
    cfg = model.config
    x = make_images(3, 37, 29)
    with torch.no_grad():
        out, aux = model(x, return_aux=True)
    assert out.shape == x.shape
    assert len(aux["routing"]) == 4
    n, e = cfg.num_clusters, cfg.experts_per_cluster
    for stage in aux["routing"]:
        posterior = stage["cluster_posterior"]
        assert posterior.shape == (3, n)
        torch.testing.assert_close(posterior.sum(dim=1), torch.ones(3))
        clusters = stage["clusters"]
        assert clusters.shape == (3, cfg.top_clusters)
        # The selected clusters are the most probable ones, each image on its own.
        expected = posterior.topk(cfg.top_clusters, dim=1).indices
        assert torch.equal(clusters.sort(dim=1).values, expected.sort(dim=1).values)
        probs = stage["expert_probs"]
        assert probs.shape == (3, n, e)
        torch.testing.assert_close(probs.sum(dim=-1), torch.ones(3, n))
        usage = stage["expert_usage"]
        assert usage.shape == (3, n, e) and usage.dtype == torch.bool
        assert usage.sum(dim=(1, 2)).tolist() == [cfg.top_clusters * cfg.top_experts] * 3
        # Experts run only inside the selected clusters, and their weights sum to one.
        in_selected = torch.zeros(3, n, dtype=torch.bool).scatter(1, clusters, True)
        assert not (usage & ~in_selected.unsqueeze(-1)).any()
        weights = stage["expert_weights"]
        assert (weights[~usage] == 0).all() and (weights[usage] > 0).all()
        torch.testing.assert_close(weights.sum(dim=(1, 2)), torch.ones(3))


def test_aux_losses_are_weighted_finite_and_orthogonality_starts_at_zero(make_images) -> None:
    x = make_images(4, 32, 32)
    losses = {}
    for weight in (0.01, 1.0):
        model = tiny(balance_loss_weight=weight, orth_loss_weight=weight).train()
        torch.manual_seed(3)  # same routing noise for both weights
        _, aux = model(x, return_aux=True)
        losses[weight] = aux["losses"]
    assert set(losses[1.0]) == {"orthogonality", "load_balance"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses[1.0].values())
    assert losses[1.0]["orthogonality"] < 1e-10
    assert losses[1.0]["load_balance"] > 0.1
    # Returned already multiplied by the config weights.
    torch.testing.assert_close(losses[0.01]["load_balance"], 0.01 * losses[1.0]["load_balance"])


def test_noise_only_while_training(make_images) -> None:
    model = tiny()
    x = make_images(2, 32, 32, seed=5)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        torch.manual_seed(1)
        first = model(x)
        torch.manual_seed(2)
        second = model(x)
    model.eval()
    assert not torch.equal(first, second)


def test_training_step_reaches_every_expert_and_prior(make_images) -> None:
    # More experts than a batch of four can select: idle experts are explored, none starve.
    model = tiny(experts_per_cluster=6).train()
    # 64 px: the WTB key/value grid (1/32) has more than one token, so queries matter.
    clean = make_images(4, 64, 64, seed=6)
    out, aux = model(clean + 0.05 * torch.randn_like(clean), return_aux=True)
    ((out - clean).abs().mean() + sum(aux["losses"].values())).backward()
    starved = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not starved, starved[:5]


def test_cluster_coverage_keeps_k_per_row_and_uses_every_cluster() -> None:
    scores = torch.tensor([[0.9, 0.08, 0.02], [0.8, 0.15, 0.05], [0.7, 0.2, 0.1]])
    plain = select_top_k(scores, 2)
    assert 2 not in plain
    covered = select_top_k(scores, 2, cover=True)
    assert sorted(set(covered.flatten().tolist())) == [0, 1, 2]
    assert all(len(set(row.tolist())) == 2 for row in covered)
    # The row that rates the unused cluster highest is the one that takes it.
    assert 2 in covered[2]


@pytest.mark.parametrize(
    ("wavelet", "size"), [("haar", (12, 20)), ("db2", (12, 20)), ("sym4", (4, 2))]
)
def test_dwt_then_idwt_reconstructs(wavelet: str, size: tuple[int, int]) -> None:
    # sym4 (8 taps) on a map smaller than its periodic extension: ClusIR's deepest maps are
    # 2x2 on a 16 px image.
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    bands = DWT(wavelet).double()(x)
    assert bands.shape == (2, 12, size[0] // 2, size[1] // 2)
    back = IDWT(wavelet).double()(bands)
    # Perfect reconstruction: only floating-point rounding remains.
    torch.testing.assert_close(back, x, atol=1e-6, rtol=0)
    single = IDWT(wavelet)(DWT(wavelet)(x.float()))
    torch.testing.assert_close(single, x.float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [8, 32])
def test_spectral_modulation_adds_no_frequencies_a_flat_image_lacks(size: int) -> None:
    # A modulation that predicted the amplitude outright turned flat regions into a spike at
    # pixel (0, 0): the top-left corner artefact of the first clusir_t preview.
    torch.manual_seed(0)
    dafmm = DAFMM(4)
    for param in dafmm.parameters():  # trained-looking weights: every bias and gain non-zero
        torch.nn.init.normal_(param, std=0.5)
    flat = torch.full((2, 4, size, size), 0.3)
    out = dafmm.low_frequency(flat, torch.randn(2, 4))
    assert out.std(dim=(-1, -2)).max() < 1e-5, "a flat input must stay flat"
    assert torch.isfinite(out).all()


def test_spectral_modulation_starts_close_to_the_identity() -> None:
    torch.manual_seed(0)
    dafmm = DAFMM(4)
    x = torch.rand(1, 4, 16, 12)
    torch.testing.assert_close(dafmm.low_frequency(x, torch.randn(1, 4)), x, atol=1e-3, rtol=0)


def test_a_long_wavelet_runs_on_images_smaller_than_its_extension() -> None:
    # At 16 px the deepest DWT sees 2x2 maps, which sym4's periodic extension (6) wraps thrice.
    model = tiny(wavelet="sym4")
    with torch.no_grad():
        out = model(torch.rand(1, 3, 16, 16))
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()


def test_haar_dwt_matches_pywavelets() -> None:
    x = torch.randn(1, 2, 8, 6, dtype=torch.float64)
    bands = DWT("haar").double()(x)
    ll, (lh, hl, hh) = pywt.dwt2(x.numpy(), "haar", mode="periodization")
    for i, ref in enumerate((ll, lh, hl, hh)):
        torch.testing.assert_close(bands[:, 2 * i : 2 * i + 2], torch.from_numpy(ref))


@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_haar_equals_the_convolution(channels_last: bool) -> None:
    dwt, idwt = DWT("haar"), IDWT("haar")
    x = torch.randn(2, 6, 10, 14)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    bands = dwt(x)
    torch.testing.assert_close(bands, dwt.convolve(x), atol=1e-6, rtol=0)
    torch.testing.assert_close(idwt(bands), idwt.convolve(bands), atol=1e-6, rtol=0)
    if channels_last:  # the layout the convolutions around it run fastest on is kept
        assert idwt(bands).is_contiguous(memory_format=torch.channels_last)
    # The differentiable path (training) gives the same values and the adjoint's gradient.
    leaf = bands.clone().requires_grad_(True)
    out = idwt(leaf)
    torch.testing.assert_close(out, idwt.convolve(bands), atol=1e-6, rtol=0)
    out.sum().backward()
    torch.testing.assert_close(leaf.grad, dwt.convolve(torch.ones_like(x)), atol=1e-6, rtol=0)


def _unfold_low_pass(x: torch.Tensor, taps: torch.Tensor, groups: int) -> torch.Tensor:
    """FSB's Eq. (12) as first written, with F.unfold (the reference for the conv form)."""
    b, c, h, w = x.shape
    patches = F.unfold(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3)
    patches = patches.reshape(b, groups, c // groups, 9, h * w)
    return (patches * taps[:, :, None, :, None]).sum(dim=3).reshape(b, c, h, w)


def _chunked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """WTB attention as first written: plain matmuls in query chunks."""
    outs = []
    for start in range(0, q.shape[-2], 4096):
        scores = (q[..., start : start + 4096, :] @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
        outs.append(scores.softmax(dim=-1) @ v)
    return torch.cat(outs, dim=-2)


def test_fast_paths_compute_what_the_first_code_did(make_images) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 16, 9, 11)
    fsb = DAFMM(16).fsb
    taps = fsb.kernel(x)
    low, high = fsb(x)
    torch.testing.assert_close(low, _unfold_low_pass(x, taps, fsb.groups), atol=1e-6, rtol=0)
    q, k, v = torch.randn(2, 2, 5000, 8), torch.randn(2, 2, 12, 8), torch.randn(2, 2, 12, 8)
    torch.testing.assert_close(attention(q, k, v), _chunked_attention(q, k, v))
    # Experts: stacked into one wide GDFN per routing pattern == one expert call at a time.
    moe = tiny().experts[0].train()
    y = make_images(4, 24, 20)[:, :1].expand(-1, moe.norm.weight.shape[0], -1, -1).contiguous()
    for training in (True, False):
        moe.train(training)
        torch.manual_seed(1)
        route = moe.router(y)
        weights, running = dispatch(route)
        if training:
            weights, running = explore_idle_experts(route, weights, running)
        for rows in (slice(0, 1), slice(0, 4)):
            fast = moe.run_experts(y[rows], weights[rows], running[rows])
            slow = moe._run_experts_one_by_one(y[rows], weights[rows], running[rows])
            torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-5)
    # The flop counter still sees the fused attention kernel, as the two matmuls it replaces.
    with FlopCounterMode(display=False) as counter:
        attention(q, k, v)
    assert counter.get_total_flops() == 2 * 2 * (2 * 2 * 5000 * 12 * 8)


def test_channels_last_model_gives_the_same_output(make_images) -> None:
    model = tiny()
    x = make_images(2, 48, 64)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x.to(memory_format=torch.channels_last))
    assert (low.float() - reference).abs().mean() < 0.05


def test_recorded_statistics_replay_exactly(make_images) -> None:
    model = tiny()
    stats = [m for m in model.modules() if isinstance(m, GlobalStat)]
    # 4 routers, 3 semantic prompts, 3 frequency self-mining kernels, keys/values of the
    # 8 WTBs, 3 spectral modulations.
    assert len(stats) == 21
    images = make_images(4, 48, 64, seed=7)
    x, other = images[:1], images[3:]
    with torch.no_grad():
        live = model(x)
        with frozen_global_stats(model, x):
            assert all(s._stored is not None for s in stats)
            replayed = model(x)
            # A batch-1 recording expands to a batch of tiles.
            batch = model(torch.cat([x, x, x]))
            foreign = model(other)
        assert torch.equal(replayed, live)
        torch.testing.assert_close(batch, live.expand(3, -1, -1, -1), atol=1e-5, rtol=1e-4)
        # The statistics do drive the network: x's routing on another image changes it.
        assert not torch.allclose(foreign, model(other), atol=1e-4)
    assert all(s.mode == "live" for s in stats)


def test_tiled_equals_whole_image_with_a_whole_image_reference(make_images) -> None:
    # Keys/values of every WTB and DAFMM's spectral modulation replayed from the reference.
    # Measured: 72.6 dB (8 tiles of 64, overlap 32); every tile on its own ("live") 24.6 dB;
    # seeds 0-2 of the model on other images 73.0-75.4 dB.
    model = tiny()
    x = make_images(1, 96, 160, seed=3)[0]
    whole = Restorer(model, "cpu", "fp32", tile=0).restore_tensor(x)
    # (An explicit stats_side: the engine would restore an image this small in one pass.)
    restorer = Restorer(model, "cpu", "fp32", tile=64, overlap=32, stats_side=160)
    tiled = restorer.restore_tensor(x)
    assert restorer.last_run is not None and restorer.last_run.tiles == 8
    assert psnr(tiled[None], whole[None]) > 60.0
    # A batch of tiles gets each tile's own crop of the recorded spectral maps.
    batched = Restorer(model, "cpu", "fp32", tile=64, overlap=32, tile_batch=3, stats_side=160)
    torch.testing.assert_close(batched.restore_tensor(x), tiled, atol=1e-5, rtol=0)
    # Downscaled and crop references run too (resampled, or tile-local, spectral maps).
    for method in ("stride", "area", "crop"):
        out = Restorer(model, "cpu", tile=64, stats_side=64, stats_method=method).restore_tensor(x)
        assert out.shape == x.shape and torch.isfinite(out).all()
    assert all(s.mode == "live" for s in model.modules() if isinstance(s, GlobalStat))


def test_runs_under_bf16_autocast(make_images) -> None:
    model = tiny()
    x = make_images(2, 40, 56)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, aux = model(x, return_aux=True)
    assert out.shape == x.shape
    assert torch.isfinite(out.float()).all()
    assert all(torch.isfinite(v) for v in aux["losses"].values())
    with torch.no_grad():
        reference = model(x)
    assert (out.float() - reference).abs().mean() < 0.05


def test_training_routing_heuristics_switch_off_to_the_papers_top_k(make_images) -> None:
    model = tiny(cover_clusters=False, explore_idle=False).train()
    cfg = model.config
    torch.manual_seed(0)
    _, aux = model(make_images(4, 32, 32), return_aux=True)
    for stage in aux["routing"]:
        # Plain Eq. (6) and (10): each image's own top clusters and experts, nothing added.
        expected = stage["cluster_posterior"].topk(cfg.top_clusters, dim=1).indices
        assert torch.equal(stage["clusters"].sort(dim=1).values, expected.sort(dim=1).values)
        per_image = stage["expert_usage"].flatten(1).sum(dim=1)
        assert (per_image == cfg.top_clusters * cfg.top_experts).all()


def test_config_round_trips_and_old_checkpoints_get_todays_routing() -> None:
    model = tiny(cover_clusters=False, explore_idle=False)
    values = model.config_dict()
    assert values["cover_clusters"] is False and values["explore_idle"] is False
    assert config_from_dict("clusir", values) == model.config
    old = {k: v for k, v in values.items() if k not in ("cover_clusters", "explore_idle")}
    assert config_from_dict("clusir", old).cover_clusters is True
    assert config_from_dict("clusir", old).explore_idle is True


def test_config_rejects_impossible_routing() -> None:
    with pytest.raises(ValueError, match="top_clusters"):
        create_model("clusir_t", top_clusters=4)
    with pytest.raises(ValueError, match="top_experts"):
        create_model("clusir_t", dim=8, experts_per_cluster=1, top_experts=2)
    with pytest.raises(ValueError, match="orthogonal"):
        create_model("clusir_t", dim=8, wavelet="bior2.2")


def test_differently_routed_images_run_together_under_bf16_autocast() -> None:
    # Mixed-precision training on a GPU: the experts compute in bf16 while the block's input
    # stays fp32, and each group of images that share experts is written back into one batch.
    from anyrestore.models.layers.routing import ClusterMoE

    torch.manual_seed(0)
    moe = ClusterMoE(8, 1, 2, 1, 2, 1, 2.0)
    y = torch.rand(2, 8, 6, 6)
    running = torch.tensor([[True, False, False, False], [False, False, True, False]])
    weights = running.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        together = moe.run_experts(y, weights, running)
        alone = [
            moe.run_experts(y[i : i + 1], weights[i : i + 1], running[i : i + 1]) for i in (0, 1)
        ]
    # One dtype whatever the routing (CUDA's index_copy refuses to mix them)
    assert together.dtype == alone[0].dtype == torch.bfloat16
    for i in (0, 1):
        torch.testing.assert_close(
            together[i : i + 1].float(), alone[i].float(), atol=0.05, rtol=0.05
        )
    assert not torch.allclose(together[0], together[1])


def test_a_checkpoint_trained_with_other_loss_weights_is_still_its_variant() -> None:
    # cover_clusters=false (the paper's routing) or other aux weights say how a checkpoint was
    # trained: it is still clusir_t, so `--model clusir_t --weights FILE` accepts it.
    import dataclasses

    from anyrestore.models.registry import find_variant, get_spec

    base = get_spec("clusir_t").config
    trained = dataclasses.replace(
        base,
        cover_clusters=False,
        explore_idle=False,
        orth_loss_weight=0.0,
        balance_loss_weight=0.0,
    )
    assert find_variant("clusir", trained) == "clusir_t"
    assert find_variant("clusir", dataclasses.replace(base, top_experts=3)) is None  # a size
