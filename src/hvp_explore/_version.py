"""The package version, importable without loading torch."""

__version__ = "0.1.0"
