"""Checkpoints written before the modules were redesigned still load and give the same samples and likelihoods
(``tests/data/legacy/make.py`` made them, with the outputs of the code of that time)."""

import pytest
import torch

from lightning_fm.data.sources import eight_gaussians_log_prob
from lightning_fm.likelihood import standard_normal_log_prob
from lightning_fm.modules import FlowMatchingModule

LEGACY = __import__("pathlib").Path(__file__).parent / "data" / "legacy"
EXPECTED = torch.load(LEGACY / "expected.pt", weights_only=True)


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_a_legacy_checkpoint_loads_and_reproduces_its_outputs(family):
    expected = EXPECTED[family]
    module = FlowMatchingModule.load_from_checkpoint(LEGACY / f"{family}.ckpt", map_location="cpu").eval()
    assert type(module).__name__ == expected["class"]
    assert torch.allclose(module.sample(expected["source"], steps=10).x, expected["sample"], atol=1e-6, rtol=0)
    if "log_prob" in expected:  # made with the N(0, I) source the code of that time assumed
        options = {"steps": 10, "method": "euler"}
        log_prob = module.log_likelihood(expected["points"], standard_normal_log_prob, **options).log_prob
        assert torch.allclose(log_prob, expected["log_prob"], atol=1e-5, rtol=0)
        # the checkpoint records no source: the one its data module's hyperparameters name (data.source=8gaussians)
        assert module.source_density == {"density": "8gaussians", "source": "data.source='8gaussians'"}
        default = module.log_likelihood(expected["points"], **options).log_prob
        assert torch.equal(
            default, module.log_likelihood(expected["points"], eight_gaussians_log_prob(), **options).log_prob
        )
