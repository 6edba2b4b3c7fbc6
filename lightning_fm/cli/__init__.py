"""The command line: parsing and defaults (:mod:`.app`), run directories (:mod:`.run_dirs`, :mod:`.run_config`),
the rules of ``--ckpt_path`` (:mod:`.checkpoint_rules`) and one-line errors (:mod:`.errors`)."""

from lightning_fm.cli.app import FlowMatchingCLI, main

__all__ = ["FlowMatchingCLI", "main"]
