"""Manifests and the on-storage layout. No I/O here.

Layout under a checkpoint's root (a local folder or an S3 prefix)::

    .aiocheckpoint/manifests/v0000000007.json        one per committed version
    .aiocheckpoint/data/0000000007-<token>/<path>    data objects written by that save
    .aiocheckpoint/data/0000000007-<token>/.aiocheckpoint/pack-000001
                                                     small files of that save, end to end
    .aiocheckpoint/latest.json                       a copy of the newest manifest (S3)
    .aiocheckpoint/probe                             empty: is If-None-Match honoured? (S3)

A manifest maps every relative path of the checkpoint to its data object (relative to
``.aiocheckpoint/``), size and CRC-32, and, for a file in a pack, its ``offset`` there.
Format 2 adds the offsets and ``packs`` (each pack's size); a manifest without packs is
still written as format 1. Data objects are never overwritten: each save writes under a
fresh ``<version>-<token>`` prefix. The manifest is written last, with an exclusive
create, and that write is the commit.

Over the network, each commit also writes ``latest.json``, a plain copy of its manifest, so
that a restore can read it while it lists ``manifests/``. A restore trusts the copy only
when its MD5 is the ETag of the newest listed manifest, that is, when it is byte for byte
that manifest; otherwise (an older save's copy landed last, a writer lost the race, SSE-KMS
ETags) it reads the listed manifest as usual.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ._errors import CorruptCheckpointError

FORMAT = 2  # the newest this version reads and writes; 1 is read (and written without packs)
META = ".aiocheckpoint"
MANIFESTS = f"{META}/manifests/"
DATA = f"{META}/data/"
LATEST = f"{META}/latest.json"
#: A restore downloads into a folder of this name inside its target, then moves files out.
STAGING = ".aiocheckpoint-restore-"
#: The most bytes one file can hold: S3's limit for one object.
MAX_SIZE = 5 * 1024**4
#: The most bytes of one pack: S3's limit for one PUT (a pack is never a multipart upload).
MAX_PACK = 5 * 1024**3
#: An empty object a save creates exclusively, to learn whether the server honours
#: If-None-Match: a second create must fail. It stays, so later saves learn with one.
PROBE = f"{META}/probe"
#: Packs are named within a save's data folder under this name, which no file's path has.
PACKS = f"{META}/pack-"
#: The most bytes of one path component a save stores: NAME_MAX of Linux and macOS file
#: systems, so that every checkpoint can be restored to local disk.
MAX_NAME = 255

#: The highest version number the layout can hold.
LAST_VERSION = 10**10 - 1

_MANIFEST_NAME = re.compile(r"v(\d{10})\.json")
_DATA_DIR = re.compile(r"(\d{10})-[0-9a-f]+")
_TEMP_OF = re.compile(r"\.tmp-[0-9a-f]+-v(\d{10})\.json$")


@dataclass(frozen=True, slots=True)
class FileEntry:
    object: str
    size: int
    checksum: str  # "crc32:" and 8 hex digits
    offset: int | None = None  # where the file starts in ``object``, a pack; None: all of it

    @property
    def crc(self) -> int:
        return int(self.checksum.removeprefix("crc32:"), 16)


@dataclass(frozen=True, slots=True)
class Manifest:
    version: int
    files: Mapping[str, FileEntry]
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    packs: Mapping[str, int] = field(default_factory=dict)  # every pack named: its size

    def objects(self) -> set[str]:
        return {entry.object for entry in self.files.values()}


def packs_of(files: Mapping[str, FileEntry], sizes: Mapping[str, int]) -> dict[str, int]:
    """The packs ``files`` point into, each with its size from ``sizes``."""
    return {e.object: sizes[e.object] for e in files.values() if e.offset is not None}


def manifest_key(version: int) -> str:
    return f"{MANIFESTS}v{version:010d}.json"


def manifest_version(key: str) -> int | None:
    """The version of a manifest key, or None for anything else under ``manifests/``."""
    match = _MANIFEST_NAME.fullmatch(key.removeprefix(MANIFESTS))
    return int(match.group(1)) if match and key.startswith(MANIFESTS) else None


def data_dir(version: int, token: str) -> str:
    """The folder (relative to ``.aiocheckpoint/``) for the data objects of one save."""
    return f"data/{version:010d}-{token}/"


def data_dir_version(key: str) -> int | None:
    """The save version a key under ``.aiocheckpoint/data/`` belongs to."""
    if not key.startswith(DATA):
        return None
    match = _DATA_DIR.fullmatch(key[len(DATA) :].split("/", 1)[0])
    return int(match.group(1)) if match else None


def check_relpath(path: str) -> str | None:
    """Why ``path`` is not a safe relative path inside a folder, or None if it is."""
    if not path:
        return "empty path"
    if "\x00" in path:
        return "NUL character"
    if path.startswith("/"):
        return "absolute path"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "'..', '.' or empty path segment"
    return None


def reserved(path: str) -> str | None:
    """Why no restore writes ``path``, a file path of a checkpoint (not a storage key),
    or None: a component is a checkpoint's metadata folder or a restore's staging folder,
    which saves never store."""
    for part in path.split("/"):
        if part == META or part.startswith(STAGING):
            return f"{part!r} is reserved for aiocheckpoint's own folders"
    return None


def name_too_long(path: str, limit: int = MAX_NAME) -> str | None:
    """Why ``path`` (a relative path) cannot be a file's path where a component holds
    ``limit`` bytes at most, or None."""
    for part in path.split("/"):
        try:
            size = len(os.fsencode(part))
        except UnicodeEncodeError:
            return f"the name {part!r} cannot be encoded as a file name"
        if size > limit:
            return f"the name {part[:40]!r}... is {size} bytes long, more than {limit}"
    return None


def merge(base: Mapping[str, FileEntry], new: Mapping[str, FileEntry]) -> dict[str, FileEntry]:
    """``base`` updated with ``new``. An old file where a new path needs a folder, or old
    paths under what is now a file, are dropped: a checkpoint can't hold both."""
    folders = {name.rsplit("/", i)[0] for name in new for i in range(1, name.count("/") + 1)}

    def replaced(name: str) -> bool:
        if name in folders:
            return True
        parts = name.split("/")
        return any("/".join(parts[:i]) in new for i in range(1, len(parts)))

    merged = {name: e for name, e in base.items() if not replaced(name)}
    merged.update(new)
    return merged


def encode(manifest: Manifest) -> bytes:
    # One line per file, each written by json's C encoder: dumps(indent=...) falls back to
    # the pure-Python encoder, whose many small pieces raised a 5,000-file save's peak RSS
    # by 12 MiB.
    head: dict[str, object] = {"format": FORMAT if manifest.packs else 1}
    head.update(version=manifest.version, created=manifest.created)
    if manifest.packs:
        head["packs"] = dict(sorted(manifest.packs.items()))
    files = ",\n".join(
        f" {json.dumps(path, ensure_ascii=False)}: " + json.dumps(_entry(e), ensure_ascii=False)
        for path, e in sorted(manifest.files.items())
    )
    top = json.dumps(head, ensure_ascii=False)
    return f'{top[:-1]},\n"files": {{\n{files}\n}}}}\n'.encode()


def _entry(e: FileEntry) -> dict[str, object]:
    if e.offset is None:
        return {"object": e.object, "size": e.size, "checksum": e.checksum}
    return {"object": e.object, "offset": e.offset, "size": e.size, "checksum": e.checksum}


def decode(data: bytes | bytearray, where: str) -> Manifest:
    """Parse and validate a manifest; ``where`` names it in errors."""
    try:
        doc = json.loads(data)
        fmt = doc["format"]
        if type(fmt) is not int or fmt not in (1, FORMAT):
            raise CorruptCheckpointError(
                f"manifest {where} has format {fmt!r}; this version of aiocheckpoint reads"
                f" formats 1 to {FORMAT}"
            )
        files = {
            str(path): FileEntry(
                str(e["object"]),
                e["size"],
                str(e["checksum"]),
                e.get("offset") if fmt > 1 else None,
            )
            for path, e in doc["files"].items()
        }
        packs = {str(k): v for k, v in doc.get("packs", {}).items()} if fmt > 1 else {}
        manifest = Manifest(int(doc["version"]), files, str(doc.get("created", "")), packs)
    except CorruptCheckpointError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptCheckpointError(f"manifest {where} is not valid: {exc!r}") from exc
    bad = [
        f"pack {key!r} ({reason})"
        for key, size in packs.items()
        if (reason := _check_pack(key, size))
    ]
    bad += [
        f"{path!r} ({reason})"
        for path, entry in manifest.files.items()
        for reason in [
            check_relpath(path)
            or reserved(path)
            or _check_object(entry)
            or _check_place(entry, packs)
        ]
        if reason
    ]
    if bad:
        raise CorruptCheckpointError(
            f"manifest {where} lists unsafe or invalid entries: {', '.join(bad)}"
        )
    both = file_and_folder(manifest.files)
    if both:
        raise CorruptCheckpointError(
            f"manifest {where} names {both[0]!r} both as a file and as a folder"
        )
    return manifest


def file_and_folder(paths: Iterable[str]) -> list[str]:
    """The paths that are also the folder of another path (``a`` beside ``a/b``); no
    restore can make both."""
    paths = list(paths)
    folders = {path[:i] for path in paths for i, c in enumerate(path) if c == "/"}
    return sorted(folders.intersection(paths))


def _check_object(entry: FileEntry) -> str | None:
    # Not isinstance: JSON's true is a bool, and bool an int. Saves write whole numbers.
    if type(entry.size) is not int:
        return f"size {entry.size!r} is not a whole number"
    if entry.size < 0:
        return "negative size"
    if entry.size > MAX_SIZE:
        return f"size {entry.size} is more than one file can hold ({MAX_SIZE} bytes)"
    if not re.fullmatch(r"crc32:[0-9a-f]{8}", entry.checksum):
        return f"unknown checksum {entry.checksum!r}"
    reason = check_relpath(entry.object)
    if reason is None and not entry.object.startswith("data/"):
        reason = "object outside data/"
    return f"object {entry.object!r}: {reason}" if reason else None


def _check_pack(key: str, size: object) -> str | None:
    if type(size) is not int or not 0 <= size <= MAX_PACK:
        return f"size {size!r} is not a whole number of at most {MAX_PACK} bytes"
    reason = check_relpath(key)
    if reason is None and not key.startswith("data/"):
        reason = "outside data/"
    return reason


def _check_place(entry: FileEntry, packs: Mapping[str, int]) -> str | None:
    """Why the bytes ``entry`` names are not in its pack, or None."""
    if entry.offset is None:
        return None
    if type(entry.offset) is not int or entry.offset < 0:
        return f"offset {entry.offset!r} is not a whole number"
    size = packs.get(entry.object)
    if size is None:
        return f"object {entry.object!r} has an offset but is no pack the manifest lists"
    if type(size) is not int:
        return "its pack's size is not a whole number"
    if entry.offset + entry.size > size:
        return f"bytes {entry.offset} to {entry.offset + entry.size} lie outside its pack"
    return None


def _folder(key: str) -> str:
    """The data folder holding ``key``, as a key ending in "/"."""
    return DATA + key[len(DATA) :].split("/", 1)[0] + "/"


def unreferenced(
    retained: Iterable[Manifest], dropped: Iterable[Manifest], folders: Iterable[str], upto: int
) -> tuple[list[str], list[str]]:
    """What to collect once ``retained`` are the versions kept, worked out from manifests
    instead of a listing of every object: ``(objects, folders)``.

    ``objects`` are the data keys that only ``dropped`` (older) manifests name. ``folders``
    are the data folders (from ``folders``, keys ending in "/") of saves numbered ``upto``
    or lower that no retained manifest names: versions dropped whole, and saves that never
    committed. Objects inside those folders are left to a listing of the folder.
    """
    live = {f"{META}/{obj}" for m in retained for obj in m.objects()}
    live_folders = {_folder(key) for key in live}
    dead = [
        f
        for f in folders
        if f not in live_folders and (v := data_dir_version(f)) is not None and v <= upto
    ]
    named = {f"{META}/{obj}" for m in dropped for obj in m.objects()} - live
    dead_set = set(dead)
    return sorted(k for k in named if _folder(k) not in dead_set), dead


def garbage(keys: Iterable[str], retained: Iterable[Manifest], upto: int) -> list[str]:
    """Keys under ``.aiocheckpoint/`` that no retained manifest needs.

    Only data of saves numbered ``upto`` or lower is collected: a higher number may belong
    to a save still in flight. Manifests older than the oldest retained one go too, and so
    do stray files in ``manifests/``: temp files of a crashed commit numbered ``upto`` or
    lower (or whose name does not say).
    """
    retained = list(retained)
    live = {f"{META}/{obj}" for m in retained for obj in m.objects()}
    live |= {manifest_key(m.version) for m in retained}
    oldest = min((m.version for m in retained), default=upto)
    out = []
    for key in keys:
        if key in live:
            continue
        version = data_dir_version(key)
        if version is not None and version <= upto:
            out.append(key)
            continue
        version = manifest_version(key)
        if (version is not None and version < oldest) or _stale_temp(key, upto):
            out.append(key)
    return out


def _stale_temp(key: str, upto: int) -> bool:
    """Whether ``key`` is a temp file in ``manifests/`` of a commit numbered ``upto`` or
    lower: one above may be a commit under way."""
    if not key.startswith(MANIFESTS) or ".tmp-" not in key:
        return False
    match = _TEMP_OF.search(key)
    return match is None or int(match.group(1)) <= upto
