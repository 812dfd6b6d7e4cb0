"""Transfer settings."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024 * 1024
GiB = 1024 * MiB

#: S3's limits for multipart uploads.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000

#: The default byte budget holds this many parts or ranges. On the benchmark's machine a
#: dozen 8 MiB transfers at once kept the server as busy as 32 did, at 0 and 100 ms per
#: request, with 10-12% less time for downloads and less than half the memory: each
#: stream more in flight makes every read smaller, and costs client CPU per byte.
_PARTS_IN_FLIGHT = 12

#: Packs: benchmarks/PACKS.md has the runs that chose these.
PACK_THRESHOLD = 256 * 1024
PACK_SIZE = 8 * MiB


@dataclass(frozen=True, kw_only=True)
class TransferConfig:
    """How files move: concurrency, part sizes and the memory bound.

    :param max_concurrency: requests in flight at once, over all files and parts of one
        operation (also the size of the S3 connection pool).
    :param multipart_threshold: files larger than this are uploaded with S3 multipart
        upload and downloaded with concurrent ranged GETs.
    :param part_size: size of one part or range; grown automatically so that a file never
        needs more than 10,000 parts. At least 5 MiB (S3's minimum part size).
    :param max_buffer_bytes: bound on file bytes in transit at once: what uploads have
        read and not yet sent, and what downloads have asked for and not yet written (a
        download holds at most 4 MiB of it in memory at a time, or all of it if less; the
        range of a pack, at most this bound or a part, is held whole).
        Default: ``min(max_concurrency, 12) * max(part_size, multipart_threshold)`` (96
        MiB with the other defaults): many small requests may be in flight, but at most
        12 parts' or ranges' worth of bytes.
    :param max_threads: worker threads for local file I/O.
    :param pack_threshold: files of at most this many bytes are stored together, in
        packs of about ``pack_size`` bytes, one object per pack, instead of one object
        per file; 0 stores every file as an object of its own. Default: 256 KiB.
    :param pack_size: the size a pack is filled up to (never more than
        ``multipart_threshold``: a pack is one PUT). Default: 8 MiB.
    :raises TypeError: a value is not an int.
    :raises ValueError: a value is below 1 (``pack_threshold``: below 0), ``part_size`` is outside
        S3's 5 MiB – 5 GiB range, or ``multipart_threshold`` is above 5 GiB.
    """

    max_concurrency: int = 64
    multipart_threshold: int = 8 * MiB
    part_size: int = 8 * MiB
    max_buffer_bytes: int | None = None
    max_threads: int = 16
    pack_threshold: int = PACK_THRESHOLD
    pack_size: int = PACK_SIZE

    def __post_init__(self) -> None:
        names = ("max_concurrency", "multipart_threshold", "part_size", "max_threads", "pack_size")
        for name in names:
            check_positive(name, getattr(self, name))
        check_positive("pack_threshold", self.pack_threshold, least=0)
        if self.max_buffer_bytes is not None:
            check_positive("max_buffer_bytes", self.max_buffer_bytes)
        if self.multipart_threshold > MAX_PART_SIZE:
            raise ValueError(
                "multipart_threshold must be at most 5 GiB (S3's largest single PUT),"
                f" got {self.multipart_threshold}"
            )
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise ValueError(
                f"part_size must be between {MIN_PART_SIZE} (5 MiB) and {MAX_PART_SIZE} (5 GiB)"
                f" bytes, got {self.part_size}"
            )

    @property
    def buffer_bytes(self) -> int:
        """The effective bound on bytes in transit (see ``max_buffer_bytes``)."""
        if self.max_buffer_bytes is not None:
            return self.max_buffer_bytes
        return min(self.max_concurrency, _PARTS_IN_FLIGHT) * max(
            self.part_size, self.multipart_threshold
        )

    @property
    def pack_bytes(self) -> int:
        """The size a pack is filled up to."""
        return min(self.pack_size, self.multipart_threshold)

    @property
    def packed_below(self) -> int:
        """The largest file that goes into a pack (0: none)."""
        return min(self.pack_threshold, self.pack_bytes)

    def part_size_for(self, size: int) -> int:
        """The part size for a file: ``part_size``, grown so that the file never needs more
        than 10,000 parts.

        :param size: the file's size in bytes.
        :return: the part size in bytes, at most 5 GiB.
        """
        part = self.part_size
        if size > part * MAX_PARTS:
            part = -(-size // MAX_PARTS)
            part = -(-part // MiB) * MiB
        return min(part, MAX_PART_SIZE)


def check_positive(name: str, value: object, *, least: int = 1) -> None:
    """A wrong type is a ``TypeError``, a value below ``least`` a ``ValueError``; both
    name it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__} ({value!r})")
    if value < least:
        what = "a positive integer" if least == 1 else f"an integer of at least {least}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
