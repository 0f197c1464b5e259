"""``python -m yolomem`` is the ``yolomem`` command."""

import sys

from yolomem.cli import main

sys.exit(main())
