"""``python -m metricx.cli``: what the ``metricx`` entry point runs."""

import sys

from metricx.cli import main

sys.exit(main())
