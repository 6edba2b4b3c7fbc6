"""lightning_fm.data: toy samplers against their closed forms, the DataModule base and batch contract, determinism,
evaluation sharded across processes, digits. (The published toy constructions: tests/test_toy_distributions.py.)"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lightning_fm.data import TOY_DISTRIBUTIONS, DigitsDataModule, ToyDataModule, sample_toy
from lightning_fm.data.digits import stratified_split

N = 40_000
Z = 5.0  # MC tolerances: Z standard errors


def draw(name: str, n: int = N, seed: int = 0):
    return sample_toy(name, n, torch.Generator().manual_seed(seed))


def se_mean(std: float, n: int) -> float:
    return Z * std / math.sqrt(n)


def se_std(std: float, n: int) -> float:  # standard error of a sample std (Gaussian-like tails)
    return Z * std / math.sqrt(2 * n)


# -- toy samplers -----------------------------------------------------------------------------------------------
def test_every_toy_has_shapes_dtypes_and_is_deterministic():
    assert {
        "gaussian",
        "8gaussians",
        "moons",
        "noisy_moons",
        "circles",
        "checkerboard",
        "swissroll",
        "scurve",
        "spirals",
        "pinwheel",
        "rings",
    } <= set(TOY_DISTRIBUTIONS)
    for name in TOY_DISTRIBUTIONS:
        x, y = draw(name, 257)
        assert x.shape == (257, 2) and x.dtype == torch.float32 and torch.isfinite(x).all(), name
        assert y.shape == (257,) and y.dtype == torch.int64, name
        x2, y2 = draw(name, 257)
        assert torch.equal(x, x2) and torch.equal(y, y2), name
        x3, _ = draw(name, 257, seed=1)
        assert not torch.allclose(x, x3), name


def test_sample_toy_rejects_unknown_names():
    with pytest.raises(ValueError, match="nope.*8gaussians"):
        sample_toy("nope", 10)


def test_gaussian_mean_zero_cov_identity():
    x, y = draw("gaussian")
    assert x.mean(0).abs().max() < se_mean(1.0, N)
    cov = torch.cov(x.T.double())
    # entries of the sample covariance of N(0, I) have standard error <= sqrt(2/n)
    assert (cov - torch.eye(2, dtype=torch.float64)).abs().max() < Z * math.sqrt(2 / N)
    assert (y == 0).all()


def test_circles_radii_3_and_1p5():
    x, y = draw("circles")
    r = x.norm(dim=1)
    assert r[y == 0].mean() == pytest.approx(3.0, abs=0.02)
    assert r[y == 1].mean() == pytest.approx(1.5, abs=0.03)
    assert (r[y == 0] - 3.0).std() == pytest.approx(0.24, abs=0.01)


def test_checkerboard_occupies_the_even_squares_uniformly():
    x, y = draw("checkerboard")
    assert x.min() >= -4 and x.max() < 4
    cells = torch.floor(x / 2).to(torch.int64)
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()
    counts = torch.bincount(y, minlength=8).double() / N
    assert counts == pytest.approx(torch.full((8,), 1 / 8, dtype=torch.float64), abs=Z * math.sqrt(7 / 64 / N))
    assert x.std(0) == pytest.approx(torch.full((2,), 8 / math.sqrt(12)), abs=0.03)  # uniform marginal on [-4, 4]


def test_swissroll_radius():
    x, _ = draw("swissroll")
    r = x.norm(dim=1)
    # radius t/5 with t ~ U[1.5 pi, 4.5 pi]: mean 3 pi / 5, std (3 pi / 5) / sqrt(12); radial noise std ~0.2
    assert r.mean() == pytest.approx(3 * math.pi / 5, abs=0.03)
    assert r.std() == pytest.approx(math.sqrt((3 * math.pi / 5) ** 2 / 12 + 0.04), abs=0.03)


def test_scurve_moments():
    x, _ = draw("scurve")
    # x = 2 sin t, y = 2 sign(t)(cos t - 1), t ~ U[-1.5 pi, 1.5 pi], noise std 0.2
    var_x = 4 * (0.5 + 0.01)
    var_y = 4 * (0.5 + 2 / (1.5 * math.pi) + 1 + 0.01)
    assert x.mean(0).abs().max() < se_mean(math.sqrt(var_y), N)
    assert x.std(0) == pytest.approx(torch.tensor([math.sqrt(var_x), math.sqrt(var_y)]), abs=0.03)
    assert x[:, 0].abs().max() < 2 + 1.2 and x[:, 1].abs().max() < 4 + 1.2


# -- ToyDataModule ------------------------------------------------------------------------------------------------
def batches(dm, n=None):
    return list(dm.train_dataloader())[:n]


def test_toy_datamodule_batch_contract():
    dm = ToyDataModule("gaussian", "moons", batch_size=32, steps_per_epoch=5, n_val=100, n_test=60, n_predict=70)
    assert dm.data_shape == dm.source_shape == dm.target_shape == (2,)
    assert dm.source_is_standard_normal and not ToyDataModule().source_is_standard_normal
    assert dm.hparams.target == "moons" and dm.hparams.batch_size == 32 and dm.num_classes == 2
    loader = dm.train_dataloader()
    assert len(loader) == 5
    train = list(loader)
    assert len(train) == 5
    assert set(batches(ToyDataModule("8gaussians", "moons", batch_size=4, steps_per_epoch=1))[0]) == {
        "x0",
        "x1",
        "y0",
        "y1",
    }  # source labels where the source has components
    for b in train:
        assert set(b) == {"x0", "x1", "y1"}
        assert b["x0"].shape == b["x1"].shape == (32, 2) and b["x0"].dtype == torch.float32
        assert b["y1"].shape == (32,) and b["y1"].dtype == torch.int64
    assert not torch.equal(train[0]["x1"], train[1]["x1"])  # fresh data every step
    (val,) = list(dm.val_dataloader())
    assert set(val) == {"x0", "x1", "x1_ref", "y1"}
    assert val["x0"].shape == val["x1"].shape == val["x1_ref"].shape == (100, 2)
    assert not torch.equal(val["x1"], val["x1_ref"])
    (val2,) = list(dm.val_dataloader())
    assert all(torch.equal(val[k], val2[k]) for k in val)  # fixed across epochs
    (test,) = list(dm.test_dataloader())
    assert test["x1"].shape == (60, 2) and not torch.equal(test["x1"][:60], val["x1"][:60])
    (pred,) = list(dm.predict_dataloader())
    assert set(pred) == {"x0"} and pred["x0"].shape == (70, 2)
    # validation samples are disjoint from training (different seed streams)
    assert not any(torch.equal(val["x1"][:32], b["x1"]) for b in train)


def test_evaluation_sets_come_in_batches_shared_out_between_processes():
    dm = ToyDataModule(n_val=2500, eval_batch_size=1000)
    whole = dm.eval_set("val")
    single = list(dm.val_dataloader())
    assert [len(b["x0"]) for b in single] == [834, 833, 833] and len(dm.val_dataloader()) == 3
    assert all(torch.equal(torch.cat([b[k] for b in single]), whole[k]) for k in whole)
    for world, per_rank, size in ((2, 2, 625), (4, 1, 625), (8, 1, 313)):  # as many batches on every rank
        shards = []
        for rank in range(world):
            dm.trainer = SimpleNamespace(current_epoch=0, global_rank=rank, world_size=world)
            assert len(dm.val_dataloader()) == per_rank  # the length Lightning reads is this rank's
            shards.append(list(dm.val_dataloader()))
        assert all(len(s) == per_rank for s in shards) and abs(len(shards[0][0]["x0"]) - size) <= 1
        # rank r takes batches r, r + W, ...: together every sample exactly once, in order
        ordered = [shards[g % world][g // world] for g in range(world * per_rank)]
        assert all(torch.equal(torch.cat([b[k] for b in ordered]), whole[k]) for k in whole)
    dm.trainer = SimpleNamespace(current_epoch=0, global_rank=0, world_size=3000)
    with pytest.raises(ValueError, match="2500 samples cannot be shared out between 3000 processes"):
        list(dm.val_dataloader())


def test_toy_validation_reference_is_independent_of_the_target_set():
    dm = ToyDataModule("gaussian", "gaussian", n_val=20_000)
    val = dm.eval_set("val")
    x1, ref = val["x1"], val["x1_ref"]
    corr = ((x1 - x1.mean(0)) * (ref - ref.mean(0))).mean(0) / (x1.std(0) * ref.std(0))
    assert corr.abs().max() < Z / math.sqrt(20_000)
    assert torch.cdist(x1[:500], ref[:500]).min() > 0  # no shared points
    # the source and target draws of a training batch are independent too
    b = batches(ToyDataModule("gaussian", "gaussian", batch_size=20_000, steps_per_epoch=1))[0]
    corr = (b["x0"] * b["x1"]).mean(0)
    assert corr.abs().max() < Z / math.sqrt(20_000)


def test_toy_determinism_epochs_and_ranks():
    kw = dict(source="8gaussians", target="moons", batch_size=16, steps_per_epoch=3)
    a, b = ToyDataModule(**kw), ToyDataModule(**kw)
    a0, b0 = batches(a), batches(b)
    assert all(torch.equal(p["x0"], q["x0"]) and torch.equal(p["x1"], q["x1"]) for p, q in zip(a0, b0))
    a1 = batches(a)  # second pass without a trainer = epoch 1
    assert not torch.equal(a0[0]["x1"], a1[0]["x1"])
    c0 = batches(ToyDataModule(**kw, seed=1))
    assert not torch.equal(a0[0]["x1"], c0[0]["x1"])
    # epoch and rank come from the trainer when one is attached
    ranked = {}
    for epoch, rank in [(0, 0), (0, 1), (1, 0)]:
        dm = ToyDataModule(**kw)
        dm.trainer = SimpleNamespace(current_epoch=epoch, global_rank=rank, world_size=2)
        ranked[epoch, rank] = batches(dm)
    assert torch.equal(ranked[0, 0][0]["x1"], a0[0]["x1"])
    assert torch.equal(ranked[1, 0][2]["x0"], a1[2]["x0"])
    assert not torch.equal(ranked[0, 0][0]["x1"], ranked[0, 1][0]["x1"])


def test_toy_datamodule_trains_under_lightning_with_fresh_data_per_epoch():
    from lightning.pytorch import LightningModule, Trainer

    class Recorder(LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))
            self.seen = []

        def training_step(self, batch, batch_idx):
            self.seen.append((self.current_epoch, batch_idx, batch["x1"].clone()))
            return ((batch["x1"] - batch["x0"] - self.w) ** 2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = ToyDataModule(batch_size=8, steps_per_epoch=3)
    model = Recorder()
    Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
    ).fit(model, datamodule=dm)
    assert [(e, i) for e, i, _ in model.seen] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    reference = ToyDataModule(batch_size=8, steps_per_epoch=3)
    expected = batches(reference) + batches(reference)  # epochs 0 and 1 without a trainer
    assert all(torch.equal(x, b["x1"]) for (_, _, x), b in zip(model.seen, expected))


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"source": "nope"}, "data.source"),
        ({"target": "mooons"}, "data.target"),
        ({"batch_size": 0}, "data.batch_size"),
        ({"steps_per_epoch": 0}, "data.steps_per_epoch"),
        ({"n_val": 0}, "data.n_val"),
        ({"seed": -1}, "data.seed"),
    ],
)
def test_toy_datamodule_bad_inputs(kwargs, key):
    with pytest.raises(ValueError, match=key):
        ToyDataModule(**kwargs)
    if "source" in kwargs or "target" in kwargs:
        with pytest.raises(ValueError, match="checkerboard"):  # lists the choices
            ToyDataModule(**kwargs)


# -- DigitsDataModule ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return DigitsDataModule(batch_size=100)


def split(dm):
    (train_images, train_labels), (val_images, val_labels) = dm.splits["train"], dm.splits["val"]
    return SimpleNamespace(
        train_images=train_images, train_labels=train_labels, val_images=val_images, val_labels=val_labels
    )


def test_digits_shapes_range_and_split(digits):
    dm = split(digits)
    assert digits.data_shape == digits.source_shape == digits.target_shape == (1, 8, 8)
    assert digits.source_is_standard_normal and digits.num_classes == 10
    n_train, n_val = len(dm.train_images), len(dm.val_images)
    assert n_train + n_val == 1797 and n_val == pytest.approx(0.2 * 1797, abs=10)
    for images in (dm.train_images, dm.val_images):
        assert images.dtype == torch.float32 and images.min() == -1.0 and images.max() == 1.0
        # pixels are k/8 - 1 for integer k in 0..16
        assert torch.equal((images + 1) * 8, torch.round((images + 1) * 8))
    # the split is a partition of the indices
    labels = np.arange(1797) % 10
    train, val = stratified_split(labels, 0.2, seed=0)
    assert len(np.intersect1d(train, val)) == 0 and len(np.union1d(train, val)) == 1797
    # stratified: every class keeps ~20% in validation
    for c in range(10):
        nv, nt = int((dm.val_labels == c).sum()), int((dm.train_labels == c).sum())
        assert abs(nv - 0.2 * (nv + nt)) <= 1
    again = split(DigitsDataModule(batch_size=100))
    assert torch.equal(again.val_images, dm.val_images)
    other = split(DigitsDataModule(batch_size=100, seed=1))
    assert not torch.equal(other.val_images, dm.val_images)


def test_digits_batches(digits):
    dm = split(digits)
    train = list(digits.train_dataloader())
    n_train = len(dm.train_images)
    assert len(train) == math.ceil(n_train / 100) == len(digits.train_dataloader())
    assert sum(len(b["x1"]) for b in train) == n_train
    b = train[0]
    assert set(b) == {"x0", "x1", "y1"} and b["x0"].shape == b["x1"].shape == (100, 1, 8, 8)
    assert b["y1"].dtype == torch.int64
    # one epoch visits every training image exactly once
    seen = torch.cat([t["x1"] for t in train]).flatten(1)
    assert torch.equal(seen.sort(0).values, dm.train_images.flatten(1).sort(0).values)
    noise = torch.cat([t["x0"] for t in train])
    assert abs(float(noise.mean())) < 0.02 and abs(float(noise.std()) - 1) < 0.02
    train2 = list(digits.train_dataloader())  # next epoch: new order, new noise
    assert not torch.equal(train2[0]["x0"], b["x0"]) and not torch.equal(train2[0]["x1"], b["x1"])
    (val,) = list(digits.val_dataloader())
    n_val = len(dm.val_images)
    assert set(val) == {"x0", "x1", "x1_ref", "y1"}
    assert val["x0"].shape == val["x1"].shape == val["x1_ref"].shape == (n_val, 1, 8, 8)
    # x1_ref: distinct images of the training split, as many as the validation split
    ref = val["x1_ref"].flatten(1)
    assert torch.cdist(ref, dm.train_images.flatten(1)).min(1).values.max() == 0
    assert not torch.equal(val["x1_ref"], val["x1"])
    (val2,) = list(digits.val_dataloader())
    assert torch.equal(val2["x0"], val["x0"]) and torch.equal(val2["x1_ref"], val["x1_ref"])
    (test,) = list(digits.test_dataloader())
    assert torch.equal(test["x1"], val["x1"]) and not torch.equal(test["x0"], val["x0"])
    (pred,) = list(digits.predict_dataloader())
    assert pred["x0"].shape == (1000, 1, 8, 8)


def test_digits_ddp_ranks_get_disjoint_slices_of_the_same_permutation(digits):
    dm = DigitsDataModule(batch_size=64)
    shards = []
    for rank in range(3):
        dm.trainer = SimpleNamespace(current_epoch=4, global_rank=rank, world_size=3)
        shards.append(list(dm.train_dataloader()))
    n_train = len(dm.splits["train"][0])
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == math.ceil(math.ceil(n_train / 3) / 64)
    images = torch.cat([b["x1"] for s in shards for b in s]).flatten(1)
    assert len(images) == 3 * math.ceil(n_train / 3)  # padded like DistributedSampler
    assert len(torch.unique(images, dim=0)) == len(torch.unique(dm.splits["train"][0].flatten(1), dim=0))
    assert not torch.equal(shards[0][0]["x0"][:10], shards[1][0]["x0"][:10])


def test_digits_classes():
    dm = DigitsDataModule(classes=[3, 7])
    parts = split(dm)
    labels = torch.cat([parts.train_labels, parts.val_labels])
    assert set(labels.tolist()) == {3, 7} and len(labels) == 183 + 179 and dm.num_classes == 10
    b = next(iter(dm.train_dataloader()))
    assert b["x0"].shape == b["x1"].shape == (128, 1, 8, 8) and set(b["y1"].tolist()) <= {3, 7}
    (val,) = list(dm.val_dataloader())
    assert val["x1_ref"].shape == val["x1"].shape == (len(parts.val_images), 1, 8, 8)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"classes": [3, 10]}, "data.classes"),
        ({"classes": [-1]}, "data.classes"),
        ({"classes": []}, "data.classes"),
        ({"val_fraction": 0.0}, "data.val_fraction"),
        ({"val_fraction": 1.0}, "data.val_fraction"),
        ({"val_fraction": 0.8}, "data.val_fraction"),  # fewer training than validation images
        ({"batch_size": 0}, "data.batch_size"),
    ],
)
def test_digits_bad_inputs(kwargs, key):
    with pytest.raises(ValueError, match=key):
        DigitsDataModule(**kwargs).setup("fit")  # the split's sizes are checked when the data is loaded


def test_iid_draws_of_a_construction_are_iid():
    # one draw of torchcfm's moons has exactly n // 2 points per moon on a shared angular grid; i.i.d. draws of its
    # density have binomial counts (sd sqrt(n)/2 = 22 at n = 2000: exactly 1000 in under 2% of draws)
    counts = [
        int((sample_toy("moons", 2000, torch.Generator().manual_seed(s), iid=True)[1] == 0).sum()) for s in range(5)
    ]
    assert sum(c != 1000 for c in counts) >= 4
    x, _ = sample_toy("moons", 20_000, torch.Generator().manual_seed(9), iid=True)
    grid, _ = sample_toy("moons", 20_000, torch.Generator().manual_seed(9))
    # the same density: means and covariances within ~5 standard errors (sd of x ~ 2.6, of y ~ 1.6)
    assert (x.mean(0) - grid.mean(0)).abs().max() < 5 * 2.6 / math.sqrt(20_000)
    assert (torch.cov(x.T) - torch.cov(grid.T)).abs().max() < 0.15
    # i.i.d. toys are drawn as usual
    assert torch.equal(
        sample_toy("gaussian", 10, torch.Generator().manual_seed(1), iid=True)[0],
        sample_toy("gaussian", 10, torch.Generator().manual_seed(1))[0],
    )
