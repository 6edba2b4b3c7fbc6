import gc

from lightning_fm.cli import main

if __name__ == "__main__":
    try:
        main()
    finally:
        # The command is over: freezing the heap spares the interpreter's exit a garbage collection over every
        # object of torch, Lightning and their imports, the slowest part of the exit (README, "Start-up").
        # Reference counting still frees objects and atexit handlers still run.
        gc.freeze()
