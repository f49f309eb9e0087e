"""One read-only store connection per server thread.

Starlette runs sync endpoints in a thread pool and a sqlite connection must not be used by two
threads at once, so each thread opens its own `Reader` on first use and keeps it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..store import Reader, Store


class Readers:
    """Hands each calling thread its own `Reader` of one store.

    >>> readers = Readers(Path("/tmp/example-store"))    # doctest: +SKIP
    >>> readers.get().runs()                             # doctest: +SKIP
    """

    def __init__(self, path: Path | None) -> None:
        # Fail at start-up, with the store's own message, rather than on the first request.
        self.store = Store(path, create_if_missing=False)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Reader] = []

    @property
    def path(self) -> Path:
        """The store directory."""
        return self.store.path

    def get(self) -> Reader:
        """This thread's reader (opened on first use)."""
        reader: Reader | None = getattr(self._local, "reader", None)
        if reader is None:
            reader = self.store.reader()
            self._local.reader = reader
            with self._lock:
                self._all.append(reader)
        return reader

    def close(self) -> None:
        """Close every connection opened so far (at server shutdown)."""
        with self._lock:
            readers, self._all = self._all, []
        for r in readers:
            r.con.close()
