"""bf16 channels-last, the fast path on CPUs with native bf16, stays close to fp32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anyrestore.engine import Restorer, read_image
from anyrestore.metrics import psnr
from anyrestore.models import create_model
from anyrestore.weights.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2] / "anyrestore"
SHIPPED = sorted((ROOT / "weights" / "embedded").glob("*.safetensors"))
SAMPLE = ROOT / "assets" / "samples" / "sample_degraded.jpg"


@pytest.mark.slow
@pytest.mark.parametrize("weights", SHIPPED, ids=lambda p: p.stem)
def test_bf16_output_is_within_40_db_of_fp32_on_the_shipped_sample(weights: Path) -> None:
    image = read_image(SAMPLE)
    x = torch.from_numpy(image.rgb).permute(2, 0, 1)[:, :192, :256].contiguous()
    model = load_checkpoint(weights)
    fp32 = Restorer(model, "cpu", "fp32", tile=0).restore_tensor(x)
    bf16 = Restorer(model, "cpu", "bf16", tile=0).restore_tensor(x)
    assert float(psnr(bf16[None], fp32[None])) >= 40.0


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("anyir_t", {"dim": 8, "blocks": (1, 1, 1, 1), "refinement_blocks": 1}),
        ("clusir_t", {"dim": 8, "heads": (1, 1, 2, 2), "prompt_dim": 16}),
    ],
)
def test_bf16_channels_last_gradients_follow_fp32(name: str, overrides: dict) -> None:
    # Training's fast path: bf16 autocast on channels-last features, losses in fp32.
    torch.manual_seed(0)
    model = create_model(name, **overrides).eval()  # eval: no sampled routing noise
    x = torch.rand(2, 3, 32, 32)
    target = torch.rand(2, 3, 32, 32)

    def grads(precision: str) -> torch.Tensor:
        model.zero_grad()
        model.to(
            memory_format=torch.channels_last if precision == "bf16" else torch.preserve_format
        )
        inp = x.contiguous(memory_format=torch.channels_last) if precision == "bf16" else x
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            out = model(inp)
        (out.float() - target).abs().mean().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    reference, fast = grads("fp32"), grads("bf16")
    assert reference.shape == fast.shape
    cosine = torch.nn.functional.cosine_similarity(reference, fast, dim=0)
    assert cosine > 0.98
    assert (fast.norm() / reference.norm() - 1).abs() < 0.1
