"""Progress of a batch fusion: the actors report pairs done to a counter (a Ray actor on the
driver's node), and a thread of the driver polls it once a second into a tqdm bar."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from tqdm import tqdm


class PairCounter:
    """Pairs done, per unit of work (a shard, or an actor call): a redone unit replaces its
    count instead of adding to it. A Ray actor the driver's progress bar polls."""

    def __init__(self):
        self.done: dict[str, int] = {}
        self.finished: set[str] = set()

    def report(self, unit: str, done: int, finished: bool = False) -> None:
        self.done[unit] = done
        if finished:
            self.finished.add(unit)

    def total(self) -> tuple[int, int]:
        """(pairs done, units finished)."""
        return sum(self.done.values()), len(self.finished)


def at_most_every(seconds: float, call: Callable) -> Callable:
    """``call`` that does nothing when the last call that did was under ``seconds`` ago."""
    last = -seconds

    def throttled(*args) -> None:
        nonlocal last
        if time.monotonic() - last >= seconds:
            last = time.monotonic()
            call(*args)

    return throttled


class ProgressBar:
    """A bar of pairs (``total`` None: not known before the shards are read; it then shows
    the ``units`` finished) polled from ``counter`` on a thread while the run's results are
    read on the caller's. ``first_pair``: when the first pair was seen done (to the second)."""

    def __init__(self, counter, total: int | None, units: int, show: bool):
        self.counter, self.total, self.units = counter, total, units
        self.bar = tqdm(total=total, desc="fuse", unit="pair", disable=not show)
        self.first_pair: float | None = None
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="fuse-progress", daemon=True)

    def poll(self) -> None:
        """The bar, from the counter; best effort, never the run's failure."""
        import ray  # heavy and optional: the bar runs only inside a Ray batch job

        try:
            pairs, units = ray.get(self.counter.total.remote(), timeout=5)
        except (ray.exceptions.RayError, TimeoutError):
            return
        if pairs and self.first_pair is None:
            self.first_pair = time.perf_counter()
        self.bar.update((pairs if self.total is None else min(self.total, pairs)) - self.bar.n)
        if self.total is None:
            self.bar.set_postfix_str(f"{units}/{self.units} shards", refresh=False)

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            self.poll()

    def __enter__(self) -> ProgressBar:
        self._watcher.start()
        return self

    def __exit__(self, *exc_info) -> None:
        # Stopped before Ray shuts down, so that nothing calls into Ray after it.
        self._stop.set()
        self._watcher.join()
        if exc_info[0] is None:
            self.poll()
            if self.total is not None:  # the actors' last reports may trail their results
                self.bar.update(self.total - self.bar.n)
        self.bar.close()
