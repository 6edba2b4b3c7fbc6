"""How the legacy checkpoints beside this file were made (once, with the code of commit b5c3ce5, before the redesign
of the modules): a few training steps of each family through the CLI with a tiny backbone, then the outputs that
``tests/test_legacy_checkpoints.py`` asserts the current code reproduces from them.

    PYTHONPATH=<old checkout> python tests/data/legacy/make.py
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
TINY = [
    "--trainer.max_steps=4",
    "--trainer.enable_progress_bar=false",
    "--data.init_args.batch_size=32",
    "--data.init_args.n_val=64",
    "--data.init_args.n_test=64",
]
FAMILIES = {
    "cfm": ["-c", "configs/toy/otcfm.yaml", "--model.init_args.backbone.init_args.width=8"],
    "ifm": ["-c", "configs/toy/ifm.yaml", "--model.init_args.backbone.init_args.backbone.init_args.width=8"],
    "forward_only_ifm": [
        "-c",
        "configs/toy/forward_only_ifm.yaml",
        "--model.init_args.backbone.init_args.backbone.init_args.width=8",
    ],
}


def main() -> None:
    from lightning_fm.modules import FlowMatchingModule

    expected = {}
    for name, args in FAMILIES.items():
        with tempfile.TemporaryDirectory() as scratch:
            subprocess.run(
                [sys.executable, "-m", "lightning_fm", "fit", *args, *TINY, f"--trainer.default_root_dir={scratch}"],
                cwd=REPO,
                check=True,
            )
            last = next(Path(scratch).glob("*/version_0/checkpoints/last.ckpt"))
            shutil.copy(last, HERE / f"{name}.ckpt")
        module = FlowMatchingModule.load_from_checkpoint(HERE / f"{name}.ckpt", map_location="cpu").eval()
        x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))
        x1 = torch.randn(8, 2, generator=torch.Generator().manual_seed(1))
        record = {"class": type(module).__name__, "source": x0, "sample": module.sample(x0, steps=10).x}
        if getattr(module, "field", None) is None or module.field.forward_only:
            record["points"] = x1
            record["log_prob"] = module.log_likelihood(x1, steps=10, method="euler").log_prob.detach()
        expected[name] = record
    torch.save(expected, HERE / "expected.pt")


if __name__ == "__main__":
    main()
