"""What reaches the terminal besides our own output: error lines and the libraries' bars and warnings.

An error is always one line (`one_line`), whatever its text holds, so that a script reading stderr
and a person reading the terminal see the same single message. With progress off, the Hugging Face
libraries (datasets, transformers, huggingface_hub) are kept quiet too (`quiet_libraries`): their
bars and warnings would otherwise reach stderr around that line.
"""

from __future__ import annotations

from contextlib import contextmanager


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines included) as one space."""
    return " ".join(str(text).split())


@contextmanager
def quiet_libraries(quiet: bool = True):
    """Within the block, no progress bars and only errors logged by the Hugging Face libraries;
    the settings before it are restored after (the API may run inside a notebook that wants them)."""
    if not quiet:
        yield
        return
    import datasets
    import huggingface_hub.utils as hub
    from transformers.utils import logging as hf_logging

    before = (datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled(), hub.are_progress_bars_disabled(),
              datasets.logging.get_verbosity(), hf_logging.get_verbosity(), hub.logging.get_verbosity())
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hub.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    hf_logging.set_verbosity_error()
    hub.logging.set_verbosity_error()
    try:
        yield
    finally:
        datasets_bars, transformers_bars, hub_disabled, datasets_level, transformers_level, hub_level = before
        if datasets_bars:
            datasets.enable_progress_bars()
        if transformers_bars:
            hf_logging.enable_progress_bar()
        if not hub_disabled:
            hub.enable_progress_bars()
        datasets.logging.set_verbosity(datasets_level)
        hf_logging.set_verbosity(transformers_level)
        hub.logging.set_verbosity(hub_level)
