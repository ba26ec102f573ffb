"""Imports every format module in this package, so that each registers its `FileFormat`."""

import importlib
import pkgutil

from . import __name__ as _package, __path__ as _path

for _module in pkgutil.iter_modules(_path):
    if _module.name not in ("builtin", "huggingface", "vqa_json"):
        importlib.import_module(f"{_package}.{_module.name}")
