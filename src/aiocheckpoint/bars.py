"""Progress bars for the ``progress=`` parameter of ``save``, ``restore`` and ``verify``.

::

    from aiocheckpoint import SyncCheckpoint, bars

    with SyncCheckpoint("s3://my-bucket/run-42") as cp:
        cp.save("model_dir/", progress=bars.tqdm())
        cp.verify(progress=bars.rich())

Each adapter draws one bar per operation, in bytes, named after the phase, with the files
done as ``12/40 files``. The bar is made at the operation's first event and closed at its
last, so one adapter serves any number of operations in turn. tqdm and rich are optional
(``pip install 'aiocheckpoint[tqdm]'`` or ``'aiocheckpoint[rich]'``) and imported only
when an adapter is made, never by ``import aiocheckpoint``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import Progress

__all__ = ("ProgressBar", "rich", "tqdm")


class ProgressBar:
    """A ``progress=`` callback that draws a bar per operation.

    An operation that fails sends no last event: its bar stays open until the next
    operation's first event (or :meth:`close`) closes it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one adapter may serve several threads' operations
        self._last: Progress | None = None  # the open bar's last event; None: no bar open

    def __call__(self, event: Progress) -> None:
        with self._lock:
            if self._last is not None and not _continues(self._last, event):
                self._stop()  # the operation before failed: it sent no finished event
                self._last = None
            if self._last is None:
                self._start(event)
            self._show(event)
            self._last = event
            if event.finished:
                self._stop()
                self._last = None

    def close(self) -> None:
        """Close the open bar, if any: after an operation that failed, for instance."""
        with self._lock:
            if self._last is not None:
                self._stop()
                self._last = None

    def _start(self, event: Progress) -> None:
        raise NotImplementedError

    def _show(self, event: Progress) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError


def _continues(last: Progress, event: Progress) -> bool:
    """Whether ``event`` belongs to the operation of ``last``: in one operation, counts
    and totals never go down."""
    return (
        event.phase == last.phase
        and event.bytes_done >= last.bytes_done
        and event.files_done >= last.files_done
        and event.bytes_total >= last.bytes_total
        and event.files_total >= last.files_total
    )


def _files(event: Progress) -> str:
    return f"{event.files_done}/{event.files_total} files"


def tqdm(**kwargs: Any) -> ProgressBar:
    """A tqdm bar per operation.

    :param kwargs: passed to ``tqdm.tqdm`` over the defaults (``unit="B"``,
        ``unit_scale=True``, ``unit_divisor=1024``, ``desc=`` the phase), for instance
        ``file=``, ``disable=``, ``leave=``, ``position=``; ``tqdm_class=`` replaces
        ``tqdm.tqdm`` (``tqdm.notebook.tqdm`` in Jupyter).
    :return: the callback to pass as ``progress=``.
    :raises ImportError: tqdm is not installed.
    """
    bar_class = kwargs.pop("tqdm_class", None)
    if bar_class is None:
        try:
            from tqdm import tqdm as default_class
        except ImportError as exc:
            raise ImportError(
                "aiocheckpoint.bars.tqdm() needs tqdm: pip install 'aiocheckpoint[tqdm]'"
            ) from exc
        bar_class = default_class
    return _Tqdm(bar_class, kwargs)


class _Tqdm(ProgressBar):
    def __init__(self, bar_class: Any, options: dict[str, Any]) -> None:
        super().__init__()
        self._class = bar_class
        self._options = options
        self._bar: Any = None
        self._shown = 0  # bytes the bar has counted

    def _start(self, event: Progress) -> None:
        options = {"unit": "B", "unit_scale": True, "unit_divisor": 1024, "desc": event.phase}
        options.update(self._options)
        self._bar = self._class(total=event.bytes_total, **options)
        self._shown = 0

    def _show(self, event: Progress) -> None:
        bar = self._bar
        if event.bytes_total != bar.total:  # grown: a stream, or an operation starting over
            bar.total = event.bytes_total
        bar.set_postfix_str(_files(event), refresh=False)
        bar.update(event.bytes_done - self._shown)  # tqdm counts by increments
        self._shown = event.bytes_done

    def _stop(self) -> None:
        self._bar.close()
        self._bar = None


def rich(*columns: Any, **kwargs: Any) -> ProgressBar:
    """A rich progress display per operation.

    :param columns: the columns of ``rich.progress.Progress``; by default the phase, a
        bar, bytes done and total, speed, files done (``{task.fields[files]}``) and time
        left.
    :param kwargs: passed to ``rich.progress.Progress``, for instance ``console=``,
        ``transient=``, ``disable=``, ``refresh_per_second=``.
    :return: the callback to pass as ``progress=``.
    :raises ImportError: rich is not installed.
    """
    try:
        from rich import progress as rich_progress
    except ImportError as exc:
        raise ImportError(
            "aiocheckpoint.bars.rich() needs rich: pip install 'aiocheckpoint[rich]'"
        ) from exc
    if not columns:
        columns = (
            rich_progress.TextColumn("[progress.description]{task.description}"),
            rich_progress.BarColumn(),
            rich_progress.DownloadColumn(binary_units=True),
            rich_progress.TransferSpeedColumn(),
            rich_progress.TextColumn("{task.fields[files]}"),
            rich_progress.TimeRemainingColumn(),
        )
    return _Rich(lambda: rich_progress.Progress(*columns, **kwargs))


class _Rich(ProgressBar):
    def __init__(self, make: Any) -> None:
        super().__init__()
        self._make = make
        self._progress: Any = None
        self._task: Any = None

    def _start(self, event: Progress) -> None:
        self._progress = self._make()
        self._progress.start()
        self._task = self._progress.add_task(
            event.phase, total=event.bytes_total, files=_files(event)
        )

    def _show(self, event: Progress) -> None:
        self._progress.update(
            self._task,
            completed=event.bytes_done,
            total=event.bytes_total,
            files=_files(event),
        )

    def _stop(self) -> None:
        self._progress.stop()
        self._progress = None
