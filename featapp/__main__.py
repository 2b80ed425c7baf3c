"""``python -m featapp``: see :mod:`featapp.cli`."""

import sys

from featapp.cli import main

sys.exit(main())
