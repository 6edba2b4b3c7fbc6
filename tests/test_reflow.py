"""Reflow's building blocks (docs/guides/reflow.md): the coupling that keeps a batch's pairs, the teacher pairs as
data (made by the teacher's own sampler, cached under a key of every setting, refused for a teacher without a flow
map), the straightness of a flow's lines, and a short teacher -> pairs -> student run."""

from __future__ import annotations

import math
import shutil
import warnings

import pytest
import torch
from lightning.pytorch import Trainer

from lightning_fm.couplings import COUPLINGS, IndependentCoupling, KeepPairs, OTCoupling
from lightning_fm.data import TeacherPairsDataModule, ToyDataModule
from lightning_fm.data.sources import source_record
from lightning_fm.data.teacher_pairs import SOURCE_EPOCH, FixedPairs
from lightning_fm.fields import CoulombField
from lightning_fm.metrics import straightness
from lightning_fm.models import MLP, FieldHead
from lightning_fm.modules import CFMModule, FlowMatchingModule, IFMModule
from lightning_fm.modules.loading import DATA_CLASSES, CheckpointError
from lightning_fm.paths import LinearPath
from lightning_fm.utils.spec import allowed_prefixes, build, to_spec, untrusted_class_paths


def fit(module, data, steps: int, path=None, val_batches: int = 0) -> Trainer:
    """``steps`` training steps on the CPU, quietly; the checkpoint written to ``path`` where given."""
    trainer = Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=val_batches,
        val_check_interval=steps if val_batches else None,
        check_val_every_n_epoch=None if val_batches else 1,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, data)
    if path is not None:
        trainer.save_checkpoint(path)
    return trainer


def toy_data(**kwargs) -> ToyDataModule:
    return ToyDataModule("8gaussians", "moons", steps_per_epoch=4, batch_size=64, n_val=200, n_test=200, **kwargs)


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory):
    """A tiny CFM teacher of the toy 8gaussians -> moons, a few steps trained (its map need not be good)."""
    path = tmp_path_factory.mktemp("teacher") / "teacher.ckpt"
    torch.manual_seed(0)
    fit(CFMModule(backbone=MLP(data_shape=[2], width=16, depth=2), path=LinearPath(0.0)), toy_data(), 3, path)
    return path


def pairs_data(teacher, tmp_path, **kwargs) -> TeacherPairsDataModule:
    settings = {"n_pairs": 300, "steps": 6, "chunk_size": 128, "batch_size": 64, "progress": False}
    return TeacherPairsDataModule(str(teacher), cache_dir=str(tmp_path / "cache"), **{**settings, **kwargs})


# ---- the coupling -------------------------------------------------------------------------------------------------


def test_keep_pairs_returns_the_batch_as_given_with_its_labels():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(16, 3, generator=g), torch.randn(16, 3, generator=g)
    y0, y1 = torch.randint(0, 4, (16,), generator=g), torch.randint(0, 4, (16,), generator=g)
    out = KeepPairs()(x0, x1, y0, y1)
    assert out.x0 is x0 and out.x1 is x1 and out.y0 is y0 and out.y1 is y1
    assert KeepPairs()(x0, x1).y1 is None
    with pytest.raises(ValueError, match="one target per source, but got 16 source and 8 target"):
        KeepPairs()(x0, x1[:8])
    with pytest.raises(ValueError, match="labels y1 have 3 rows"):
        KeepPairs()(x0, x1, y1=y1[:3])
    assert COUPLINGS["keep"] is KeepPairs and COUPLINGS["independent"] is IndependentCoupling
    assert to_spec(KeepPairs()) == {"class_path": "lightning_fm.couplings.KeepPairs", "init_args": {}}
    assert isinstance(build(to_spec(KeepPairs())), KeepPairs)
    repaired = OTCoupling()(x0, x1)  # what KeepPairs is for: a re-pairing coupling breaks the teacher's pairs
    assert not torch.equal(repaired.x1, x1)


# ---- the pairs ----------------------------------------------------------------------------------------------------


def test_the_pairs_are_the_teachers_own_samples_of_fresh_sources(teacher_ckpt, tmp_path):
    data = pairs_data(teacher_ckpt, tmp_path)
    pairs = data.pairs()
    assert set(pairs) == {"x0", "x1", "y0"}  # 8gaussians has components (y0); an unconditional teacher: no y1
    assert pairs["x0"].shape == pairs["x1"].shape == (300, 2) and pairs["y0"].shape == (300,)
    teacher = FlowMatchingModule.load_from_checkpoint(teacher_ckpt, map_location="cpu").eval()
    torch.testing.assert_close(teacher.sample(pairs["x0"], steps=6).x, pairs["x1"], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(teacher.sample(pairs["x0"], steps=7).x, pairs["x1"])  # data.steps was applied
    # sources: the teacher data's training stream far beyond the teacher's epochs, not a batch it trained on
    first = toy_data().train_set()
    first.set_epoch_state(SOURCE_EPOCH, 0, 1)
    torch.testing.assert_close(pairs["x0"][:64], first.make_batch(0)["x0"])
    first.set_epoch_state(0, 0, 1)
    assert not torch.allclose(pairs["x0"][:64], first.make_batch(0)["x0"])


def test_the_cache_is_keyed_by_every_setting_and_the_teacher_file(teacher_ckpt, tmp_path, monkeypatch):
    data = pairs_data(teacher_ckpt, tmp_path)
    made = data.pairs()
    path = data.pairs_path()
    assert path.is_file() and path.parent == tmp_path / "cache" / "pairs"

    def refuse(self):
        raise AssertionError("the sampler ran although the pairs were cached")

    again = pairs_data(teacher_ckpt, tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(TeacherPairsDataModule, "make_pairs", refuse)
        loaded = again.pairs()
    assert again.pairs_path() == path and all(torch.equal(made[k], loaded[k]) for k in made)
    changed = [pairs_data(teacher_ckpt, tmp_path, **c).pairs_path() for c in ({"steps": 7}, {"seed": 1})]
    changed.append(pairs_data(teacher_ckpt, tmp_path, method="midpoint").pairs_path())
    changed.append(pairs_data(teacher_ckpt, tmp_path, n_pairs=299).pairs_path())
    assert len({path, *changed}) == 5
    # another teacher file at the same path (retrained weights) is another key
    copy = tmp_path / "copy.ckpt"
    shutil.copyfile(teacher_ckpt, copy)
    before = pairs_data(copy, tmp_path).pairs_path()
    checkpoint = torch.load(copy, map_location="cpu", weights_only=True)
    first = next(iter(checkpoint["state_dict"]))
    checkpoint["state_dict"][first] = checkpoint["state_dict"][first] + 0.5
    torch.save(checkpoint, copy)
    assert pairs_data(copy, tmp_path).pairs_path() != before


def test_a_class_conditional_teacher_keeps_its_labels_and_guidance(tmp_path):
    ckpt = tmp_path / "conditional.ckpt"
    torch.manual_seed(0)
    teacher = CFMModule(backbone=MLP(data_shape=[2], width=16, depth=2, num_classes=2), path=LinearPath(0.0))
    fit(teacher, toy_data(), 2, ckpt)
    data = pairs_data(ckpt, tmp_path, teacher_guidance=1.5, n_pairs=100)
    pairs = data.pairs()
    assert set(pairs) == {"x0", "x1", "y0", "y1"} and set(pairs["y1"].tolist()) == {0, 1}
    teacher = FlowMatchingModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    guided = teacher.sample(pairs["x0"], y=pairs["y1"], guidance=1.5, steps=6).x
    torch.testing.assert_close(guided, pairs["x1"], rtol=1e-5, atol=1e-6)
    batch = FixedPairs(pairs, 32, 0).make_batch(0)
    assert set(batch) == {"x0", "x1", "y0", "y1"}


def test_refusals_name_the_key_and_the_value(teacher_ckpt, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="data.teacher is required"):
        TeacherPairsDataModule()
    with pytest.raises(CheckpointError, match=r"data.teacher='.*missing.ckpt': no such file"):
        TeacherPairsDataModule(str(tmp_path / "missing.ckpt"))
    for n in (0, -3):
        with pytest.raises(ValueError, match=f"data.n_pairs must be an integer >= 1, got {n}"):
            TeacherPairsDataModule(str(teacher_ckpt), n_pairs=n)
    with pytest.raises(ValueError, match="data.method='rk45' is unknown"):
        TeacherPairsDataModule(str(teacher_ckpt), method="rk45")
    with pytest.raises(ValueError, match="data.teacher_guidance=2.0 needs a class-conditional teacher"):
        pairs_data(teacher_ckpt, tmp_path, teacher_guidance=2.0)
    # a relative path is kept absolute: found from anywhere, never read as a dotted class path ("teacher.ckpt")
    monkeypatch.chdir(teacher_ckpt.parent)
    data = TeacherPairsDataModule("teacher.ckpt", cache_dir=str(tmp_path))
    assert data.hparams.teacher == str(teacher_ckpt.resolve())
    assert untrusted_class_paths(dict(data.hparams), allowed_prefixes(DATA_CLASSES)) == []
    efm = tmp_path / "efm.ckpt"
    module = IFMModule(backbone=FieldHead(MLP(data_shape=[2], width=8, depth=1)), field=CoulombField(L=0.3))
    fit(module, toy_data(), 1, efm)
    with pytest.raises(ValueError, match=r"data.teacher='.*efm.ckpt' holds a IFMModule with field CoulombField, "):
        TeacherPairsDataModule(str(efm))


def test_training_batches_are_a_permutation_an_epoch_and_evaluation_is_the_teachers(teacher_ckpt, tmp_path):
    data = pairs_data(teacher_ckpt, tmp_path, n_pairs=100, batch_size=32)
    pairs = data.pairs()
    train = data.train_set()
    seen = {}
    for epoch in (0, 1):
        train.set_epoch_state(epoch, 0, 1)
        rows = torch.cat([train.make_batch(k)["x0"] for k in range(len(train))])
        assert len(train) == 4 and rows.shape == (100, 2)
        assert torch.equal(rows[rows[:, 0].argsort()], pairs["x0"][pairs["x0"][:, 0].argsort()])
        seen[epoch] = rows
    assert not torch.equal(seen[0], seen[1])
    shards = []
    for rank in (0, 1):  # two processes: disjoint halves of the epoch's permutation
        train.set_epoch_state(0, rank, 2)
        shards.append(torch.cat([train.make_batch(k)["x0"] for k in range(len(train))]))
    assert len(train) == 2 and torch.cat(shards).unique(dim=0).shape == (100, 2)
    teacher_data = toy_data()
    for key, value in teacher_data.eval_set("val").items():
        assert torch.equal(data.eval_set("val")[key], value)
    assert data.data_shape == (2,) and data.num_classes == 2 and not data.source_is_standard_normal
    assert source_record(data)["density"] == "8gaussians"


# ---- straightness -------------------------------------------------------------------------------------------------


def test_straightness_is_zero_for_straight_constant_speed_lines():
    x0 = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    value = straightness(lambda t, x: x / (1 + t[:, None]), x0, steps=7, per_line=True)  # x_t = (1 + t) x0
    assert value.shape == (64,) and value.abs().max() < 1e-5
    assert float(straightness(lambda t, x: torch.ones_like(x), x0, steps=1)) == 0.0


def test_straightness_matches_closed_forms_of_curved_flows():
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
    oscillating = lambda t, x: a + b * torch.cos(2 * math.pi * t)[:, None]  # noqa: E731
    for steps in (3, 10, 64):  # the Riemann sum of cos and cos^2 is exact here: S = |b|^2 / 2
        assert math.isclose(float(straightness(oscillating, x0, steps)), b.pow(2).sum().item() / 2, rel_tol=1e-5)
    # dx/dt = -x: x_t = x0 e^-t, S = |x0|^2 ((1 - e^-2) / 2 - (1 - e^-1)^2)
    expected = x0.pow(2).sum(1) * ((1 - math.exp(-2)) / 2 - (1 - math.exp(-1)) ** 2)
    found = straightness(lambda t, x: -x, x0.double(), steps=4000, per_line=True)
    torch.testing.assert_close(found, expected.double(), rtol=2e-3, atol=0)
    assert bool((straightness(lambda t, x: -x, x0, steps=3, per_line=True) >= 0).all())
    with pytest.raises(ValueError, match="steps >= 1"):
        straightness(lambda t, x: x, x0, steps=0)


# ---- end to end ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_teacher_reflows_into_a_student_and_the_student_reflows_again(tmp_path):
    torch.manual_seed(0)
    teacher_ckpt = tmp_path / "teacher.ckpt"
    teacher = CFMModule(backbone=MLP(data_shape=[2], width=32, depth=2), path=LinearPath(0.1))
    fit(teacher, ToyDataModule(steps_per_epoch=100, batch_size=128, n_val=200, n_test=200), 100, teacher_ckpt)
    data = pairs_data(teacher_ckpt, tmp_path, n_pairs=2000, steps=20, batch_size=128)
    student = CFMModule(backbone=MLP(data_shape=[2], width=32, depth=2), path=LinearPath(0.0), coupling=KeepPairs())
    trainer = fit(student, data, 30, tmp_path / "student.ckpt", val_batches=1)
    assert data.pairs_path().is_file()
    metrics = trainer.callback_metrics
    assert math.isfinite(float(metrics["val/w2"])) and float(metrics["val/nfe"]) == 100
    assert student.source_density["density"] == "8gaussians"
    with torch.no_grad():
        x0 = data.eval_set("val")["x0"]
        for module in (teacher.eval(), student.eval()):
            assert float(straightness(lambda t, x, m=module: m.velocity(x, t), x0, steps=20)) >= 0
    # the student as a teacher (2-rectified flow): fresh sources from the first teacher's data, not its pairs
    again = pairs_data(tmp_path / "student.ckpt", tmp_path, n_pairs=100, steps=4)
    assert set(again.pairs()) == {"x0", "x1", "y0"}
    assert again.teacher_data.teacher_data_spec == data.teacher_data_spec
