"""The one check that a path named in a user's file stays in the folder it is meant to come from.

Data files name images, task files name class lists and prompt templates; a name like
`../../home/me/.ssh/id_rsa.jpg`, an absolute path or a symbolic link could otherwise reach any file
the user can read. Every reader confines its paths through `Confinement`: a path is inside when,
with every symbolic link followed, it lies under one of the folders' own real locations. A link that
stays inside (images/ -> ../shared/images, both in the data folder) is fine.

This module imports nothing of the harness, so the data formats, the task parser and the examples'
lazy image loading can all use it without import cycles.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError


class Confinement:
    """Paths that must stay inside `folders`; relative paths are taken relative to the first one.

    `name` says what the folders are in messages ("the data folder"). Each parent folder is resolved
    and listed once (which of its entries are links), so checking the 100k images of a split costs no
    system call per image.
    """

    def __init__(self, folders: tuple[Path, ...] | Path, name: str):
        self.folders = (folders,) if isinstance(folders, (str, os.PathLike)) else tuple(folders)
        self.name = name
        self._real_folders = [os.path.realpath(folder) for folder in self.folders]
        self._real_parents: dict[str, str] = {}
        self._links: dict[str, frozenset[str]] = {}

    def path(self, value: str | Path) -> Path:
        """`value` as the file it names: relative to the first folder, an absolute path as it is."""
        return Path(self.folders[0], value)

    def check(self, value: str | Path, where: str, fix: str, what: str = "image path") -> Path:
        """The file `value` names (see `path`), refused in one line when it leaves the folders.

        `where` names the file and record it came from, `what` the kind of path, `fix` how to fix it.
        """
        path = value if isinstance(value, Path) and value.is_absolute() else self.path(value)
        real = self._real(str(path))
        if not any(_under(real, folder) for folder in self._real_folders):
            folders = " or ".join(str(folder) for folder in self.folders)
            link = "" if real == os.path.normpath(os.path.abspath(path)) else f" (through a symbolic link, to {real})"
            raise UserError(f"{where}: {what} {value} leaves {self.name} {folders}{link}; {fix}")
        return path

    def _real(self, path: str) -> str:
        parent, name = os.path.split(path)
        if parent not in self._real_parents:
            self._real_parents[parent] = os.path.realpath(parent)
            self._links[parent] = _links_in(parent)
        if name in ("", ".", "..") or name in self._links[parent]:
            return os.path.realpath(path)
        return os.path.join(self._real_parents[parent], name)


def _links_in(folder: str) -> frozenset[str]:
    """The names of the symbolic links directly in `folder` (none where it cannot be listed)."""
    try:
        with os.scandir(folder) as entries:
            return frozenset(entry.name for entry in entries if entry.is_symlink())
    except OSError:
        return frozenset()


def _under(real: str, folder: str) -> bool:
    return real == folder or real.startswith(folder.rstrip(os.sep) + os.sep)
