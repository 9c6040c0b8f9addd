"""``python -m tools.quantize``: see :mod:`tools.quantize`."""

import sys

from tools.quantize.build import main

sys.exit(main())
