"""``python -m lightning_fm`` and the ``lightning-fm`` script: the process-wide settings
(:mod:`lightning_fm.runtime`), then the command line (:mod:`lightning_fm.cli`)."""

from lightning_fm import runtime


def run() -> None:
    runtime.apply()
    from lightning_fm.cli import main

    try:
        main()
    finally:
        runtime.at_exit()


if __name__ == "__main__":
    run()
