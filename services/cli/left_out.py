"""Libraries a replica leaves unloaded although they are installed.

Two libraries every service imports load a third one only because it is installed:
structlog loads rich (and rich its Pygments) for pretty tracebacks on a terminal, and
FastStream loads uvicorn for its ASGI runner. A replica uses neither: it logs JSON, or
key-value lines with the standard traceback, and serves its endpoint with the standard
library. Together they are about 6 MB of every replica's memory (an idle tool service
on SQLite: 83.2 MB with them, 77.3 MB without). The rest of the CLI keeps rich, and the
dashboard uvicorn.

While Ballast's modules are imported for ``ballast run``, importing these names fails as
if they were not installed (Python's own way: ``sys.modules`` maps the name to None), so
those libraries take, for the life of the process, the path they take without them;
then the names import again, for whatever the served code or an error message needs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

LEFT_OUT = ("rich", "uvicorn")
"""The packages ``ballast run`` does not load with Ballast's own modules."""


@contextmanager
def leaving_out(names: tuple[str, ...] = LEFT_OUT) -> Iterator[None]:
    """Make ``names`` fail to import while the block runs. A name already imported stays
    as it is: whoever loaded it keeps it, and the block cannot unload it."""
    blocked = [name for name in names if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # None: "not importable"
    try:
        yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
