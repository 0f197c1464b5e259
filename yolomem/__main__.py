"""``python -m yolomem`` is the ``yolomem`` command."""

import sys

from yolomem.cli.main import main

sys.exit(main())
