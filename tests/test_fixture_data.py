"""The helpers that let the tests share the large fixture files (tests/fixture_data.py): hard links where the bytes
are the same, never a write through one."""
from __future__ import annotations

import os

import pytest

from .fixture_data import LINK_MIN_BYTES, SharedFiles, linked_copy, replace_bytes

BIG = bytes(range(256)) * (LINK_MIN_BYTES // 256)


def _folder(root, big: bytes = BIG):
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "weights.bin").write_bytes(big)
    os.utime(root / "sub" / "weights.bin", (1, 1))  # older than any write below, whatever the clock's granularity
    (root / "configuration.json").write_text("{}")
    return root


def test_linked_copy_links_large_files_and_copies_small_ones(tmp_path):
    source = _folder(tmp_path / "source")
    copy = linked_copy(source, tmp_path / "copy")
    assert os.path.samefile(source / "sub" / "weights.bin", copy / "sub" / "weights.bin")
    assert not os.path.samefile(source / "configuration.json", copy / "configuration.json")
    (copy / "configuration.json").write_text('{"edited": true}')  # small files may be edited in place
    replace_bytes(copy / "sub" / "weights.bin", b"other")  # large ones are replaced
    assert (source / "configuration.json").read_text() == "{}" and (source / "sub" / "weights.bin").read_bytes() == BIG


def test_shared_files_link_identical_files_and_catch_a_write_through_a_link(tmp_path):
    shared = SharedFiles()
    first = shared.share(_folder(tmp_path / "first"))
    second = shared.share(_folder(tmp_path / "second"))
    other = shared.share(_folder(tmp_path / "other", BIG[::-1]))
    assert os.path.samefile(first / "sub" / "weights.bin", second / "sub" / "weights.bin")
    assert not os.path.samefile(first / "sub" / "weights.bin", other / "sub" / "weights.bin")
    assert (second / "sub" / "weights.bin").read_bytes() == BIG and (other / "sub" / "weights.bin").read_bytes() != BIG
    shared.check()
    replace_bytes(second / "sub" / "weights.bin", b"replaced")  # fine: the held file keeps its bytes
    shared.check()
    with (other / "sub" / "weights.bin").open("r+b") as fh:  # a write into a held file
        fh.write(b"\0")
    with pytest.raises(AssertionError, match="written into"):
        shared.check()
