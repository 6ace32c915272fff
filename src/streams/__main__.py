"""``python -m streams`` = the ``streams`` command (same exit codes as the console script)."""

from streams.cli import main

raise SystemExit(main())
