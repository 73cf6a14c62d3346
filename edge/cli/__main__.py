"""`python -m edge.cli ARGS` runs the `edge` command (as the console script does)."""

import sys

from edge.cli import main

sys.exit(main())
