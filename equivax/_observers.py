"""Who is told of finished checks: a scoped subscription, not a global list to append to.

``check``, ``check_outputs`` and ``report`` call ``notify(f, result)`` for every ``CheckResult``
they produce; ``observing(callback)`` subscribes a callback for the duration of a ``with`` block
(the pytest plugin wraps each test in one).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["notify", "observing"]

Observer = Callable[[Any, Any], None]

_lock = threading.Lock()
_subscribers: list[Observer] = []


@contextlib.contextmanager
def observing(callback: Observer) -> Iterator[None]:
    """Call ``callback(f, result)`` for every check finished inside the block."""
    with _lock:
        _subscribers.append(callback)
    try:
        yield
    finally:
        with _lock:
            _subscribers.remove(callback)


def notify(f: Any, result: Any) -> None:
    """Tell every current subscriber that ``result`` was computed for ``f``."""
    with _lock:
        current = list(_subscribers)
    for callback in current:
        callback(f, result)
