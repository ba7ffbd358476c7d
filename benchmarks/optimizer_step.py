"""How long one Adam step takes over a model's parameters, with each of PyTorch's three forms.

The profiler charges each of the default loop's thousands of small calls its own overhead, so
in a profile of a training step the optimizer looks far costlier than it is; this times it
alone. Run it with nothing else computing (pause a training run with ``kill -STOP``).

    python benchmarks/optimizer_step.py --models anyir_t,clusir_t --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from anyrestore.models import create_model

FORMS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def time_step(model: torch.nn.Module, form: str, steps: int) -> float:
    """Seconds per ``Adam.step`` over ``model``'s parameters (gradients already set)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, **FORMS[form])
    opt.step()  # creates the moment buffers
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="anyir_t,clusir_t")
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2, help="best of this many rounds")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.models.split(","):
        model = create_model(name)
        params = list(model.parameters())
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        best = {form: float("inf") for form in FORMS}
        for _ in range(args.rounds):
            for form in FORMS:  # interleaved, so a slow moment hurts every form alike
                best[form] = min(best[form], time_step(model, form, args.steps))
        times = ", ".join(f"{form} {sec * 1e3:.1f} ms" for form, sec in best.items())
        count = sum(p.numel() for p in params)
        print(f"{name}: {len(params)} tensors, {count / 1e6:.2f}M parameters: {times}")


if __name__ == "__main__":
    main()
