"""``python -m runtime`` is the ``nodetrainer`` command."""

import sys

from .cli import main

sys.exit(main())
