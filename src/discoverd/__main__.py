"""``python -m discoverd``: the command line."""

import sys

from discoverd.cli import main

sys.exit(main())
