"""softcopy: copy instrument data off the acquisition machine while it is written."""

__version__ = "0.1.0"
