"""systemd's notify socket (READY, STATUS, WATCHDOG, STOPPING): a no-op when not run by systemd."""

from __future__ import annotations

import os
from typing import Any


class Notifier:
    """Sends sd_notify states; the sdnotify helper is made on first use, only under systemd."""

    def __init__(self) -> None:
        self._notifier: Any = None

    def __call__(self, state: str) -> None:
        if not os.environ.get("NOTIFY_SOCKET"):
            return
        if self._notifier is None:
            import sdnotify

            self._notifier = sdnotify.SystemdNotifier()
        self._notifier.notify(state)
