"""Small models for the demo and the tests, built and trained here (no downloads)."""
