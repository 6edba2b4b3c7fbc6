"""The sample-grid callback: EMA weights, one class per row, transfer panels with the nearest training target."""

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.loggers import CSVLogger

from lightning_fm.callbacks import SampleGrid
from lightning_fm.callbacks.ema import averaged_module
from lightning_fm.callbacks.grids import nearest
from lightning_fm.couplings import IndependentCoupling
from lightning_fm.data import DigitsDataModule, DigitsImages, TransferDataModule
from lightning_fm.models import UNet
from lightning_fm.modules import CFMModule
from lightning_fm.paths import LinearPath
from lightning_fm.sampling import ODESampler


def tiny_unet(**kwargs):
    return UNet(
        (1, 8, 8),
        model_channels=8,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        num_heads=1,
        norm_groups=4,
        **kwargs,
    )


def fit(tmp_path, module, datamodule, grid, steps=4, ema=True):
    callbacks = ([EMAWeightAveraging(decay=0.5)] if ema else []) + [grid]
    trainer = Trainer(
        max_steps=steps,
        logger=CSVLogger(tmp_path),
        callbacks=callbacks,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule)
    return trainer


def test_grids_are_drawn_every_n_steps_with_the_ema_weights(tmp_path):
    torch.manual_seed(0)
    module = CFMModule(tiny_unet(), LinearPath(0.0), IndependentCoupling(), sampler=ODESampler("euler", 4))
    calls = []

    class Spy(SampleGrid):  # records whether the EMA copy's weights differ from the live ones when a grid is drawn
        def draw(self, trainer, pl_module):
            ema = averaged_module(trainer)
            calls.append(any(not torch.equal(a, b) for a, b in zip(ema.parameters(), pl_module.parameters())))
            return super().draw(trainer, pl_module)

    grid = Spy(every_n_steps=2, n_samples=12)
    trainer = fit(tmp_path, module, DigitsDataModule(batch_size=16), grid, steps=4)
    out = tmp_path / "lightning_logs" / "version_0" / "grids"
    assert sorted(p.name for p in out.glob("step_*.png")) == ["step_0000002.png", "step_0000004.png"]
    assert (out / "latest.png").stat().st_size > 5000
    assert calls == [True, True]
    # the grid's samples are those of the EMA copy
    ema = averaged_module(trainer)
    x0 = DigitsDataModule(batch_size=16).eval_set("val")["x0"][:12]
    assert torch.allclose(grid.last["samples"], ema.sample(x0).x, atol=1e-6)
    assert grid.last["samples"].shape == (12, 1, 8, 8)


def test_conditional_grids_draw_one_class_per_row(tmp_path):
    torch.manual_seed(0)
    module = CFMModule(
        tiny_unet(num_classes=10),
        LinearPath(0.0),
        IndependentCoupling(),
        sampler=ODESampler("euler", 2),
        label_dropout=0.2,
    )
    grid = SampleGrid(every_n_steps=0, n_samples=20, guidance=1.0)
    trainer = fit(tmp_path, module, DigitsDataModule(batch_size=16), grid, steps=2)
    assert torch.equal(grid._fixed["y"], torch.arange(20) // 2)  # rows of 2 images, one class each
    x0 = DigitsDataModule(batch_size=16).eval_set("val")["x0"][:20]
    expected = averaged_module(trainer).sample(x0, y=torch.arange(20) // 2, guidance=1.0).x
    assert torch.allclose(grid.last["samples"], expected, atol=1e-6)  # drawn once, at the end of fit


def test_transfer_grids_show_source_transferred_and_nearest_training_target(tmp_path):
    torch.manual_seed(0)
    data = TransferDataModule(source=DigitsImages(classes=[2]), target=DigitsImages(classes=[3]), batch_size=16)
    module = CFMModule(tiny_unet(), LinearPath(0.0), IndependentCoupling(), sampler=ODESampler("euler", 2))
    grid = SampleGrid(every_n_steps=0, n_samples=9)
    fit(tmp_path, module, data, grid, steps=2, ema=False)
    assert list(grid.last) == ["source", "transferred", "nearest training target"]
    targets = data.target_train_images()
    everything = targets.get(torch.arange(len(targets)))
    # each "nearest" image is a training 3, and no training 3 is closer to its transferred image
    d = torch.cdist(grid.last["transferred"].flatten(1), everything.flatten(1))
    chosen = (grid.last["nearest training target"].flatten(1)[:, None] - everything.flatten(1)[None]).abs().sum(-1)
    assert (chosen.min(1).values < 1e-6).all()
    assert torch.allclose(
        torch.cdist(grid.last["transferred"].flatten(1), grid.last["nearest training target"].flatten(1)).diagonal(),
        d.min(1).values,
        atol=1e-5,
    )
    assert torch.equal(grid.last["source"], data.eval_set("val")["x0"][:9])


def test_nearest_searches_in_chunks_and_within_the_limit():
    g = torch.Generator().manual_seed(0)
    candidates = torch.randn(50, 1, 4, 4, generator=g)
    queries = candidates[[3, 17, 42]] + 1e-3 * torch.randn(3, 1, 4, 4, generator=g)
    assert torch.equal(nearest(queries, candidates, chunk=7), candidates[[3, 17, 42]])
    limited = nearest(queries, candidates, limit=20, chunk=7)
    assert torch.equal(limited[:2], candidates[[3, 17]]) and not torch.equal(limited[2], candidates[42])
