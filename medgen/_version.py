"""The package version, in its own module so that low modules can record it without importing the package root."""

__version__ = "0.1.0"
