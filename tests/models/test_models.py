"""The RestorationModel contract, checked for every registered variant (timm-style)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from anyrestore.models import (
    RestorationModel,
    build_model,
    create_model,
    get_spec,
    list_models,
    register_arch,
    register_model,
)
from anyrestore.models.layers.globalstats import frozen_global_stats
from anyrestore.models.registry import config_from_dict
from anyrestore.weights.checkpoint import load_checkpoint, save_checkpoint

MODELS = list_models()


def test_variants_are_registered() -> None:
    assert {"anyir_t", "anyir_s"} <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_model_declares_its_contract(name: str, built_model) -> None:
    model = built_model(name)
    spec = get_spec(name)
    assert isinstance(model, RestorationModel)
    assert model.arch == spec.arch
    assert model.config == spec.config
    assert model.pad_multiple >= 1 and model.tile_overlap_hint >= 0
    # The config survives JSON (as in checkpoint metadata) and rebuilds the same config.
    values = json.loads(json.dumps(model.config_dict()))
    assert config_from_dict(model.arch, values) == model.config


@pytest.mark.parametrize("name", MODELS)
def test_odd_input_size_comes_out_same_size(name: str, built_model, make_images) -> None:
    model = built_model(name)
    x = make_images(1, 19, 13)
    with torch.no_grad():
        out, aux = model(x, return_aux=True)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert isinstance(aux["losses"], dict)
    assert all(v.dim() == 0 for v in aux["losses"].values())


@pytest.mark.parametrize("name", MODELS)
def test_eval_is_deterministic_and_per_image(name: str, built_model, make_images) -> None:
    model = built_model(name)
    x = make_images(2, 16, 24, seed=1)
    with torch.no_grad():
        first = model(x)
        second = model(x)
        alone = model(x[1:])
    assert torch.equal(first, second)
    # Image-wide statistics are per image: the batch neighbour does not change the result.
    torch.testing.assert_close(alone, first[1:], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_training_step_reaches_every_parameter(name: str, make_images) -> None:
    torch.manual_seed(0)
    model = create_model(name).train()
    size = max(16, model.pad_multiple)
    clean = make_images(4, size, size, seed=2)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    out, aux = model(noisy, return_aux=True)
    loss = (out - clean).abs().mean() + sum(aux["losses"].values())
    loss.backward()
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]} ({len(missing)})"
    bad = [n for n, p in params.items() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient in {bad[:5]}"
    zero = [n for n, p in params.items() if not p.grad.abs().sum() > 0]
    assert len(zero) <= 0.05 * len(params), f"zero gradient for {zero[:5]} ({len(zero)})"


@pytest.mark.parametrize("name", MODELS)
def test_checkpoint_round_trip(name: str, built_model, make_images, tmp_path) -> None:
    model = built_model(name)
    path = save_checkpoint(model, tmp_path / f"{name}.safetensors", name=name)
    loaded = load_checkpoint(path)
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    own, back = model.state_dict(), loaded.state_dict()
    assert own.keys() == back.keys()
    assert all(torch.equal(own[k], back[k]) for k in own)
    x = make_images(1, 16, 24, seed=4)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_registering_a_name_twice_raises() -> None:
    spec = get_spec(MODELS[0])
    with pytest.raises(ValueError, match="already registered"):
        register_model(spec.name, arch=spec.arch)(lambda: spec.config)
    model_cls = type(build_model(spec.arch, spec.config))
    with pytest.raises(ValueError, match="already registered"):
        register_arch(spec.arch, type(spec.config), model_cls)
    assert list_models() == MODELS


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(KeyError) as info:
        create_model("no_such_model")
    assert all(name in str(info.value) for name in MODELS)


def test_create_model_applies_overrides_without_touching_the_variant(make_images) -> None:
    default = get_spec("anyir_t").config
    tiny = create_model("anyir_t", dim=8, blocks=(1, 1, 1, 1), refinement_blocks=1)
    assert tiny.config == dataclasses.replace(
        default, dim=8, blocks=(1, 1, 1, 1), refinement_blocks=1
    )
    assert get_spec("anyir_t").config == default
    n_tiny = sum(p.numel() for p in tiny.parameters())
    assert n_tiny < sum(p.numel() for p in create_model("anyir_t").parameters()) / 20
    with pytest.raises(TypeError):
        create_model("anyir_t", no_such_field=1)
    with torch.no_grad():
        assert math.isfinite(float(tiny(make_images(1, 8, 8)).sum()))
    # Lists, as a TOML recipe's model_overrides give them, build the same (hashable) config.
    listed = create_model("anyir_t", dim=8, blocks=[1, 1, 1, 1], refinement_blocks=1)
    assert listed.config == tiny.config and hash(listed.config) == hash(tiny.config)


def test_bad_sizes_and_mismatched_configs_are_refused_where_they_are_given() -> None:
    with pytest.raises(ValueError, match="gate_kernel must be odd"):
        create_model("anyir_t", gate_kernel=4)  # would build, then fail at the first image
    with pytest.raises(KeyError, match="unknown architecture 'nope'"):
        build_model("nope", get_spec("anyir_t").config)
    with pytest.raises(TypeError, match="clusir is built from a ClusIRConfig, not AnyIRConfig"):
        build_model("clusir", get_spec("anyir_t").config)


def test_the_ffn_branches_computed_apart_are_restormers_gdfn() -> None:
    # The GELU branch and the other are two dense maps (speed), not one map split in two;
    # values and gradients must be the written GDFN's, and the in-place inference path too.
    import anyrestore.models.layers.ffn as ffn

    torch.manual_seed(0)
    layer = ffn.GatedDconvFFN(6, 2.0, bias=True)
    x = torch.randn(2, 6, 9, 7).contiguous(memory_format=torch.channels_last).requires_grad_()

    def written(x: torch.Tensor) -> torch.Tensor:
        a, b = layer.dwconv(layer.project_in(x)).chunk(2, dim=1)
        return layer.project_out(torch.nn.functional.gelu(a) * b)

    weights = torch.linspace(-1, 1, x.numel()).view_as(x)
    out, ref = layer(x), written(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    leaves = [x, *layer.parameters()]
    grads = torch.autograd.grad((out * weights).sum(), leaves)
    for got, want in zip(grads, torch.autograd.grad((ref * weights).sum(), leaves), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref, rtol=1e-5, atol=1e-6)


def test_layer_norm_on_bf16_maps_gives_the_bf16_kernels_values_and_fp32_gradients() -> None:
    # Under CPU autocast a bf16 map takes an fp32 detour through the norm (speed): the values
    # must be what PyTorch's bf16-input kernel gives, the gradients those of the fp32 norm
    # (the bf16-input kernel's scale and shift gradients are several percent off here).
    from anyrestore.models.layers.norm import LayerNorm2d

    torch.manual_seed(0)
    norm = LayerNorm2d(12)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.normal_()
    x = torch.randn(2, 12, 9, 7).contiguous(memory_format=torch.channels_last)
    x = x.bfloat16().requires_grad_()

    def kernel(x: torch.Tensor) -> torch.Tensor:
        y = x.permute(0, 2, 3, 1)
        y = torch.nn.functional.layer_norm(y, (12,), norm.weight, norm.bias, norm.eps)
        return y.permute(0, 3, 1, 2)

    with torch.autocast("cpu", torch.bfloat16):
        out, bf16_kernel = norm(x), kernel(x)
    assert out.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, bf16_kernel, rtol=0, atol=0)
    x32 = x.detach().float().requires_grad_()
    weights = torch.linspace(-1, 1, x.numel()).view_as(x)
    grads = torch.autograd.grad((out.float() * weights).sum(), [x, norm.weight, norm.bias])
    wants = torch.autograd.grad((kernel(x32) * weights).sum(), [x32, norm.weight, norm.bias])
    for got, want in zip(grads, wants, strict=True):
        torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("channels, patch", [(16, 16), (16, 4), (32, 8), (3, 2)])
def test_a_patch_convolution_is_the_strided_convolution_in_fp32_and_bf16(channels, patch) -> None:
    # ClusIR's key/value embedding: the GEMM form must compute nn.Conv2d(k, stride=k), and its
    # bf16 result must stay within bf16 rounding of fp32 (oneDNN's own bf16 kernel for 16
    # channels and k >= 4 returns wrong values on AMX CPUs).
    from anyrestore.models.layers.pointwise import PatchConv

    torch.manual_seed(0)
    layer = PatchConv(channels, 24, patch)
    x = torch.randn(2, channels, 6 * patch, 4 * patch).contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    ref = torch.nn.functional.conv2d(x, layer.weight, layer.bias, stride=patch)
    out = layer(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    weights = torch.linspace(-1, 1, ref.numel()).view_as(ref)
    leaves = [x, layer.weight, layer.bias]
    grads = torch.autograd.grad((out * weights).sum(), leaves)
    for got, want in zip(grads, torch.autograd.grad((ref * weights).sum(), leaves), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        low = layer(x)
    assert low.dtype == torch.bfloat16
    assert float((low.float() - ref.detach()).norm() / ref.detach().norm()) < 0.01


def test_1x1_convolutions_as_gemm_or_as_convolution_give_the_same_values(monkeypatch) -> None:
    # compute picks the faster kernel per CPU for fp32 inference and training; values and
    # gradients must not depend on it: biases, residuals added in the product, strided
    # inputs (a channel slice) and column blocks of a weight included.
    from anyrestore.models.layers import pointwise as pw

    torch.manual_seed(0)
    base = torch.randn(1, 12, 9, 7).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(6, 16)[:, 3:11], torch.randn(6)
    add = torch.randn(1, 6, 9, 7).contiguous(memory_format=torch.channels_last)
    calls = []
    conv2d = torch.nn.functional.conv2d
    monkeypatch.setattr(pw.F, "conv2d", lambda *a, **k: calls.append(1) or conv2d(*a, **k))

    def run(kind: str, grad: bool) -> list[torch.Tensor]:
        leaves = [base.clone().requires_grad_(grad), weight.clone().requires_grad_(grad)]
        x, w = leaves[0][:, 2:10], leaves[1]
        with torch.set_grad_enabled(grad), pw.pointwise_kernel(kind):
            outs = [pw.pointwise(x, w, bias), pw.pointwise(x, w, bias, add)]
        if not grad:
            return outs
        total = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)
        return outs + list(torch.autograd.grad(total, leaves))

    for grad in (False, True):
        want = run("gemm", grad)
        assert not calls
        got = run("conv", grad)
        assert len(calls) == 2
        calls.clear()
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
        assert all(o.is_contiguous(memory_format=torch.channels_last) for o in got[:2])
    with pw.pointwise_kernel("conv"), torch.autocast("cpu", torch.bfloat16):
        assert pw.pointwise(base, torch.randn(6, 12)).dtype == torch.bfloat16
    assert not calls  # bf16 stays on the GEMM its precision was checked with
    with pytest.raises(ValueError, match="unknown 1x1 kernel"):
        with pw.pointwise_kernel("fft"):
            pass


def test_kernel_and_graph_form_switches_hold_only_in_the_thread_that_set_them() -> None:
    """An app restoring in several threads: one thread's switch must not reach another's pass."""
    import threading

    import anyrestore.models.layers.pointwise as pw
    from anyrestore.models.layers.bands import in_bands, whole_maps
    from anyrestore.models.layers.tracing import graph_form, in_graph_form

    x = torch.randn(1, 4, 3, 3).contiguous(memory_format=torch.channels_last)
    tall = torch.zeros(1, 1, 2, 1 << 16)  # two rows, each a band of its own

    def bands_run() -> int:
        calls = []
        with torch.no_grad():
            in_bands(lambda m: calls.append(m) or m, (tall,), 0)
        return len(calls)

    seen: dict[str, object] = {}
    inside, done = threading.Event(), threading.Event()

    def other() -> None:
        inside.wait()
        seen["conv"], seen["graph"], seen["bands"] = pw._as_conv(x), in_graph_form(), bands_run()
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with pw.pointwise_kernel("conv"), graph_form(), whole_maps():
        assert pw._as_conv(x) and in_graph_form() and bands_run() == 1
        inside.set()
        done.wait(10)
    thread.join()
    assert seen == {"conv": False, "graph": False, "bands": 2}
    assert not pw._as_conv(x) and not in_graph_form()  # restored on the way out
    assert bands_run() == 2


@pytest.mark.parametrize("name", ["anyir_t", "clusir_t"])
def test_whole_models_give_the_same_image_with_either_1x1_kernel(
    name, built_model, make_images
) -> None:
    from anyrestore.models.layers.pointwise import pointwise_kernel

    model = built_model(name)
    x = make_images(1, 40, 48).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        gemm = model(x)
        with pointwise_kernel("conv"):
            conv = model(x)
    torch.testing.assert_close(conv, gemm, rtol=1e-5, atol=1e-5)


def test_the_ffn_without_gradients_runs_in_bands_with_the_same_result(monkeypatch) -> None:
    # Large maps go through the FFN in bands of rows (memory); the result must not change.
    import anyrestore.models.layers.bands as bands
    import anyrestore.models.layers.ffn as ffn

    torch.manual_seed(0)
    layer = ffn.GatedDconvFFN(8, 2.0, bias=True).eval()
    x = torch.randn(2, 8, 37, 23).contiguous(memory_format=torch.channels_last)
    residual = torch.randn_like(x)
    with torch.no_grad():
        whole = layer(x)
        whole_res = layer(x, residual=residual)
        monkeypatch.setattr(bands, "BAND_PIXELS", 23 * 5)  # bands of 5 rows, the last one of 2
        banded = layer(x)
        banded_res = layer(x, residual=residual)
    torch.testing.assert_close(banded, whole, rtol=0, atol=1e-6)
    assert banded.is_contiguous(memory_format=torch.channels_last)
    # The residual is added inside the last matrix product, banded or not.
    torch.testing.assert_close(whole_res, whole + residual, rtol=0, atol=1e-5)
    torch.testing.assert_close(banded_res, whole + residual, rtol=0, atol=1e-5)


@pytest.mark.parametrize("layout", [1, 2])
def test_a_whole_anyir_pass_in_bands_of_rows_gives_the_same_image(
    monkeypatch, make_images, layout
) -> None:
    # Without gradients the attention's qkv, GatedDA (7x7 depthwise: 3 rows of context), the
    # fusion and the FFN run in bands of rows on large maps; the picture must not change.
    import anyrestore.models.layers.bands as bands

    torch.manual_seed(0)
    model = create_model(
        "anyir_t", dim=8, blocks=(1, 1, 1, 1), refinement_blocks=1, layout=layout
    ).eval()
    x = make_images(1, 45, 38)
    with torch.no_grad():
        whole = model(x)
        monkeypatch.setattr(bands, "BAND_PIXELS", 40 * 4)  # 4-row bands at full resolution
        banded = model(x)
    torch.testing.assert_close(banded, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["anyir", "clusir"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_a_model_cast_whole_to_another_dtype_runs_and_agrees_with_fp32(
    arch: str, dtype: torch.dtype, make_images
) -> None:
    # .half() for a GPU, .double() for gradcheck: not only autocast, which keeps fp32 weights.
    from tinymodels import TINY_BY_ARCH

    torch.manual_seed(0)
    model = create_model(f"{arch}_t", **TINY_BY_ARCH[arch]).eval()
    x = make_images(1, 16, 24)
    with torch.no_grad():
        reference = model(x)
        out = model.to(dtype)(x.to(dtype))
        # Tiled, as the engine runs it: statistics recorded and replayed in the model's dtype
        with frozen_global_stats(model, x.to(dtype)):
            replayed = model(x.to(dtype))
    assert out.dtype == dtype and out.shape == x.shape
    error = (out.double() - reference.double()).abs().max().item()
    assert error < (1e-5 if dtype == torch.float64 else 0.05), error
    assert torch.equal(replayed, out)
