"""livingreview: build system for living reviews."""

__version__ = "0.1.0"
