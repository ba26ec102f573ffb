"""Protocols (protocols/*.yaml, --protocol): per-task overrides applied where the task spec is loaded,
rendered as PROTOCOL.md's tables say, recorded in the rows and the manifest, and part of a folder's identity."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from idefics_eval.dry_run import prompt_view
from idefics_eval.errors import UserError
from idefics_eval.model_requests import shot_answer
from idefics_eval.plan import RunConfig, prepare
from idefics_eval.prompts import load_template
from idefics_eval.protocols import apply_protocol, load_protocol, shipped_names
from idefics_eval.sweep import SweepConfig, _run_config
from idefics_eval.tasks import load_task, task_files

from conftest import invoke

ROOT = Path(__file__).resolve().parents[1]
FAKE = "<fake_token_around_image>"
IMAGE = f"{FAKE}<image>{FAKE}"
FAST = ("--task", "vqav2", "--demo", "--shots", "0", "--limit", "2", "--num-beams", "1", "--max-new-tokens", "3", "--no-progress")
VQA_STOPS = ("Question", "User", "Image", "task", "What", "Who", "When", "Where", "Why", "How", "<end_of_utterance>")
CAPTION_STOPS = ("Caption", "Description", "User", "Image", "task", "<end_of_utterance>")


def digest(name: str) -> str:
    return hashlib.sha256((ROOT / "protocols" / f"{name}.yaml").read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["default", "idefics", "openflamingo"])
def test_each_shipped_protocol_validates_and_fits_every_task(name):
    assert name in shipped_names()
    protocol = load_protocol(name)
    assert protocol.name == name and protocol.digest == digest(name)
    for task in task_files():
        spec = apply_protocol(load_task(task), protocol)
        load_template(spec.prompt, where=f"{name}: {task}")  # every prompt the protocol names is shipped


def test_default_protocol_changes_no_task():
    protocol = load_protocol("default")
    for task in task_files():
        assert apply_protocol(load_task(task), protocol) == load_task(task)


def view(task: str, protocol: str, tmp_path: Path, shots: int = 0):
    """The prompt as the protocol renders it; 0-shot as true zero-shot (test_zero_shot.py shows its text-only shots)."""
    config = RunConfig(task=task, shots=(shots,), output_dir=tmp_path, demo=True, protocol=protocol, zero_shot="none",
                       selection="random" if shots else "rices", cache_dir=tmp_path / "cache", progress=False)
    return prompt_view(config)


def test_idefics_renders_the_authors_vqa_prompt_with_the_start_token(tmp_path):
    shown = view("vqav2", "idefics", tmp_path, shots=1)
    p = prepared("vqav2", "idefics", tmp_path, shots=1)
    (shot,) = [example for example in p.support.examples if example.id == shown.shot_ids[0]]
    answer = shot_answer(p.spec)(shot)
    assert shown.requests[0].text == (
        "<s>Instruction: provide an answer to the question. Use the image to answer.\n"
        f"Image:{IMAGE}Question: {shot.fields['question']} Answer: {answer}\n"
        f"Image:{IMAGE}Question: {shown.query.fields['question']} Answer:")
    assert shown.requests[0].input_ids[0] == 1  # <s>


@pytest.mark.parametrize("task, expected", [
    ("coco", "<s>Image:" + IMAGE + "Caption:"),
    ("winoground", IMAGE + "Description of the image:"),  # no start token
])
def test_idefics_renders_caption_and_winoground_prompts(task, expected, tmp_path):
    shown = view(task, "idefics", tmp_path)
    assert shown.requests[0].text == expected


def test_idefics_renders_hatefulmemes_without_the_start_token(tmp_path):
    shown = view("hatefulmemes", "idefics", tmp_path)
    prefix = ("It's a conversation between a human, the user, and an intelligent visual AI, Bot. The user sends memes with "
              "text written on them, and Bot has to say whether the meme is hateful or not.")
    text = shown.query.fields["text"]
    assert shown.requests[0].text == f'{prefix}{IMAGE}is an image with written "{text}" on it. Is it hateful? Answer:'
    assert shown.requests[0].input_ids[0] != 1


def test_default_protocol_keeps_the_start_token_on_ranked_tasks(tmp_path):
    assert view("hatefulmemes", "default", tmp_path).requests[0].text.startswith("<s>")


def test_the_dry_run_names_the_protocol(tmp_path, capsys):
    args = ("prompt", "--task", "coco", "--shots", "0", "--demo", "--protocol", "openflamingo", "--zero-shot", "none",
            "--cache-dir", str(tmp_path))
    code, out, err = invoke(capsys, *args)
    assert code == 0, err
    assert out.splitlines()[0].endswith(", protocol openflamingo") and f"<s>{IMAGE}Output:" in out
    code, out, _ = invoke(capsys, *args, "--json")
    assert json.loads(out)["protocol"] == {"name": "openflamingo", "digest": digest("openflamingo")}


def test_openflamingo_renders_its_vqa_prompt(tmp_path):
    shown = view("vqav2", "openflamingo", tmp_path)
    assert shown.requests[0].text == f"<s>{IMAGE}Question:{shown.query.fields['question']} Short answer:"


def prepared(task: str, protocol: str, tmp_path: Path, shots: int = 0):
    return prepare(RunConfig(task=task, shots=(shots,), output_dir=tmp_path, demo=True, protocol=protocol,
                             selection="random" if shots else "rices", cache_dir=tmp_path / "cache"), writes=False)


def test_protocols_set_generation_normalisation_and_shot_answers(tmp_path):
    coco = prepared("coco", "idefics", tmp_path).generation
    assert (coco.max_new_tokens, coco.early_stopping, coco.stop_words) == (15, True, CAPTION_STOPS)
    assert coco.banned_words == ("\n", "\n\n", "<image>", FAKE)
    assert prepared("okvqa", "idefics", tmp_path).generation.stop_words == VQA_STOPS
    p = prepared("textvqa", "openflamingo", tmp_path)
    assert (p.generation.max_new_tokens, p.generation.length_penalty, p.generation.banned_words) == (10, 0.0, ())
    assert p.spec.shot_answer == "first" and p.template.name == "openflamingo_vqa"
    assert prepared("imagenet", "openflamingo", tmp_path).spec.candidates.normalize == "mean"
    assert prepared("imagenet", "default", tmp_path).spec.candidates.normalize == "sum"
    assert prepared("winoground", "idefics", tmp_path).spec.candidates.normalize == "sequence_mean"
    assert prepared("vqav2", "idefics", tmp_path).config.rices_encoder == "openai/clip-vit-base-patch32"
    given = RunConfig(task="vqav2", shots=(0,), output_dir=tmp_path, demo=True, protocol="idefics", rices_encoder="model")
    assert prepare(given, writes=False).config.rices_encoder == "model"  # an explicit --rices-encoder wins


def test_sweep_passes_the_protocol_to_every_run(tmp_path):
    config = SweepConfig(checkpoints=(), tasks=("vqav2",), shots=(0,), output_dir=tmp_path, protocol="idefics")
    checkpoint = type("Checkpoint", (), {"name": "step1", "path": tmp_path})()
    assert _run_config(config, checkpoint, "vqav2").protocol == "idefics"


def run(capsys, out: Path, *extra: str) -> tuple[int, str, str]:
    return invoke(capsys, "run", *FAST, "--output-dir", str(out), "--cache-dir", str(out.parent / "cache"), *extra)


def predictions(out: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted((out / "predictions").glob("*.jsonl"))}


# The demo's predictions made before protocols existed (the commit before them), rounded scores: the
# default protocol must keep them (regenerate only for a deliberate change of the default settings).
GOLDEN = ROOT / "tests" / "data" / "default_protocol_predictions.json"
GOLDEN_RUNS = [
    ("vqav2,coco", "0,2", "2", "--num-beams", "1", "--max-new-tokens", "3"),
    ("hatefulmemes", "0,2", "4"),
    ("winoground", "0", "2"),
]


def test_default_protocol_predictions_equal_those_made_before_protocols(tmp_path, capsys):
    out = tmp_path / "golden"
    for task, shots, limit, *extra in GOLDEN_RUNS:
        code, _, err = run_any(capsys, out, "--task", task, "--shots", shots, "--limit", limit, "--selection", "random",
                               "--protocol", "default", *extra)
        assert code == 0, err
    made = {}
    for name in sorted(predictions(out)):
        rows = [json.loads(line) for line in (out / "predictions" / name).read_text().splitlines()]
        made[name] = [{"id": r["id"], "prediction": r["prediction"], "shots": r["shots"],
                       **({"scores": [round(x, 4) for x in r["scores"]]} if "scores" in r else {})} for r in rows]
    assert made == json.loads(GOLDEN.read_text())


def run_any(capsys, out: Path, *args: str) -> tuple[int, str, str]:
    return invoke(capsys, "run", "--demo", "--no-progress", "--output-dir", str(out), "--cache-dir", str(out.parent / "cache"), *args)


def test_default_protocol_predictions_equal_a_run_without_the_option(tmp_path, capsys):
    assert run(capsys, tmp_path / "plain")[0] == 0
    assert run(capsys, tmp_path / "default", "--protocol", "default")[0] == 0
    assert predictions(tmp_path / "plain") == predictions(tmp_path / "default") != {}


def ranked_lines(capsys, tmp_path: Path, task: str, protocol: str, *extra: str) -> list[dict]:
    """The sample lines of a zero-shot demo run of `task` under `protocol` (a few queries; HatefulMemes
    four, so that its ROC AUC sees both classes), true zero-shot whatever the protocol's zero-shot style
    (test_zero_shot.py shows its text-only shots), so that prompts compare across protocols."""
    out = tmp_path / f"{task}-{Path(protocol).stem}"
    limit = "4" if task == "hatefulmemes" else "2"
    code, _, err = invoke(capsys, "run", "--task", task, "--demo", "--shots", "0", "--limit", limit, "--no-progress",
                          "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "--protocol", protocol,
                          "--zero-shot", "none", *extra)
    assert code == 0, err
    return [json.loads(line) for line in (out / "samples" / f"{task}_0shot.jsonl").open()]


def test_idefics_protocol_changes_winoground_scores(tmp_path, capsys):
    """Its prompt, no start token and the whole-sequence mean score the captions otherwise; the
    whole-sequence score is a mean over every token after the first, context included: its sum over
    the same sequence (a protocol otherwise equal) is the mean times that token count."""
    scores = {protocol: ranked_lines(capsys, tmp_path, "winoground", protocol) for protocol in ("default", "idefics")}
    assert len(scores["default"]) == len(scores["idefics"]) == 2
    for default, idefics in zip(scores["default"], scores["idefics"]):
        assert default["id"] == idefics["id"] and default["scores"] != pytest.approx(idefics["scores"], abs=1e-3)
        assert not idefics["prompt"].startswith("<s>") and default["prompt"].startswith("<s>")
    summed = tmp_path / "idefics_sum.yaml"
    summed.write_text("name: idefics_sum\ntasks:\n  winoground:\n    add_start_token: false\n    prompt: idefics_winoground\n"
                      "    normalize: sequence_sum\n")
    from transformers import AutoTokenizer

    from idefics_eval.models import demo_model_name

    tokenizer = AutoTokenizer.from_pretrained(demo_model_name(None))
    for mean, total in zip(scores["idefics"], ranked_lines(capsys, tmp_path, "winoground", str(summed))):
        for index, (m, t) in enumerate(zip(mean["scores"], total["scores"])):
            caption = mean["inputs"][f"caption_{index // 2}"]
            tokens = len(tokenizer(f"{mean['prompt']} {caption}", add_special_tokens=False).input_ids) - 1
            assert t == pytest.approx(m * tokens, rel=1e-4, abs=1e-4)


def test_the_authors_sum_favours_the_shorter_of_two_candidates_where_the_mean_does_not(tmp_path, capsys):
    """A HatefulMemes whose second class extends the first: summed log-probabilities (idefics) can only
    lose by the extra tokens, so the short class always wins; the candidate-token mean divides the long
    class's sum by its token count, which narrows the gap on every query."""
    tasks_dir = tmp_path / "tasks"
    tasks_dir.mkdir()
    task = (ROOT / "tasks" / "hatefulmemes.yaml").read_text()
    (tasks_dir / "hatefulmemes.yaml").write_text(task.replace('classes: ["no", "yes"]', 'classes: ["no", "no, not at all"]'))
    mean = tmp_path / "idefics_mean.yaml"  # the idefics protocol's hatefulmemes, with the candidate-token mean
    mean.write_text("name: idefics_mean\ntasks:\n  hatefulmemes:\n    add_start_token: false\n    normalize: mean\n")
    summed = ranked_lines(capsys, tmp_path, "hatefulmemes", "idefics", "--tasks-dir", str(tasks_dir))
    averaged = ranked_lines(capsys, tmp_path, "hatefulmemes", str(mean), "--tasks-dir", str(tasks_dir))
    for total, per_token in zip(summed, averaged):
        (short, long_), (short_mean, long_mean) = total["scores"], per_token["scores"]
        assert long_ < short and total["prediction"] == "no"
        assert short_mean == pytest.approx(short, abs=1e-4)  # "no" is one token: its mean is its sum
        assert long_mean - short_mean > long_ - short + 1e-3


@pytest.mark.parametrize("task", ["hatefulmemes", "scienceqa", "imagenet"])
def test_the_idefics_protocol_scores_ranked_tasks_without_the_start_token(task, tmp_path, capsys):
    """The same prompt and summed scores, only <s> left out: every candidate's score moves."""
    default, idefics = (ranked_lines(capsys, tmp_path, task, protocol) for protocol in ("default", "idefics"))
    for with_start, without in zip(default, idefics):
        assert with_start["prompt"] == "<s>" + without["prompt"]
        assert all(abs(a - b) > 1e-4 for a, b in zip(with_start["scores"], without["scores"]))


def test_renderedsst2_keeps_the_start_token_and_its_scores_under_idefics(tmp_path, capsys):
    default, idefics = (ranked_lines(capsys, tmp_path, "renderedsst2", protocol) for protocol in ("default", "idefics"))
    for with_start, also in zip(default, idefics):
        assert with_start["prompt"] == also["prompt"] and with_start["prompt"].startswith("<s>")
        assert with_start["scores"] == pytest.approx(also["scores"], abs=1e-5)


def test_protocol_recorded_in_rows_and_manifest_and_another_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, out, "--protocol", "idefics")[0] == 0
    recorded = {"name": "idefics", "digest": digest("idefics")}
    assert all(row["config"]["protocol"] == recorded for row in json.loads((out / "results.json").read_text()))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["vqav2/rices"]["identity"]["protocol"] == recorded
    code, _, err = run(capsys, out)  # the default protocol, in a folder made under idefics
    assert code == 2 and "protocol" in err and len(err.strip().splitlines()) == 1


def test_a_folder_made_before_protocols_resumes_under_default(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, out)[0] == 0
    before = predictions(out)
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest.values():
        del entry["identity"]["protocol"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run(capsys, out)
    assert code == 0, err
    assert predictions(out) == before
    assert run(capsys, out, "--protocol", "openflamingo")[0] == 2  # and is still not another protocol's


@pytest.mark.parametrize("content, message", [
    ("name: x\nstyle: flamingo\n", "unknown key 'style'"),
    ("name: x\ntasks:\n  vqa3: {}\n", "unknown task 'vqa3'"),
    ("name: x\ntasks:\n  vqav2:\n    generation:\n      beams: 3\n", "unknown key 'beams'"),
    ("name: x\ntasks:\n  vqav2:\n    normalize: mean\n", "tasks.vqav2.normalize applies to rank and match tasks only"),
    ("name: x\ndefault:\n  add_start_token: maybe\n", "default.add_start_token: expected bool"),
])
def test_a_bad_protocol_file_is_one_line_exit_2(content, message, tmp_path, capsys):
    path = tmp_path / "mine.yaml"
    path.write_text(content)
    code, _, err = invoke(capsys, "prompt", "--task", "vqav2", "--shots", "0", "--demo", "--protocol", str(path))
    assert code == 2 and message in err and str(path) in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_an_unknown_protocol_name_is_refused_with_the_shipped_names():
    with pytest.raises(UserError, match="unknown protocol; available: default, idefics, openflamingo"):
        load_protocol("flamingo")


def test_a_protocol_file_outside_the_package_is_recorded_by_its_own_digest(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ntasks:\n  coco:\n    generation:\n      max_new_tokens: 7\n")
    p = prepared("coco", str(path), tmp_path)
    assert p.generation.max_new_tokens == 7 and p.protocol.identity == {
        "name": "mine", "digest": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert replace(p.spec, generation=load_task("coco").generation) == load_task("coco")


def test_compare_and_export_name_a_protocol_difference():
    from idefics_eval.comparability import differences
    from idefics_eval.results import Result

    def row(protocol: dict | None, task: str = "vqav2") -> Result:
        config = {"limit": None} | ({"protocol": protocol} if protocol else {})
        return Result(task=task, shots=0, selection="rices", seed=None, metrics={}, num_examples=4, num_truncated=0,
                      predictions=None, config=config)

    default, idefics = ({"name": name, "digest": digest(name)} for name in ("default", "idefics"))
    assert differences(row(default), row(idefics)) == [
        f"protocol default ({digest('default')[:8]}) vs idefics ({digest('idefics')[:8]})"]
    assert differences(row(default), row(idefics, "coco")) != []  # one protocol per run: across tasks too
    assert differences(row(None), row(idefics)) == []  # a row written before protocols: unknown, not a difference


def test_idefics_stop_words_cut_where_the_authors_cut(tmp_path):
    from idefics_eval.engine import postprocess

    vqa, default = (prepared("vqav2", name, tmp_path).generation for name in ("idefics", "default"))
    assert postprocess("two dogs. How many", vqa) == "two dogs."
    assert postprocess("two dogs. How many", default) == "two dogs. How many"
    assert postprocess("A dog on grass. Description of", prepared("coco", "idefics", tmp_path).generation) == "A dog on grass."
