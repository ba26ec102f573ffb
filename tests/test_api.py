"""The Python API evaluates an in-memory model and gives the same rows as the command line."""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path

import pytest
import torch

import idefics_eval
from idefics_eval import api, image_cache
from idefics_eval.cli import run as cli_run
from idefics_eval.demo.model import build_model, build_processor
from idefics_eval.errors import UserError
from idefics_eval.models import (
    VisionTowerEncoder,
    weights_checksum,
    weights_fingerprint,
)
from idefics_eval.plan import DEMO_DATA
from idefics_eval.runner import RunConfig, run
from idefics_eval.tasks import builtin_dir

TASKS = builtin_dir("tasks")


def test_evaluate_in_memory_model_equals_the_runner(tmp_path):
    model, processor = build_model(0), build_processor()
    rows = idefics_eval.evaluate(model, processor, ["vqav2"], shots=[0, 4], limit=3, demo_data=True, num_beams=1,
                                 output_dir=tmp_path / "api", cache_dir=tmp_path / "cache")
    reference = run(RunConfig(task="vqav2", shots=(0, 4), output_dir=tmp_path / "cli", demo=True, demo_seed=0, limit=3, num_beams=1,
                              cache_dir=tmp_path / "cache", progress=False))
    assert [(r.task, r.shots, r.metrics, r.num_examples) for r in rows] == [(r.task, r.shots, r.metrics, r.num_examples) for r in reference]
    for name in ("vqav2_0shot.jsonl", "vqav2_4shot.jsonl"):
        assert (tmp_path / "api" / "predictions" / name).read_text() == (tmp_path / "cli" / "predictions" / name).read_text()
    assert rows[0].config["model"]["fingerprint"] == reference[0].config["model"]["fingerprint"]


NOT_FOR_A_LOADED_MODEL = {"model", "demo", "demo_seed", "device", "device_map", "dtype", "allow_pickle_weights",
                          "config"}  # a file of run options: the API takes them as keywords
SPELLED_OTHERWISE = {"task": "tasks", "no_progress": "progress", "name": "run_name"}  # evaluate's `name` names the model


def fast(**overrides) -> dict:
    return {"limit": 2, "demo_data": True, "num_beams": 1, "max_new_tokens": 3} | overrides


def predictions(folder: Path) -> dict[str, list[str]]:
    return {f.name: [json.loads(line)["prediction"] for line in f.read_text().splitlines()]
            for f in sorted((folder / "predictions").glob("*.jsonl"))}


def test_every_run_option_is_an_evaluate_keyword():
    """Parity with `idefics-eval run`: an option added there fails here until the API has it too, or
    it is listed as meaningless for a model already in memory."""
    keywords = set(inspect.signature(api.evaluate).parameters)
    for option in cli_run.params:
        if option.name not in NOT_FOR_A_LOADED_MODEL:
            assert SPELLED_OTHERWISE.get(option.name, option.name) in keywords, (
                f"run option {option.opts[0]} has no evaluate keyword; add it to idefics_eval.api.evaluate "
                "or to NOT_FOR_A_LOADED_MODEL with the reason")


def test_every_keyword_reaches_the_run_configuration(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(api, "run_tasks", lambda configs, loaded: seen.extend(configs) or [])
    model, processor = build_model(0), build_processor()
    given = {"selection": "random", "seeds": (3, 4), "rices_encoder": "openai/clip", "batch_size": "auto",
             "num_beams": 2, "max_new_tokens": 7, "max_length": 99, "cache_dir": tmp_path / "c", "image_cache_mb": 5,
             "image_cache_dir": tmp_path / "spill", "overwrite": True, "on_bad_example": "skip",
             "plain_generation": True, "log_samples": False, "progress": True, "limit": 4, "prompts_dirs": (tmp_path / "prompts",),
             "run_name": "nightly"}
    api.evaluate(model, processor, "vqav2,fairface", shots=[0, 2], output_dir=tmp_path / "out",
                 data={"vqav2": "/vqa"}, support_data="/support", demo_data=True, **given)
    assert [c.task for c in seen] == ["vqav2", "fairface_gender", "fairface_race", "fairface_age"]
    for config in seen:
        assert {name: getattr(config, name) for name in given} == given
        assert config.shots == (0, 2) and config.support_data == "/support" and config.model is None
    assert (seen[0].data, seen[0].demo) == ("/vqa", False)
    assert (seen[1].data, seen[1].demo) == (None, True)


def test_data_for_a_task_not_evaluated_is_refused():
    with pytest.raises(UserError, match="data names 'okvqa', which is not among the tasks"):
        api.evaluate(build_model(0), build_processor(), ["vqav2"], data={"okvqa": "/data"})


def test_tasks_dirs_finds_a_task_file_outside_the_package(tmp_path):
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "my_vqa.yaml").write_text((TASKS / "vqav2.yaml").read_text().replace("name: vqav2", "name: my_vqa"))
    model, processor = build_model(0), build_processor()
    with pytest.raises(UserError, match="unknown task 'my_vqa'"):
        api.evaluate(model, processor, ["my_vqa"], data=str(DEMO_DATA / "vqav2"), output_dir=tmp_path / "none", **fast(demo_data=False))
    rows = api.evaluate(model, processor, ["my_vqa"], data=str(DEMO_DATA / "vqav2"), tasks_dirs=[tasks],
                        output_dir=tmp_path / "out", **fast(demo_data=False))
    assert [(r.task, r.num_examples) for r in rows] == [("my_vqa", 2)]


def test_seeds_give_one_row_per_seed_and_their_mean(tmp_path):
    rows = api.evaluate(build_model(0), build_processor(), ["vqav2"], shots=[2], selection="random", seeds=[0, 1],
                        output_dir=tmp_path / "out", **fast())
    assert [(r.shots, r.seed) for r in rows] == [(2, 0), (2, 1), (2, None)]
    assert rows[2].metrics_std is not None and rows[2].config["shots"]["seeds"] == [0, 1]
    shots = {f.name: [json.loads(line)["shots"] for line in f.read_text().splitlines()]
             for f in (tmp_path / "out" / "predictions").glob("*.jsonl")}
    assert len(shots) == 2 and len({json.dumps(s) for s in shots.values()}) == 2  # the seeds drew other shots


def test_max_new_tokens_and_max_length_change_what_is_generated(tmp_path):
    model, processor = build_model(0), build_processor()
    default = api.evaluate(model, processor, ["vqav2"], shots=[2], output_dir=tmp_path / "default", **fast(max_new_tokens=None))
    short = api.evaluate(model, processor, ["vqav2"], shots=[2], output_dir=tmp_path / "short", **fast(max_new_tokens=1))
    for long, one in zip(*(predictions(tmp_path / name)["vqav2_2shot.jsonl"] for name in ("default", "short"))):
        assert long.startswith(one) and len(one) < len(long)  # the first token only
    assert (default[0].config["generation"]["max_new_tokens"], short[0].config["generation"]["max_new_tokens"]) == (15, 1)
    assert default[0].num_truncated == 0
    cut = api.evaluate(model, processor, ["vqav2"], shots=[2], max_length=90, output_dir=tmp_path / "cut",
                       **fast(max_new_tokens=None))
    assert cut[0].num_truncated == 2 and cut[0].config["generation"]["max_length"] == 90  # both queries lost shots


def test_a_model_not_where_the_cli_puts_it_gets_one_warning_line(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the CLI's choice on this machine: float32 on CPU
    processor = build_processor()
    with pytest.warns(api.PlacementWarning) as caught:
        api.evaluate(build_model(0).to(torch.float16), processor, ["vqav2"], output_dir=tmp_path / "half", **fast())
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "float16 on cpu" in message and "float32 on cpu" in message and "\n" not in message
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        api.evaluate(build_model(0), processor, ["vqav2"], output_dir=tmp_path / "full", **fast())
    assert not [w for w in caught if issubclass(w.category, api.PlacementWarning)]


def test_train_mode_and_padding_side_are_restored(tmp_path):
    model, processor = build_model(0), build_processor()
    model.train()
    model.model.vision_model.eval()  # a frozen tower stays in eval mode
    processor.tokenizer.padding_side = "right"
    before = {name: module.training for name, module in model.named_modules()}
    modes_seen = set()
    model.register_forward_pre_hook(lambda module, args: modes_seen.add(module.training))
    api.evaluate(model, processor, ["vqav2"], output_dir=tmp_path / "out", **fast())
    assert modes_seen == {False}  # evaluated in eval mode
    assert {name: module.training for name, module in model.named_modules()} == before
    assert processor.tokenizer.padding_side == "right"

    def fail(module, args):
        raise RuntimeError("out of memory")

    model.register_forward_pre_hook(fail)
    with pytest.raises(RuntimeError, match="out of memory"):
        api.evaluate(model, processor, ["vqav2"], output_dir=tmp_path / "failed", **fast())
    assert {name: module.training for name, module in model.named_modules()} == before


def test_threads_set_for_the_evaluation_only_and_none_keeps_the_callers(monkeypatch, tmp_path):
    seen = []
    monkeypatch.setattr(api, "run_tasks", lambda configs, loaded: seen.append(torch.get_num_threads()) or [])
    model, processor = build_model(0), build_processor()
    before = torch.get_num_threads()
    target = 2 if before != 2 else 1
    api.evaluate(model, processor, "vqav2", output_dir=tmp_path / "a", demo_data=True, threads=target)
    assert seen == [target] and torch.get_num_threads() == before
    api.evaluate(model, processor, "vqav2", output_dir=tmp_path / "b", demo_data=True)
    assert seen == [target, before]
    with pytest.raises(UserError, match="threads=0"):
        api.evaluate(model, processor, "vqav2", output_dir=tmp_path / "c", demo_data=True, threads=0)


def test_features_are_not_reused_after_the_weights_change_in_place(tmp_path, monkeypatch):
    """A training step between two `evaluate` calls changes weights the fingerprint may not sample:
    the second call must compute its image features again, not take the first call's."""
    model, processor = build_model(0), build_processor()
    computed = []
    compute = image_cache.compute_features
    monkeypatch.setattr(image_cache, "compute_features", lambda loaded, pixels: computed.append(1) or compute(loaded, pixels))
    idefics_eval.evaluate(model, processor, ["vqav2"], output_dir=tmp_path / "before", **fast())
    first, fingerprint = len(computed), weights_fingerprint(model)
    with torch.no_grad():
        model.model.vision_model.embeddings.patch_embedding.weight.view(-1)[1] += 1.0  # step 24: not sampled
    assert weights_fingerprint(model) == fingerprint
    idefics_eval.evaluate(model, processor, ["vqav2"], output_dir=tmp_path / "after", **fast())
    assert first > 0 and len(computed) == 2 * first


def test_rices_embeddings_are_not_reused_after_the_vision_tower_changes_in_place(tmp_path, monkeypatch):
    """With a --cache-dir, RICES embeddings from the model's own vision tower outlive the run: a
    second `evaluate` takes them while the tower is as it was, and embeds again once one weight the
    tower's fingerprint does not sample has changed."""
    model, processor = build_model(0), build_processor()
    encoded = []
    encode = VisionTowerEncoder.encode
    monkeypatch.setattr(VisionTowerEncoder, "encode", lambda self, images: encoded.append(len(images)) or encode(self, images))
    options = fast(shots=[2], cache_dir=tmp_path / "cache")  # the default protocol's encoder: the model's tower
    idefics_eval.evaluate(model, processor, ["vqav2"], output_dir=tmp_path / "first", **options)
    first = sum(encoded)
    idefics_eval.evaluate(model, processor, ["vqav2"], output_dir=tmp_path / "again", **options)
    assert first > 0 and sum(encoded) == first
    fingerprint = weights_fingerprint(model.model.vision_model)
    with torch.no_grad():
        model.model.vision_model.embeddings.patch_embedding.weight.view(-1)[1] += 1.0  # not sampled
    assert weights_fingerprint(model.model.vision_model) == fingerprint
    idefics_eval.evaluate(model, processor, ["vqav2"], output_dir=tmp_path / "trained", **options)
    assert sum(encoded) == 2 * first


WRONG_COUNTS = {  # each once gave a TypeError from deep in the run, or (negative shots) no rows and no word
    "shots as one number": ({"shots": 4}, "shots=4: give a list of shot counts"),
    "shots as a string": ({"shots": "0,4"}, "shots='0,4': give a list of shot counts"),
    "negative shots": ({"shots": [-1]}, "--shots [-1]: -1 is not a whole number of 0 or more"),
    "shots of text": ({"shots": ["4"]}, "--shots ['4']: '4' is not a whole number of 0 or more"),
    "seeds as one number": ({"seeds": 3, "selection": "random"}, "seeds=3: give a list of seeds"),
    "negative seeds": ({"seeds": [-2], "selection": "random"}, "--seeds [-2]: -2 is not a whole number of 0 or more"),
    "limit as text": ({"limit": "2"}, "--limit '2': give a positive number of queries"),
}


@pytest.mark.parametrize("case", sorted(WRONG_COUNTS))
def test_wrong_shot_seed_and_limit_values_are_one_user_error(case, tmp_path):
    options, message = WRONG_COUNTS[case]
    with pytest.raises(UserError) as refused:
        api.evaluate(build_model(0), build_processor(), ["vqav2"], output_dir=tmp_path, **({"limit": 2, "demo_data": True} | options))
    assert message in str(refused.value)
    assert not (tmp_path / "results.json").exists()


def change_every_unsampled_value(tensor: torch.Tensor) -> None:
    """An update in place that `weights_fingerprint` cannot see: every value but the 256 it samples."""
    flat = tensor.detach().view(-1)
    unsampled = torch.ones(flat.numel(), dtype=torch.bool)
    unsampled[::max(1, flat.numel() // 256)][:256] = False
    with torch.no_grad():
        flat[unsampled] += 1.0


def test_evaluate_into_one_folder_refuses_weights_changed_where_the_fingerprint_does_not_look(tmp_path):
    """A training loop passing one output_dir to two `evaluate` calls around an update the sampled
    fingerprint misses: the second call must not take the first call's predictions as its own."""
    model, processor = build_model(0), build_processor()
    idefics_eval.evaluate(model, processor, ["vqav2"], output_dir=tmp_path / "out", **fast())
    kept = predictions(tmp_path / "out")
    fingerprint = weights_fingerprint(model)
    change_every_unsampled_value(model.model.vision_model.embeddings.patch_embedding.weight)
    assert weights_fingerprint(model) == fingerprint
    with pytest.raises(UserError, match=f"other weights \\(the same sampled fingerprint {fingerprint}, but a checksum .*"
                                         "use a new --output-dir or delete the folder"):
        idefics_eval.evaluate(model, processor, ["vqav2"], output_dir=tmp_path / "out", **fast())
    assert predictions(tmp_path / "out") == kept


def test_an_unchanged_model_resumes_its_folder(tmp_path):
    model, processor = build_model(0), build_processor()
    first = idefics_eval.evaluate(model, processor, ["vqav2"], output_dir=tmp_path / "out", **fast())
    again = idefics_eval.evaluate(model, processor, ["vqav2"], output_dir=tmp_path / "out", **fast())
    assert again[0].config["model"] == first[0].config["model"]
    assert first[0].config["model"]["weights_checksum"] == weights_checksum(model)


def test_a_folder_written_before_weights_checksums_resumes_on_the_fingerprint(tmp_path):
    """A manifest without `weights_checksum` (written before 2026-12-03) resumes as it did, on the
    sampled fingerprint, and records the checksum from then on."""
    model, processor = build_model(0), build_processor()
    idefics_eval.evaluate(model, processor, ["vqav2"], output_dir=tmp_path / "out", **fast())
    manifest = tmp_path / "out" / "manifest.json"
    data = json.loads(manifest.read_text())
    for entry in data.values():  # as an earlier version wrote it
        del entry["identity"]["model"]["weights_checksum"]
    manifest.write_text(json.dumps(data))
    kept = predictions(tmp_path / "out")
    idefics_eval.evaluate(model, processor, ["vqav2"], output_dir=tmp_path / "out", **fast())
    assert predictions(tmp_path / "out") == kept
    data = json.loads(manifest.read_text())
    assert all(entry["identity"]["model"]["weights_checksum"] == weights_checksum(model) for entry in data.values())
