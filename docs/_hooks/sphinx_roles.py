"""Griffe extension: the docstrings' Sphinx roles (``:class:`~merkit.inference.Predictor```) read as code in the site.

The code's docstrings are written for ``help()`` and editors, with reST roles; mkdocstrings renders Markdown,
where a role would show as ``:class:`` text. ``~`` keeps the last dotted name, as Sphinx does.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|mod|func|meth|attr|data|exc|obj|const):`(~?)([^`]+)`")


def _code(match: re.Match[str]) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
