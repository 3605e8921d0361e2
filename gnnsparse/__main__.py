"""``python -m gnnsparse`` is the ``gnnsparse`` command."""

import sys

from .cli import main

sys.exit(main())
