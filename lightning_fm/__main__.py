from lightning_fm.cli import main

if __name__ == "__main__":
    main()
