"""Third-party code a task file cannot express: metrics and data formats from installed entry points,
task files from an extra folder (--tasks-dir)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from idefics_eval import formats, metrics
from idefics_eval.errors import UserError
from idefics_eval.examples import Example, ExampleSet, FileImage
from idefics_eval.formats import FileFormat
from idefics_eval.metrics import Metric, mean_by
from idefics_eval.runner import RunConfig, run

DEMO = Path(__file__).resolve().parents[1] / "idefics_eval" / "demo" / "data" / "vqav2"


class FakeEntryPoint:
    def __init__(self, name: str, value: object):
        self.name, self.value, self._object = name, f"thirdparty:{name}", value

    def load(self):
        return self._object


def exact_match() -> Metric:
    return Metric("exact_match", lambda p, e: float(p.prediction == e.answers[0]), mean_by("exact_match"))


def lines_format() -> FileFormat:
    """A made-up format: one JSON object per line with id, image, question, answer."""

    def load(root: Path, files, name: str) -> ExampleSet:
        records = [json.loads(line) for line in (root / files["file"]).read_text().splitlines()]
        return ExampleSet(name, str(root), [
            Example(id=r["id"], image_id=r["image"], image=FileImage(root / r["image"]),
                    fields={"question": r["question"]}, answers=(r["answer"],)) for r in records])

    return FileFormat("lines", ("file",), ("file",), load)


@pytest.fixture
def plugins(monkeypatch):
    groups = {"idefics_eval.metrics": [FakeEntryPoint("exact_match", exact_match())],
              "idefics_eval.formats": [FakeEntryPoint("lines", lines_format())]}
    fake = lambda group: groups.get(group, [])
    monkeypatch.setattr(metrics.metadata, "entry_points", fake)
    monkeypatch.setattr(formats.metadata, "entry_points", fake)


def test_a_task_from_an_extra_folder_uses_a_plugin_metric_and_format(plugins, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    images = sorted((DEMO / "val2014").iterdir())[:3]
    records = [{"id": f"q{i}", "image": image.name, "question": "What color is it?", "answer": "red"} for i, image in enumerate(images)]
    for image in images:
        (data / image.name).write_bytes(image.read_bytes())
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "colours.yaml").write_text(
        "name: colours\nversion: 1\nrequest: generate\nmetric: exact_match\nprompt: vqa\n"
        "support_split: train\nquery_split: test\n"
        "sources:\n  lines:\n    train: {file: train.jsonl}\n    test: {file: test.jsonl}\n"
    )
    rows = run(RunConfig(task="colours", shots=(0, 1), output_dir=tmp_path / "out", demo=True, data=str(data),
                         tasks_dirs=(tasks,), num_beams=1, max_new_tokens=4, cache_dir=tmp_path / "cache", progress=False))
    assert [r.shots for r in rows] == [0, 1] and "exact_match" in rows[0].metrics and rows[0].num_examples == 3


def test_a_plugin_that_is_not_a_metric_is_refused(monkeypatch):
    monkeypatch.setattr(metrics.metadata, "entry_points", lambda group: [FakeEntryPoint("bad", object())])
    with pytest.raises(UserError, match="is not an idefics_eval.metrics.Metric"):
        metrics.get_metric("vqa_accuracy")


def test_a_task_file_cannot_name_python_code(tmp_path):
    """Task files are data: a YAML tag that would construct a Python object is refused."""
    from idefics_eval.tasks import parse_task

    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo owned']\nversion: 1\n")
    with pytest.raises(UserError, match="not valid YAML"):
        parse_task(path)


@pytest.mark.parametrize("line, message", [("module: mypackage.tasks", "unknown key 'module'"),
                                           ("metric: os.system", "unknown metric 'os.system'")])
def test_a_task_file_that_names_python_code_is_refused(tmp_path, line, message):
    """Code reaches the harness only through installed entry points, never through a task file."""
    from idefics_eval.metrics import get_metric
    from idefics_eval.tasks import parse_task

    text = (Path(__file__).resolve().parents[1] / "tasks" / "vqav2.yaml").read_text()
    key = line.split(":")[0]
    text = text.replace("metric: vqa_accuracy", line) if key == "metric" else text + line + "\n"
    path = tmp_path / "vqav2.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        get_metric(parse_task(path).metric)
