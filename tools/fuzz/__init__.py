"""Fuzzing the parsers: ``python -m tools.fuzz --help``."""
