"""``python -m zoo COMMAND ...``: see :mod:`zoo.cli.main`."""

import sys

from zoo.cli.main import main

sys.exit(main())
