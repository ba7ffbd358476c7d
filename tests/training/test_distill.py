"""Distillation ([distill]) carries a trained model's behaviour over to a new layout."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from rich.console import Console
from tinymodels import TINY_ANYIR as TINY
from trainkit import SMOKE, ship_as

from anyrestore.errors import ConfigError
from anyrestore.models import create_model
from anyrestore.training import export_checkpoint, load_config, train
from anyrestore.training.config import DistillConfig
from anyrestore.training.distill import Distiller, matched_blocks, relative_l1, teacher_targets
from anyrestore.weights.checkpoint import load_checkpoint, save_checkpoint

BLOCKS = ["encoder*.*", "latent.*", "decoder*.*", "refinement.*"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A layout-1 (preview layout) tiny AnyIR with fixed weights, as the teacher."""
    torch.manual_seed(5)
    model = create_model("anyir_t", layout=1, **TINY)
    return save_checkpoint(model, tmp_path_factory.mktemp("teacher") / "teacher.safetensors")


def _batch() -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def test_relative_error_is_a_fraction_of_the_change_at_any_scale() -> None:
    source = torch.zeros(1, 2, 4, 4)
    target = torch.full_like(source, 2.0)
    assert relative_l1(target, target, source) == 0
    assert relative_l1(torch.full_like(source, 1.0), target, source) == pytest.approx(0.5)
    assert relative_l1(torch.full_like(source, 10.0), 5 * target, source) == pytest.approx(0.0)


def test_blocks_are_the_outermost_matches_both_models_have(teacher: Path) -> None:
    student = create_model("anyir_t", **TINY)
    names = matched_blocks(student, load_checkpoint(teacher), BLOCKS)
    assert names == [
        "encoder1.0",
        "encoder2.0",
        "encoder3.0",
        "latent.0",
        "decoder3.0",
        "decoder2.0",
        "decoder1.0",
        "refinement.0",
    ]
    with pytest.raises(ConfigError, match="match no module"):
        matched_blocks(student, load_checkpoint(teacher), ["nothing.*"])


@pytest.mark.parametrize("forcing", [False, True])
def test_a_student_equal_to_its_teacher_has_nothing_to_learn(teacher: Path, forcing: bool) -> None:
    student = load_checkpoint(teacher).train()
    cfg = DistillConfig(
        teacher=str(teacher),
        blocks=BLOCKS,
        teacher_forcing=forcing,
        output_weight=0.0 if forcing else 1.0,
    )
    pred, _, loss, parts, _ = Distiller(student, cfg).train()(_batch())
    assert (pred is None) == forcing
    assert loss.item() < 1e-5
    assert set(parts) == ({"teacher_blocks"} if forcing else {"teacher_blocks", "teacher_output"})


def test_clusir_blocks_with_two_inputs_are_forced_and_a_tuple_output_is_refused(
    tmp_path: Path,
) -> None:
    from tinymodels import TINY_CLUSIR

    torch.manual_seed(5)
    path = save_checkpoint(create_model("clusir_t", **TINY_CLUSIR), tmp_path / "c.safetensors")
    # DAFMM and the semantic prompts take (features, prompt): both are passed on
    blocks = ["dafmm.*", "semantic_prompts.*"]
    cfg = DistillConfig(teacher=str(path), blocks=blocks, teacher_forcing=True, output_weight=0.0)
    _, _, loss, parts, _ = Distiller(load_checkpoint(path).train(), cfg).train()(_batch())
    assert set(parts) == {"teacher_blocks"} and loss.item() < 1e-5
    # experts.N returns (features, routing): no one map to compare
    cfg = DistillConfig(teacher=str(path), blocks=["experts.0"])
    with pytest.raises(ConfigError, match="experts.0 returns a tuple, not one feature map"):
        Distiller(load_checkpoint(path).train(), cfg).train()(_batch())


def test_the_teacher_can_be_named_like_shipped_weights(
    teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = tmp_path / "package"
    shipped.mkdir()
    copy = shipped / "tiny-teacher.safetensors"
    copy.write_bytes(teacher.read_bytes())
    monkeypatch.setenv("ANYRESTORE_MANIFEST", str(ship_as(copy, "tiny-teacher")))
    student = create_model("anyir_t", **TINY)
    cfg = DistillConfig(teacher="tiny-teacher", blocks=BLOCKS)
    named = Distiller(student, cfg).teacher.state_dict()
    for key, value in load_checkpoint(teacher).state_dict().items():
        assert torch.equal(named[key], value), key


def test_teacher_forcing_trains_the_blocks_and_takes_the_rest_from_the_teacher(
    teacher: Path,
) -> None:
    torch.manual_seed(0)
    student = create_model("anyir_t", **TINY)  # the released layout: its GatedDA differs
    cfg = DistillConfig(
        teacher=str(teacher), blocks=BLOCKS, teacher_forcing=True, output_weight=0.0
    )
    blocks = tuple(name + "." for name in Distiller(student, cfg).blocks)
    source = load_checkpoint(teacher).state_dict()
    for key, p in student.named_parameters():
        assert p.requires_grad == key.startswith(blocks), key
        if not key.startswith(blocks):
            assert torch.equal(p, source[key]), key
    assert any(key.startswith(blocks) for key, _ in student.named_parameters())


def test_a_config_that_cannot_learn_anything_is_refused(photos: Path, tmp_path: Path) -> None:
    def config(*extra: str):
        return load_config(SMOKE, [f"data.root={photos}", f"out={tmp_path}", *extra])

    with pytest.raises(ConfigError, match="needs distill.blocks"):
        train(config("distill.teacher=t.safetensors", "distill.teacher_forcing=true"))
    with pytest.raises(ConfigError, match="output_weight"):
        train(
            config(
                "distill.teacher=t.safetensors",
                "distill.teacher_forcing=true",
                'distill.blocks=["latent.*"]',
            )
        )
    with pytest.raises(ConfigError, match="nothing would be learned"):
        train(config("distill.teacher=t.safetensors", "distill.output_weight=0"))
    with pytest.raises(ConfigError, match="needs target_weight"):
        train(config("distill.teacher=t.safetensors", 'distill.teacher_kinds=["rain"]'))
    with pytest.raises(ConfigError, match=r"\['blur'\] are not kinds"):
        train(
            config(
                "distill.teacher=t.safetensors",
                "distill.target_weight=1",
                'distill.teacher_kinds=["blur"]',
            )
        )


def test_teacher_targets_replace_only_the_chosen_kinds() -> None:
    gt = torch.zeros(3, 3, 4, 4)
    wanted = torch.full_like(gt, 0.5)
    wanted[1, 0, 0, 0] = 1.7  # the teacher's output is clamped to an image's range
    out = teacher_targets(gt, wanted, ["rain", "blur", "haze"], ["blur", "haze"])
    assert torch.equal(out[0], gt[0])
    assert out[1, 0, 0, 0] == 1.0 and (out[1].flatten()[1:] == 0.5).all()
    assert (out[2] == 0.5).all()
    assert teacher_targets(gt, wanted, ["rain"] * 3, ["blur"]) is gt
    # CDD-11 items are labelled "L+H": a recipe may spell the kind out.
    out = teacher_targets(gt, wanted, ["L+H", "rain", "H"], ["low_light+haze", "haze"])
    assert (out[0] == 0.5).all() and torch.equal(out[1], gt[1]) and (out[2] == 0.5).all()


def test_the_teacher_restores_only_the_crops_that_learn_its_output(teacher: Path) -> None:
    """With teacher_kinds alone, the crops that learn the clean photo cost no teacher pass,
    and the chosen crops get the targets a whole-batch pass gives them."""
    cfg = DistillConfig(
        teacher=str(teacher), output_weight=0.0, target_weight=1.0, teacher_kinds=["haze"]
    )
    distiller = Distiller(create_model("anyir_t", **TINY), cfg).train()
    seen: list[int] = []
    distiller.teacher.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    lq = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    gt = torch.zeros_like(lq)
    kinds = ["rain", "haze", "noise_25"]

    _, _, loss, parts, wanted = distiller(lq, kinds)
    assert seen == [1] and parts == {} and loss.item() == 0.0
    with torch.no_grad():
        whole = distiller.teacher(lq)
    got = teacher_targets(gt, wanted, kinds, cfg.teacher_kinds)
    torch.testing.assert_close(got, teacher_targets(gt, whole, kinds, cfg.teacher_kinds))

    seen.clear()
    distiller(lq, ["rain", "blur", "noise_25"])
    assert seen == []
    distiller(lq, ["rain", "H", "noise_25"])  # a CDD-11 label of the chosen kind
    assert seen == [1]


def _distance_to_teacher(student_path: Path, teacher_path: Path) -> float:
    lq = _batch()
    with torch.no_grad():
        wanted = load_checkpoint(teacher_path).eval()(lq)
        got = load_checkpoint(student_path).float().eval()(lq)
    return relative_l1(got, wanted, lq).item()


def _distil(
    photos: Path, tmp_path: Path, teacher: Path, *overrides: str
) -> tuple[str, Path, dict, float, float]:
    """Train a fresh tiny layout-2 student for 40 steps with ``overrides``; (log, export,
    facts, distance to the teacher before, after)."""
    torch.set_num_threads(1)
    start = tmp_path / "start.safetensors"
    torch.manual_seed(1)
    save_checkpoint(create_model("anyir_t", **TINY), start)
    config = load_config(
        SMOKE,
        [
            f"data.root={photos}",
            f"out={tmp_path / 'run'}",
            "log.progress=false",
            "train.steps=40",
            "optim.lr=6e-3",
            f"train.init_from={start}",
            f"distill.teacher={teacher}",
            *overrides,
        ],
    )
    log = io.StringIO()
    result = train(config, console=Console(file=log, width=200))
    out, facts = export_checkpoint(result.checkpoint, tmp_path / "student.safetensors")
    before, after = _distance_to_teacher(start, teacher), _distance_to_teacher(out, teacher)
    return log.getvalue(), out, facts, before, after


@pytest.mark.parametrize("forcing", [False, True])
def test_distillation_brings_a_new_layout_close_to_its_teacher(
    photos: Path, tmp_path: Path, teacher: Path, forcing: bool
) -> None:
    log, _, facts, before, after = _distil(
        photos,
        tmp_path,
        teacher,
        f"distill.blocks={BLOCKS}".replace("'", '"'),
        f"distill.teacher_forcing={str(forcing).lower()}",
        f"distill.output_weight={0 if forcing else 1}",
    )
    assert "distilling from teacher.safetensors: 8 blocks" in log
    assert facts["teacher"] == "teacher.safetensors"
    assert ("teacher-forced" in facts["loss"]) == forcing
    assert after < 0.5 * before, (before, after)


def test_teacher_kinds_learn_the_teachers_output_instead_of_the_clean_photo(
    photos: Path, tmp_path: Path, teacher: Path
) -> None:
    """With every kind's target taken from the teacher, the clean-photo term alone (no output
    or block terms) pulls the student toward the teacher."""
    log, _, facts, before, after = _distil(
        photos,
        tmp_path,
        teacher,
        "distill.output_weight=0",
        "distill.target_weight=1",
        'distill.teacher_kinds=["noise_25", "rain", "haze", "low_light"]',
    )
    assert (
        "teacher.safetensors: the clean photos (the teacher's output for noise_25, rain, "
        "haze, low_light)" in log
    )  # neither blocks nor the output term: they have no weight here
    assert "the teacher's output for noise_25" in facts["loss"]
    assert after < 0.5 * before, (before, after)
