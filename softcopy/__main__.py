"""`python -m softcopy`."""

import sys

try:
    from .cli import entry
except KeyboardInterrupt:  # Ctrl-C while importing: nothing was started
    sys.exit(1)

entry()
