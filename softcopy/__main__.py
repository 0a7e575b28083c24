"""`python -m softcopy`."""

import sys

try:
    from .cli.commands import main
except KeyboardInterrupt:  # Ctrl-C while importing: nothing was started
    sys.exit(1)

main(prog_name="softcopy")
