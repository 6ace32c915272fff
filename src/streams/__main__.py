"""``python -m streams`` = the ``streams`` command."""

from streams.cli import main

main()
