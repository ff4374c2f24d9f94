"""`python -m workhorse`: the workhorse command (workhorse/cli.py)."""

import sys

from workhorse.cli import main

sys.exit(main())
