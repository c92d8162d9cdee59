"""`python -m wgmagic`: the command line, as the `wgmagic` script."""

from wgmagic.cli import main

raise SystemExit(main())
