"""Progress of a study run on stderr: cells done / total, failures, elapsed time and ETA.

On a terminal the display is one line rewritten in place, at every finished cell and every `refresh`
seconds (so the elapsed time moves during long cells); elsewhere (CI logs, files) it prints plain lines,
at most one per `interval` seconds plus one at every tenth of the grid, and always the last one.

ETA = elapsed × (cells still to compute) / (cells computed so far in this run): a throughput estimate,
so it accounts for parallel workers; cells reused from an earlier run count as done but not as computed.
When the executor can tell how many cells are being computed right now (a Dask cluster can), the line
says so ("3 running").
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    """0:00:07 style (hours unbounded)."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class Progress:
    """Progress display of one run. Call start(), then advance() per finished cell, then finish()."""

    def __init__(self, name: str, stream: TextIO | None = None, *, enabled: bool = True,
                 interval: float = 5.0, refresh: float = 1.0, clock=time.monotonic):
        self.name = name
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interval = interval
        self.refresh = refresh
        self.clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.total = 0
        self.reused = 0
        self.computed = 0
        self.failed = 0
        self._start = 0.0
        self._last_line = float("-inf")
        self._last_decile = -1
        self._running = None

    def _running_now(self) -> int | None:
        if self._running is None:
            return None
        try:
            running = self._running()
        except Exception:  # a progress line must never stop a run
            return None
        return running if isinstance(running, int) else None

    @property
    def done(self) -> int:
        return self.reused + self.computed + self.failed

    def line(self) -> str:
        elapsed = self.clock() - self._start
        text = f"[{self.name}] {self.done}/{self.total} cells"
        if self.reused:
            text += f" ({self.reused} from an earlier run)"
        if self.failed:
            text += f", {self.failed} failed"
        running = self._running_now()
        if running is not None and self.done < self.total:
            text += f", {running} running"
        text += f", {format_duration(elapsed)} elapsed"
        remaining = self.total - self.done
        attempted = self.computed + self.failed
        if remaining and attempted:
            text += f", ETA {format_duration(elapsed * remaining / attempted)}"
        return text

    def _emit(self, final: bool = False) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._write(final)

    def _write(self, final: bool) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K" + ("\n" if final else ""))
            self.stream.flush()
            return
        now = self.clock()
        decile = (10 * self.done) // self.total if self.total else 10
        if final or now - self._last_line >= self.interval or decile > self._last_decile:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._last_line = now
            self._last_decile = decile

    def _tick(self) -> None:
        while not self._stop.wait(self.refresh):
            with self._lock:
                if self.done < self.total:
                    self._write(final=False)

    def start(self, total: int, reused: int = 0, running=None) -> None:
        """running: None, or a function returning how many cells are being computed now (or None)."""
        self.total = total
        self.reused = reused
        self._running = running
        self._start = self.clock()
        self._emit(final=self.done == self.total)
        if self.enabled and self.tty and self.refresh and self.done < self.total:
            self._ticker = threading.Thread(target=self._tick, name="study-progress", daemon=True)
            self._ticker.start()

    def advance(self, ok: bool) -> None:
        if ok:
            self.computed += 1
        else:
            self.failed += 1
        self._emit(final=self.done == self.total)

    def finish(self) -> None:
        """Stops the refresh and ends the in-place line if the run stopped early (e.g. interrupted)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self.enabled and self.tty and self.done != self.total:
            self.stream.write("\n")
            self.stream.flush()
