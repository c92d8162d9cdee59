"""`python -m wgmagic.cli`: the console script."""

import sys

from wgmagic.cli import main

sys.exit(main())
