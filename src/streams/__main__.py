"""``python -m streams`` = the ``streams`` command (its exit code included)."""

import sys

from streams.cli import main

sys.exit(main())
