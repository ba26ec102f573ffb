"""Prompts beside tasks: a task's prompt found in --prompts-dir and --tasks-dir before the shipped
ones, prompt files in a tasks folder kept out of the task list, and `tasks --show`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from conftest import invoke

from idefics_eval.errors import UserError
from idefics_eval.prompts import PromptTemplate, load_template, resolve_template
from idefics_eval.tasks import builtin_dir, task_files

FAST = ["--task", "vqav2", "--demo", "--shots", "0", "--limit", "2", "--num-beams", "1", "--max-new-tokens", "3", "--no-progress"]
MINE = 'name: mine\nversion: 1\nprefix: "Look closely.\\n"\nexample: "Picture:<image>Q: {question} A: {answer}\\n"\n'
# The first two queries of the bundled VQAv2 sample (its questions file, in order), as IdeficsProcessor
# receives them from the template above: prefix and image cue merged, the query cut before {answer}.
GOLDEN = [
    ["Look closely.\nPicture:", "<image>", "Q: Is there a red triangle? A:"],
    ["Look closely.\nPicture:", "<image>", "Q: What shape is on the left? A:"],
]


def vqav2_naming(folder: Path, prompt: str) -> Path:
    """A tasks folder holding a copy of the shipped vqav2 task whose prompt key names `prompt`."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (builtin_dir("tasks") / "vqav2.yaml").read_text()
    (folder / "vqav2.yaml").write_text(text.replace("prompt: vqa\n", f"prompt: {prompt}\n"))
    return folder


def rendered(monkeypatch) -> list[list[str]]:
    """Every prompt the run builds, as its text items with `<image>` for each image."""
    seen: list[list[str]] = []
    render = PromptTemplate.render

    def spy(self, *args, **kwargs):
        prompt = render(self, *args, **kwargs)
        seen.append([item if isinstance(item, str) else "<image>" for item in prompt.items])
        return prompt

    monkeypatch.setattr(PromptTemplate, "render", spy)
    return seen


def test_a_prompt_in_the_tasks_folder_is_the_prompt_the_model_gets(tmp_path, capsys, monkeypatch):
    tasks = vqav2_naming(tmp_path / "tasks", "mine")
    (tasks / "prompts").mkdir()
    (tasks / "prompts" / "mine.yaml").write_text(MINE)
    seen = rendered(monkeypatch)
    code, _, err = invoke(capsys, "run", *FAST, "--tasks-dir", str(tasks), "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    assert seen == GOLDEN
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    digest = hashlib.sha256((tasks / "prompts" / "mine.yaml").read_bytes()).hexdigest()
    assert json.dumps(manifest).count(digest) >= 1  # the run records the template it used


def test_a_prompt_file_beside_the_tasks_is_found_and_not_listed_as_a_task(tmp_path, capsys):
    tasks = vqav2_naming(tmp_path / "tasks", "mine")
    (tasks / "mine.yaml").write_text(MINE)
    assert "mine" not in task_files((tasks,)) and task_files((tasks,))["vqav2"] == tasks / "vqav2.yaml"
    code, out, err = invoke(capsys, "tasks", "--tasks-dir", str(tasks))
    assert code == 0, err
    assert "vqav2" in out and "mine" not in out
    assert resolve_template("mine", tasks_dirs=(tasks,)) == tasks / "mine.yaml"


def test_prompts_dir_wins_over_the_shipped_prompt(tmp_path, capsys, monkeypatch):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "vqa.yaml").write_text(MINE.replace("name: mine", "name: vqa"))
    seen = rendered(monkeypatch)
    code, _, err = invoke(capsys, "run", *FAST, "--prompts-dir", str(prompts), "--output-dir", str(tmp_path / "out"))
    assert code == 0, err
    assert seen == GOLDEN


def test_search_order_prompts_dir_then_tasks_dirs_last_first_then_shipped(tmp_path):
    first, second, prompts = tmp_path / "first", tmp_path / "second", tmp_path / "prompts"
    for folder in (first / "prompts", second / "prompts", prompts):
        folder.mkdir(parents=True)
        (folder / "vqa.yaml").write_text(MINE)
    assert resolve_template("vqa", (prompts,), tasks_dirs=(first, second)) == prompts / "vqa.yaml"
    assert resolve_template("vqa", tasks_dirs=(first, second)) == second / "prompts" / "vqa.yaml"
    assert resolve_template("vqa", tasks_dirs=(first,)) == first / "prompts" / "vqa.yaml"
    assert resolve_template("vqa") == builtin_dir("prompts") / "vqa.yaml"


def test_a_task_file_beside_the_tasks_is_never_read_as_a_template(tmp_path):
    """A task named like a prompt (vqa.yaml holding a task) leaves the shipped vqa template in place."""
    tasks = vqav2_naming(tmp_path / "tasks", "vqa")
    (tasks / "vqa.yaml").write_text((tasks / "vqav2.yaml").read_text().replace("name: vqav2", "name: vqa"))
    assert "vqa" in task_files((tasks,))
    assert load_template("vqa", tasks_dirs=(tasks,)).path == builtin_dir("prompts") / "vqa.yaml"


def test_a_prompt_name_leaving_the_tasks_prompts_folder_is_refused(tmp_path):
    tasks = vqav2_naming(tmp_path / "tasks", "x")
    (tasks / "prompts").mkdir()
    with pytest.raises(UserError, match="leaves the prompts folder"):
        load_template("../vqav2", tasks_dirs=(tasks,), where="vqav2.yaml: prompt")


def test_tasks_show_prints_the_resolved_task_and_its_template(capsys):
    code, out, err = invoke(capsys, "tasks", "--show", "vqav2")
    assert code == 0, err
    assert 'example: "Image:<image>Question: {question} Answer: {answer}\\n"' in out
    shown = yaml.safe_load(out)
    template = load_template("vqa")
    assert Path(shown["prompt_file"]) == builtin_dir("prompts") / "vqa.yaml"
    assert shown["prompt"] == {"name": "vqa", "version": 1, "prefix": template.prefix, "example": template.example}
    task = shown["task"]
    assert (task["name"], task["prompt"], task["shot_answer"], task["zero_shot_only"]) == ("vqav2", "vqa", "most_common", False)
    assert task["generation"]["num_beams"] == 3 and "\n" in task["generation"]["stop_words"]  # defaults filled in
    assert task["sources"]["huggingface"]["path"] == "HuggingFaceM4/VQAv2"


def test_tasks_show_honours_the_tasks_and_prompts_folders(tmp_path, capsys):
    tasks = vqav2_naming(tmp_path / "tasks", "mine")
    (tasks / "prompts").mkdir()
    (tasks / "prompts" / "mine.yaml").write_text(MINE)
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "mine.yaml").write_text(MINE.replace("Look closely.", "Look again."))
    code, out, err = invoke(capsys, "tasks", "--show", "vqav2", "--tasks-dir", str(tasks), "--prompts-dir", str(prompts))
    assert code == 0, err
    shown = yaml.safe_load(out)
    assert (Path(shown["task_file"]), Path(shown["prompt_file"])) == (tasks / "vqav2.yaml", prompts / "mine.yaml")
    assert shown["prompt"]["prefix"] == "Look again.\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--show", "nope"], "unknown task 'nope'"),
    (["--show", "vqav2", "--prompts-dir", "/nowhere/prompts"], "prompts folder not found: /nowhere/prompts"),
])
def test_tasks_show_refuses_in_one_line(args, message, capsys):
    code, out, err = invoke(capsys, "tasks", *args)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_sweep_passes_its_prompts_folders_to_every_run(tmp_path):
    from idefics_eval.sweep import Checkpoint, SweepConfig, _run_config

    prompts = tmp_path / "prompts"
    config = SweepConfig(checkpoints="ckpts/*", tasks=("vqav2",), shots=(0,), output_dir=tmp_path / "out",
                         prompts_dirs=(prompts,), tasks_dirs=(vqav2_naming(tmp_path / "tasks", "mine"),))
    run = _run_config(config, Checkpoint(tmp_path / "step-1", "step-1", 1), "vqav2")
    assert (run.prompts_dirs, run.tasks_dirs) == (config.prompts_dirs, config.tasks_dirs)
