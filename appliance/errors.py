"""Small error hierarchy: every error carries a code and says what to do."""

from __future__ import annotations


class RegistraturaError(Exception):
    """Base error. ``code`` is stable (documented in the README); the message says what to do."""

    code = "E000"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    def __str__(self) -> str:  # one line, journald friendly
        return f"{self.code}: {self.args[0]}"


class ConfigError(RegistraturaError):
    """The box settings file is missing or wrong."""

    code = "E100"


class FlowError(RegistraturaError):
    """A flow file is broken; the message names file, line, node and the fix."""

    code = "E200"


class TelephonyError(RegistraturaError):
    """The SIP stack failed to start or to carry out a command."""

    code = "E300"


class CallGone(TelephonyError):
    """A command for a call that has ended meanwhile (its CallEnded is on the way): nothing to do."""

    code = "E301"


class StackMissing(TelephonyError, ImportError):
    """pjsua2 is not installed (an arm64 image built without the box's own wheel). Also an ImportError, so code
    that merely probes for the stack keeps working."""

    code = "E302"


class StoreError(RegistraturaError):
    """The database could not be opened or migrated."""

    code = "E400"


class SpeechError(RegistraturaError):
    """A speech model is missing, corrupt or failed to load."""

    code = "E500"


def located(path: object, line: int | None, what: str) -> str:
    """Format ``file:line: what`` the way editors and technicians expect."""
    return f"{path}:{line}: {what}" if line else f"{path}: {what}"
