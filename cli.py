"""Entry point for a checkout: `python cli.py train-vqvae ...` runs the vqgen CLI."""

from vqgen.cli import main

if __name__ == "__main__":
    main()
