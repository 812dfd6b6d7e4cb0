"""The manifest codec, path validation and garbage rules (no I/O)."""

from __future__ import annotations

import json

import pytest

from aiocheckpoint import CorruptCheckpointError
from aiocheckpoint._manifest import (
    FileEntry,
    Manifest,
    data_dir,
    decode,
    encode,
    file_and_folder,
    garbage,
    manifest_key,
    manifest_version,
    name_too_long,
    reserved,
    unreferenced,
)


def entry(obj: str, size: int = 3) -> FileEntry:
    return FileEntry(obj, size, "crc32:0000abcd")


def test_round_trip_keeps_every_field():
    m = Manifest(7, {"a/b.bin": entry("data/0000000007-ab/a/b.bin", 10)})
    back = decode(encode(m), "here")
    assert back == m
    assert json.loads(encode(m))["format"] == 1


def test_a_manifest_with_packs_is_format_2_and_round_trips():
    pack = "data/0000000007-ab/.aiocheckpoint/pack-000001"
    files = {
        "a": FileEntry(pack, 3, "crc32:0000abcd", 0),
        "b": FileEntry(pack, 5, "crc32:0000abce", 3),
        "big": entry("data/0000000007-ab/big", 10),
    }
    m = Manifest(7, files, packs={pack: 8})
    back = decode(encode(m), "here")
    assert back == m
    doc = json.loads(encode(m))
    assert doc["format"] == 2
    assert doc["packs"] == {pack: 8}
    assert doc["files"]["b"] == {
        "object": pack,
        "offset": 3,
        "size": 5,
        "checksum": "crc32:0000abce",
    }
    assert "offset" not in doc["files"]["big"]


@pytest.mark.parametrize(
    ("place", "packs", "reason"),
    [
        ({"offset": 6}, {"P": 8}, "outside its pack"),
        ({"offset": -1}, {"P": 8}, "not a whole number"),
        ({"offset": 1.5}, {"P": 8}, "not a whole number"),
        ({"offset": 0}, {}, "no pack the manifest lists"),
        ({"offset": 0}, {"P": -3}, "pack"),
        ({"offset": 0}, {"P": 2**40}, "pack"),
        ({"offset": 0}, {"P": "8"}, "pack"),
    ],
)
def test_pack_entries_that_point_outside_their_pack_are_refused(place, packs, reason):
    pack = "data/0000000001-ab/.aiocheckpoint/pack-000001"
    doc = {
        "format": 2,
        "version": 1,
        "packs": {pack if k == "P" else k: v for k, v in packs.items()},
        "files": {"f": {"object": pack, "size": 3, "checksum": "crc32:00000000", **place}},
    }
    with pytest.raises(CorruptCheckpointError, match=reason):
        decode(json.dumps(doc).encode(), "m")


@pytest.mark.parametrize("fmt", [3, True, 2.0, "2"])
def test_an_unknown_format_is_named_in_the_error(fmt):
    doc = {"format": fmt, "version": 1, "files": {}}
    with pytest.raises(CorruptCheckpointError, match="format .*; .* reads formats 1 to 2"):
        decode(json.dumps(doc).encode(), "m")


def test_manifest_keys_sort_by_version_and_parse_back():
    keys = [manifest_key(v) for v in (10, 9, 100)]
    assert sorted(keys) == [manifest_key(9), manifest_key(10), manifest_key(100)]
    assert [manifest_version(k) for k in keys] == [10, 9, 100]
    assert manifest_version(".aiocheckpoint/manifests/v1.json.tmp-ab") is None


@pytest.mark.parametrize(
    "path", ["../evil", "a/../../evil", "/etc/passwd", "a//b", "./a", "", "a\x00b"]
)
def test_unsafe_paths_are_refused_naming_them(path):
    doc = {
        "format": 1,
        "version": 1,
        "files": {path: {"object": "data/1/x", "size": 1, "checksum": "crc32:00000000"}},
    }
    with pytest.raises(CorruptCheckpointError, match="unsafe") as info:
        decode(json.dumps(doc).encode(), "s3://b/p/m.json")
    assert "s3://b/p/m.json" in str(info.value)


@pytest.mark.parametrize("obj", ["../x", "manifests/v0000000001.json", "/data/x"])
def test_objects_outside_data_are_refused(obj):
    doc = {
        "format": 1,
        "version": 1,
        "files": {"ok": {"object": obj, "size": 1, "checksum": "crc32:00000000"}},
    }
    with pytest.raises(CorruptCheckpointError, match="unsafe"):
        decode(json.dumps(doc).encode(), "m")


def test_name_length_counts_bytes_of_each_component():
    assert name_too_long("a" * 255 + "/" + "日" * 85) is None
    assert "256 bytes long, more than 255" in (name_too_long("x/" + "é" * 128) or "")
    assert "3 bytes long, more than 2" in (name_too_long("ab/abc", limit=2) or "")


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        (".aiocheckpoint", True),
        ("a/.aiocheckpoint/b", True),
        (".aiocheckpoint-restore-ab/x", True),
        (".aiocheckpoint2/x", False),
        ("a.aiocheckpoint/x", False),
        (".aiocheckpoint-restorex", False),
    ],
)
def test_reserved_names_are_whole_components(path, refused):
    assert bool(reserved(path)) is refused


@pytest.mark.parametrize("data", [b"not json", b"{}", b'{"format": 99, "files": {}}'])
def test_unreadable_manifests_are_corrupt(data):
    with pytest.raises(CorruptCheckpointError, match="manifest m"):
        decode(data, "m")


def test_garbage_keeps_retained_versions_and_saves_in_flight():
    old = ".aiocheckpoint/" + data_dir(1, "aa") + "x"
    kept = ".aiocheckpoint/" + data_dir(1, "aa") + "y"
    crashed = ".aiocheckpoint/" + data_dir(2, "bb") + "x"
    newest = ".aiocheckpoint/" + data_dir(3, "cc") + "x"
    in_flight = ".aiocheckpoint/" + data_dir(4, "dd") + "x"
    m3 = Manifest(3, {"x": entry(data_dir(3, "cc") + "x"), "y": entry(data_dir(1, "aa") + "y")})
    keys = [
        old,
        kept,
        crashed,
        newest,
        in_flight,
        manifest_key(1),
        manifest_key(3),
        ".aiocheckpoint/manifests/v0000000002.json.tmp-1234",
        ".aiocheckpoint/manifests/.tmp-0123456789ab",  # local temp names since issue #16
        ".aiocheckpoint/manifests/.tmp-0123456789ab-v0000000003.json",  # and since #19
        ".aiocheckpoint/manifests/.tmp-0123456789ab-v0000000004.json",  # a commit under way
    ]
    assert sorted(garbage(keys, [m3], upto=3)) == sorted(
        [
            old,
            crashed,
            manifest_key(1),
            ".aiocheckpoint/manifests/v0000000002.json.tmp-1234",
            ".aiocheckpoint/manifests/.tmp-0123456789ab",
            ".aiocheckpoint/manifests/.tmp-0123456789ab-v0000000003.json",
        ]
    )


def test_unreferenced_works_from_the_dropped_manifests_and_the_folder_list():
    folder = {n: ".aiocheckpoint/" + data_dir(n, t) for n, t in [(1, "aa"), (2, "bb"), (3, "cc")]}
    folder[4] = ".aiocheckpoint/" + data_dir(4, "dd")  # a save still in flight
    m2 = Manifest(2, {"x": entry(data_dir(1, "aa") + "x"), "y": entry(data_dir(2, "bb") + "y")})
    m3 = Manifest(3, {"x": entry(data_dir(1, "aa") + "x"), "y": entry(data_dir(3, "cc") + "y")})
    objects, dead = unreferenced([m3], [m2], list(folder.values()), upto=3)
    # 1/x is still named; 2/y is not, and its folder has nothing left that is.
    assert (objects, dead) == ([], [folder[2]])
    m3b = Manifest(3, {"y": entry(data_dir(1, "aa") + "y")})
    m2b = Manifest(2, {"x": entry(data_dir(1, "aa") + "x"), "y": entry(data_dir(1, "aa") + "y")})
    objects, dead = unreferenced([m3b], [m2b], [folder[1]], upto=3)
    assert (objects, dead) == ([folder[1] + "x"], [])


def test_file_and_folder_finds_paths_that_are_also_folders():
    assert file_and_folder(["a", "a/b", "ab", "c/d/e", "c/d", "x/y"]) == ["a", "c/d"]
    assert file_and_folder(["a/b", "a/c", "b"]) == []
