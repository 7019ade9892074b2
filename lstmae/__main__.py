"""Run the command line as ``python -m lstmae``."""

import sys

from lstmae.cli import main

sys.exit(main())
