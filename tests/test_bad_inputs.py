"""The table of bad inputs: each gets exit status 2, one line on stderr without a traceback, and
leaves the results already in the output folder byte for byte as they were."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from idefics_eval import predictions, runner
from idefics_eval.cli import main
from idefics_eval.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "idefics_eval" / "demo" / "data" / "vqav2"
VAL_Q = "v2_OpenEnded_mscoco_val2014_questions.json"
VAL_A = "v2_mscoco_val2014_annotations.json"
TRAIN_A = "v2_mscoco_train2014_annotations.json"


def invoke(capsys, *args: str) -> tuple[int, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    """An output folder holding an earlier run's results."""
    out = tmp_path_factory.mktemp("previous")
    main(["run", "--task", "vqav2", "--demo", "--shots", "0", "--limit", "2", "--num-beams", "1", "--max-new-tokens", "3",
          "--output-dir", str(out), "--no-progress"])
    return out


def data_copy(tmp_path: Path, edit=None) -> Path:
    data = tmp_path / "data"
    shutil.copytree(DEMO, data)
    if edit:
        edit(data)
    return data


def edit_json(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def drop_answers(data: Path) -> None:
    edit_json(data / VAL_A, lambda r: r["annotations"][3].pop("answers"))


def duplicate_question(data: Path) -> None:
    edit_json(data / VAL_Q, lambda r: r["questions"].append(dict(r["questions"][0])))


def empty_split(data: Path) -> None:
    edit_json(data / VAL_Q, lambda r: r.update(questions=[]))
    edit_json(data / VAL_A, lambda r: r.update(annotations=[]))


def no_answers(annotations: str):
    """An edit giving the first annotation of `annotations` an empty answer list."""
    return lambda data: edit_json(data / annotations, lambda r: r["annotations"][0].update(answers=[]))


def blocked(tmp_path: Path) -> Path:
    """A folder path that cannot be created: it goes through a file."""
    (tmp_path / "file").write_text("x")
    return tmp_path / "file" / "folder"


def long_question(data: Path) -> None:
    """The first query's question made 100,001 characters long (far beyond any model's context)."""
    edit_json(data / VAL_Q, lambda r: r["questions"][0].update(question="Is it red? " * 9_091))


def tasks_dir(tmp_path: Path, old: str, new: str) -> Path:
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "vqav2.yaml").write_text((ROOT / "tasks" / "vqav2.yaml").read_text().replace(old, new, 1))
    return folder


def empty_task_file(tmp_path: Path) -> Path:
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "vqav2.yaml").write_text("")
    return folder


def config_file(tmp_path: Path, text: str) -> Path:
    """A --config file of run options."""
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def image_linked_outside(data: Path) -> None:
    victim = sorted((data / "val2014").iterdir())[0]
    outside = data.parent / "outside" / victim.name
    outside.parent.mkdir()
    victim.rename(outside)
    victim.symlink_to(outside)


def hf_image_path_outside(tmp_path: Path) -> Path:
    """A jsonl dataset with the vqav2 task's columns whose one row names an image outside its folder."""
    folder = tmp_path / "hf"
    (folder / "images").mkdir(parents=True)
    image = sorted((DEMO / "val2014").iterdir())[0]
    shutil.copy(image, folder / "images" / "a.jpg")
    shutil.copy(image, tmp_path / "outside.jpg")
    rows = [{"question_id": number, "image": path, "image_id": number, "question": "what?", "answers": [{"answer": "x"}],
             "answer_type": "other", "question_type": "what"} for number, path in enumerate(["images/a.jpg", "../outside.jpg"])]
    import datasets

    # A save_to_disk folder, as load_dataset on jsonl files prints progress bars even with --no-progress.
    shown = not datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        datasets.DatasetDict({split: datasets.Dataset.from_list(rows) for split in ("train", "validation")}).save_to_disk(str(folder))
    finally:
        if shown:
            datasets.enable_progress_bars()
    return folder


def checkpoint_without_image_tokens(tmp_path: Path) -> Path:
    from transformers import IdeficsProcessor
    from transformers.models.idefics.image_processing_pil_idefics import IdeficsImageProcessorPil

    from idefics_eval.demo import model as demo

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path / "plain-tokenizer"
    demo.build_model(0).save_pretrained(folder)
    bare = Tokenizer(models.BPE(vocab={"<unk>": 0, "<s>": 1, "</s>": 2, "a": 3}, merges=[]))
    bare.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    plain = PreTrainedTokenizerFast(tokenizer_object=bare, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>")
    IdeficsProcessor(image_processor=IdeficsImageProcessorPil(image_size=32), tokenizer=plain).save_pretrained(folder)
    return folder


def pickle_checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "idefics"}')
    (folder / "pytorch_model.bin").write_bytes(b"not really a pickle")
    return folder


def damaged_weights(damage):
    """A copy of the canary checkpoint whose model.safetensors bytes went through `damage`."""
    def make(tmp_path: Path) -> str:
        from idefics_eval.models import CANARY_DIR

        folder = tmp_path / "damaged"
        shutil.copytree(CANARY_DIR, folder)
        weights = folder / "model.safetensors"
        weights.write_bytes(damage(weights.read_bytes()))
        return str(folder)

    return make


GPT2_CONFIG = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 1600, "n_layer": 48, "n_head": 25}


def checkpoint_with_config(config_text: str):
    """A folder holding an IDEFICS processor and tokenizer beside the given config.json (and no weights:
    the config alone must be refused, before anything would load them)."""
    def make(tmp_path: Path) -> str:
        from idefics_eval.demo.model import build_processor

        folder = tmp_path / "other-architecture"
        build_processor().save_pretrained(folder)
        (folder / "config.json").write_text(config_text)
        return str(folder)

    return make


def protocol_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


RUN_CASES = {
    "unknown protocol": (lambda t: ["--protocol", "flamingo"], "--protocol 'flamingo': unknown protocol; available: default"),
    "protocol file unknown key": (lambda t: ["--protocol", str(protocol_file(t, "name: x\nzero_shot: text-only\n"))],
                                  "mine.yaml: unknown key 'zero_shot'"),
    "protocol file unknown task": (lambda t: ["--protocol", str(protocol_file(t, "name: x\ntasks:\n  vqa3: {}\n"))],
                                   "mine.yaml: tasks: unknown task 'vqa3'"),
    "protocol file prompt not found": (lambda t: ["--protocol", str(protocol_file(t, "name: x\ntasks:\n  vqav2:\n    prompt: nope\n"))],
                                       "mine.yaml: tasks.vqav2: prompt 'nope'"),
    "unknown task": (lambda t: ["--task", "vqa3"], "unknown task 'vqa3'"),
    "shots not a number": (lambda t: ["--shots", "4,x"], "'x' is not a whole number"),
    "negative shots": (lambda t: ["--shots", "-1"], "negative"),
    "empty shots": (lambda t: ["--shots", ""], "empty"),
    "more shots than support": (lambda t: ["--shots", "200"], "fewer than the 200 shots"),
    "limit 0": (lambda t: ["--limit", "0"], "--limit 0"),
    "negative beams": (lambda t: ["--num-beams", "-1"], "--num-beams -1"),
    "zero beams": (lambda t: ["--num-beams", "0"], "--num-beams 0"),
    "negative new tokens": (lambda t: ["--max-new-tokens", "-1"], "--max-new-tokens -1"),
    "zero new tokens": (lambda t: ["--max-new-tokens", "0"], "--max-new-tokens 0"),
    "zero context": (lambda t: ["--max-length", "0"], "--max-length 0"),
    "task file unknown key": (lambda t: ["--tasks-dir", str(tasks_dir(t, "metric: vqa_accuracy", "metric: vqa_accuracy\nmetrik: x"))], "unknown key 'metrik'"),
    "task file empty": (lambda t: ["--tasks-dir", str(empty_task_file(t))], "vqav2.yaml: expected a mapping of keys, found nothing (it is empty)"),
    "task file wrong type": (lambda t: ["--tasks-dir", str(tasks_dir(t, "version: 1", "version: one"))], "version: expected int"),
    "task file unknown generation key": (lambda t: ["--tasks-dir", str(tasks_dir(t, "  num_beams: 3", "  num_beams: 3\n  lenght_penalty: 0"))], "generation: unknown key 'lenght_penalty'"),
    "task file early_stopping not a choice": (lambda t: ["--tasks-dir", str(tasks_dir(t, "  num_beams: 3", "  num_beams: 3\n  early_stopping: sometimes"))], "generation.early_stopping must be true, false or never"),
    "task file length_penalty not a number": (lambda t: ["--tasks-dir", str(tasks_dir(t, "  num_beams: 3", "  num_beams: 3\n  length_penalty: yes"))], "generation.length_penalty: expected int or float"),
    "task file banned_words not a list": (lambda t: ["--tasks-dir", str(tasks_dir(t, "  num_beams: 3", "  num_beams: 3\n  banned_words: Question"))], "generation.banned_words: expected a list of strings"),
    "task file add_start_token not a bool": (lambda t: ["--tasks-dir", str(tasks_dir(t, "request: generate", "request: generate\nadd_start_token: no-thanks"))], "add_start_token: expected bool"),
    "task file invalid YAML": (lambda t: ["--tasks-dir", str(tasks_dir(t, "request: generate", "request: [generate"))], "not valid YAML"),
    "task file nested too deeply": (lambda t: ["--tasks-dir", str(tasks_dir(t, "request: generate", "request: " + "[" * 10_000))],
                                    "vqav2.yaml is nested too deeply to read"),
    "query with an empty answer list": (lambda t: ["--data", str(data_copy(t, no_answers(VAL_A)))], "of vqav2/validation has no answers"),
    "shot with an empty answer list": (lambda t: ["--data", str(data_copy(t, no_answers(TRAIN_A)))], "of vqav2/train has no answers"),
    "unwritable cache folder": (lambda t: ["--cache-dir", str(blocked(t))], "cannot write to the --cache-dir folder"),
    "file name with a newline": (lambda t: ["--data", str(t / "new\nline")], "new line (--data)"),
    "missing annotation file": (lambda t: ["--data", str(data_copy(t, lambda d: (d / VAL_A).unlink()))], VAL_A),
    "annotations with the wrong schema": (lambda t: ["--data", str(data_copy(t, drop_answers))], "answers"),
    "duplicate query ids": (lambda t: ["--data", str(data_copy(t, duplicate_question))], "duplicate"),
    "annotation pointing at a missing image": (lambda t: ["--data", str(data_copy(t, lambda d: sorted((d / "val2014").iterdir())[0].unlink()))], "COCO_val2014_"),
    "empty query split": (lambda t: ["--data", str(data_copy(t, empty_split))], "empty"),
    "test split given to a task scored here": (lambda t: ["--tasks-dir", str(tasks_dir(
        t, "      annotations: v2_mscoco_val2014_annotations.json\n", ""))], "has no reference answers (a test split"),
    "image file linked outside the data folder": (lambda t: ["--data", str(data_copy(t, image_linked_outside))], "through a symbolic link"),
    "Hugging Face image path outside the data folder": (lambda t: ["--data", str(hf_image_path_outside(t))], "../outside.jpg leaves the data folder"),
    "task prompt outside the prompts folder": (lambda t: ["--tasks-dir", str(tasks_dir(t, "prompt: vqa", "prompt: ../tasks/vqav2"))], "leaves the prompts folder"),
    "task prompt in no prompts folder": (lambda t: ["--tasks-dir", str(tasks_dir(t, "prompt: vqa", "prompt: nope"))], "template 'nope' not found"),
    "prompts folder that does not exist": (lambda t: ["--prompts-dir", str(t / "nowhere")], "prompts folder not found"),
    "data folder that does not exist": (lambda t: ["--data", str(t / "nowhere" / "data")], "data folder not found"),
    "winoground with shots": (lambda t: ["--task", "winoground", "--shots", "0,4"], "zero-shot only"),
    "seeds with rices": (lambda t: ["--seeds", "1,2"], "--seeds applies to --selection random"),
    "rices encoder with random shots": (lambda t: ["--selection", "random", "--rices-encoder", "model"],
                                        "--rices-encoder applies to --selection rices only"),
    "ROC AUC over one class": (lambda t: ["--task", "hatefulmemes", "--shots", "0", "--limit", "1"], "ROC AUC needs both classes"),
    "unknown dtype": (lambda t: ["--dtype", "float8"], "--dtype 'float8'"),
    "no model": (lambda t: ["--no-demo"], "no model"),
    "config file unknown key": (lambda t: ["--config", str(config_file(t, "max_new_token: 3\n"))], "unknown option 'max_new_token'"),
    "config file bad value": (lambda t: ["--config", str(config_file(t, "limit: many\n"))], "limit: 'many' is not a valid integer"),
    "config file not a mapping": (lambda t: ["--config", str(config_file(t, "- limit\n"))], "is not a mapping of run options"),
}
# Found only once the model is loaded (its context) and its tokenizer measures the prompts, before anything
# runs on them; run into a folder holding the earlier results alone (their manifest would refuse the
# changed settings first).
PROMPT_CASES = {
    "context beyond the model's": (lambda t: ["--max-length", "4096"], "--max-length 4096 is more than the 2048 tokens"),
    "context shorter than every prompt": (lambda t: ["--max-length", "10"], "more than the 10 of --max-length; raise --max-length"),
    "question longer than the context": (lambda t: ["--data", str(data_copy(t, long_question))], "query 152904000: its prompt needs"),
}
MODEL_CASES = {
    "checkpoint folder that does not exist": (lambda t: str(t / "no" / "such" / "checkpoint"), "model folder not found"),
    "checkpoint folder without a model": (lambda t: str((t / "empty").mkdir() or t / "empty"), "holds no model"),
    "tokenizer without the image tokens": (checkpoint_without_image_tokens, "does not know <image>"),
    "pickle weights": (pickle_checkpoint, "--allow-pickle-weights"),
    "config of another architecture": (checkpoint_with_config(json.dumps(GPT2_CONFIG)),
                                       "config.model_type 'gpt2' is not a supported family; supported: idefics"),
    "config.json invalid JSON": (checkpoint_with_config('{"model_type": "idefics",'), "config.json is not valid JSON"),
    "config.json without model_type": (checkpoint_with_config('{"hidden_size": 64}'), "config.json has no model_type"),
    "config.json not an object": (checkpoint_with_config("[]"), "is not a model config"),
    "truncated safetensors": (damaged_weights(lambda b: b[: len(b) // 2]), "model.safetensors is corrupt or truncated"),
    "safetensors with a corrupt header": (damaged_weights(lambda b: b[:8] + b"#" + b[9:]), "model.safetensors is corrupt or truncated"),
    "demo and model together": (lambda t: str(DEMO), "--demo and --model both given"),
}


# `idefics-eval prompt` (the dry run) refuses what run refuses, and its own query choice, in one line.
DRY_RUN_CASES = {
    "query id not in the split": (["--query-id", "no-such-query"], "--query-id 'no-such-query': no query of vqav2/validation"),
    "query index past the split": (["--query-index", "100000"], "--query-index 100000: vqav2/validation has"),
    "context beyond the model's": (["--max-length", "4096"], "--max-length 4096 is more than the 2048 tokens"),
    "more shots than the support split": (["--shots", "100000"], "fewer than the 100000 shots asked for"),
    "zero-shot-only task": (["--task", "winoground", "--shots", "2"], "task winoground is zero-shot only"),
}


def assert_clean_refusal(code: int, err: str, message: str, previous: Path, before: bytes) -> None:
    assert code == 2, err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (previous / "results.json").read_bytes() == before


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_bad_run_input(case, previous, tmp_path, capsys):
    make_args, message = RUN_CASES[case]
    before = (previous / "results.json").read_bytes()
    args = make_args(tmp_path)
    base = {"--task": "vqav2", "--shots": "0,4", "--limit": "2"}
    extra = []
    demo = ["--demo"]
    if args == ["--no-demo"]:
        args, demo = [], []
    for key, value in zip(args[::2], args[1::2]):
        if key in base:
            base[key] = value
        else:
            extra += [key, value]
    command = ["run", *demo, "--output-dir", str(previous), "--no-progress", "--num-beams", "1", *extra]
    for key, value in base.items():
        command += [key, value]
    assert_clean_refusal(*invoke(capsys, *command), message, previous, before)


@pytest.mark.parametrize("case", sorted(PROMPT_CASES))
def test_prompt_too_long_for_the_context(case, previous, tmp_path, capsys):
    make_args, message = PROMPT_CASES[case]
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(previous / "results.json", folder)
    before = (folder / "results.json").read_bytes()
    code, err = invoke(capsys, "run", "--task", "vqav2", "--demo", "--shots", "0,4", "--limit", "2", "--num-beams", "1",
                       "--output-dir", str(folder), "--no-progress", *make_args(tmp_path))
    assert_clean_refusal(code, err, message, folder, before)


@pytest.mark.parametrize("case", sorted(DRY_RUN_CASES))
def test_bad_dry_run_input(case, previous, tmp_path, capsys):
    args, message = DRY_RUN_CASES[case]
    before = (previous / "results.json").read_bytes()
    base = {"--task": "vqav2", "--shots": "2"} | dict(zip(args[::2], args[1::2]))
    command = ["prompt", "--demo", "--cache-dir", str(tmp_path / "cache"), *[x for pair in base.items() for x in pair]]
    assert_clean_refusal(*invoke(capsys, *command), message, previous, before)


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_bad_model(case, previous, tmp_path, capsys):
    make_model, message = MODEL_CASES[case]
    before = (previous / "results.json").read_bytes()
    demo = ["--demo"] if case == "demo and model together" else ["--data", str(DEMO)]
    model = make_model(tmp_path)
    capsys.readouterr()  # what building the fixture printed
    code, err = invoke(capsys, "run", "--task", "vqav2", "--shots", "0", "--limit", "2", "--model", model,
                       *demo, "--output-dir", str(previous), "--no-progress")
    assert_clean_refusal(code, err, message, previous, before)


def test_output_folder_that_cannot_be_written(previous, tmp_path, capsys):
    before = (previous / "results.json").read_bytes()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = invoke(capsys, "run", "--task", "vqav2", "--demo", "--shots", "0", "--output-dir", str(blocker / "out"))
    assert_clean_refusal(code, err, "cannot write to the output folder", previous, before)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda lines: lines + [lines[0]], "appears twice"),
        (lambda lines: lines + [json.dumps({"id": "999", "prediction": "x"})], "query id 999 is not in"),
        (lambda lines: lines[:-1], "no prediction for query"),
        (lambda lines: lines[:1] + ["{not json"], "is not a JSON prediction line"),
        (lambda lines: lines[:1] + ['{"id": "x", "prediction": "caf\udce9"}'], ":2 is not UTF-8"),  # a Latin-1 byte
    ],
)
def test_bad_predictions_for_score(previous, tmp_path, capsys, edit, message):
    before = (previous / "results.json").read_bytes()
    lines = (previous / "predictions" / "vqav2_0shot.jsonl").read_text().splitlines()
    path = tmp_path / "bad.jsonl"
    path.write_bytes(("\n".join(edit(lines)) + "\n").encode("utf-8", "surrogateescape"))
    code, err = invoke(capsys, "score", "--task", "vqav2", "--demo", "--limit", "2", "--predictions", str(path))
    assert_clean_refusal(code, err, message, previous, before)


def changed_run(previous: Path, tmp_path: Path, change) -> Path:
    """A copy of the previous run whose results.json records something else than what is there."""
    folder = tmp_path / "changed"
    shutil.copytree(previous, folder)
    rows = json.loads((folder / "results.json").read_text())
    for row in rows:
        change(row["config"])
    (folder / "results.json").write_text(json.dumps(rows))
    return folder


SCORE_RUN_CASES = {
    "not a run folder": (lambda previous, tmp: tmp, "is not a run folder (no results.json)"),
    "data changed since the run": (lambda previous, tmp: changed_run(previous, tmp, lambda c: c["data"].update(
        query_fingerprint="0" * 16)), "are not those the run scored"),
    "task version changed since the run": (lambda previous, tmp: changed_run(previous, tmp, lambda c: c["task"].update(
        version=9)), "the run used version 9"),
}


@pytest.mark.parametrize("case", sorted(SCORE_RUN_CASES))
def test_bad_run_folder_for_score(case, previous, tmp_path, capsys):
    make_folder, message = SCORE_RUN_CASES[case]
    before = (previous / "results.json").read_bytes()
    code, err = invoke(capsys, "score", str(make_folder(previous, tmp_path)))
    assert_clean_refusal(code, err, message, previous, before)


def foreign_folder(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("mine")
    return tmp


def edited_log(previous: Path, tmp: Path) -> Path:
    """A copy of the run whose sample log's first line holds its shots as a string (edited by hand)."""
    folder = tmp / "edited"
    shutil.copytree(previous, folder)
    log = folder / "samples" / "vqav2_0shot.jsonl"
    lines = log.read_text().splitlines()
    lines[0] = json.dumps(json.loads(lines[0]) | {"shown_shots": "none"})
    log.write_text("\n".join(lines) + "\n")
    return folder


VIEW_CASES = {
    "sample line edited by hand": (lambda previous, tmp: [edited_log(previous, tmp), "-o", tmp / "site"],
                                   "is not a sample line as idefics-eval writes it"),
    "not a run folder": (lambda previous, tmp: [tmp], "is not a run folder (no results.json, manifest.json or samples/)"),
    "missing folder": (lambda previous, tmp: [tmp / "nowhere"], "is not a run folder"),
    "three runs": (lambda previous, tmp: [previous] * 3, "view takes one run folder, or two to compare; 3 given"),
    "site folder holds other files": (lambda previous, tmp: [previous, "-o", foreign_folder(tmp)],
                                      "is not a site written by `idefics-eval view`"),
}


@pytest.mark.parametrize("case", sorted(VIEW_CASES))
def test_bad_run_folder_for_view(case, previous, tmp_path, capsys):
    make_args, message = VIEW_CASES[case]
    before = (previous / "results.json").read_bytes()
    code, err = invoke(capsys, "view", *map(str, make_args(previous, tmp_path)))
    assert_clean_refusal(code, err, message, previous, before)
    assert not (previous / "view").exists()


def test_export_of_a_folder_without_results(previous, tmp_path, capsys):
    before = (previous / "results.json").read_bytes()
    code, err = invoke(capsys, "export", str(tmp_path), "--format", "csv", "-o", str(tmp_path / "x.csv"))
    assert_clean_refusal(code, err, "results.json", previous, before)


def test_export_of_a_limited_demo_run_to_the_card(previous, tmp_path, capsys):
    """The runner's own rows say they are partial: --limit 2 of the bundled data's 32 queries."""
    before = (previous / "results.json").read_bytes()
    code, err = invoke(capsys, "export", str(previous), "--format", "csv", "-o", str(tmp_path / "card.csv"))
    assert_clean_refusal(code, err, "vqav2 0-shot is partial (n=2 of 32: --limit 2, bundled demo data)", previous, before)
    assert "--allow-partial" in err and not (tmp_path / "card.csv").exists()


def test_corrupt_image_stops_naming_query_and_path_or_is_skipped_and_counted(tmp_path, capsys):
    data = data_copy(tmp_path)
    victim = sorted((data / "val2014").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])  # a truncated JPEG
    common = ["run", "--task", "vqav2", "--shots", "0", "--num-beams", "1", "--max-new-tokens", "3", "--demo",
              "--data", str(data), "--no-progress"]
    code, err = invoke(capsys, *common, "--output-dir", str(tmp_path / "stop"))
    assert code == 2 and victim.name in err and "query " in err and "--on-bad-example skip" in err
    assert len(err.strip().splitlines()) == 1
    code, _ = invoke(capsys, *common, "--output-dir", str(tmp_path / "skip"), "--on-bad-example", "skip")
    assert code == 0
    (row,) = json.loads((tmp_path / "skip" / "results.json").read_text())
    questions = json.loads((data / VAL_Q).read_text())["questions"]
    hit = sum(victim.name.endswith(f"{q['image_id']:012d}.jpg") for q in questions)
    assert row["num_skipped"] == hit > 0 and row["num_examples"] == len(questions) - hit
    lines = [json.loads(l) for l in (tmp_path / "skip" / "predictions" / "vqav2_0shot.jsonl").read_text().splitlines()]
    assert sum("error" in line for line in lines) == hit


def test_interrupted_results_write_leaves_the_old_file(previous, monkeypatch):
    from idefics_eval import results

    before = (previous / "results.json").read_bytes()

    def failing_dump(data, handle, **kwargs):
        handle.write('[{"task": "half')
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.json, "dump", failing_dump)
    with pytest.raises(OSError):
        results.write_json_atomic(previous / "results.json", [{"x": 1}])
    assert (previous / "results.json").read_bytes() == before


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "busy"
    first = subprocess.Popen([sys.executable, "-m", "idefics_eval", "run", "--task", "vqav2", "--demo", "--shots", "0,4",
                              "--limit", "12", "--batch-size", "1", "--num-beams", "1", "--output-dir", str(out), "--no-progress"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / ".lock").exists() or "pid" not in (out / ".lock").read_text():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    code, err = invoke(capsys, "run", "--task", "vqav2", "--demo", "--shots", "0", "--limit", "2", "--output-dir", str(out),
                       "--no-progress")
    assert code == 2 and "is writing to" in err
    assert first.wait(timeout=300) == 0, first.stderr.read()[-1000:]
    rows = json.loads((out / "results.json").read_text())
    assert [r["shots"] for r in rows] == [0, 4] and all(r["num_examples"] == 12 for r in rows)


def test_an_image_path_leaving_the_data_folder_is_refused(previous, tmp_path, capsys):
    outside = "../" * 40 + "etc/hostname"  # a file that exists, far above the data folder

    def file_names(records: list[dict]) -> None:
        for number, record in enumerate(records):
            record["image_id"] = outside if number == 0 else f"COCO_val2014_{record['image_id']:012d}.jpg"

    def escape(data: Path) -> None:
        edit_json(data / VAL_Q, lambda r: file_names(r["questions"]))
        edit_json(data / VAL_A, lambda r: file_names(r["annotations"]))

    tasks = tasks_dir(tmp_path, 'image_file: "COCO_val2014_{image_id:012d}.jpg"', 'image_file: "{image_id}"')
    before = (previous / "results.json").read_bytes()
    code, err = invoke(capsys, "run", "--task", "vqav2", "--demo", "--shots", "0", "--tasks-dir", str(tasks),
                       "--data", str(data_copy(tmp_path, escape)), "--output-dir", str(previous), "--no-progress")
    assert_clean_refusal(code, err, "leaves the data folder", previous, before)


DAMAGED_RUN_FILES = {
    "results.json invalid JSON": ("results.json", b'[{"task": "vqav2",'),
    "results.json of wrong types": ("results.json", b"[1, 2, 3]"),
    "results.json not UTF-8": ("results.json", b"\xff\xfe[]"),
    "manifest.json invalid JSON": ("manifest.json", b"{"),
    "manifest.json of the wrong layout": ("manifest.json", b'{"vqav2/rices": [1]}'),
}


@pytest.mark.parametrize("case", sorted(DAMAGED_RUN_FILES))
def test_damaged_run_folder_is_refused_before_the_model_loads_and_left_as_is(case, previous, tmp_path, capsys):
    name, content = DAMAGED_RUN_FILES[case]
    folder = tmp_path / "run"
    shutil.copytree(previous, folder)
    (folder / name).write_bytes(content)
    code, err = invoke(capsys, "run", "--task", "vqav2", "--demo", "--shots", "0", "--limit", "2", "--num-beams", "1",
                       "--max-new-tokens", "3", "--output-dir", str(folder), "--no-progress")
    assert code == 2 and name in err and "move it away" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (folder / name).read_bytes() == content
    if name == "results.json":  # the reporting commands read it the same way
        for command in (["export", str(folder)], ["compare", str(folder), str(previous)], ["plot", str(folder), "-o", str(tmp_path / "plots")]):
            code, err = invoke(capsys, *command)
            assert code == 2 and name in err and len(err.strip().splitlines()) == 1, (command, err)


def test_a_checkpoint_of_another_architecture_is_refused_before_anything_loads(tmp_path, monkeypatch):
    """Directly through load_model (the API and sweeps call it without the run's cheap checks), for a
    folder and for a hub id, whose config.json is fetched alone first."""
    from idefics_eval import models
    from idefics_eval.errors import UserError
    from idefics_eval.models import base, idefics

    def must_not_load(*args, **kwargs):
        raise AssertionError("weights or processor loaded for a checkpoint of another architecture")

    monkeypatch.setattr(idefics.IdeficsForVisionText2Text, "from_pretrained", must_not_load)
    monkeypatch.setattr(base.AutoProcessor, "from_pretrained", must_not_load)
    folder = checkpoint_with_config(json.dumps(GPT2_CONFIG))(tmp_path)
    supported = ", ".join(models.SUPPORTED_FAMILIES)
    with pytest.raises(UserError, match=f"^{folder}: config.model_type 'gpt2' is not a supported family; supported: {supported}$"):
        models.load_model(folder)
    monkeypatch.setattr(models.PretrainedConfig, "get_config_dict", lambda name, **kwargs: (dict(GPT2_CONFIG), {}))
    with pytest.raises(UserError, match="^someone/gpt2-xl: config.model_type 'gpt2' is not a supported family"):
        models.load_model("someone/gpt2-xl")


def remove(folder: Path) -> None:
    shutil.rmtree(folder)


def remove_and_make_again(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.mkdir()


# The hook after whose first call the folder goes (monkeypatched, so no timing is involved), and how.
REMOVED_DURING_THE_RUN = {
    "between batches": (predictions.PredictionWriter, "write", remove),
    "between shot counts": (runner, "finish_predictions", remove),
    "removed and made again between shot counts": (runner, "finish_predictions", remove_and_make_again),
}


@pytest.mark.parametrize("case", sorted(REMOVED_DURING_THE_RUN))
def test_an_output_folder_removed_during_the_run_stops_it_in_one_line(case, tmp_path, capsys, monkeypatch):
    owner, name, damage = REMOVED_DURING_THE_RUN[case]
    original = getattr(owner, name)
    out = tmp_path / "run"
    calls = []

    def then_remove(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(name)
        if len(calls) == 1:
            damage(out)
        return result

    monkeypatch.setattr(owner, name, then_remove)
    command = ["run", "--task", "vqav2", "--demo", "--shots", "0,1", "--limit", "2", "--batch-size", "1", "--num-beams", "1",
               "--max-new-tokens", "3", "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(out), "--no-progress"]
    code, err = invoke(capsys, *command)
    assert code == 2 and f"the output folder {out} was removed during the run" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (out / "results.json").exists() and not (out / "predictions").exists()  # nothing half-written into it
    monkeypatch.setattr(owner, name, original)
    assert invoke(capsys, *command)[0] == 0  # the rerun starts again
    assert [row["shots"] for row in json.loads((out / "results.json").read_text())] == [0, 1]


@pytest.mark.parametrize("kind, case", [("run", "unwritable cache folder"), ("model", "truncated safetensors")])
def test_cheap_checks_come_before_the_model_loads(kind, case, previous, tmp_path, capsys, monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError(f"the model loaded before {case} was found")

    monkeypatch.setattr(runner, "load_model", must_not_load)
    if kind == "run":
        test_bad_run_input(case, previous, tmp_path, capsys)
    else:
        test_bad_model(case, previous, tmp_path, capsys)


def hf_rows(edit=None) -> list[dict]:
    """Four VQAv2-style rows (HuggingFaceM4/VQAv2 columns) with tiny images, then `edit(rows)`."""
    from PIL import Image

    rows = [{"question_id": i, "image_id": i, "image": Image.new("RGB", (8, 8), (40 * i, 90, 20)), "question": f"Q{i}?",
             "answers": ["yes", "yes", "no"], "answer_type": "yes/no", "question_type": "is"} for i in range(4)]
    if edit:
        edit(rows)
    return rows


HF_CASES = {  # a column holds one type in every row (Arrow), so the first two edit them all
    "missing column": (lambda rows: [row.pop("question") for row in rows], "no column 'question'"),
    "column of the wrong type": (lambda rows: [row.update(answers=5) for row in rows], "column 'answers' holds int, not answers"),
    "empty answer list": (lambda rows: rows[0].update(answers=[]), "example 0 of vqav2/validation has no answers"),
}


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_bad_huggingface_dataset_is_one_line(case, previous, tmp_path, capsys):
    """Parquet files named by split, loaded by the datasets library: its bars and warnings stay off
    stderr with --no-progress, so the refusal is the only line."""
    import datasets

    edit, message = HF_CASES[case]
    folder = tmp_path / "hf"
    folder.mkdir()
    for split in ("train", "validation"):  # of one schema, or the library refuses the folder
        frame = datasets.Dataset.from_list(hf_rows(edit)).cast_column("image", datasets.Image())
        frame.to_parquet(str(folder / f"{split}-00000.parquet"))
    capsys.readouterr()  # what building the fixture printed
    before = (previous / "results.json").read_bytes()
    code, err = invoke(capsys, "run", "--task", "vqav2", "--demo", "--data", str(folder), "--shots", "0", "--limit", "2",
                       "--num-beams", "1", "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(previous), "--no-progress")
    assert_clean_refusal(code, err, message, previous, before)


ROW = {"task": "vqav2", "shots": 0, "selection": "rices", "seed": None, "metrics": {"vqa_accuracy": 50.0}, "num_examples": 2,
       "num_truncated": 0, "predictions": "predictions/vqav2_0shot.jsonl", "config": {"model": {"name": "m", "fingerprint": "f"}}}
WRONG_TYPED_RESULTS = {
    "a JSON string": (b'"results"', "expected a list of result rows, found a string"),
    "a row that is a list": (json.dumps([ROW, [ROW]]).encode(), "row 1: expected an object, found a list"),
    "a score that is text": (json.dumps([ROW | {"metrics": {"vqa_accuracy": "high"}}]).encode(),
                             "row 0: metrics['vqa_accuracy'] holds a string, not a number"),
    "a shot count that is text": (json.dumps([ROW | {"shots": "4"}]).encode(), "row 0: shots holds a string"),
    "a model that is not an object": (json.dumps([ROW | {"config": {"model": "m"}}]).encode(), "row 0: config.model holds a string"),
    "nested too deeply": (b"[" * 100_000, "nested too deeply"),
}


@pytest.mark.parametrize("case", sorted(WRONG_TYPED_RESULTS))
def test_results_of_wrong_types_for_the_reports(case, previous, tmp_path, capsys):
    content, message = WRONG_TYPED_RESULTS[case]
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "results.json").write_bytes(content)
    for command in (["export", str(folder)], ["export", str(folder), "--layout", "long", "--no-ci"],
                    ["compare", str(folder), str(previous)], ["plot", str(folder), "-o", str(tmp_path / "plots")]):
        code, err = invoke(capsys, *command)
        assert code == 2 and f"{folder / 'results.json'} is not a results file" in err and message in err, (command, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (folder / "results.json").read_bytes() == content


TEMPLATE_CASES = {
    "unbalanced opening brace": ('example: "<image>Question: {question Answer: {answer}\\n"', "'Question: {question Answer: {answer}\\n'"),
    "stray closing brace": ('example: "Look} <image>Question: {question} Answer: {answer}"', "'Look} '"),
    "positional slot": ('example: "<image>Question: {} Answer: {answer}"', "'Question: {} Answer: {answer}'"),
    "nested too deeply": ("example: " + "[" * 10_000, "is nested too deeply to read"),
}


@pytest.mark.parametrize("case", sorted(TEMPLATE_CASES))
def test_bad_prompt_template_is_refused_when_loaded(case, tmp_path):
    from idefics_eval.prompts import parse_template

    text, message = TEMPLATE_CASES[case]
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\nversion: 1\n{text}\n")
    with pytest.raises(UserError) as refused:
        parse_template(path)
    assert str(refused.value).startswith(str(path)) and message in str(refused.value)
    assert "\n" not in str(refused.value)


ERROR_KINDS = {
    "user error": (lambda: UserError("bad\ninput  in\ttwo lines"), 2, "error: bad input in two lines"),
    "click error": (lambda: click.ClickException("bad\nflag"), 2, "error: bad flag"),
    "internal error": (lambda: RuntimeError("broke\nhere"), 1, "internal error: RuntimeError: broke here (re-run"),
}


@pytest.mark.parametrize("case", sorted(ERROR_KINDS))
def test_an_error_is_printed_on_one_line_whatever_its_text(case, capsys, monkeypatch):
    from idefics_eval import reports

    make, status, line = ERROR_KINDS[case]

    def failing(*args, **kwargs):
        raise make()

    monkeypatch.setattr(reports, "task_table", failing)
    code, err = invoke(capsys, "tasks")
    assert code == status and err.startswith(line) and len(err.strip().splitlines()) == 1, err


def test_an_unreachable_clip_encoder_says_how_to_do_without_it(monkeypatch):
    import torch

    from idefics_eval.models import ClipEncoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as caught:
        ClipEncoder("nobody/no-such-clip", torch.device("cpu"))
    message = str(caught.value)
    assert "nobody/no-such-clip" in message and "--rices-encoder model" in message and "\n" not in message


RUN_FILES = ["results.json", "manifest.json", "config.yaml", "predictions/vqav2_0shot.jsonl", "samples/vqav2_0shot.jsonl"]


@pytest.mark.parametrize("target", RUN_FILES)
def test_a_report_written_over_a_file_of_a_run_folder_is_refused(target, previous, tmp_path, capsys):
    """`-o` naming a run's own results, manifest, config, predictions or sample log would destroy the run."""
    folder = tmp_path / "run"
    shutil.copytree(previous, folder)
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    output = str(folder / target)
    for command in (["export", str(previous), "--allow-partial", "-o", output], ["compare", str(previous), str(previous), "-o", output],
                    ["score", str(previous), "-o", output], ["submission", str(previous), "--task", "vqav2_testdev", "-o", output]):
        code, err = invoke(capsys, *command)
        assert code == 2 and f"{output} is a file of the run folder {folder}" in err, (command, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == before


def test_a_full_disk_during_the_run_is_one_line_and_the_rerun_continues(tmp_path, capsys, monkeypatch):
    """No space left (ENOSPC) is the user's to fix, not an internal error: one line, status 2, and
    the same command continues once there is space."""
    import errno

    original = predictions.PredictionWriter.write
    calls = []

    def full_after_one_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(*args, **kwargs)

    monkeypatch.setattr(predictions.PredictionWriter, "write", full_after_one_batch)
    out = tmp_path / "run"
    command = ["run", "--task", "vqav2", "--demo", "--shots", "0", "--limit", "2", "--batch-size", "1", "--num-beams", "1",
               "--max-new-tokens", "3", "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(out), "--no-progress"]
    code, err = invoke(capsys, *command)
    assert code == 2 and "no space left on the device" in err and "rerun the same command" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    monkeypatch.setattr(predictions.PredictionWriter, "write", original)
    assert invoke(capsys, *command)[0] == 0
    assert json.loads((out / "results.json").read_text())[0]["num_examples"] == 2


def test_plot_into_a_place_it_cannot_write_is_one_line(previous, tmp_path, capsys):
    code, err = invoke(capsys, "plot", str(previous), "-o", str(blocked(tmp_path)))
    assert code == 2 and "cannot write" in err and "choose another -o" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_demo_model_into_a_place_it_cannot_write_is_one_line(where, tmp_path, capsys):
    target = blocked(tmp_path) if where == "under a file" else tmp_path / "file"
    (tmp_path / "file").write_text("x")
    code, err = invoke(capsys, "demo-model", str(target))
    assert code == 2 and str(target) in err and "choose" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (tmp_path / "file").read_text() == "x"


REPORT_OPTION_CASES = {  # each once ran into an internal error (no resamples to take a percentile of) or printed 1.0E+2
    "compare with no resamples": (["compare", "{run}", "{run}", "--resamples", "0"], "--resamples"),
    "export long with negative resamples": (["export", "{run}", "--layout", "long", "--resamples", "-5"], "--resamples"),
    "plot intervals with no resamples": (["plot", "{run}", "--ci", "--resamples", "0", "-o", "{tmp}/plots"], "--resamples"),
    "export with negative decimals": (["export", "{run}", "--allow-partial", "--decimals", "-1"], "--decimals"),
}


@pytest.mark.parametrize("case", sorted(REPORT_OPTION_CASES))
def test_bad_report_option_is_one_line(case, previous, tmp_path, capsys):
    command, flag = REPORT_OPTION_CASES[case]
    code, err = invoke(capsys, *(part.format(run=previous, tmp=tmp_path) for part in command))
    assert code == 2 and flag in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_finished_predictions_file_cut_mid_line_says_how_to_recover(previous, tmp_path, capsys):
    """A finished file cut short (a full disk, a partial copy) is refused, not guessed at; the line says
    what to do, and doing it gives the file back as it was."""
    folder = tmp_path / "run"
    shutil.copytree(previous, folder)
    path = folder / "predictions" / "vqav2_0shot.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    command = ["run", "--task", "vqav2", "--demo", "--shots", "0", "--limit", "2", "--num-beams", "1", "--max-new-tokens", "3",
               "--output-dir", str(folder), "--no-progress"]
    code, err = invoke(capsys, *command)
    assert code == 2 and f"{path}:2 is not a JSON prediction line" in err and "delete it and rerun" in err, err
    assert len(err.strip().splitlines()) == 1 and path.read_bytes() == whole[: len(whole) // 2]
    path.unlink()
    assert invoke(capsys, *command)[0] == 0
    assert path.read_bytes() == whole


def test_tasks_lists_no_task_file_that_run_would_refuse(tmp_path, capsys):
    folder = tasks_dir(tmp_path, "name: vqav2", "name: my_vqa")
    code, err = invoke(capsys, "tasks", "--tasks-dir", str(folder))
    assert code == 2 and f"{folder / 'vqav2.yaml'}: name 'my_vqa' does not match the file name 'vqav2'" in err, err
