"""Compare: paired differences of two runs with their interval; a run next to the model card."""

from __future__ import annotations

import csv

import pytest
from reporting_runs import scored_run, table_run, vqa_answers

from idefics_eval.cli import main
from idefics_eval.compare import compare_reference, compare_runs, published, published_file


def test_the_published_table_is_the_model_cards():
    with open(published_file()) as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == 118 and set(lines[0]) == {"model", "shots", "task", "metric", "value"}
    card_80b, card_9b = published("idefics-80b"), published("idefics-9b")
    assert card_80b[("vqav2", 0, "vqa_accuracy")] == 60.0 and card_9b[("coco", 32, "cider")] == 101.5
    assert card_80b[("hatefulmemes", 32, "roc_auc")] == 54.3 and card_9b[("visdial", 8, "ndcg")] == 47.5
    assert [card_80b[("winoground", 0, k)] for k in ("group", "text", "image")] == [8.0, 18.8, 22.5]
    assert ("imagenet", 4, "accuracy") not in card_9b  # "-" in the card


def test_paired_difference_of_two_runs(tmp_path):
    a = scored_run(tmp_path / "a", "m-a", "vqav2", {0: vqa_answers(lambda i: i < 8)})  # 8 of 32 right
    b = scored_run(tmp_path / "b", "m-b", "vqav2", {0: vqa_answers(lambda i: i < 24)})  # 24 of 32 right
    comparison = compare_runs(a, b, resamples=500)
    (record,) = comparison.records
    assert comparison.notes == [] and comparison.differences == ["model m-a (ffffffff) vs m-b (ffffffff)"]
    assert (record["task"], record["shots"], record["metric"], record["n"]) == ("vqav2", 0, "vqa_accuracy", 32)
    assert record["B - A"] == pytest.approx(record["B"] - record["A"]) and record["B - A"] > 0
    assert record["ci_low"] < record["B - A"] < record["ci_high"] and record["ci_low"] > 0
    assert record["excludes 0"] == "yes"


def test_a_run_against_itself_has_a_zero_interval_and_runs_pair_on_their_common_queries(tmp_path):
    a = scored_run(tmp_path / "a", "m", "vqav2", {0: vqa_answers(lambda i: i % 2 == 0), 4: vqa_answers(lambda i: i % 3 == 0)})
    itself = compare_runs(a, a, all_metrics=True, resamples=200)
    assert {(r["ci_low"], r["ci_high"]) for r in itself.records if r["metric"] == "vqa_accuracy"} == {(0.0, 0.0)}
    assert len(itself.records) > 2 and itself.differences == []  # the answer-type breakdowns too
    shorter = scored_run(tmp_path / "short", "m", "vqav2", {0: vqa_answers(lambda i: True)}, limit=10)
    comparison = compare_runs(a, shorter, resamples=100)
    (record,) = comparison.records
    assert record["n"] == 10 and record["B"] == 100.0
    assert comparison.notes == [f"vqav2 4-shot (rices) is only in {a}"]
    assert comparison.differences == ["n 32 vs 10", "limit full vs 10"]


def test_rices_against_random_on_the_same_task_is_compared_and_the_selection_named(tmp_path, capsys):
    answers = {0: vqa_answers(lambda i: i % 2 == 0), 4: vqa_answers(lambda i: i % 3 == 0)}
    rices = scored_run(tmp_path / "rices", "m", "vqav2", answers, limit=12)
    random_ = scored_run(tmp_path / "random", "m", "vqav2", answers | {4: vqa_answers(lambda i: i < 6)}, limit=12,
                         selection="random", seed=0)
    comparison = compare_runs(rices, random_, resamples=200)
    assert comparison.differences == ["selection rices vs random"] and comparison.notes == []
    assert [(r["shots"], r["selection"], r["seed"], r["n"]) for r in comparison.records] == [
        (0, "rices vs random", None, 12), (4, "rices vs random", "- vs 0", 12)]
    assert comparison.records[1]["B - A"] == pytest.approx(50.0 - 100 * 4 / 12)
    main(["compare", str(rices), str(random_), "--resamples", "50"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "A and B differ in: selection rices vs random" and lines[3].startswith("| task")


def test_every_differing_setting_is_listed_before_the_numbers(tmp_path, capsys):
    greedy = scored_run(tmp_path / "greedy", "m", "vqav2", {0: vqa_answers(lambda i: i < 8)}, limit=8, num_beams=1)
    beams = scored_run(tmp_path / "beams", "m", "vqav2", {0: vqa_answers(lambda i: i < 16)})
    assert compare_runs(greedy, beams, resamples=50).differences == ["n 8 vs 32", "limit 8 vs full", "num_beams 1 vs 3"]
    whole = scored_run(tmp_path / "whole", "m", "vqav2", {0: vqa_answers(lambda i: i < 16)}, limit=100)  # 32 queries: all
    assert compare_runs(whole, beams, resamples=50).differences == []
    main(["compare", str(greedy), str(beams), "--resamples", "50", "--format", "csv"])
    captured = capsys.readouterr()
    assert captured.err.splitlines() == ["A and B differ in: n 8 vs 32; limit 8 vs full; num_beams 1 vs 3"]
    assert captured.out.startswith("task,shots,selection,seed,")  # the CSV itself stays a table


def test_reference_comparison_shows_the_published_number_and_the_delta(tmp_path):
    run = scored_run(tmp_path / "run", "m", "vqav2", {0: vqa_answers(lambda i: i % 2 == 0), 2: vqa_answers(lambda i: True)})
    comparison = compare_reference(run, "idefics-9b", resamples=200)
    (record,) = comparison.records
    assert (record["shots"], record["published"]) == (0, 50.9)
    assert record["run - published"] == pytest.approx(record["run"] - 50.9)
    assert record["ci_low"] < record["run"] < record["ci_high"]
    assert comparison.notes == ["vqav2 2-shot: the model card has no idefics-9b number for it"]


def test_a_limited_run_against_the_model_card_is_warned_about_in_one_line(tmp_path, capsys):
    run = scored_run(tmp_path / "run", "m", "vqav2", {0: vqa_answers(lambda i: i % 2 == 0)}, limit=8)
    main(["compare", str(run), "--reference", "idefics-9b", "--no-ci"])
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[1].startswith("warning: n below the model card's") and lines[3].startswith("| model")
    assert "vqav2 0-shot n=8 of 32: --limit 8, bundled demo data" in lines[1]
    main(["compare", str(run), "--reference", "idefics-9b", "--no-ci", "--format", "csv", "-o", str(tmp_path / "ref.csv")])
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert "--limit 8" in warning and "warning" not in (tmp_path / "ref.csv").read_text()
    full = table_run(tmp_path / "full", "m", {("vqav2", 0): {"vqa_accuracy": 50.0}})  # no limit, no demo data recorded
    assert compare_reference(full, "idefics-9b", intervals=False).warning is None


def test_cli_compare(tmp_path, capsys):
    a = scored_run(tmp_path / "a", "m-a", "vqav2", {0: vqa_answers(lambda i: i < 8)}, limit=16)
    b = scored_run(tmp_path / "b", "m-b", "vqav2", {0: vqa_answers(lambda i: i < 12)}, limit=16)
    main(["compare", str(a), str(b), "--resamples", "100"])
    out = capsys.readouterr().out
    assert "95% interval of B - A" in out and "| vqav2 |" in out
    main(["compare", str(a), "--reference", "idefics-80b", "--no-ci", "--format", "csv", "-o", str(tmp_path / "ref.csv")])
    (line,) = list(csv.DictReader(open(tmp_path / "ref.csv")))
    assert line["published"] == "60.0" and line["ci_low"] == ""
    table_only = table_run(tmp_path / "t", "m", {("vqav2", 0): {"vqa_accuracy": 1.0}})
    for args, message in ((["compare", str(a)], "give two runs"),
                          (["compare", str(a), str(b), "--reference", "idefics-9b"], "one run"),
                          (["compare", str(table_only), str(a)], "no rows with predictions")):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        assert exit_.value.code == 2 and message in capsys.readouterr().err
