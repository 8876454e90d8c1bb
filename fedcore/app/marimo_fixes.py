"""A fix for marimo 0.25.2 that the page needs: no control change lost while the kernel is busy.

The bug. While a cell runs, the kernel queues the browser's control changes, then
merges the queue into one command, last write winning per element
(`marimo._runtime.utils.set_ui_element_request_manager._merge_ui_commands`). The
kernel then resolves each element of a `mo.ui.dictionary` to the dictionary, with
the change as `{key: value}`, into a mapping keyed by the dictionary
(`Kernel.set_ui_element_value`'s `resolved_requests`): of two changed controls of
one dictionary, only the last reaches it. The page shows both, the kernel keeps
one. Seen as: the story's rounds slider at 50 on the page, its run of 1 round (the
epochs slider moved right after it, both while a run was being drawn), in the
session tests under load; `tests/test_marimo_fixes.py` reproduces it in a page
of two sliders.

The fix keeps marimo's merge (a control moved many times is applied once, at its
last value) and hands each control on in a command of its own, so no two changes
meet in one mapping. It is applied once per process, by the app's setup cell,
before any session starts, and refuses to load where the merge it replaces is not
there (a marimo without the bug, or with another one).
"""

from __future__ import annotations

from typing import Any

from marimo._runtime.commands import UpdateUIElementCommand
from marimo._runtime.utils import set_ui_element_request_manager as request_manager

if not hasattr(request_manager, "_merge_ui_commands"):
    raise ImportError("marimo's _merge_ui_commands is gone: check fedcore.app.marimo_fixes")


def merge_ui_commands(cmds: list[UpdateUIElementCommand]) -> list[UpdateUIElementCommand]:
    """marimo's merge (last write wins per element), one command per element, in the
    order of their last change."""
    if not cmds:
        return []
    merged: dict[Any, Any] = {}
    for command in cmds:
        for object_id, value in command.ids_and_values:
            merged.pop(object_id, None)  # ordered by the last change
            merged[object_id] = value
    last = cmds[-1]
    return [
        UpdateUIElementCommand(
            object_ids=[object_id], values=[value], token=last.token, request=last.request
        )
        for object_id, value in merged.items()
    ]


def apply() -> None:
    """Put `merge_ui_commands` in marimo's place (once; again is a no-op)."""
    request_manager._merge_ui_commands = merge_ui_commands


def applied() -> bool:
    return request_manager._merge_ui_commands is merge_ui_commands
