"""`python -m softcopy`."""

from .cli import main

main(prog_name="softcopy")
