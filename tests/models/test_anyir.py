"""AnyIR against its paper and released code: size and cost (Tab. 11), Eq. (6), Alg. 1-2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tinymodels import TINY_ANYIR as TINY

from anyrestore.bench.complexity import count_macs, count_params
from anyrestore.errors import WeightsError
from anyrestore.models import create_model
from anyrestore.models.anyir import AnyIRConfig, skip_split
from anyrestore.models.base import step_by_step
from anyrestore.models.layers.attention import TransposedAttention
from anyrestore.models.layers.fusion import (
    SpatialFrequencyFusion,
    frequency_fusion,
    frequency_fusion_fft,
)
from anyrestore.models.layers.gated import GatedDA, PreviewGatedDA, channel_var_mean
from anyrestore.models.layers.globalstats import (
    frozen_global_stats,
    has_global_stats,
    set_global_mode,
)
from anyrestore.models.registry import find_variant
from anyrestore.weights.checkpoint import load_checkpoint, save_checkpoint


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("anyir_t", **TINY).eval()


# Tab. 11: parameters (exact, as the released code gives them) and GMACs at 224x224 (26 and
# 39); the MACs are this code's exact count, which rounds to the table's.
PAPER = {"anyir_t": (5_736_376, 26, 26_253_027_920), "anyir_s": (8_513_436, 39, 39_185_041_280)}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_params_and_macs_match_the_paper(name: str, built_model) -> None:
    params, paper_gmacs, macs = PAPER[name]
    model = built_model(name)
    assert count_params(model) == params
    # Every counted op (conv, attention matmul) scales with the pixel count and 56 needs no
    # padding, so 16x the 56x56 count is the 224x224 count (checked exactly below). The
    # released code's shapes give Tab. 11's GMACs to the digit; a fast path's extra products
    # (e.g. statistics as matrix products) must not leak into the count.
    counted = 16 * count_macs(model, 56)
    assert counted == macs and round(counted / 1e9) == paper_gmacs


def test_preview_layout_keeps_its_own_size() -> None:
    # The preview weights' layout: GatedDA at 2C, an attention projection, tiled channels.
    model = create_model("anyir_t", layout=1)
    # the size of the shipped preview weights, the layout's reason to be kept
    preview = (
        Path(__file__).parents[2] / "anyrestore/weights/embedded/anyir_t-synthetic.safetensors"
    )
    with safe_open(preview, "pt") as f:
        shipped = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    assert count_params(model) == shipped == 5_676_190  # docs/architectures.md's figure
    assert isinstance(model.encoder1[0].gate, PreviewGatedDA)
    assert model.encoder1[0].attn.proj is not None


def test_mac_count_scales_exactly_with_area() -> None:
    model = tiny_model()
    assert count_macs(model, 224) == 16 * count_macs(model, 56)


def test_skip_split_interleaves_channels_as_eq6() -> None:
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    att, gate = skip_split(x)
    # Eq. (6): 1-based channels 2k-1 (0-based 0, 2, 4) to attention, 2k to the gate.
    assert att.flatten().tolist() == [0.0, 2.0, 4.0]
    assert gate.flatten().tolist() == [1.0, 3.0, 5.0]
    # Training: the same channels as dense channels-last halves (not strided slices), and
    # gradients flow back to the channels they came from.
    x = torch.randn(2, 8, 5, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    att, gate = skip_split(x)
    assert torch.equal(att, x[:, 0::2]) and torch.equal(gate, x[:, 1::2])
    assert all(h.is_contiguous(memory_format=torch.channels_last) for h in (att, gate))
    (grad,) = torch.autograd.grad(att.sum() + 2 * gate.sum(), x)
    assert grad[:, 0::2].eq(1).all() and grad[:, 1::2].eq(2).all()
    with torch.no_grad():  # inference: views, no whole-map copy (peak memory)
        att, gate = skip_split(x)
    assert att.data_ptr() == x.data_ptr() and torch.equal(gate, x[:, 1::2])


def test_block_feeds_the_split_halves_to_attention_and_gate() -> None:
    model = tiny_model()
    block = model.encoder1[0]
    seen: dict[str, torch.Tensor] = {}
    block.attn.register_forward_hook(lambda m, args, out: seen.update(att=args[0]))
    block.gate.register_forward_hook(lambda m, args, out: seen.update(gate=args[0]))
    x = torch.rand(1, 8, 16, 16)
    with torch.no_grad():
        block(x)
        normed = block.norm1(x)
    assert torch.equal(seen["att"], normed[:, 0::2])
    assert torch.equal(seen["gate"], normed[:, 1::2])


def test_gated_da_splits_and_scales_as_released() -> None:
    torch.manual_seed(0)
    gate = GatedDA(6).eval()
    # Expansion 8/3: 16 channels, gamma and beta C each, alpha the remaining 4.
    assert gate.split == (6, 6, 4)
    assert gate.w_gate.in_channels == 6 + 4
    # tau_adj (C channels) is cut to alpha's width: alpha's channel j takes channel j.
    delta = torch.rand(1, 6, 1, 1)
    with torch.no_grad():
        gate.tau.copy_(torch.arange(1.0, 7.0).view(1, 6, 1, 1))
    expected = (gate.tau * delta)[:, :4]
    torch.testing.assert_close(gate._tau_alpha(delta), expected)


def _written_gated_body(gate, f_hat, x, scale):
    """Alg. 1 steps 6-10 as written: one expansion split into channel slices, then a concat."""
    parts = torch.split(gate.w_exp(f_hat), gate.split, dim=1)
    named = dict(zip(sorted(gate.parts, key=lambda n: gate.parts[n][0]), parts, strict=True))
    alpha = gate.w_depth(named["alpha"]) * scale
    activation = torch.sigmoid if isinstance(gate, GatedDA) else torch.nn.functional.gelu
    mixed = gate.w_gate(torch.cat((named["beta"], alpha), dim=1))
    return gate.w_proj(activation(named["gamma"]) * mixed + x)


@pytest.mark.parametrize("gate_cls", [GatedDA, PreviewGatedDA])
def test_gated_da_parts_computed_apart_are_alg1_as_written(gate_cls: type) -> None:
    # Each part of W_exp is its own dense map (speed); values, gradients and the in-place
    # inference path must be those of the written split-and-concat steps.
    torch.manual_seed(0)
    gate = gate_cls(8, bias=True)
    x = torch.randn(2, 8, 9, 11).contiguous(memory_format=torch.channels_last)
    x = x.requires_grad_()
    f_hat = torch.randn(2, 8, 9, 11, requires_grad=True)
    scale = torch.rand(1, gate.w_depth.in_channels, 1, 1) + 1
    leaves = [x, f_hat, *gate.parameters()]
    weights = torch.linspace(-1, 1, 2 * 8 * 9 * 11).view(2, 8, 9, 11)
    out = gate._body(f_hat, x, scale)
    ref = _written_gated_body(gate, f_hat, x, scale)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad((out * weights).sum(), leaves, allow_unused=True)
    ref_grads = torch.autograd.grad((ref * weights).sum(), leaves, allow_unused=True)
    for got, want in zip(grads, ref_grads, strict=True):
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        inputs = (f_hat.detach(), x.detach().clone())
        torch.testing.assert_close(gate._body(*inputs, scale), ref.detach(), rtol=1e-5, atol=1e-5)
        assert torch.equal(inputs[1], x.detach())  # the residual is read, never written


@pytest.mark.parametrize("heads, bias", [(1, False), (2, True), (4, False)])
def test_attention_from_one_gram_matrix_is_eq7_as_written(heads: int, bias: bool) -> None:
    # q.k and both norms come from one Gram matrix of [q | k]; Eq. (7) computes a matrix
    # product and the norms apart. Same attention, same gradients; and without gradients
    # (one qkv map instead of the training path's two) the same attention again.
    torch.manual_seed(0)
    attn = TransposedAttention(8, heads, bias=bias, project=False)
    with torch.no_grad():
        attn.temperature.uniform_(0.5, 4.0)
    x = torch.randn(2, 8, 7, 9).contiguous(memory_format=torch.channels_last).requires_grad_()
    weights = torch.linspace(-1, 1, x.numel()).view_as(x)
    results = []
    for literal in (False, True):
        attn.step_by_step = literal
        out = attn(x)
        results.append((out, torch.autograd.grad((out * weights).sum(), [x, *attn.parameters()])))
    attn.step_by_step = False
    (fast, fast_grads), (ref, ref_grads) = results
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    for got, want in zip(fast_grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), fast, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("literal", [False, True])
def test_attention_in_fp16_does_not_overflow_on_a_large_map(literal: bool) -> None:
    # The Gram matrix sums over every pixel: in fp16 (autocast on a GPU without bf16) a
    # 64x64 map of values around 40 passes 65,504 and the cosine became inf/inf (NaN), or
    # finite/inf (a uniform attention, silently).
    torch.manual_seed(0)
    attn = TransposedAttention(8, 2, project=False)
    attn.step_by_step = literal
    x = 40 * torch.rand(1, 8, 64, 64) + 20
    with torch.no_grad():
        want = attn(x)
        got = attn.half()(x.half()).float()
    assert torch.isfinite(got).all()
    assert (got - want).abs().max() < 0.05 * want.abs().max()


@pytest.mark.parametrize("literal", [False, True])
def test_attention_in_fp16_keeps_a_quiet_channels_cosines(literal: bool) -> None:
    # Scaled to fit fp16's range by 1/sqrt(hw), a channel of small values had its squared
    # norm round to 0: its cosines came out around 1e8 and its attention row one-hot.
    torch.manual_seed(0)
    attn = TransposedAttention(8, 2, project=False)
    attn.step_by_step = literal
    with torch.no_grad():
        attn.qkv.weight[0].mul_(1e-4)  # q's first channel: values around 1e-4
    x = torch.randn(1, 8, 256, 256)
    maps = []
    for dtype in (torch.float32, torch.float16):
        set_global_mode(attn, "record")
        with torch.no_grad():
            attn.to(dtype)(x.to(dtype))
        maps.append(attn.stats._stored.float())
        set_global_mode(attn, "live")
    assert (maps[1] - maps[0]).abs().max() < 0.05


@pytest.mark.parametrize("gate_cls", [GatedDA, PreviewGatedDA])
def test_gated_da_temperature_uses_image_channel_statistics(gate_cls: type) -> None:
    torch.manual_seed(0)
    gate = gate_cls(6)
    x = torch.randn(2, 6, 9, 11) * 3 + 1
    set_global_mode(gate, "record")
    with torch.no_grad():
        gate(x)
        f_hat = gate.norm(x)
    # Alg. 1 steps 2-4: Delta = sigmoid(mean + std) per image and channel.
    mu = f_hat.mean(dim=(2, 3), keepdim=True)
    sigma = f_hat.std(dim=(2, 3), unbiased=False, keepdim=True)
    torch.testing.assert_close(gate.stats._stored, torch.sigmoid(mu + sigma), atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_channel_statistics_by_matrix_products_are_var_mean(layout) -> None:
    # GatedDA's image-wide mean and variance come from two matrix products (speed): values and
    # gradients must be torch.var_mean's, in fp32 also for a bf16 map.
    torch.manual_seed(0)
    x = (torch.randn(2, 5, 13, 11) * 3 + 4).contiguous(memory_format=layout).requires_grad_()
    var, mu = channel_var_mean(x)
    want_var, want_mu = torch.var_mean(x, dim=(2, 3), correction=0, keepdim=True)
    torch.testing.assert_close(var, want_var, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mu, want_mu, rtol=1e-5, atol=1e-5)
    got = torch.autograd.grad((2 * var + mu).sum(), x)[0]
    want = torch.autograd.grad((2 * want_var + want_mu).sum(), x)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        low_var, low_mu = channel_var_mean(x.bfloat16())
        ref_var, ref_mu = torch.var_mean(
            x.bfloat16().float(), dim=(2, 3), correction=0, keepdim=True
        )
    assert low_var.dtype == low_mu.dtype == torch.float32
    torch.testing.assert_close(low_var, ref_var, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(low_mu, ref_mu, rtol=1e-5, atol=1e-5)
    # Under bf16 autocast too: a narrow spread around a large mean survives.
    narrow = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.01 + 10
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        var, mu = channel_var_mean(narrow)
    want_var, want_mu = torch.var_mean(narrow, dim=(2, 3), correction=0, keepdim=True)
    assert var.dtype == torch.float32
    torch.testing.assert_close(var, want_var, rtol=1e-3, atol=1e-8)
    torch.testing.assert_close(mu, want_mu, rtol=1e-6, atol=1e-6)


def test_recorded_statistics_replay_to_the_live_output() -> None:
    model = tiny_model()
    assert has_global_stats(model)
    image = torch.rand(1, 3, 40, 48)
    other = torch.rand(1, 3, 40, 48) * 0.2
    with torch.no_grad():
        live = model(image)
        with frozen_global_stats(model, image):
            replayed = model(image)
            # Statistics of `image` imposed on `other`: the replay really is used.
            other_with_image_stats = model(other)
        other_live = model(other)
    assert torch.equal(replayed, live)
    assert not torch.allclose(other_with_image_stats, other_live, atol=1e-4)


@pytest.mark.parametrize("size", [(97, 131), (8, 8), (5, 3), (1, 1)])
def test_any_input_size_is_padded_and_cropped(size: tuple[int, int]) -> None:
    model = tiny_model()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        out, aux = model(x, return_aux=True)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert aux == {"losses": {}}


def test_bf16_autocast_with_channels_last_runs() -> None:
    model = tiny_model()
    x = torch.rand(1, 3, 37, 45)
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert (out.float() - reference).abs().mean() < 0.02


@pytest.mark.parametrize("size", [(7, 9), (8, 8), (1, 5), (16, 3)])
@pytest.mark.parametrize("interleave", [True, False])
def test_frequency_fusion_as_written_is_what_the_model_computes(
    size: tuple[int, int], interleave: bool
) -> None:
    # Alg. 2 steps 11-13 are linear: irfft2(rfft2(a) + rfft2(b)) = a + b, so the model's
    # fusion computes the sum (pixel-local: nothing for tiling to freeze) and widens it as
    # step 14 does. Odd sizes check irfft2's s=.
    a, b = torch.randn(2, 4, *size) * 5, torch.randn(2, 4, *size)
    as_written = frequency_fusion_fft(a, b)
    widened = (
        as_written.repeat_interleave(2, dim=1) if interleave else as_written.repeat(1, 2, 1, 1)
    )
    torch.testing.assert_close(frequency_fusion(a, b, interleave), widened, atol=1e-5, rtol=1e-5)


def test_frequency_fusion_widens_the_sum_in_the_layouts_channel_order() -> None:
    a = torch.arange(3.0).view(1, 3, 1, 1)
    b = torch.zeros(1, 3, 1, 1)
    assert frequency_fusion(a, b, interleave=True).flatten().tolist() == [0, 0, 1, 1, 2, 2]
    assert frequency_fusion(a, b, interleave=False).flatten().tolist() == [0, 1, 2, 0, 1, 2]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = frequency_fusion(a.bfloat16(), b.bfloat16(), interleave=True)
    assert half.dtype == torch.bfloat16


@pytest.mark.parametrize("interleave", [True, False])
def test_folded_fusion_computes_alg2_and_w_fuse_values_and_gradients(interleave: bool) -> None:
    # The fused form (two matrix products) must be Alg. 2 + W_fuse + F_in, step by step, for
    # both layouts' channel orders, in the forward pass and in every gradient training uses.
    torch.manual_seed(0)
    layer = SpatialFrequencyFusion(12, bias=True, lam=0.3, interleave=interleave)
    inputs = [torch.randn(2, 6, 5, 7, requires_grad=True) for _ in range(2)]
    residual = torch.randn(2, 12, 5, 7, requires_grad=True)

    def run(folded: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if folded:
            out = layer(*inputs, residual=residual)
        else:
            out = layer.reference(*inputs) + residual
        leaves = [*inputs, residual, layer.lam, layer.w_fuse.weight, layer.w_fuse.bias]
        grads = torch.autograd.grad(
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), leaves
        )
        return out.detach(), list(grads)

    out, grads = run(folded=True)
    ref, ref_grads = run(folded=False)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_macs_are_counted_on_the_operations_the_paper_writes(monkeypatch) -> None:
    # The folded fusion does more multiply-adds than Alg. 2 + W_fuse (fewer memory passes);
    # the count, like the paper's, is of the architecture, and the model is left as it was.
    model = tiny_model()
    with step_by_step(model):
        assert all(m.step_by_step for m in model.modules() if isinstance(m, SpatialFrequencyFusion))
    assert not any(m.step_by_step for m in model.modules() if isinstance(m, SpatialFrequencyFusion))
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, 16, 16)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    assert count_macs(model, 16) < counter.get_total_flops() // 2
    with torch.no_grad():
        with step_by_step(model):
            literal = model(x)
        torch.testing.assert_close(model(x), literal, rtol=1e-5, atol=1e-5)
    # Bands of rows (large maps without gradients) recompute their context rows: not counted.
    import anyrestore.models.layers.bands as bands

    whole = count_macs(model, 16)
    monkeypatch.setattr(bands, "BAND_PIXELS", 16 * 2)
    assert count_macs(model, 16) == whole


def test_config_rejects_heads_that_do_not_divide_the_attention_half() -> None:
    with pytest.raises(ValueError, match="heads"):
        AnyIRConfig(dim=12, heads=(1, 2, 4, 5))
    with pytest.raises(ValueError, match="multiple of 4"):
        AnyIRConfig(dim=10)
    assert AnyIRConfig(dim=8, blocks=(1, 1, 1, 1), refinement_blocks=1).heads == (1, 2, 4, 8)


def test_a_checkpoint_records_its_layout_and_older_ones_still_load(tmp_path) -> None:
    preview = load_checkpoint("anyrestore/weights/embedded/anyir_t-synthetic.safetensors")
    assert preview.config.layout == 1  # written before the field existed
    assert find_variant("anyir", preview.config) == "anyir_t"
    with torch.no_grad():
        assert torch.isfinite(preview(torch.rand(1, 3, 24, 24))).all()
    path = save_checkpoint(tiny_model(), tmp_path / "new.safetensors")
    assert load_checkpoint(path).config.layout == 2
    # A layout from a newer anyrestore is refused with one line that says why.
    with safe_open(str(path), "pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta["config"] = json.dumps({**json.loads(meta["config"]), "layout": 3})
    save_file(state, tmp_path / "future.safetensors", metadata=meta)
    with pytest.raises(WeightsError, match="unknown AnyIR layout 3") as info:
        load_checkpoint(tmp_path / "future.safetensors")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("layout", [1, 2])
def test_graph_form_computes_the_same_restoration(layout: int) -> None:
    # The form traced for OpenVINO (plain 1x1 convolutions, norms over dim 1, the split along
    # a new axis, masked diagonals) must be the same function as the eager form.
    from anyrestore.models.layers.bands import whole_maps
    from anyrestore.models.layers.tracing import graph_form

    torch.manual_seed(0)
    model = create_model("anyir_t", dim=8, blocks=(1, 1, 1, 1), refinement_blocks=1, layout=layout)
    x = torch.rand(1, 3, 40, 48).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        eager = model(x)
        with graph_form(), whole_maps():
            traced_form = model(x.contiguous())
    assert torch.allclose(traced_form, eager, atol=1e-5)


@pytest.mark.parametrize("bias", [False, True])
def test_depthwise_conv_in_bf16_training_matches_autocast_with_fp32_weight_gradients(
    bias: bool,
) -> None:
    # GatedDA's 7x7 depthwise conv takes its weight gradient in fp32 while training under
    # bf16 autocast (speed); its output must be autocast's, its gradients fp32's to bf16 error.
    from anyrestore.models.layers.depthwise import DepthwiseConv2d

    torch.manual_seed(0)
    conv = DepthwiseConv2d(6, 7, bias=bias)
    plain = torch.nn.Conv2d(6, 6, 7, padding=3, groups=6, bias=bias)
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(2, 6, 20, 24).contiguous(memory_format=torch.channels_last)
    weights = torch.randn(2, 6, 20, 24)

    def run(module: torch.nn.Module, bf16: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        inp = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = module(inp)
        grads = torch.autograd.grad((out.float() * weights).sum(), [inp, *module.parameters()])
        return out, list(grads)

    ours, ours_grads = run(conv, True)
    autocast_out, _ = run(plain, True)
    _, fp32_grads = run(plain, False)
    assert ours.dtype == torch.bfloat16 and torch.equal(ours, autocast_out)
    for got, want in zip(ours_grads, fp32_grads, strict=True):
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2 * float(want.abs().max()))


def test_training_pass_traces_as_one_graph_for_torch_compile() -> None:
    # torch.compile must see the whole network as one graph (one graph break per layer made
    # a compiled step slower than eager): the layers' context switches (1x1 kernel, graph
    # form) are not read while it traces, whatever the caller has set.
    from anyrestore.models.layers.pointwise import pointwise_kernel
    from anyrestore.models.layers.tracing import graph_form

    torch.manual_seed(0)
    model = create_model("anyir_t", **TINY).train()
    x = torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with pointwise_kernel("conv"), graph_form():
        explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0
    assert explained.graph_count == 1
