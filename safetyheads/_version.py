"""The package version (pyproject.toml and CITATION.cff say the same; a test checks)."""

__version__ = "0.1.0"
