"""`idefics-eval demo-model DIR --family F` writes the tiny random model of family F, whose
config.model_type is F, loadable offline."""

from __future__ import annotations

import json

import pytest

from idefics_eval.cli import DEMO_FAMILIES
from idefics_eval.demo.families import FAMILIES

from conftest import invoke


def test_the_command_offers_every_family_with_a_maker():
    assert DEMO_FAMILIES == FAMILIES


@pytest.mark.parametrize("family", ["idefics2", "idefics3", "smolvlm", "mllama", "llava_onevision"])
def test_demo_model_writes_the_family(family, tmp_path, capsys):
    folder = tmp_path / family
    code, out, err = invoke(capsys, "demo-model", str(folder), "--family", family, "--demo-seed", "2")
    assert (code, err) == (0, "")
    assert out == f"wrote the tiny {family} (seed 2) to {folder}\n"
    assert json.loads((folder / "config.json").read_text())["model_type"] == family
    assert (folder / "model.safetensors").is_file() and (folder / "processor_config.json").is_file()


def test_an_unknown_family_is_refused_in_one_line(tmp_path, capsys):
    code, _, err = invoke(capsys, "demo-model", str(tmp_path / "x"), "--family", "qwen2_vl")
    assert code == 2 and "'qwen2_vl' is not one of" in err and not (tmp_path / "x").exists()
