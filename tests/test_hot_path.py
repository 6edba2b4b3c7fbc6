"""model.channels_last and model.compile_backbone: the same numbers as the default layout and eager backbone."""

import pytest
import torch

from lightning_fm.couplings import IndependentCoupling
from lightning_fm.models import UNet
from lightning_fm.modules import CFMModule
from lightning_fm.modules.hot_path import channels_last_batch, compile_options
from lightning_fm.paths import LinearPath


def unet_module(**kwargs) -> CFMModule:
    torch.manual_seed(0)
    net = UNet(
        [3, 8, 8],
        model_channels=16,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(4,),
        num_heads=1,
        norm_groups=8,
    )
    return CFMModule(net, LinearPath(0.0), IndependentCoupling(), **kwargs)


def batch(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"x0": torch.randn(4, 3, 8, 8, generator=g), "x1": torch.randn(4, 3, 8, 8, generator=g)}


def loss_and_grads(module: CFMModule, data: dict) -> tuple[float, list[torch.Tensor]]:
    torch.manual_seed(2)  # the times and path noise of the loss
    loss = module.loss(data, distributed=False)
    loss.backward()
    return loss.item(), [p.grad.clone() for p in module.parameters() if p.grad is not None]


def test_channels_last_gives_the_default_layouts_loss_and_gradients():
    plain, fast = unet_module(), unet_module(channels_last=True)
    fast.setup("fit")  # no trainer: the memory format only
    convs = [p for p in fast.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not all(p.is_contiguous(memory_format=torch.channels_last) for p in plain.parameters() if p.dim() == 4)
    data = batch()
    moved = dict(data)
    fast.on_train_batch_start(moved, 0)
    assert moved["x1"].is_contiguous(memory_format=torch.channels_last) and torch.equal(moved["x1"], data["x1"])
    ref_loss, ref_grads = loss_and_grads(plain, data)
    loss, grads = loss_and_grads(fast, moved)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for g, ref in zip(grads, ref_grads):  # float32 sums in another order: rounding only
        assert torch.allclose(g, ref, rtol=1e-4, atol=1e-6)


def test_channels_last_batch_leaves_labels_and_flat_tensors_alone():
    labels = torch.arange(4)
    out = channels_last_batch({"x1": torch.randn(4, 3, 8, 8), "y1": labels, "x0": torch.randn(4, 2)})
    assert out["y1"] is labels and out["x0"].is_contiguous()


def test_compile_backbone_in_place_keeps_outputs_and_checkpoint_keys():
    torch.manual_seed(0)
    plain = CFMModule()  # the toy MLP: quick to trace
    torch.manual_seed(0)
    compiled = CFMModule(compile_backbone={"backend": "eager"})
    keys = list(compiled.state_dict())
    compiled.on_fit_start()
    compiled.on_fit_start()  # a second fit compiles nothing more
    assert compiled.backbone._compiled_call_impl is not None and list(compiled.state_dict()) == keys
    x, t = torch.randn(4, 2), torch.full((4,), 0.3)
    with torch.no_grad():
        assert torch.allclose(compiled.backbone(x, t), plain.backbone(x, t), atol=1e-6)


def test_bad_hot_path_settings_name_their_key():
    with pytest.raises(ValueError, match="model.compile_backbone"):
        compile_options({"mode": "default", "speed": "max"})
    module = CFMModule(channels_last=True)  # the 2-D toy MLP

    class Toy:
        num_classes = 0

    with pytest.raises(ValueError, match=r"model.channels_last=true .* shape \(2,\)"):
        module.check_data(Toy(), (2,))


def test_cuda_probe_is_made_cheap_only_without_a_cuda_device(monkeypatch):
    from lightning_fm.runtime import NVML_CHECK, cheap_cuda_probe

    monkeypatch.setenv(NVML_CHECK, "1")  # what `import lightning` sets
    cheap_cuda_probe()
    import os

    assert (NVML_CHECK in os.environ) == (torch.cuda.device_count() > 0)


def test_the_fast_model_config_sets_only_module_arguments():
    from pathlib import Path

    import yaml

    config = yaml.safe_load((Path(__file__).parents[1] / "configs" / "model" / "fast.yaml").read_text())
    assert set(config) == {"model"} and set(config["model"]) == {"init_args"}
    assert config["model"]["init_args"] == {"channels_last": True, "compile_backbone": True}
    assert set(config["model"]["init_args"]) <= CFMModule.accepted_hparams()


def test_a_copy_made_before_compilation_runs_its_own_weights():
    """The EMA callback copies the module in its setup, before the module's on_fit_start compiles the backbone."""
    import copy

    torch.manual_seed(0)
    live = CFMModule(compile_backbone={"backend": "eager"})
    average = copy.deepcopy(live)  # what WeightAveraging does in setup
    live.on_fit_start()
    with torch.no_grad():
        for p in live.parameters():
            p.add_(1.0)
    x, t = torch.randn(4, 2), torch.full((4,), 0.3)
    with torch.no_grad():
        own = copy.deepcopy(average.backbone)(x, t)
        assert torch.equal(average.backbone(x, t), own) and not torch.allclose(live.backbone(x, t), own)
