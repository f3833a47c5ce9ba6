"""merkit's version: a leaf module, so that every layer can name it without importing the package (and its lazy ``merkit.load``)."""

__version__ = "0.1.0"
