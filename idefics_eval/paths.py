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
    once, so checking the 100k images of a split costs one `lstat` per image.
    """

    def __init__(self, folders: tuple[Path, ...] | Path, name: str):
        self.folders = (folders,) if isinstance(folders, (str, os.PathLike)) else tuple(folders)
        self.name = name
        self._real_folders = [os.path.realpath(folder) for folder in self.folders]
        self._real_parents: dict[str, str] = {}

    def path(self, value: str | Path) -> Path:
        """`value` as the file it names: relative to the first folder, an absolute path as it is."""
        return Path(self.folders[0], value)

    def check(self, value: str | Path, where: str, fix: str, what: str = "image path") -> Path:
        """The file `value` names (see `path`), refused in one line when it leaves the folders.

        `where` names the file and record it came from, `what` the kind of path, `fix` how to fix it.
        """
        path = self.path(value)
        real = self._real(str(path))
        if not any(_under(real, folder) for folder in self._real_folders):
            folders = " or ".join(str(folder) for folder in self.folders)
            link = "" if real == os.path.normpath(os.path.abspath(path)) else f" (through a symbolic link, to {real})"
            raise UserError(f"{where}: {what} {value} leaves {self.name} {folders}{link}; {fix}")
        return path

    def _real(self, path: str) -> str:
        parent, name = os.path.split(path)
        if name in ("", ".", "..") or os.path.islink(path):
            return os.path.realpath(path)
        real_parent = self._real_parents.get(parent)
        if real_parent is None:
            real_parent = self._real_parents[parent] = os.path.realpath(parent)
        return os.path.join(real_parent, name)


def _under(real: str, folder: str) -> bool:
    return real == folder or real.startswith(folder.rstrip(os.sep) + os.sep)
