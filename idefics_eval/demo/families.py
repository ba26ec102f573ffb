"""The tiny random checkpoint of each model family, by its config.model_type (`demo-model --family`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError

FAMILIES = ("idefics", "idefics2", "idefics3", "smolvlm", "mllama", "llava_onevision")
INSTRUCT_FAMILIES = ("mllama", "llava_onevision")  # makers that write an instruct checkpoint (a chat template)


def save_family_demo(family: str, directory: Path, seed: int, instruct: bool = False) -> None:
    """Write `family`'s tiny model with weights from `seed` and its processor into `directory`
    (`instruct`: as the family's instruct checkpoint, with its chat template); each maker is
    imported only when asked for (each imports its family's transformers classes)."""
    if instruct and family not in INSTRUCT_FAMILIES:
        raise UserError(f"--instruct: no tiny instruct checkpoint for {family} (there is one for {', '.join(INSTRUCT_FAMILIES)})")
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

        save_demo_model(directory, seed, instruct)
    elif family == "llava_onevision":
        from .llava_onevision import save_demo_model

        save_demo_model(directory, seed, instruct)
    else:
        raise ValueError(f"no tiny model for family {family!r}")
