"""What reaches the terminal besides our own output: error lines and the libraries' bars and warnings.

An error is always one line (`one_line`), whatever its text holds, so that a script reading stderr
and a person reading the terminal see the same single message. With progress off, the Hugging Face
libraries (datasets, transformers, huggingface_hub) are kept quiet too (`quiet_libraries`): their
bars and warnings would otherwise reach stderr around that line.

Quieting a library must not import it: `score`, `export` and `plot` need neither datasets nor
transformers for local data, and importing them costs seconds. A library already imported is quieted
at once; one imported inside the block is quieted right after its import (an import hook), so its
first bar is already off.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from contextlib import contextmanager


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines included) as one space."""
    return " ".join(str(text).split())


def _quiet_datasets(bars_before: bool | None = None) -> Callable[[], None]:
    """(`bars_before` is not needed: datasets takes its bar setting from its own environment variable.)"""
    import datasets

    bars, level = datasets.is_progress_bar_enabled(), datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()

    def restore() -> None:
        if bars:
            datasets.enable_progress_bars()
        datasets.logging.set_verbosity(level)

    return restore


def _quiet_transformers(bars_before: bool | None = None) -> Callable[[], None]:
    """`bars_before`: for an import inside the block, the bar setting transformers would have taken
    from huggingface_hub at import had the hub not been quieted (it copies the hub's at import)."""
    from transformers.utils import logging as hf_logging

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    bars = bars if bars_before is None else bars_before
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    def restore() -> None:
        if bars:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(level)

    return restore


def _hub_bars_disabled() -> bool:
    import huggingface_hub.utils as hub  # light: a few hundredths of a second

    return hub.are_progress_bars_disabled()


def _quiet_hub() -> Callable[[], None]:
    import huggingface_hub.utils as hub

    disabled, level = hub.are_progress_bars_disabled(), hub.logging.get_verbosity()
    hub.disable_progress_bars()
    hub.logging.set_verbosity_error()

    def restore() -> None:
        if not disabled:
            hub.enable_progress_bars()
        hub.logging.set_verbosity(level)

    return restore


_LIBRARIES = {"datasets": _quiet_datasets, "transformers": _quiet_transformers}


class _QuietAfterImport(importlib.abc.MetaPathFinder):
    """Runs `quiet(name)` right after the first import of each library in `pending`."""

    def __init__(self, pending: set[str], quiet: Callable[[str], None]):
        self.pending = pending
        self.quiet = quiet

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.pending:
            return None
        self.pending.discard(fullname)  # so that the search below skips this finder
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, exec_module, quiet = spec.loader, spec.loader.exec_module, self.quiet

        def exec_then_quiet(module) -> None:
            exec_module(module)
            quiet(fullname)

        loader.exec_module = exec_then_quiet
        return spec


@contextmanager
def quiet_libraries(quiet: bool = True):
    """Within the block, no progress bars and only errors logged by the Hugging Face libraries,
    importing none of them; the settings before it are restored after (the API may run inside a
    notebook that wants them)."""
    if not quiet:
        yield
        return
    hub_bars_before = not _hub_bars_disabled()
    restores = [_quiet_hub()]
    pending = {name for name in _LIBRARIES if name not in sys.modules}
    for name in _LIBRARIES.keys() - pending:
        restores.append(_LIBRARIES[name]())
    hook = _QuietAfterImport(pending, lambda name: restores.append(_LIBRARIES[name](hub_bars_before)))
    sys.meta_path.insert(0, hook)
    try:
        yield
    finally:
        sys.meta_path.remove(hook)
        for restore in reversed(restores):
            restore()
