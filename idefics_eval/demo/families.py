"""The tiny random checkpoint of each model family, by its config.model_type (`demo-model --family`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError

FAMILIES = ("idefics", "idefics2", "idefics3", "smolvlm", "mllama", "llava_onevision")


def save_family_demo(family: str, directory: Path, seed: int, instruct: bool = False) -> None:
    """Write `family`'s tiny model with weights from `seed` and its processor into `directory`
    (`instruct`: as the family's instruct checkpoint, with its chat template); each maker is
    imported only when asked for (each imports its family's transformers classes)."""
    if family == "idefics" and instruct:  # docs/models.md#chat-templates
        raise UserError("--instruct: IDEFICS checkpoints ship no chat template, so there is no tiny instruct one; "
                        "write the instruct turns in a prompt file instead")
    if family == "idefics":
        from .model import save_demo_model

        save_demo_model(directory, seed)
    elif family == "idefics2":
        from .idefics2 import save_demo_model

        save_demo_model(directory, seed, instruct)
    elif family in ("idefics3", "smolvlm"):
        from .idefics3 import save_demo_model

        save_demo_model(directory, family, seed, instruct)
    elif family == "mllama":
        from .mllama import save_demo_model

        save_demo_model(directory, seed, instruct)
    elif family == "llava_onevision":
        from .llava_onevision import save_demo_model

        save_demo_model(directory, seed, instruct)
    else:
        raise ValueError(f"no tiny model for family {family!r}")
