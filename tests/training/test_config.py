"""Recipes load, overrides apply, mistakes are named, and the papers' schedules are right."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from tinymodels import TINY_BY_ARCH
from trainkit import ROOT

from anyrestore.errors import ConfigError
from anyrestore.models import create_model, get_spec, list_models
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


def _code_paths(path: Path) -> str:
    """What of a recipe decides the code a training step runs: every setting, with each number
    only zero or not (a loss weight of 0 drops its term; 2e-4 and 3e-4 run the same code),
    where it reads, writes and starts from left out, and only whether it has a teacher."""

    def norm(value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, (int, float, dict, list)):
            return value
        if isinstance(value, dict):
            skip = ("out", "root", "init_from")
            return {
                k: bool(v) if k == "teacher" else norm(v) for k, v in value.items() if k not in skip
            }
        if isinstance(value, list):
            return [norm(v) for v in value]
        return value != 0

    return repr(norm(_toml(load_config(path).to_toml())))


def _one_of_each(paths: list[Path]) -> list[Path]:
    """The latest recipe of each group that runs the same code (release v7, v8 and v9 differ
    only in numbers): a step of each group covers them all, in half the suite's time."""
    groups: dict[str, Path] = {}
    for path in sorted(paths):
        groups[_code_paths(path)] = path
    return sorted(groups.values())


#: The recipes that train one step: one of each group of the top-level ones, and the last
#: stage of each shipped history (the options the history uses: scene augmentations, identity
#: pairs, init_reset). Every recipe is loaded and validated above.
STEP_RECIPES = _one_of_each(
    [
        *(ROOT / "configs").glob("*.toml"),
        ROOT / "configs" / "history" / "release_anyir_t_stage16.toml",
        ROOT / "configs" / "history" / "release_clusir_t_stage5.toml",
    ]
)
#: Data on a few tiny photos, one step, nothing the step does not need.
_ONE_STEP = [
    "data.crop=32",
    "data.workers=0",
    "data.val_items=1",
    "train.steps=1",
    "train.batch_size=2",
    "train.init_from=''",
    "log.progress=false",
    "log.val_every=0",
    "log.ckpt_every=0",
]


@pytest.mark.parametrize("path", STEP_RECIPES, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_shipped_recipes_train_a_step(path: Path, photos: Path, tmp_path: Path) -> None:
    """Each recipe's loss, optimizer, schedule, mix and distillation terms train a step on
    tiny synthetic data.

    The papers' recipes read datasets that are not here, so they train on the synthetic
    layout; the model is its architecture's smallest variant shrunk to a few channels, and a
    teacher is a tiny model of the teacher's own variant and layout (seconds a step).
    """
    from anyrestore.training import train

    recipe = load_config(path)
    data = [f"data.root={photos}", f"out={tmp_path / 'run'}"]
    if recipe.data.layout != "synthetic":
        data += ["data.layout=synthetic", "data.expansion=false"]
    arch = get_spec(recipe.model).arch
    tiny = TINY_BY_ARCH[arch]
    if recipe.distill.teacher:
        data.append(f"distill.teacher={_tiny_teacher(recipe.distill.teacher, tmp_path)}")
    config = load_config(path, [*data, f"model={arch}_t", *_ONE_STEP])
    config = dataclasses.replace(config, model_overrides={**config.model_overrides, **tiny})
    result = train(config)
    assert result.step == 1 and result.checkpoint.is_file()


def _tiny_teacher(teacher: str, folder: Path) -> Path:
    """A tiny model of ``teacher``'s variant and layout (random weights), saved in ``folder``."""
    from anyrestore.weights.checkpoint import checkpoint_config, read_metadata, save_checkpoint
    from anyrestore.weights.resolve import resolve_weights

    path = resolve_weights(teacher)  # the recipes name shipped weights
    meta = read_metadata(path)
    arch, config = checkpoint_config(path, meta)
    layout = {"layout": config["layout"]} if "layout" in config else {}
    torch.manual_seed(0)
    model = create_model(meta["name"], **TINY_BY_ARCH[arch], **layout)
    return save_checkpoint(model, folder / "teacher.safetensors")


def test_recipes_that_name_shipped_weights_find_them_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A recipe starts from (or learns from) shipped weights by name, so it runs from anywhere."""
    from anyrestore.weights.checkpoint import checkpoint_config, read_metadata
    from anyrestore.weights.resolve import resolve_weights

    monkeypatch.chdir(tmp_path)
    named = 0
    for path in CONFIGS:
        recipe = load_config(path)
        for key, ref in (
            ("init_from", recipe.train.init_from),
            ("teacher", recipe.distill.teacher),
        ):
            if not ref or ref.endswith(".safetensors"):  # none, or a file of an earlier stage
                continue
            weights = resolve_weights(ref, offline=True)
            if key == "init_from":
                arch, _ = checkpoint_config(weights, read_metadata(weights))
                assert arch == get_spec(recipe.model).arch, path.name
            named += 1
    assert named >= 20


def test_paper_recipes_match_the_papers() -> None:
    top = [p for p in CONFIGS if p.parent.name == "configs"]  # not configs/experiments/
    anyir = {p.name: load_config(p) for p in top if p.name.startswith("anyir_")}
    clusir = {p.name: load_config(p) for p in top if p.name.startswith("clusir_")}
    assert set(anyir) == {"anyir_three.toml", "anyir_five.toml", "anyir_cdd11.toml"}
    assert set(clusir) == {"clusir_three.toml", "clusir_five.toml", "clusir_cdd11.toml"}
    # AnyIR App. A.2 / A.1: batch 32, 128 crops, Adam 2e-4 (0.9, 0.999), 120/130/150 epochs,
    # the last of the authors' loader that lists each CDD-11 image six times.
    assert [anyir[f"anyir_{s}.toml"].train.epochs for s in ("three", "five", "cdd11")] == [
        120,
        130,
        150 * 6,
    ]
    for c in anyir.values():
        assert (c.train.batch_size, c.data.crop, c.optim.lr, c.optim.betas) == (
            32,
            128,
            2e-4,
            [0.9, 0.999],
        )
        assert resolve(c, "anyir").schedule == "cosine" and resolve(c, "anyir").fourier == 0.1
    assert anyir["anyir_five.toml"].data.expansion == {"low_light": 20}  # the released loader
    # ClusIR Sec. 4.1 and 6.1: batch 48, 150 epochs (CDD-11: 200, "all other settings
    # unchanged"), halved after 75 epochs, expansion 3/120/5/200.
    for name, c in clusir.items():
        epochs = 200 if name == "clusir_cdd11.toml" else 150
        assert (c.train.batch_size, c.train.epochs, c.schedule.gamma) == (48, epochs, 0.5)
        assert [m * epochs for m in c.schedule.milestones] == [75]
        assert resolve(c, "clusir").ms_ssim > 0 and resolve(c, "clusir").schedule == "step"
    assert clusir["clusir_five.toml"].data.expansion in (
        True,
        {"noise": 3, "rain": 120, "blur": 5, "low_light": 200, "haze": 1},
    )
    # The papers train on the whole training sets; their test sets are what bench scores.
    assert all(c.data.val_fraction == 0 for c in (*anyir.values(), *clusir.values()))


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
        # a key of two types: the item that is wrong, not "not true/false or a table"
        ("data.expansion.rain=1.5", "'data.expansion.rain': 1.5 is not an integer"),
        ('data.kinds={rain="2"}', "'data.kinds.rain': '2' is not a number"),
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
        ("data.pale_scenes=2", "data.pale_scenes must be a probability"),
        ("data.dark_scenes=-0.1", "data.dark_scenes must be a probability"),
        ("log.ckpt_minutes=-5", "log.ckpt_minutes must be >= 0"),
        ("train.compile=fastest", "train.compile must be empty .eager. or one of default"),
        ("out=", "out must name a run folder"),  # --set out=$RUN with RUN unset: not here
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


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_the_optimizer_makes_the_reference_adam_update(name: str) -> None:
    """The optimizer the loop builds (fused where PyTorch has the kernel) moves a model's
    weights as PyTorch's reference per-tensor Adam does, weight decay groups included."""
    torch.manual_seed(0)
    config = Config()
    config.optim.name, config.optim.weight_decay = name, 0.05
    models = [create_model("anyir_t", **TINY_BY_ARCH["anyir"]) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    built = build_optimizer(models[0], config.optim)
    assert built.defaults["fused"]
    # Decay on matrices and kernels only, not on norms, biases and scales.
    decays = {(p.dim() >= 2, g["weight_decay"]) for g in built.param_groups for p in g["params"]}
    assert decays == {(True, 0.05), (False, 0.0)}
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    # The reference gets the same groups, holding the twin model's parameters.
    twin = dict(zip(models[0].parameters(), models[1].parameters(), strict=True))
    settings = ("lr", "betas", "eps", "weight_decay")
    groups = [
        {"params": [twin[p] for p in g["params"]], **{k: g[k] for k in settings}}
        for g in built.param_groups
    ]
    reference = cls(groups, foreach=False)
    for _ in range(3):
        grads = [torch.randn_like(p) for p in models[0].parameters()]
        for opt, model in ((built, models[0]), (reference, models[1])):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


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
    config.loss.ms_ssim = 0.5  # MS-SSIM alone is a valid objective
    assert resolve(config, "anyir").ms_ssim == 0.5
    for bad in (-0.5, float("nan"), float("inf")):  # NaN slipped past a "< 0" check
        config.loss.ms_ssim = bad
        with pytest.raises(ConfigError, match="finite numbers >= 0"):
            resolve(config, "anyir")


@pytest.mark.parametrize("weight", ["nan", "inf", "-1.0"])
def test_distillation_weights_must_be_finite_and_not_negative(weight: str) -> None:
    config = load_config(
        None,
        ["model=anyir_t", "distill.teacher=teacher.safetensors", f"distill.output_weight={weight}"],
    )
    with pytest.raises(ConfigError, match="distill weights must be finite numbers >= 0"):
        validate(config)


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


def test_the_recipe_hash_ignores_where_and_how_a_run_was_logged() -> None:
    smoke = ROOT / "configs" / "smoke.toml"
    one = load_config(smoke, ['out="runs/a"'])
    two = load_config(smoke, ['out="/elsewhere/b"', "log.progress=false", "log.every=1"])
    assert one.digest() == two.digest()
    assert load_config(smoke, ["optim.lr=1e-5"]).digest() != one.digest()
