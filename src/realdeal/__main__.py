"""``python -m realdeal`` is the same as the ``realdeal`` command."""

import sys

from realdeal.cli import main

sys.exit(main())
