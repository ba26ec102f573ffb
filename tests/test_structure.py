"""The package's layering: only `idefics_eval/models/` names a model family's transformers classes or imports
a family's module.

The engine, the ranker, the image cache, the runner and everything above them talk to a family
through its adapter (`models.base.ModelAdapter`). Two folders outside `models/` are allowed to
name IDEFICS because what they do is build one: `demo/` (the embedded tiny random IDEFICS) and
`canary/` (the small IDEFICS trained for `--demo`, with its training loop).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "idefics_eval"
ALLOWED = ("models", "demo", "canary")  # folders of the package that may name a family's classes

# A family's classes (IdeficsForVisionText2Text, Idefics2Processor, MllamaForConditionalGeneration,
# LlavaOnevisionProcessor, SmolVLMImageProcessor, ...), its processing helpers, or its transformers module.
FAMILY_NAME = re.compile(r"^(Idefics\d*|Mllama|Llava\w*|SmolVLM|Qwen\d*VL|InternVL|MiniCPM)[A-Z]\w*$")
FAMILY_HELPERS = {"image_attention_mask_for_packed_input_ids", "incremental_to_binary_attention_mask"}
FAMILY_MODULE = re.compile(r"^transformers\.models\.(idefics\d*|mllama|llava\w*|smolvlm|qwen\d*_vl|internvl)(\.|$)")


def family_names(source: str) -> list[str]:
    """Every name of a family's transformers classes, helpers or modules that `source` imports or
    reaches as an attribute (`transformers.IdeficsConfig`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if FAMILY_MODULE.match(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if FAMILY_MODULE.match(module):
                found.append(module)
            found += [alias.name for alias in node.names
                      if FAMILY_NAME.match(alias.name) or alias.name in FAMILY_HELPERS]
        elif isinstance(node, ast.Attribute) and (FAMILY_NAME.match(node.attr) or node.attr in FAMILY_HELPERS):
            found.append(node.attr)
    return found


def test_the_checker_finds_every_way_of_naming_a_family():
    source = """
import transformers.models.idefics.processing_idefics
from transformers import AutoProcessor, IdeficsForVisionText2Text, Idefics2Processor
from transformers.models.mllama import modeling_mllama
from transformers.models.idefics.processing_idefics import image_attention_mask_for_packed_input_ids
import transformers
model = transformers.LlavaOnevisionForConditionalGeneration
processor = transformers.SmolVLMProcessor
"""
    assert family_names(source) == [
        "transformers.models.idefics.processing_idefics", "IdeficsForVisionText2Text", "Idefics2Processor",
        "transformers.models.mllama", "transformers.models.idefics.processing_idefics",
        "image_attention_mask_for_packed_input_ids", "LlavaOnevisionForConditionalGeneration", "SmolVLMProcessor",
    ]
    # Family-agnostic names are not flagged: the harness's own modules and transformers' Auto classes.
    assert family_names("from transformers import AutoConfig, AutoProcessor, PretrainedConfig, CLIPModel\n"
                        "from .models.idefics import image_attention_mask\nimport idefics_eval.models.idefics\n") == []


def test_no_module_outside_models_names_a_family():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ALLOWED:
            continue
        names = family_names(path.read_text(encoding="utf-8"))
        if names:
            offenders[str(relative)] = names
    assert offenders == {}


def family_modules(source: str, package: tuple[str, ...]) -> list[str]:
    """The modules of `idefics_eval.models` other than `base` (the interface) that `source`, a module
    of package `package` (("idefics_eval",), ("idefics_eval", "metrics"), ...), imports: a family's
    adapter module, or a helper of one family (models/gated_cross_attention.py is IDEFICS's)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]  # a name may be a submodule
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [name for name in names if _family_module(name)]
    return found


def _family_module(name: str) -> bool:
    parts = name.split(".")
    return (len(parts) == 3 and parts[:2] == ["idefics_eval", "models"] and parts[2] != "base"
            and (PACKAGE / "models" / f"{parts[2]}.py").is_file())


def test_no_module_outside_models_imports_a_family_module():
    """The engine and everything else reach a family through `LoadedModel.adapter`, never its module."""
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ALLOWED:
            continue
        names = family_modules(path.read_text(encoding="utf-8"), ("idefics_eval", *relative.parts[:-1]))
        if names:
            offenders[str(relative)] = names
    assert offenders == {}
    assert family_modules("from .models.idefics import image_attention_mask\nfrom .models import base, idefics\n"
                          "from .models.base import ModelAdapter\nimport idefics_eval.models.gated_cross_attention\n",
                          ("idefics_eval",)) == [
        "idefics_eval.models.idefics", "idefics_eval.models.idefics", "idefics_eval.models.gated_cross_attention"]


def test_the_adapter_modules_name_their_family():
    """The check looks where the families are: without this, a renamed folder would pass it vacuously."""
    assert "IdeficsForVisionText2Text" in family_names((PACKAGE / "models" / "idefics.py").read_text(encoding="utf-8"))
    assert len(list(PACKAGE.rglob("*.py"))) > 30
