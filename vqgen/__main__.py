"""`python -m vqgen` runs the same CLI as the `vqgen` console script."""

from vqgen.cli import main

main()
