"""`idefics-eval prompt`: the dry run prints what the run feeds the model, for every bundled task.

For each task, one `run --demo --limit 1` (more where the metric needs them) records the token ids
the run builds for its queries (the generator's inputs, or the ranker's context and candidates) and
the shots in its predictions file; `prompt --json` for each query must give the same ids, the same shots, and ids equal to
IdeficsProcessor's own encoding of the prompt's interleaved images and text.
"""

from __future__ import annotations

import json

import pytest
from transformers import AutoProcessor, IdeficsForVisionText2Text

from idefics_eval import dry_run, ranking
from idefics_eval.cli import cli
from idefics_eval.demo.model import save_demo_model
from idefics_eval.engine import Generator, load_image
from idefics_eval.formats import BUNDLED
from idefics_eval.models import CANARY_DIR
from idefics_eval.predictions import prediction_file, read_predictions
from idefics_eval.results import read_results
from idefics_eval.tasks import load_task, task_files

from conftest import invoke

TASKS = sorted(task_files())
LIMITS = {"hatefulmemes": 3}  # ROC AUC needs both classes: the bundled test split's first label 1 is its third query


def limit(task: str) -> int:
    """Queries per run: one, or the fewest the task's metric is defined on."""
    return LIMITS.get(task, 1)


def shot_counts(task: str) -> list[int]:
    return [0] if load_task(task).zero_shot_only else [0, 2]


@pytest.fixture(scope="module")
def processor():
    return AutoProcessor.from_pretrained(CANARY_DIR)


def capture_run(monkeypatch, capsys, task: str, tmp_path, *extra: str) -> tuple[list, list]:
    """Run `task` on its first query; return what each model request was built from, in run order:
    generation inputs (token ids), and ranked contexts (context text, candidates' scored ids)."""
    generated, ranked = [], []

    def record(inputs):
        for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"]):
            generated.append(ids[mask.bool()].tolist())
        return inputs

    text_inputs, encode, requests = Generator.text_inputs, Generator.encode, ranking.Ranker.requests
    monkeypatch.setattr(Generator, "text_inputs", lambda self, prompts: record(text_inputs(self, prompts)))
    monkeypatch.setattr(Generator, "encode", lambda self, prompts: record(encode(self, prompts)))

    def scored(self, context, continuations):
        result = requests(self, context, continuations)
        ranked.append((self._texts(context, continuations)[0], [ids[len(ids) - count:] for ids, count in result]))
        return result

    monkeypatch.setattr(ranking.Ranker, "requests", scored)
    shots = ",".join(map(str, shot_counts(task)))
    code, _, err = invoke(capsys, "run", "--task", task, "--demo", "--shots", shots, "--limit", str(limit(task)), "--num-beams",
                          "1", "--max-new-tokens", "3", "--output-dir", str(tmp_path / "run"), "--cache-dir",
                          str(tmp_path / "cache"), "--no-progress", *extra)
    assert code == 0, err
    monkeypatch.undo()
    return generated, ranked


def dry(monkeypatch, capsys, task: str, shots: int, tmp_path, *extra: str, model=("--demo",)) -> tuple[dict, dry_run.PromptView]:
    """`prompt --json`'s object, and the view it printed (to reach the prompt's interleaved items)."""
    views = []
    build = dry_run.prompt_view
    monkeypatch.setattr(dry_run, "prompt_view", lambda *args: views.append(build(*args)) or views[-1])
    code, out, err = invoke(capsys, "prompt", "--task", task, *model, "--shots", str(shots), "--cache-dir",
                            str(tmp_path / "cache"), "--json", *extra)
    assert code == 0, err
    monkeypatch.undo()
    return json.loads(out), views[0]


def processor_ids(processor, prompt) -> list[int]:
    items = [item if isinstance(item, str) else load_image(item) for item in prompt.items]
    return processor(text=[items], return_tensors="pt")["input_ids"][0].tolist()


@pytest.mark.parametrize("task", TASKS)
def test_prompt_is_what_the_run_feeds(task, processor, monkeypatch, capsys, tmp_path):
    generated, ranked = capture_run(monkeypatch, capsys, task, tmp_path)
    n = limit(task)
    for setting, shots in enumerate(shot_counts(task)):
        predictions = read_predictions(prediction_file(tmp_path / "run", task, shots, None))
        shown = [dry(monkeypatch, capsys, task, shots, tmp_path, "--query-index", str(i)) for i in range(n)]
        for (view_json, view), prediction in zip(shown, predictions, strict=True):
            check_view(view_json, view, processor, prediction, shots)
        if load_task(task).request == "generate":  # a batch runs longest first: compare as sets
            assert sorted(generated[setting * n:(setting + 1) * n]) == sorted(j["input_ids"] for j, _ in shown)
            assert all("candidates" not in j for j, _ in shown)
            continue
        # ranked: the ranker's context per request (Winoground: one per image) and each candidate's scored ids, in order
        contexts = [context for j, _ in shown for context in j.get("contexts", [j])]
        fed = ranked[setting * len(contexts):(setting + 1) * len(contexts)]
        assert [c["text"] for c in contexts] == [text for text, _ in fed]
        assert [[c["continuation_ids"] for c in context["candidates"]] for context in contexts] == [ids for _, ids in fed]


def check_view(shown: dict, view: dry_run.PromptView, processor, prediction, shots: int) -> None:
    """The printed ids are the processor's encoding of the prompt; the shots are the run's."""
    assert set(shown) >= {"text", "input_ids", "shot_ids", "similarities"}
    for context, request in zip(shown.get("contexts", [shown]), view.requests, strict=True):
        assert context["input_ids"] == processor_ids(processor, request.prompt)
        assert context["text"] == request.text
    assert shown["query_id"] == prediction.id
    assert shown["shot_ids"] == list(prediction.shots) and len(prediction.shots) == shots
    assert shown["similarities"] is not None and len(shown["similarities"]) == shots
    assert shown["similarities"] == sorted(shown["similarities"])  # RICES: most similar last


def test_shots_dropped_to_fit_the_context_are_dropped_in_the_dry_run_too(monkeypatch, capsys, tmp_path):
    limit_args = ("--max-length", "50")  # the 2-shot prompt needs 70 tokens, the zero-shot one about 25
    generated, _ = capture_run(monkeypatch, capsys, "vqav2", tmp_path, *limit_args)
    prediction = read_predictions(prediction_file(tmp_path / "run", "vqav2", 2, None))[0]
    shown, _ = dry(monkeypatch, capsys, "vqav2", 2, tmp_path, "--max-new-tokens", "3", *limit_args)
    assert prediction.dropped_shots > 0 and shown["dropped_shots"] == prediction.dropped_shots
    assert shown["shot_ids"] == list(prediction.shots) and len(shown["similarities"]) == len(prediction.shots)
    assert shown["input_ids"] == generated[1] and len(shown["input_ids"]) <= 50 - 3


def test_random_selection_shows_the_runs_shots_and_no_similarities(monkeypatch, capsys, tmp_path):
    code, _, err = invoke(capsys, "run", "--task", "okvqa", "--demo", "--shots", "2", "--selection", "random", "--seeds", "3",
                          "--limit", "1", "--num-beams", "1", "--max-new-tokens", "3", "--output-dir", str(tmp_path / "run"),
                          "--no-progress")
    assert code == 0, err
    shown, _ = dry(monkeypatch, capsys, "okvqa", 2, tmp_path, "--selection", "random", "--seed", "3")
    prediction = read_predictions(prediction_file(tmp_path / "run", "okvqa", 2, 3))[0]
    assert shown["shot_ids"] == list(prediction.shots) and len(prediction.shots) == 2
    assert shown["similarities"] is None


def test_a_checkpoint_folder_gives_its_processor_and_no_weights_load(monkeypatch, capsys, tmp_path):
    """Random shots need no image encoder: the dry run reads the checkpoint's processor and config only."""
    save_demo_model(tmp_path / "checkpoint", seed=0)

    def no_weights(*args, **kwargs):
        raise AssertionError("the dry run loaded model weights")

    monkeypatch.setattr(IdeficsForVisionText2Text, "from_pretrained", no_weights)
    shown, view = dry(monkeypatch, capsys, "okvqa", 2, tmp_path, "--selection", "random",
                      model=("--model", str(tmp_path / "checkpoint"), "--data", str(BUNDLED / "okvqa")))
    own = AutoProcessor.from_pretrained(tmp_path / "checkpoint")
    assert shown["input_ids"] == processor_ids(own, view.requests[0].prompt) and len(shown["shot_ids"]) == 2


def test_a_clip_encoder_gives_the_runs_shots_without_the_models_weights(tiny_clip, monkeypatch, capsys, tmp_path):
    code, _, err = invoke(capsys, "run", "--task", "vqav2", "--demo", "--shots", "2", "--limit", "1", "--num-beams", "1",
                          "--max-new-tokens", "3", "--rices-encoder", str(tiny_clip), "--output-dir", str(tmp_path / "run"),
                          "--cache-dir", str(tmp_path / "cache"), "--no-progress")
    assert code == 0, err
    prediction = read_predictions(prediction_file(tmp_path / "run", "vqav2", 2, None))[0]

    def no_weights(*args, **kwargs):
        raise AssertionError("the dry run loaded the IDEFICS weights")

    monkeypatch.setattr(IdeficsForVisionText2Text, "from_pretrained", no_weights)
    shown, _ = dry(monkeypatch, capsys, "vqav2", 2, tmp_path, "--rices-encoder", str(tiny_clip))
    assert shown["shot_ids"] == list(prediction.shots) and len(shown["similarities"]) == 2


def test_query_id_and_text_output(monkeypatch, capsys, tmp_path):
    first, _ = dry(monkeypatch, capsys, "vqav2", 0, tmp_path, "--query-index", "1")
    by_id, _ = dry(monkeypatch, capsys, "vqav2", 0, tmp_path, "--query-id", first["query_id"])
    assert by_id == first
    code, out, err = invoke(capsys, "prompt", "--task", "hatefulmemes", "--demo", "--shots", "2", "--cache-dir",
                            str(tmp_path / "cache"))
    assert code == 0, err
    assert "similarity" in out and "tokens ---" in out and "candidates, each appended to the prompt above" in out


@pytest.mark.parametrize("args, message", [
    (["--query-id", "no-such-query"], "--query-id 'no-such-query': no query of vqav2/validation has that id"),
    (["--query-index", "100000"], "--query-index 100000: vqav2/validation has"),
    (["--query-index", "-1"], "--query-index -1: vqav2/validation has"),
    (["--query-index", "0", "--query-id", "x"], "--query-index and --query-id both given"),
    (["--seed", "2"], "--seed applies to --selection random only"),
])
def test_bad_query_is_one_line_exit_2(args, message, capsys, tmp_path):
    code, out, err = invoke(capsys, "prompt", "--task", "vqav2", "--demo", "--shots", "0", "--cache-dir", str(tmp_path), *args)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("task", ["vqav2", "renderedsst2"])
def test_without_start_token_the_dry_run_shows_what_the_run_feeds(task, processor, monkeypatch, capsys, tmp_path):
    """A task file's `add_start_token: false` reaches the run's requests and the dry run alike."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    text = task_files()[task].read_text()
    (folder / f"{task}.yaml").write_text(text.replace("\nsources:", "\nadd_start_token: false\nsources:", 1))
    generated, ranked = capture_run(monkeypatch, capsys, task, tmp_path, "--tasks-dir", str(folder))
    shown, _ = dry(monkeypatch, capsys, task, 0, tmp_path, "--tasks-dir", str(folder), "--query-index", "0")
    assert shown["input_ids"][0] != processor.tokenizer.bos_token_id
    if load_task(task).request == "generate":
        assert shown["input_ids"] == generated[0]
    else:
        assert shown["text"] == ranked[0][0] and not shown["text"].startswith(processor.tokenizer.bos_token)


@pytest.mark.parametrize("task, data", [("vqav2", ["--data", str(BUNDLED / "vqav2")]),
                                        ("nocaps", ["--data", str(BUNDLED / "nocaps"), "--support-data", str(BUNDLED / "coco")])])
def test_demo_data_gives_any_model_the_bundled_sample_as_run_does(task, data, monkeypatch, capsys, tmp_path):
    """`prompt --demo-data` with a checkpoint folder: the prompt with --data (and --support-data) naming the sample."""
    code, _, err = invoke(capsys, "demo-model", str(tmp_path / "checkpoint"))
    assert code == 0, err
    model = ("--model", str(tmp_path / "checkpoint"))
    shown, _ = dry(monkeypatch, capsys, task, 4, tmp_path, model=(*model, "--demo-data"))
    assert len(shown["shot_ids"]) == 4 and shown["input_ids"]
    assert dry(monkeypatch, capsys, task, 4, tmp_path, model=(*model, *data))[0] == shown
    run_flag, prompt_flag = ({p.name: p for p in cli.commands[c].params}["demo_data"] for c in ("run", "prompt"))
    assert (prompt_flag.opts, prompt_flag.is_flag, prompt_flag.help) == (run_flag.opts, run_flag.is_flag, run_flag.help)


@pytest.mark.parametrize("split", ["reporting", "selection"])
def test_the_header_and_json_name_the_query_split_as_the_run_records_it(split, monkeypatch, capsys, tmp_path):
    code, _, err = invoke(capsys, "run", "--task", "vqav2", "--demo", "--shots", "2", "--split", split, "--limit", "1",
                          "--num-beams", "1", "--max-new-tokens", "3", "--output-dir", str(tmp_path / "run"), "--cache-dir",
                          str(tmp_path / "cache"), "--no-progress")
    assert code == 0, err
    row = read_results(tmp_path / "run" / "results.json")[0]
    prediction = read_predictions(prediction_file(tmp_path / "run", "vqav2", 2, None))[0]
    shown, _ = dry(monkeypatch, capsys, "vqav2", 2, tmp_path, "--split", split)
    queries = row.config["data"]["query_split"]
    assert shown["query_id"] == prediction.id and shown["shot_ids"] == list(prediction.shots)
    if split == "selection":
        assert shown["split"] == {**row.config["split"], "queries": queries} and queries == "vqav2/selection"
        words = f"of vqav2/selection, the selection split ({row.config['num_queries']} queries held out of vqav2/train, seed 0)"
    else:
        assert "split" not in row.config and queries == "vqav2/validation"
        assert shown["split"] == {"name": "reporting", "queries": queries, "size": row.config["num_queries"]}
        words = f"of vqav2/validation, the reporting split ({row.config['num_queries']} queries)"
    code, out, err = invoke(capsys, "prompt", "--task", "vqav2", "--demo", "--shots", "2", "--split", split, "--cache-dir",
                            str(tmp_path / "cache"))
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"task vqav2 (generate), query {prediction.id} {words}, 2 shots (rices)")
