"""Task files: the shipped ones load, and every malformed file is named with its key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from idefics_eval.errors import UserError
from idefics_eval.prompts import resolve_template
from idefics_eval.tasks import is_prompt_file, load_task, parse_task, task_files

VQAV2 = (Path(__file__).resolve().parents[1] / "tasks" / "vqav2.yaml").read_text()


def test_vqav2_declares_its_sources_splits_prompt_and_metric():
    spec = load_task("vqav2")
    assert (spec.request, spec.metric, spec.prompt) == ("generate", "vqa_accuracy", "vqa")
    assert (spec.support_split, spec.query_split) == ("train", "validation")
    assert spec.vqa_json["validation"].image_file.format(image_id=42) == "COCO_val2014_000000000042.jpg"
    assert spec.huggingface.columns["answers"] == "answers"
    assert (spec.generation.num_beams, spec.generation.max_new_tokens) == (3, 15)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t + "colour: red\n", "unknown key 'colour'"),
        (lambda t: t.replace("metric: vqa_accuracy\n", ""), "missing required key 'metric'"),
        (lambda t: t.replace("version: 1", "version: one"), "version: expected int"),
        (lambda t: t.replace("request: generate", "request: chat"), "request must be one of"),
        (lambda t: t.replace("num_beams: 3", "num_beams: 3\n  temperature: 1"), "unknown key 'temperature'"),
        (lambda t: t.replace("      image_file: \"COCO_val2014", "      image_files: \"COCO_val2014"), "unknown key 'image_files'"),
        (lambda t: t.replace("query_split: validation", "query_split: test"), "no split 'test'"),
        (lambda t: t.replace("      id: question_id\n", ""), "missing required key 'id'"),
        (lambda t: t + "sources: [\n", "not valid YAML"),
    ],
)
def test_malformed_task_files_name_the_file_and_key(tmp_path, edit, message):
    path = tmp_path / "vqav2.yaml"
    path.write_text(edit(VQAV2))
    with pytest.raises(UserError, match=message) as error:
        parse_task(path)
    assert str(path) in str(error.value)


def test_extra_tasks_folder_overrides_and_adds(tmp_path):
    (tmp_path / "vqav2.yaml").write_text(VQAV2.replace("num_beams: 3", "num_beams: 1"))
    (tmp_path / "myvqa.yaml").write_text(VQAV2.replace("name: vqav2", "name: myvqa"))
    files = task_files((tmp_path,))
    assert files["vqav2"].parent == tmp_path and "myvqa" in files
    assert load_task("vqav2", (tmp_path,)).generation.num_beams == 1


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(UserError, match="unknown task 'vqa3'.*vqav2"):
        load_task("vqa3")


def test_name_must_match_file(tmp_path):
    (tmp_path / "other.yaml").write_text(VQAV2)
    with pytest.raises(UserError, match="does not match the file name"):
        load_task("other", (tmp_path,))


SHIPPED_YAML = sorted(p for folder in ("tasks", "prompts", "protocols") for p in (Path(__file__).resolve().parents[1] / folder).glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_YAML, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_fast_yaml_parser_reads_every_shipped_file_as_the_pure_one_does(path, monkeypatch):
    import yaml

    from idefics_eval import tasks

    assert tasks._FAST_LOADER is not None, "PyYAML without libyaml: every start parses YAML 10x slower"
    raw = path.read_bytes()
    pure = yaml.load(raw, Loader=yaml.SafeLoader)
    monkeypatch.setattr(yaml, "safe_load", lambda raw: pytest.fail("the pure parser read a valid file"))
    assert tasks.read_yaml(path, raw) == pure


def test_a_file_libyaml_refuses_is_reported_by_the_pure_parser(tmp_path):
    from idefics_eval.tasks import read_yaml

    with pytest.raises(UserError, match=r"line 1 is not valid YAML \(expected ',' or '\]', but got '<stream end>'\)"):
        read_yaml(tmp_path / "x.yaml", b"a: [1, 2")


def test_a_task_file_replaced_by_a_prompt_file_of_its_size_and_mtime_is_read_again(tmp_path):
    """Which files of a tasks folder are prompt files is cached per process (a training loop calls
    `evaluate` again and again): a prompt copied over a task with `cp -p`, as long, keeps the old
    size and mtime, and must still become the folder's template."""
    path = tmp_path / "vqa.yaml"
    task, prompt = "name: vqa\nmetric: vqa_accuracy\n", "example: '{question}'\n"
    path.write_text(task)
    assert not is_prompt_file(path) and resolve_template("vqa", tasks_dirs=(tmp_path,)) != path
    stat = path.stat()
    path.write_text(prompt + "#" * (len(task) - len(prompt) - 1) + "\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert is_prompt_file(path) and resolve_template("vqa", tasks_dirs=(tmp_path,)) == path
