"""The experiment on Flower's deployment engine: a secure federation on this machine
(`python -m fedcore deploy`), and the pieces the fault tests drive.

`Federation` and `RunOutcome` load on first use, so that `python -m
fedcore.deploy.proxy` runs its module once (not first as an import of this package)."""

from __future__ import annotations

from typing import Any

__all__ = ["Federation", "RunOutcome"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fedcore.deploy import federation

        return getattr(federation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
