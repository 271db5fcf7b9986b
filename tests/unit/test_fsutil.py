"""The small file helpers releases and snapshots share: one sha256 of a file, one "path is inside",
one UTC timestamp format."""

from __future__ import annotations

import hashlib
import io
import re

from ansible_collections.queueops.rollback.plugins.module_utils.fsutil import is_within, sha256_file, utc_iso


def test_sha256_file_gives_digest_and_size_and_the_copy_is_the_bytes_it_hashed(tmp_path):
    data = bytes(range(256)) * 5000  # more than one read chunk
    (tmp_path / "blob").write_bytes(data)
    copy = io.BytesIO()
    assert sha256_file(tmp_path / "blob", copy_to=copy) == (hashlib.sha256(data).hexdigest(), len(data))
    assert copy.getvalue() == data


def test_is_within_matches_whole_path_components_only():
    assert is_within("/etc/app", "/etc/app") and is_within("/etc/app/x.conf", "/etc/app/")
    assert is_within("/anything", "/")
    assert not is_within("/etc/application", "/etc/app")


def test_utc_iso_is_utc_with_microseconds():
    assert utc_iso(0) == "1970-01-01T00:00:00.000000Z"
    assert utc_iso(1_700_000_000.25) == "2023-11-14T22:13:20.250000Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", utc_iso())
