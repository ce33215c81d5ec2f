"""Runners measure artifacts on a device: locally, over SSH, or across a pool of boards."""
