"""The compression search: the plans a profile allows (space.py) and how to pick the next one (strategy.py)."""
