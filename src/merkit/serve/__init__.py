"""The HTTP server around a :class:`~merkit.inference.Predictor` (``merkit serve``): a FastAPI app and its web page.

Needs the ``serve`` extra: ``pip install 'merkit[serve]'``.
"""

from merkit.serve.app import ServeLimits, create_app

__all__ = ["ServeLimits", "create_app"]
