"""bf16 channels-last, the fast path on CPUs with native bf16, stays close to fp32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tinymodels import TINY_ANYIR

from anyrestore.engine import Restorer, read_image
from anyrestore.metrics import psnr
from anyrestore.models import create_model
from anyrestore.models.layers.globalstats import set_global_mode
from anyrestore.weights import list_entries, wheel_weights
from anyrestore.weights.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2] / "anyrestore"
# The weights a user gets (each model's current ones, as the wheel carries them); the older
# versions a checkout keeps are the same architectures.
SHIPPED = [ROOT / e.embedded for e in list_entries() if e.name in wheel_weights()]
SAMPLE = ROOT / "assets" / "samples" / "sample_degraded.jpg"


@pytest.mark.slow
@pytest.mark.parametrize("weights", SHIPPED, ids=lambda p: p.stem)
def test_bf16_output_is_within_40_db_of_fp32_on_the_shipped_sample(weights: Path) -> None:
    image = read_image(SAMPLE)
    # A 64 px crop from the middle: a CPU without native bf16 emulates it many times slower.
    h, w = image.rgb.shape[:2]
    x = torch.from_numpy(image.rgb[h // 2 - 32 : h // 2 + 32, w // 2 - 32 : w // 2 + 32])
    x = x.permute(2, 0, 1).contiguous()
    model = load_checkpoint(weights)
    fp32 = Restorer(model, "cpu", "fp32", tile=0).restore_tensor(x)
    bf16 = Restorer(model, "cpu", "bf16", tile=0).restore_tensor(x)
    assert float(psnr(bf16[None], fp32[None])) >= 40.0


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("anyir_t", TINY_ANYIR),
        ("clusir_t", {"dim": 8, "heads": (1, 1, 2, 2), "prompt_dim": 16}),
    ],
)
def test_bf16_channels_last_gradients_follow_fp32(name: str, overrides: dict) -> None:
    # Training's fast path: bf16 autocast on channels-last features, losses in fp32.
    torch.manual_seed(0)
    model = create_model(name, **overrides).eval()  # eval: no sampled routing noise
    x = torch.rand(2, 3, 32, 32)
    target = torch.rand(2, 3, 32, 32)
    if name.startswith("clusir"):
        # Fix ClusIR's discrete choices (top-k clusters and experts) at their fp32 values, so
        # a flip between precisions does not swap the experts being compared.
        with torch.no_grad():
            set_global_mode(model, "record")
            model(x)
        set_global_mode(model, "replay")

    def grads(precision: str) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model.to(
            memory_format=torch.channels_last if precision == "bf16" else torch.preserve_format
        )
        inp = x.contiguous(memory_format=torch.channels_last) if precision == "bf16" else x
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            out = model(inp)
        (out.float() - target).abs().mean().backward()
        return {n: p.grad.flatten() for n, p in model.named_parameters() if p.grad is not None}

    ref, low = grads("fp32"), grads("bf16")
    common = sorted(set(ref) & set(low))
    assert len(common) >= 0.8 * len(ref)
    reference = torch.cat([ref[n] for n in common])
    fast = torch.cat([low[n] for n in common])
    cosine = torch.nn.functional.cosine_similarity(reference, fast, dim=0)
    assert cosine > 0.98
    assert (fast.norm() / reference.norm() - 1).abs() < 0.1
