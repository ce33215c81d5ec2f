"""Conversion routes between model formats, one module per route; every result is verified."""
