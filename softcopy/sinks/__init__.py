"""Destinations: one module per kind behind the seam in base.py (local.py today)."""
