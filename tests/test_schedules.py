"""Learning-rate schedules against closed forms and torch's own cosine annealing."""

import functools
import math
from types import SimpleNamespace

import pytest
import torch

from lightning_fm.modules import CFMModule
from lightning_fm.utils.schedules import CosineDecay


def optimizer(lr: float = 0.02) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def rates(schedule, opt, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return out


def test_cosine_decay_is_torchs_cosine_annealing_without_warm_up():
    ours_opt, torch_opt = optimizer(), optimizer()
    ours = rates(CosineDecay(ours_opt, total_steps=300), ours_opt, 320)
    theirs = rates(torch.optim.lr_scheduler.CosineAnnealingLR(torch_opt, T_max=300), torch_opt, 301)
    assert ours[:301] == pytest.approx(theirs, rel=1e-9, abs=1e-15)
    assert ours[300:] == [0.0] * 20  # held at final_fraction * lr after T (torch's would rise again)


def test_cosine_decay_warm_up_and_floor_follow_the_formula():
    opt = optimizer(1.0)
    got = rates(CosineDecay(opt, total_steps=100, warmup_steps=9, final_fraction=0.1), opt, 101)
    for step in (0, 4, 9, 50, 100):
        decay = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / 100))
        assert got[step] == pytest.approx(min(1.0, (step + 1) / 10) * decay, rel=1e-12)


def test_cosine_decay_over_the_runs_max_steps():
    module = CFMModule(lr_scheduler=functools.partial(CosineDecay))
    module._trainer = SimpleNamespace(max_steps=40)  # what configure_optimizers reads
    config = module.configure_optimizers()
    opt, schedule = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert schedule.total_steps == 40
    got = rates(schedule, opt, 21)
    assert got[20] == pytest.approx(1e-3 * 0.5, rel=1e-9)  # halfway: half the rate
    module._trainer = SimpleNamespace(max_steps=-1)
    with pytest.raises(ValueError, match="trainer.max_steps"):
        module.configure_optimizers()


def test_cosine_decay_rejects_bad_settings():
    for kwargs, key in (
        ({"total_steps": 0}, "total_steps"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"final_fraction": 1.5}, "final_fraction"),
    ):
        with pytest.raises(ValueError, match=f"CosineDecay.{key}"):
            CosineDecay(optimizer(), **kwargs)


def test_a_restored_cosine_decay_continues_and_takes_the_new_runs_length():
    opt = optimizer(1.0)
    schedule = CosineDecay(opt)
    schedule.set_total_steps(100)
    rates(schedule, opt, 30)
    state = schedule.state_dict()
    assert "total_steps" not in state and state["last_epoch"] == 30
    for total, expected in (
        (100, 0.5 * (1 + math.cos(math.pi * 30 / 100))),  # the same run: the same rates
        (200, 0.5 * (1 + math.cos(math.pi * 30 / 200))),
    ):  # a longer run: its own length
        opt2 = optimizer(1.0)
        restored = CosineDecay(opt2)
        restored.set_total_steps(total)  # configure_optimizers, before Lightning restores the checkpoint
        restored.load_state_dict(state)
        assert restored.total_steps == total and restored.factor(restored.last_epoch) == pytest.approx(expected)
    fixed = CosineDecay(optimizer(), total_steps=50)
    assert fixed.state_dict()["total_steps"] == 50  # given explicitly: kept
