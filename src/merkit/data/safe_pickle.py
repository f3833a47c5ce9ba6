"""Loading pickles without running code.

A pickle can name any importable callable and call it while loading, so a downloaded
``.pkl`` can run anything. :func:`load_pickle` uses a restricted unpickler that only
rebuilds plain containers, strings, numbers and numpy arrays; anything else is refused
with a message that names the file and the opt-in (``--trust-pickle``). Convert such
files once into a feature store (``merkit data convert``) and never load them again.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from pathlib import Path
from typing import Any

from merkit.errors import MerkitError

# (module, name) pairs that only rebuild data. numpy's array reconstruction goes through
# these; `_codecs.encode` turns the latin-1 strings of Python-2 era pickles back into bytes.
_ALLOWED_GLOBALS = {
    ("builtins", name)
    for name in ("list", "dict", "set", "frozenset", "tuple", "str", "bytes", "bytearray", "int", "float", "complex", "bool", "slice", "range")
} | {
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


class UnsafePickleError(MerkitError):
    """The pickle wants to call something other than a plain data constructor."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Python-2 pickles name builtins "__builtin__"; map them as the stock unpickler would.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refused to load: the pickle asks for {module}.{name}, which could run code. "
            "Only plain containers, strings, numbers and numpy arrays are loaded by default; "
            "if you trust this file, pass --trust-pickle (Python: trust_pickle=True) and convert "
            "it once with `merkit data convert`"
        )


def load_pickle(path: str | Path, *, trust: bool = False, encoding: str = "latin1") -> Any:
    """Load ``path`` with the restricted unpickler (or the full one when ``trust`` is True)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MerkitError(f"cannot read file: {exc.strerror}", path=path) from None
    unpickler_class = pickle.Unpickler if trust else _RestrictedUnpickler
    try:
        return unpickler_class(io.BytesIO(data), encoding=encoding).load()
    except MerkitError as exc:
        raise exc.at(path) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as exc:
        raise MerkitError(f"not a readable pickle (truncated or corrupt?): {exc}", path=path) from None
