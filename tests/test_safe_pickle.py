"""The restricted unpickler: plain data loads, anything that could run code is refused."""

import os
import pickle

import numpy as np
import pytest

from merkit.data.safe_pickle import UnsafePickleError, load_pickle
from merkit.errors import MerkitError


class _RunsCode:
    """Unpickling this calls os.system — the classic malicious pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_data_and_numpy_arrays_load(tmp_path, protocol):
    data = [{"a": [1, 2.5, "x"], 3: (True, None)}, np.arange(6, dtype=np.float32).reshape(2, 3), {"s": {1, 2}}]
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_pickle(path)
    assert loaded[0] == data[0] and loaded[2] == data[2]
    np.testing.assert_array_equal(loaded[1], data[1])


def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"features": _RunsCode(marker)}))
    with pytest.raises(UnsafePickleError) as info:
        load_pickle(path)
    message = str(info.value)
    assert str(path) in message and "posix.system" in message and "--trust-pickle" in message
    assert not marker.exists()


def test_trusted_load_is_an_explicit_opt_in(tmp_path):
    from collections import Counter

    path = tmp_path / "counter.pkl"
    path.write_bytes(pickle.dumps(Counter("aab")))
    with pytest.raises(UnsafePickleError):
        load_pickle(path)
    assert load_pickle(path, trust=True) == Counter("aab")


def test_truncated_pickle_gives_a_readable_error(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps(list(range(1000)))[:200])
    with pytest.raises(MerkitError, match="truncated or corrupt") as info:
        load_pickle(path)
    assert str(path) in str(info.value)
