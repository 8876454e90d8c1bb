"""The page's first imports, with no other import in this process at the same time.

`marimo run` runs every session's kernel as a thread of one server process, and
whenever it starts a kernel it registers its formatters for the libraries already
in `sys.modules` by importing them in the server's own thread (`import torch.nn`
for PyTorch's). A tab that opens while another tab's kernel is still importing
PyTorch (two tabs on a cold server) so imports PyTorch in two threads at once,
which breaks it for both: `partially initialized module 'torch.nn.parameter' has
no attribute 'Parameter'` in the kernel, `generic_type: cannot initialize type
"RpcBackendOptions"` in the server, and neither page draws anything (seen in 2 of
8 tries here). The setup cell imports inside `alone()`: every other thread's
import waits until these are done, and then finds the modules complete.
"""

from __future__ import annotations

import _imp
import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Hold Python's import lock (the one import hooks take, reentrant for this
    thread): another thread's import of a module not loaded yet waits until the
    block ends. Only imports belong in the block: nothing that waits for another
    thread."""
    _imp.acquire_lock()
    try:
        yield
    finally:
        _imp.release_lock()
