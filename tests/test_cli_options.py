"""One vocabulary across commands: every option explains itself, and `sweep` takes run's options
(--task, --selection, --seeds, --rices-encoder, --max-length) with run's meaning, passed to every run."""

from __future__ import annotations

import click
import pytest

from idefics_eval import runner
from idefics_eval.cli import cli, main
from idefics_eval.errors import UserError

from conftest import invoke


def _options(group: click.Group, path: str = "idefics-eval"):
    """(command path, option) for every option of every command, hidden ones (old spellings) included."""
    for param in group.params:
        if isinstance(param, click.Option):
            yield path, param
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _options(command, f"{path} {name}")
        else:
            yield from ((f"{path} {name}", p) for p in command.params if isinstance(p, click.Option))


def test_every_option_of_every_command_has_help():
    missing = [f"{path} {max(option.opts, key=len)}" for path, option in _options(cli) if not (option.help or "").strip()]
    assert len(list(_options(cli))) > 50  # the walk reached the commands' options
    assert missing == []


@pytest.fixture
def fake_checkpoints(tmp_path):
    """Two folders the sweep takes for checkpoints; the fake run below never loads them."""
    for step in (1, 2):
        (tmp_path / "ckpts" / f"step-{step}").mkdir(parents=True)
        (tmp_path / "ckpts" / f"step-{step}" / "config.json").write_text("{}")
    return tmp_path / "ckpts"


@pytest.fixture
def runs(monkeypatch):
    """The configurations the sweep gives each checkpoint's runs (each run then fails, ending the sweep)."""
    seen = []

    def fake_run(config, loaded=None):
        seen.append(config)
        raise UserError("stopped by the test")

    monkeypatch.setattr("idefics_eval.models.load_model", lambda *args, **kwargs: object())
    monkeypatch.setattr(runner, "run", fake_run)
    return seen


def sweep(capsys, checkpoints, tmp_path, *args):
    return invoke(capsys, "sweep", "--checkpoints", str(checkpoints / "step-*"), "--output-dir", str(tmp_path / "out"),
                  "--shots", "0", "--demo-data", "--no-progress", *args)


def test_sweep_passes_run_options_to_every_checkpoints_run(fake_checkpoints, runs, tmp_path, capsys):
    code, _, err = sweep(capsys, fake_checkpoints, tmp_path, "--task", "vqav2", "--selection", "random", "--seeds", "1,2",
                         "--max-length", "77")
    assert code == 3, err  # every checkpoint "failed" in the fake run
    assert [c.model.rsplit("/", 1)[-1] for c in runs] == ["step-1", "step-2"]
    assert {(c.selection, c.seeds, c.max_length) for c in runs} == {("random", (1, 2), 77)}
    runs.clear()  # the encoder applies to RICES shots only
    code, _, err = sweep(capsys, fake_checkpoints, tmp_path, "--task", "vqav2", "--rices-encoder", "openai/clip-vit-base-patch32")
    assert code == 3, err
    assert {(c.selection, c.rices_encoder) for c in runs} == {("rices", "openai/clip-vit-base-patch32")}


def test_sweep_checks_run_options_as_run_does(fake_checkpoints, runs, tmp_path, capsys):
    code, _, err = sweep(capsys, fake_checkpoints, tmp_path, "--task", "vqav2", "--seeds", "1,2")
    assert code == 2 and "--seeds applies to --selection random" in err and runs == []


def test_sweep_task_takes_a_group_as_run_does(fake_checkpoints, runs, tmp_path, capsys):
    code, _, err = sweep(capsys, fake_checkpoints, tmp_path, "--task", "fairface")
    assert code == 3, err
    assert [c.task for c in runs] == ["fairface_gender"] * 2  # a failing checkpoint stops at its first task
    assert runs[0].data.endswith("fairface_gender")  # --demo-data: each task's own bundled sample


def test_sweep_tasks_is_the_old_spelling_of_task(fake_checkpoints, runs, tmp_path, capsys):
    code, _, err = sweep(capsys, fake_checkpoints, tmp_path, "--tasks", "vqav2")
    assert code == 3 and [c.task for c in runs] == ["vqav2", "vqav2"]
    deprecations = [line for line in err.splitlines() if "deprecated" in line]
    assert deprecations == ["warning: --tasks is deprecated and will go in the next release; use --task (same values)"]


@pytest.mark.parametrize("args, message", [((), "missing option --task"),
                                           (("--task", "vqav2", "--tasks", "okvqa"), "--task and --tasks both given")])
def test_sweep_without_one_task_option_is_refused(fake_checkpoints, runs, tmp_path, capsys, args, message):
    code, _, err = sweep(capsys, fake_checkpoints, tmp_path, *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and runs == []


# sweep's own forms, by design: data per task (TASK=PATH, repeatable), an output folder of results folders,
# a name for every checkpoint's run, --task optional beside its old spelling, fewer shots by default, and
# the selection split by default (a checkpoint is chosen on queries held out of train, not on the reported ones)
SWEEP_OWN = {"data_values", "support_values", "output_dir", "name", "task", "shots", "split"}


def test_options_on_run_and_sweep_mean_the_same():
    def described(command: click.Command) -> dict:
        return {max(p.opts, key=len): (p.name, type(p.type).__name__, getattr(p.type, "choices", None),
                                           p.default, p.multiple, p.is_flag)
                for p in command.params if isinstance(p, click.Option)}

    run, sweep_ = described(cli.commands["run"]), described(cli.commands["sweep"])
    common = [flag for flag in run if flag in sweep_ and run[flag][0] not in SWEEP_OWN and sweep_[flag][0] not in SWEEP_OWN]
    assert len(common) >= 15  # --selection, --seeds, --rices-encoder, --max-length, --demo-data, ... are on both
    assert {flag: sweep_[flag] for flag in common} == {flag: run[flag] for flag in common}


def test_demo_model_takes_demo_seed_as_run_does_and_its_old_seed_with_a_warning(tmp_path, capsys):
    from idefics_eval.demo.model import save_demo_model

    main(["demo-model", str(tmp_path / "new"), "--demo-seed", "3"])
    main(["demo-model", str(tmp_path / "old"), "--seed", "3"])
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["warning: --seed is deprecated and will go in the next release; use --demo-seed (same values)"]
    save_demo_model(tmp_path / "direct", 3)
    weights = [(tmp_path / name / "model.safetensors").read_bytes() for name in ("new", "old", "direct")]
    assert weights[0] == weights[1] == weights[2]
