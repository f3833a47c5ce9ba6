"""``python -m merkit``: the same command line as ``merkit``."""

from merkit.cli import main

main()
