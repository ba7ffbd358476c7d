"""Recipes load, overrides apply, mistakes are named, and the papers' schedules are right."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trainkit import ROOT

from anyrestore.errors import ConfigError
from anyrestore.metrics import psnr
from anyrestore.models import list_models
from anyrestore.training.config import RECIPES, Config, load_config, resolve, validate
from anyrestore.training.losses import RestorationLoss, fourier_l1
from anyrestore.training.optim import build_optimizer, build_scheduler

CONFIGS = sorted((ROOT / "configs").rglob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_shipped_configs_are_valid(path: Path) -> None:
    config = load_config(path)
    assert config.model in list_models()
    validate(config)
    # What is written back reads back to the same recipe.
    assert load_config(None, base=_toml(config.to_toml())) == config


def _toml(text: str) -> dict:
    from anyrestore.training.config import tomllib

    return tomllib.loads(text)


def test_paper_recipes_match_the_papers() -> None:
    top = [p for p in CONFIGS if p.parent.name == "configs"]  # not configs/experiments/
    anyir = {p.name: load_config(p) for p in top if p.name.startswith("anyir_")}
    clusir = {p.name: load_config(p) for p in top if p.name.startswith("clusir_")}
    assert set(anyir) == {"anyir_three.toml", "anyir_five.toml", "anyir_cdd11.toml"}
    assert set(clusir) == {"clusir_three.toml", "clusir_five.toml", "clusir_cdd11.toml"}
    # AnyIR App. A.2 / A.1: batch 32, 128 crops, Adam 2e-4 (0.9, 0.999), 120/130/150 epochs.
    assert [anyir[f"anyir_{s}.toml"].train.epochs for s in ("three", "five", "cdd11")] == [
        120,
        130,
        150,
    ]
    for c in anyir.values():
        assert (c.train.batch_size, c.data.crop, c.optim.lr, c.optim.betas) == (
            32,
            128,
            2e-4,
            [0.9, 0.999],
        )
        assert resolve(c, "anyir").schedule == "cosine" and resolve(c, "anyir").fourier == 0.1
    # ClusIR Sec. 4.1: batch 48, 150 epochs, halved at 75, expansion 3/120/5/200.
    for c in clusir.values():
        assert (c.train.batch_size, c.train.epochs, c.schedule.milestones, c.schedule.gamma) == (
            48,
            150,
            [0.5],
            0.5,
        )
        assert resolve(c, "clusir").ms_ssim > 0 and resolve(c, "clusir").schedule == "step"
    assert clusir["clusir_five.toml"].data.expansion in (
        True,
        {"noise": 3, "rain": 120, "blur": 5, "low_light": 200, "haze": 1},
    )


def test_overrides_parse_as_toml_values() -> None:
    config = load_config(
        None,
        [
            "model=anyir_t",
            "optim.lr=1e-4",
            "data.kinds=['rain', 'haze']",
            "data.root=/data/x y",
            "train.ema_decay=0",
        ],
    )
    assert config.model == "anyir_t" and config.optim.lr == 1e-4
    assert config.data.kinds == ["rain", "haze"] and config.data.root == "/data/x y"
    assert config.train.ema_decay == 0.0 and isinstance(config.train.ema_decay, float)


def test_extends_merges_a_parent_recipe_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "stage1.toml").write_text(
        'model = "anyir_t"\nseed = 0\n[data.kinds]\nrain = 1.0\nhaze = 1.0\n'
        "[optim]\nlr = 5e-4\n[train]\nsteps = 600\nbatch_size = 4\n"
    )
    (tmp_path / "stage2.toml").write_text(
        'extends = "base/stage1.toml"\nseed = 1\n[data.kinds]\nrain = 2.0\n[train]\nsteps = 50\n'
    )
    (tmp_path / "stage3.toml").write_text('extends = "stage2.toml"\n[optim]\nlr = 1e-4\n')
    config = load_config(tmp_path / "stage3.toml", ["train.batch_size=8"])
    assert config.model == "anyir_t" and config.seed == 1
    assert config.data.kinds == {"rain": 2.0, "haze": 1.0}  # tables merge, they are not replaced
    assert config.optim.lr == 1e-4 and config.train.steps == 50 and config.train.batch_size == 8
    # The resolved recipe is what runs record, so it does not remember how it was written.
    assert "extends" not in config.to_toml()


def _mix_without(config: Config, *names: str) -> dict[str, float]:
    """The recipe's degradation weights without ``names``: what a stage left as it was."""
    return {k: v for k, v in config.data.kinds.items() if k not in names}


def _raises_only(
    stage: Config, before: Config, raised: tuple[str, ...], added: tuple[str, ...] = ()
) -> None:
    """``stage`` weighs ``raised`` more, brings in ``added`` and keeps the rest of the mix."""
    assert all(k not in before.data.kinds and stage.data.kinds[k] > 0 for k in added)
    assert all(stage.data.kinds[k] > before.data.kinds[k] for k in raised)
    assert _mix_without(stage, *raised, *added) == _mix_without(before, *raised)


def _continues(stage: Config, before: Config, seeds: set[int]) -> None:
    """``stage`` starts from ``before``'s exported weights with a seed no earlier stage used."""
    assert Path(before.out).name in stage.train.init_from and stage.seed not in seeds
    seeds.add(stage.seed)


def test_release_stages_extend_the_stage_before() -> None:
    stage1 = load_config(ROOT / "configs" / "release_anyir_t.toml")
    stage3 = load_config(ROOT / "configs" / "release_anyir_t_stage3.toml")
    assert stage3.data.crop == stage1.data.crop and stage3.train.batch_size == 8
    assert (
        stage3.optim.lr < stage1.optim.lr and stage3.data.kinds["blur"] > stage1.data.kinds["blur"]
    )
    stage4 = load_config(ROOT / "configs" / "release_anyir_t_stage4.toml")
    stage5 = load_config(ROOT / "configs" / "release_anyir_t_stage5.toml")
    # the dark-scene stages keep stage 3's mix and setup and change only what they list
    assert stage5.data.kinds == stage4.data.kinds == stage3.data.kinds
    assert stage5.train.batch_size == stage4.train.batch_size == 8
    assert stage3.data.dark_scenes == 0.0 < stage4.data.dark_scenes < stage5.data.dark_scenes
    assert stage5.optim.lr < stage4.optim.lr < stage3.optim.lr
    # stages 6 to 9 each change only blur's weight in the mix (raising it), darken more, and
    # start from the stage before
    seeds = {stage4.seed, stage5.seed}
    before = stage5
    for name in (
        "release_anyir_t_stage6.toml",
        "release_anyir_t_stage7.toml",
        "release_anyir_t_stage8.toml",
        "release_anyir_t_stage9.toml",
    ):
        stage = load_config(ROOT / "configs" / name)
        _raises_only(stage, before, ("blur",))
        assert stage.data.dark_scenes > before.data.dark_scenes
        assert stage.data.crop == before.data.crop and stage.train.batch_size == 8
        _continues(stage, before, seeds)
        before = stage
    # the unshipped PSNR-loss experiment continues stage 9 the same way, adding only the term
    exp = load_config(ROOT / "configs" / "experiments" / "anyir_t_stage10_psnr.toml")
    assert resolve(exp, "anyir").psnr == 0.02 and resolve(before, "anyir").psnr == 0.0
    _continues(exp, before, seeds)
    # stage 10 keeps stage 9's mix, darkening and loss, on crops of twice the side: half as
    # many per step, so a step sees twice the pixels
    stage10 = load_config(ROOT / "configs" / "release_anyir_t_stage10.toml")
    assert stage10.data.kinds == before.data.kinds
    assert stage10.data.dark_scenes == before.data.dark_scenes
    assert resolve(stage10, "anyir") == resolve(before, "anyir")
    assert stage10.data.crop == 2 * before.data.crop == 128
    assert (
        stage10.train.batch_size * stage10.data.crop**2
        == 2 * before.train.batch_size * before.data.crop**2
    )
    _continues(stage10, before, seeds)
    # stage 11 adds identity pairs (`clean`) to stage 10's mix and keeps everything else
    stage11 = load_config(ROOT / "configs" / "release_anyir_t_stage11.toml")
    _raises_only(stage11, stage10, (), added=("clean",))
    assert stage11.data.dark_scenes == stage10.data.dark_scenes
    assert resolve(stage11, "anyir") == resolve(stage10, "anyir")
    assert (stage11.data.crop, stage11.train.batch_size) == (128, stage10.train.batch_size)
    _continues(stage11, stage10, seeds)
    # stage 12 only raises the weight of the identity pairs and starts from stage 11
    stage12 = load_config(ROOT / "configs" / "release_anyir_t_stage12.toml")
    _raises_only(stage12, stage11, ("clean",))
    assert resolve(stage12, "anyir") == resolve(stage11, "anyir")
    _continues(stage12, stage11, seeds)
    # two unshipped stage-13 experiments continue stage 12: one with the per-crop PSNR term and
    # stage 12's mix, one with more identity pairs
    exp = load_config(ROOT / "configs" / "experiments" / "anyir_t_stage13_psnr.toml")
    assert exp.data.kinds == stage12.data.kinds
    assert resolve(stage12, "anyir").psnr == 0 and resolve(exp, "anyir").psnr > 0
    _continues(exp, stage12, seeds)
    exp = load_config(ROOT / "configs" / "experiments" / "anyir_t_stage13_clean6.toml")
    _raises_only(exp, stage12, ("clean",))
    assert resolve(exp, "anyir") == resolve(stage12, "anyir")
    _continues(exp, stage12, seeds)
    # the shipped stage 13 adds misty scenes to stage 12, its mix, darkening and loss otherwise
    stage13 = load_config(ROOT / "configs" / "release_anyir_t_stage13.toml")
    assert stage12.data.misty_scenes == 0.0 < stage13.data.misty_scenes <= 0.5
    assert stage13.data.kinds == stage12.data.kinds
    assert stage13.data.dark_scenes == stage12.data.dark_scenes
    assert resolve(stage13, "anyir") == resolve(stage12, "anyir")
    _continues(stage13, stage12, seeds)
    # stage 14 continues it with more misty scenes and nothing else but the rate
    stage14 = load_config(ROOT / "configs" / "release_anyir_t_stage14.toml")
    assert stage14.data.misty_scenes > stage13.data.misty_scenes
    assert (
        stage14.data.kinds == stage13.data.kinds
        and stage14.data.dark_scenes == stage13.data.dark_scenes
    )
    assert (
        resolve(stage14, "anyir") == resolve(stage13, "anyir")
        and stage14.optim.lr < stage13.optim.lr
    )
    _continues(stage14, stage13, seeds)
    # stage 15 adds the training-only slight blur, gives haze and H+R back some weight and has
    # stage 13's share of misty scenes
    stage15 = load_config(ROOT / "configs" / "release_anyir_t_stage15.toml")
    _raises_only(stage15, stage14, ("haze", "H+R"), added=("slight_blur",))
    assert stage15.data.misty_scenes == stage13.data.misty_scenes < stage14.data.misty_scenes
    assert resolve(stage15, "anyir") == resolve(stage14, "anyir")
    _continues(stage15, stage14, seeds)
    # stage 16 blurs half the crops (long and short shakes) and changes nothing else
    stage16 = load_config(ROOT / "configs" / "release_anyir_t_stage16.toml")
    raised = ("blur", "slight_blur")
    _raises_only(stage16, stage15, raised)
    assert sum(stage16.data.kinds[k] for k in raised) >= sum(stage16.data.kinds.values()) / 2
    assert (stage16.data.dark_scenes, stage16.data.misty_scenes) == (
        stage15.data.dark_scenes,
        stage15.data.misty_scenes,
    )
    assert resolve(stage16, "anyir") == resolve(stage15, "anyir")
    assert stage16.optim.lr == stage15.optim.lr
    _continues(stage16, stage15, seeds)
    # an unshipped stage 17: the same mix, but its blurred crops keep their exposure and contrast
    stage17 = load_config(ROOT / "configs" / "experiments" / "anyir_t_stage17_plain_blur.toml")
    assert stage17.data.kinds == stage16.data.kinds
    assert stage16.data.plain_scenes == [] and set(stage17.data.plain_scenes) == set(raised)
    assert (stage17.data.dark_scenes, stage17.data.misty_scenes) == (
        stage16.data.dark_scenes,
        stage16.data.misty_scenes,
    )
    assert resolve(stage17, "anyir") == resolve(stage16, "anyir")
    _continues(stage17, stage16, seeds)
    # an unshipped stage 18: stage 17's data at the blur-only pilot's rate, with an EMA
    stage18 = load_config(ROOT / "configs" / "experiments" / "anyir_t_stage18_fast_blur.toml")
    assert stage18.data == stage17.data
    assert stage18.optim.lr == 2e-4 > stage17.optim.lr and stage18.train.ema_decay > 0
    assert resolve(stage18, "anyir") == resolve(stage16, "anyir")
    _continues(stage18, stage16, seeds)
    # stage 6 keeps stage 5's lr
    assert load_config(ROOT / "configs" / "release_anyir_t_stage6.toml").optim.lr == stage5.optim.lr


def test_clusir_release_stages_extend_the_stage_before() -> None:
    stage1 = load_config(ROOT / "configs" / "release_clusir_t.toml")
    stage2 = load_config(ROOT / "configs" / "release_clusir_t_stage2.toml")
    stage3 = load_config(ROOT / "configs" / "release_clusir_t_stage3.toml")
    seeds = {stage1.seed}
    _continues(stage2, stage1, seeds)
    _continues(stage3, stage2, seeds)
    assert all(
        c.model == "clusir_t" and resolve(c, "clusir") == resolve(stage1, "clusir")
        for c in (stage2, stage3)
    )
    # stage 2 restarted DAFMM's spectral branches after their fix; stage 3 resets nothing
    assert stage2.train.init_reset and not stage3.train.init_reset
    # stage 3: the papers' 128 px crops, identity pairs, and more weight on every kind stage 2
    # made worse on the held-out photos (blur, noise_15, snow, L+H+S); nothing loses weight
    assert stage2.data.crop == 96 and stage3.data.crop == 128
    assert "clean" not in stage2.data.kinds and stage3.data.kinds["clean"] > 0
    assert all(
        stage3.data.kinds[k] > stage2.data.kinds[k] for k in ("blur", "noise_15", "snow", "L+H+S")
    )
    assert all(stage3.data.kinds[k] >= w for k, w in stage2.data.kinds.items())
    assert stage3.optim.lr < stage2.optim.lr and stage3.train.batch_size == stage2.train.batch_size
    # stage 4 adds anyir_t's dark and misty scenes, and more of the identity pairs, blur, low
    # light and its haze composites; the rest of the mix, crop, batch and loss stay
    stage4 = load_config(ROOT / "configs" / "release_clusir_t_stage4.toml")
    _continues(stage4, stage3, seeds)
    assert stage3.data.dark_scenes == stage3.data.misty_scenes == 0.0
    assert 0 < stage4.data.dark_scenes <= 0.75 and 0 < stage4.data.misty_scenes <= 0.5
    _raises_only(stage4, stage3, ("clean", "blur", "low_light", "L+H", "L+H+R"))
    assert (stage4.data.crop, stage4.train.batch_size) == (128, stage3.train.batch_size)
    assert resolve(stage4, "clusir") == resolve(stage3, "clusir") and not stage4.train.init_reset
    # stage 5 adds the training-only short shake and more blur, identity pairs and low light
    stage5 = load_config(ROOT / "configs" / "release_clusir_t_stage5.toml")
    _continues(stage5, stage4, seeds)
    _raises_only(stage5, stage4, ("blur", "clean", "low_light"), added=("slight_blur",))
    assert (stage5.data.dark_scenes, stage5.data.misty_scenes) == (
        stage4.data.dark_scenes,
        stage4.data.misty_scenes,
    )
    assert (
        resolve(stage5, "clusir") == resolve(stage4, "clusir") and stage5.optim.lr < stage4.optim.lr
    )
    # an unshipped sixth stage weighs blur and the two composites stage 5 cost more, at its rate
    exp = load_config(ROOT / "configs" / "experiments" / "clusir_t_stage6_blur5.toml")
    _continues(exp, stage5, seeds)
    _raises_only(exp, stage5, ("blur", "L+H+R", "L+H+S"))
    assert resolve(exp, "clusir") == resolve(stage5, "clusir") and exp.optim.lr == stage5.optim.lr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('extends = "missing.toml"', "extends 'missing.toml', which is not a file"),
        ('extends = "loop.toml"', "makes a cycle"),
        ("extends = 3", "extends must be a file name"),
    ],
)
def test_extends_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "loop.toml").write_text('extends = "loop.toml"\n')
    (tmp_path / "bad.toml").write_text(text + "\n")
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "bad.toml")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr'"),
        ("bogus=1", "unknown config key 'bogus'"),
        ("train.steps=ten", "'train.steps': 'ten' is not an integer"),
        ("train.batch_size=2.5", "'train.batch_size'"),
        ("optim=3", "optim must be a table"),
        ("no_equals_sign", "KEY=VALUE"),
    ],
)
def test_config_mistakes_are_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(None, ["model=anyir_t", override])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model=anyir_xl", "unknown model 'anyir_xl'"),
        ("train.precision=fp8", "train.precision"),
        ("schedule.kind=linear", "schedule.kind"),
        ("data.layout=flat", "data.layout"),
        ("optim.lr=0", "optim.lr"),
        ("data.misty_scenes=1.5", "data.misty_scenes must be a probability"),
        ("data.dark_scenes=-0.1", "data.dark_scenes must be a probability"),
    ],
)
def test_invalid_values_are_refused(override: str, message: str) -> None:
    config = load_config(None, ["model=anyir_t", override])
    with pytest.raises(ConfigError, match=message):
        validate(config)


def _lrs(kind: str, total: int, warmup: float | None = None) -> list[float]:
    config = load_config(None, ["model=anyir_t", f"schedule.kind={kind}"])
    if warmup is not None:
        config.schedule.warmup = warmup
    recipe = resolve(config, "anyir")
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, config.optim)
    sched = build_scheduler(opt, recipe, config.schedule, total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_with_warmup_and_step_halving() -> None:
    cos = _lrs("cosine", 100, warmup=0.1)
    assert cos[0] == pytest.approx(2e-5) and cos[9] == pytest.approx(2e-4)  # linear warmup
    assert all(a >= b for a, b in zip(cos[9:], cos[10:], strict=False))  # then decays
    assert cos[55] == pytest.approx(1e-4, rel=0.05) and cos[-1] < 1e-6
    step = _lrs("step", 100, warmup=0.0)
    assert step[:50] == [2e-4] * 50 and step[50:] == [1e-4] * 50  # ClusIR: halved at half


def test_recipe_defaults_follow_the_architecture() -> None:
    config = Config(model="anyir_t")
    assert resolve(config, "anyir") == RECIPES["anyir"]
    assert resolve(config, "clusir") == RECIPES["clusir"]
    config.loss.fourier = 0.5
    assert resolve(config, "anyir").fourier == 0.5
    config.loss.l1, config.loss.fourier = 0.0, 0.0
    with pytest.raises(ConfigError, match="non-zero"):
        resolve(config, "anyir")
    config.loss.psnr = 0.01  # the PSNR term alone is a valid objective
    assert resolve(config, "anyir").psnr == 0.01
    config.loss.psnr = -0.01
    with pytest.raises(ConfigError, match=">= 0"):
        resolve(config, "anyir")


def test_losses() -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 24, 24)
    y = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    assert fourier_l1(x, x) == 0 and fourier_l1(x, y) > 0
    loss = RestorationLoss(l1=1.0, fourier=0.1, ms_ssim=1.0, aux=2.0)
    pred = y.clone().requires_grad_()
    total, parts = loss(pred, x, {"balance": torch.tensor(0.25)})
    expected = parts["l1"] + 0.1 * parts["fourier"] + parts["ms_ssim"] + 2.0 * 0.25
    assert torch.allclose(total, expected)
    assert set(parts) == {"l1", "fourier", "ms_ssim", "aux_balance"}
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_psnr_term_is_minus_the_mean_crop_psnr_and_keeps_near_right_crops_in_play() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 3, 32, 32) * 0.8 + 0.1
    error = torch.randn_like(target) * torch.tensor([0.01, 0.1]).view(2, 1, 1, 1)
    pred = (target + error).requires_grad_()
    total, parts = RestorationLoss(l1=0.0, psnr=1.0)(pred, target)
    assert set(parts) == {"psnr"}
    assert torch.allclose(total, -psnr(pred.detach(), target).mean(), atol=1e-4)
    total.backward()
    assert pred.grad is not None
    near, far = pred.grad[0].abs().mean(), pred.grad[1].abs().mean()
    assert near > 5 * far  # the crop 10x closer pulls ~10x harder per pixel ...
    pred.grad = None
    RestorationLoss(l1=1.0)(pred, target)[0].backward()
    assert torch.allclose(pred.grad[0].abs().mean(), pred.grad[1].abs().mean())  # ... L1: equal
