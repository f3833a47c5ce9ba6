"""merkit.io's checksum memo: right after a file changes, and bounded however many files a long process sees."""

from merkit.io import _sha256_of, file_sha256


def test_checksums_follow_the_file_and_the_memo_stays_bounded(tmp_path):
    import hashlib
    import os

    path = tmp_path / "a.bin"
    path.write_bytes(b"one")
    assert file_sha256(path) == hashlib.sha256(b"one").hexdigest()
    path.write_bytes(b"two!")
    os.utime(path, ns=(1, 1))
    assert file_sha256(path) == hashlib.sha256(b"two!").hexdigest()
    for i in range(_sha256_of.cache_info().maxsize + 10):
        other = tmp_path / f"f{i}"
        other.write_bytes(b"x")
        file_sha256(other)
    assert _sha256_of.cache_info().currsize <= _sha256_of.cache_info().maxsize
