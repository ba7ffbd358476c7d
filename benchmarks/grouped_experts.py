"""ClusIR's experts for a batch whose images chose different experts: one pass per image
(as the model runs them) against the whole batch folded into channels as one grouped
convolution. Forward and backward, fp32 channels-last, 2 threads, best of 10 per shape;
shapes of clusir_t's four levels for 4 crops of 128 px, 4 experts an image.

    python benchmarks/grouped_experts.py
"""

import time

import torch
import torch.nn.functional as F

torch.set_num_threads(2)
torch.manual_seed(0)


Weights = list[list[torch.Tensor]]


def per_image(
    y: torch.Tensor, w_in: Weights, w_dw: Weights, w_out: list[torch.Tensor], scale: list
) -> torch.Tensor:
    """Each image's GDFN experts (stacked) on that image alone, as ClusIR runs them."""
    outs = []
    for i in range(y.shape[0]):
        yi = y[i : i + 1]
        gate, value = (
            F.conv2d(F.conv2d(yi, w_in[i][k]), w_dw[i][k], padding=1, groups=w_dw[i][k].shape[0])
            for k in (0, 1)
        )
        outs.append(F.conv2d(F.gelu(gate) * value, w_out[i] * scale[i][..., None, None]))
    return torch.cat(outs)


def grouped(
    y: torch.Tensor, w_in: Weights, w_dw: Weights, w_out: list[torch.Tensor], scale: list
) -> torch.Tensor:
    """The same, the batch folded into channels: one grouped convolution per step."""
    b, c, h, w = y.shape
    folded = y.contiguous().reshape(1, b * c, h, w)

    def branch(k: int) -> torch.Tensor:
        wi = torch.cat([w_in[i][k] for i in range(b)])
        wd = torch.cat([w_dw[i][k] for i in range(b)])
        return F.conv2d(F.conv2d(folded, wi, groups=b), wd, padding=1, groups=wd.shape[0])

    z = F.gelu(branch(0)) * branch(1)
    wo = torch.cat([w_out[i] * scale[i][..., None, None] for i in range(b)])
    return F.conv2d(z, wo, groups=b).reshape(b, c, h, w)


def main() -> None:
    b, n = 4, 4  # images, experts an image (2 clusters x 2 experts)
    for c, size in ((16, 128), (32, 64), (64, 32), (128, 16)):
        hidden = int(c * 2.66 * 1.25)  # clusir_t's expert width
        y = torch.randn(b, c, size, size).contiguous(memory_format=torch.channels_last)
        y.requires_grad_()

        def weights(*shape: int) -> Weights:
            return [[torch.randn(*shape, requires_grad=True) for _ in (0, 1)] for _ in range(b)]

        w_in, w_dw = weights(n * hidden, c, 1, 1), weights(n * hidden, 1, 3, 3)
        w_out = [torch.randn(c, n * hidden, 1, 1, requires_grad=True) for _ in range(b)]
        scale = [torch.rand(1, n * hidden) for _ in range(b)]
        args = (y, w_in, w_dw, w_out, scale)
        ref, alt = per_image(*args), grouped(*args)
        err = float((ref - alt).abs().max() / ref.abs().max())
        best: dict[str, float] = {}
        for name, fn in (("per_image", per_image), ("grouped", grouped)) * 2:
            for _ in range(5):
                t = time.perf_counter()
                fn(*args).square().mean().backward()
                best[name] = min(best.get(name, 1e9), time.perf_counter() - t)
        print(
            f"{b}x{c}x{size}x{size}, {n} experts of {hidden}: per image "
            f"{best['per_image'] * 1e3:.1f} ms, grouped {best['grouped'] * 1e3:.1f} ms "
            f"({best['per_image'] / best['grouped']:.2f}x), max rel. difference {err:.1e}"
        )


if __name__ == "__main__":
    main()
