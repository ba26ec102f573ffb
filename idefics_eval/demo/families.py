"""The tiny random checkpoint of each model family, by its config.model_type (`demo-model --family`)."""

from __future__ import annotations

from pathlib import Path

FAMILIES = ("idefics", "idefics2", "idefics3", "smolvlm", "mllama", "llava_onevision")


def save_family_demo(family: str, directory: Path, seed: int) -> None:
    """Write `family`'s tiny model with weights from `seed` and its processor into `directory`;
    each maker is imported only when asked for (each imports its family's transformers classes)."""
    if family == "idefics":
        from .model import save_demo_model

        save_demo_model(directory, seed)
    elif family == "idefics2":
        from .idefics2 import save_demo_model

        save_demo_model(directory, seed)
    elif family in ("idefics3", "smolvlm"):
        from .idefics3 import save_demo_model

        save_demo_model(directory, family, seed)
    elif family == "mllama":
        from .mllama import save_demo_model

        save_demo_model(directory, seed)
    elif family == "llava_onevision":
        from .llava_onevision import save_demo_model

        save_demo_model(directory, seed)
    else:
        raise ValueError(f"no tiny model for family {family!r}")
