"""Export: the model card's table (CSV header, markdown as the card renders it), the long layout."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from reporting_runs import scored_run, table_run, vqa_answers

from idefics_eval.cli import main
from idefics_eval.export import CARD_HEADER, NUMERIC_HEADER, export

# The model card's header and its IDEFIX 9B rows, as published (SEED-model-card.txt).
CARD_COLUMNS = [
    "Model", "Shots", "VQAv2 (OE VQA acc)", "OKVQA (OE VQA acc)", "TextVQA (OE VQA acc)", "VizWiz (OE VQA acc)",
    "TextCaps (CIDEr)", "Coco (CIDEr)", "NoCaps (CIDEr)", "Flickr (CIDEr)", "ImageNet1k (accuracy)", "VisDial (NDCG)",
    "HatefulMemes (ROC AUC)", "ScienceQA (accuracy)", "RenderedSST2 (accuracy)", "Winoground (group (text/image))",
]
CARD_9B = """
| IDEFIX 9B | 0 | 50.9 | 38.4 | 25.9 | 35.5 | 25.4 | 46.0 | 36.8 | 27.3 | 70.7 | 48.7 | 51.7 | 44.2 | 61.8 | 5.0 (16.8/20.8)|
| | 4 | 55.6 | 45.8 | 26.8 | 42.0 | 60.8 | 88.9 | 78.4 | 52.2 | - | 48.1 | 52.6 | 41.6 | 60.6 | - |
| | 8 | 56.4 | 47.3 | 26.8 | 42.8 | 63.7 | 96.9 | 84.3 | 60.3 | - | 47.5 | 52.3 | - | 66.8 | - |
| | 16 | 57.2 | 49.0 | 28.1 | 45.0 | 68.0 | 99.6 | 87.2 | 65.0 | - | - | 52.5 | - | 66.0 | - |
| | 32 | 57.9 | 50.4 | 28.2 | 45.9 | 69.7 | 101.5 | 88.6 | 66.0 | - | - | 53.1 | - | 63.4 | - |
"""
# CSV and JSON: the same columns, Winoground's three scores apart (one number per cell), and the
# row's partial cells (--allow-partial) in a text column of their own.
NUMERIC_COLUMNS = [*CARD_COLUMNS[:-1], "Winoground (group score)", "Winoground (text score)", "Winoground (image score)",
                   "Partial"]
METRICS = {"vqav2": "vqa_accuracy", "okvqa": "vqa_accuracy", "textvqa": "textvqa_accuracy", "vizwiz": "vizwiz_accuracy",
           "textcaps": "cider", "coco": "cider", "nocaps": "cider", "flickr30k": "cider", "imagenet": "accuracy",
           "visdial": "ndcg", "hatefulmemes": "roc_auc", "scienceqa": "accuracy", "renderedsst2": "accuracy"}


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def card_9b_as_results(folder):
    """The card's 9B rows as a results folder, under the model name "IDEFIX 9B"."""
    rows = {}
    for line in CARD_9B.strip().splitlines():
        values = cells(line)
        shots = int(values[1])
        for (task, metric), value in zip(METRICS.items(), values[2:]):
            if value != "-":
                rows[(task, shots)] = {metric: float(value)}
        if values[-1] != "-":
            group, text, image = map(float, re.findall(r"[\d.]+", values[-1]))
            rows[("winoground", shots)] = {"text": text, "image": image, "group": group}
    return table_run(folder, "IDEFIX 9B", rows)


def test_the_markdown_renders_as_the_cards_table(tmp_path):
    table = export([card_9b_as_results(tmp_path / "9b")], "markdown").splitlines()
    assert cells(table[0]) == CARD_COLUMNS
    assert re.fullmatch(r"\|:-+\|(-+:\|){15}", table[1])  # Model left-aligned, the rest right-aligned, as the card
    assert [cells(line) for line in table[2:]] == [cells(line) for line in CARD_9B.strip().splitlines()]


def two_models(tmp_path):
    a = table_run(tmp_path / "a", "org/model-a", {("vqav2", 0): {"vqa_accuracy": 51.234, "vqa_accuracy/other": 40.0},
                                                  ("vqav2", 4): {"vqa_accuracy": 55.0}, ("coco", 4): {"cider": 88.94}})
    b = table_run(tmp_path / "b", "org/model-b", {("hatefulmemes", 0): {"roc_auc": 51.66, "accuracy": 50.0},
                                                  ("winoground", 0): {"text": 16.75, "image": 20.8, "group": 5.0}})
    return a, b


def test_two_folders_give_a_csv_of_raw_numbers_in_the_cards_order(tmp_path):
    text = export(list(two_models(tmp_path)), "csv")
    assert text.splitlines()[0] == ",".join(NUMERIC_COLUMNS) and tuple(NUMERIC_COLUMNS) == NUMERIC_HEADER
    assert tuple(CARD_COLUMNS) == CARD_HEADER
    records = list(csv.DictReader(io.StringIO(text)))
    assert [(r["Model"], r["Shots"]) for r in records] == [("org/model-a", "0"), ("org/model-a", "4"), ("org/model-b", "0")]
    assert records[0]["VQAv2 (OE VQA acc)"] == "51.234" and records[0]["Coco (CIDEr)"] == ""
    assert records[1]["Coco (CIDEr)"] == "88.94"
    assert records[2]["HatefulMemes (ROC AUC)"] == "51.66"
    winoground = [records[2][f"Winoground ({score} score)"] for score in ("group", "text", "image")]
    assert winoground == ["5.0", "16.75", "20.8"]
    assert all(r["OKVQA (OE VQA acc)"] == "" for r in records)


def test_the_card_csv_loads_into_float_columns(tmp_path):
    import pandas as pd

    frame = pd.read_csv(io.StringIO(export(list(two_models(tmp_path)), "csv")))
    scores = [column for column in NUMERIC_COLUMNS if column not in ("Model", "Shots")]
    assert {str(frame[column].dtype) for column in scores} == {"float64"}
    assert frame["Shots"].tolist() == [0, 4, 0] and frame["Model"].tolist()[-1] == "org/model-b"
    assert frame["Coco (CIDEr)"].isna().tolist() == [True, False, True]
    assert frame["Winoground (text score)"].iloc[2] == 16.75


def test_the_markdown_keeps_the_cards_printed_form(tmp_path):
    table = export(list(two_models(tmp_path)), "markdown").splitlines()
    rows = [dict(zip(CARD_COLUMNS, cells(line))) for line in table[2:]]
    assert rows[0]["VQAv2 (OE VQA acc)"] == "51.2" and rows[0]["Coco (CIDEr)"] == "-"
    assert rows[2]["Winoground (group (text/image))"] == "5.0 (16.8/20.8)"


def test_json_card_layout_keeps_numbers(tmp_path):
    a = table_run(tmp_path / "a", "m", {("vqav2", 0): {"vqa_accuracy": 51.234}})
    (record,) = json.loads(export([a], "json"))
    assert record["VQAv2 (OE VQA acc)"] == 51.234 and record["Coco (CIDEr)"] is None and list(record) == NUMERIC_COLUMNS
    assert record["Winoground (group score)"] is None


def test_one_model_in_two_folders_is_one_row_and_a_cell_in_both_is_refused(tmp_path, capsys):
    a = table_run(tmp_path / "a", "m", {("vqav2", 0): {"vqa_accuracy": 50.0}})
    b = table_run(tmp_path / "b", "m", {("okvqa", 0): {"vqa_accuracy": 40.0}})
    (record,) = json.loads(export([a, b], "json"))
    assert (record["VQAv2 (OE VQA acc)"], record["OKVQA (OE VQA acc)"]) == (50.0, 40.0)
    c = table_run(tmp_path / "c", "m", {("vqav2", 0): {"vqa_accuracy": 51.0}})
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(a), str(c)])
    assert exit_.value.code == 2 and "several folders" in capsys.readouterr().err


def test_long_layout_has_intervals_sizes_and_config_hashes(tmp_path):
    run = scored_run(tmp_path / "run", "m", "vqav2", {0: vqa_answers(lambda i: i % 2 == 0), 4: vqa_answers(lambda i: i % 3 == 0)}, limit=12)
    records = list(csv.DictReader(io.StringIO(export([run], "csv", layout="long", resamples=200))))
    assert list(records[0]) == ["model", "task", "shots", "selection", "seed", "split", "metric", "value", "ci_low", "ci_high", "n", "std",
                                "config_hash", "results", "partial"]
    assert {r["partial"] for r in records} == {"n=12 of 32: --limit 12, bundled demo data"}
    assert {r["split"] for r in records} == {"reporting"}
    main_rows = [r for r in records if r["metric"] == "vqa_accuracy"]
    assert [(r["shots"], r["n"]) for r in main_rows] == [("0", "12"), ("4", "12")]
    for r in main_rows:
        assert float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"]) and float(r["ci_low"]) < float(r["ci_high"])
        assert re.fullmatch(r"[0-9a-f]{12}", r["config_hash"])
    assert {r["metric"] for r in records} >= {"vqa_accuracy", "vqa_accuracy/yes/no"}
    no_ci = list(csv.DictReader(io.StringIO(export([run], "csv", layout="long", intervals=False))))
    assert all(r["ci_low"] == "" for r in no_ci) and len(no_ci) == len(records)


def test_cli_export_writes_the_file_and_refuses_a_folder_without_results(tmp_path, capsys):
    run = table_run(tmp_path / "run", "m", {("vqav2", 0): {"vqa_accuracy": 50.0}})
    main(["export", str(run), "--format", "csv", "-o", str(tmp_path / "card.csv")])
    assert (tmp_path / "card.csv").read_text().splitlines()[1].startswith("m,0,50.0,,")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(run), str(tmp_path / "empty")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "holds no results.json" in err and len(err.strip().splitlines()) == 1


def test_a_limited_run_is_refused_without_allow_partial_and_marked_with_it(tmp_path, capsys):
    import pandas as pd

    run = scored_run(tmp_path / "run", "m", "vqav2", {0: vqa_answers(lambda i: i % 2 == 0), 4: vqa_answers(lambda i: True)}, limit=8)
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(run)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "m vqav2 0-shot is partial (n=8 of 32: --limit 8, bundled demo data) (and 1 more cells)" in err
    assert "--allow-partial" in err

    table = export([run], "markdown", allow_partial=True).splitlines()
    rows = [dict(zip(CARD_COLUMNS, cells(line))) for line in table[2:4]]
    assert [r["VQAv2 (OE VQA acc)"] for r in rows] == ["50.0\u2020", "100.0\u2020"]
    assert table[5:] == [f"\u2020 partial, not comparable with full runs: m {k}-shot vqav2 (n=8 of 32: --limit 8, bundled demo data)"
                         for k in (0, 4)]
    frame = pd.read_csv(io.StringIO(export([run], "csv", allow_partial=True)))
    assert str(frame["VQAv2 (OE VQA acc)"].dtype) == "float64" and frame["VQAv2 (OE VQA acc)"].tolist() == [50.0, 100.0]
    assert frame["Partial"].tolist() == ["vqav2 (n=8 of 32: --limit 8, bundled demo data)"] * 2
    records = json.loads(export([run], "json", allow_partial=True))
    assert [r["Partial"] for r in records] == ["vqav2 (n=8 of 32: --limit 8, bundled demo data)"] * 2
    full = table_run(tmp_path / "full", "full", {("vqav2", 0): {"vqa_accuracy": 50.0}})
    assert json.loads(export([full], "json"))[0]["Partial"] is None


@pytest.mark.parametrize("first, second, message", [
    ({"generation": {"num_beams": 3}}, {"generation": {"num_beams": 1}}, "vqav2 0-shot and vqav2 4-shot differ in num_beams 3 vs 1"),
    ({"num_examples": 100}, {"num_examples": 50}, "vqav2 0-shot and vqav2 4-shot differ in n 100 vs 50"),
    ({"plain_generation": False}, {"plain_generation": True}, "vqav2 0-shot and vqav2 4-shot differ in plain_generation no vs yes"),
    ({"weights_checksum": "a" * 16}, {"weights_checksum": "b" * 16},  # one sampled fingerprint, other weights
     f"vqav2 0-shot and vqav2 4-shot differ in weights checksum {'a' * 16} vs {'b' * 16}"),
])
def test_a_models_cells_made_with_different_settings_are_refused(tmp_path, capsys, first, second, message):
    a = table_run(tmp_path / "a", "m", {("vqav2", 0): {"vqa_accuracy": 50.0}}, **first)
    b = table_run(tmp_path / "b", "m", {("vqav2", 4): {"vqa_accuracy": 55.0}}, **second)
    with pytest.raises(SystemExit) as exit_:
        main(["export", str(a), str(b), "--allow-partial"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert f"error: m: {message}" in err and "rerun them with the same settings" in err


def test_a_row_written_before_weights_checksums_goes_with_one_that_records_it(tmp_path):
    """A checksum one row does not record is unknown, not a difference: old folders export as before."""
    old = table_run(tmp_path / "old", "m", {("vqav2", 0): {"vqa_accuracy": 50.0}})
    new = table_run(tmp_path / "new", "m", {("vqav2", 4): {"vqa_accuracy": 55.0}}, weights_checksum="a" * 16)
    records = json.loads(export([old, new], "json"))
    assert [(r["Model"], r["VQAv2 (OE VQA acc)"]) for r in records] == [("m", 50.0), ("m", 55.0)]


def test_tasks_differ_only_in_what_is_not_their_own(tmp_path, capsys):
    """Tasks have their own defaults (coco 20 new tokens, vqav2 15): those never count as a mix, an
    option given to one task's run and not the other's does."""
    vqa = table_run(tmp_path / "vqa", "m", {("vqav2", 0): {"vqa_accuracy": 50.0}}, num_examples=30,
                    generation={"max_new_tokens": 15}, generation_options={})
    coco = table_run(tmp_path / "coco", "m", {("coco", 0): {"cider": 80.0}}, generation={"max_new_tokens": 20}, generation_options={})
    (record,) = json.loads(export([vqa, coco], "json"))
    assert (record["VQAv2 (OE VQA acc)"], record["Coco (CIDEr)"]) == (50.0, 80.0)
    greedy = table_run(tmp_path / "greedy", "m", {("coco", 0): {"cider": 80.0}}, generation={"num_beams": 1},
                       generation_options={"num_beams": 1})
    with pytest.raises(SystemExit):
        main(["export", str(vqa), str(greedy)])
    assert "differ in generation options the task's defaults vs --num-beams 1" in capsys.readouterr().err


def test_a_random_shot_run_is_pointed_to_its_selection(tmp_path, capsys):
    run = scored_run(tmp_path / "run", "m", "vqav2", {0: vqa_answers(lambda i: True), 4: vqa_answers(lambda i: i < 4)}, limit=8,
                     selection="random", seed=0)
    with pytest.raises(SystemExit):
        main(["export", str(run)])
    err = capsys.readouterr().err
    assert "have --selection random rows only" in err and "export with --selection random" in err and "--layout long" not in err
    records = json.loads(export([run], "json", selection="random", allow_partial=True))
    assert [(r["Shots"], r["VQAv2 (OE VQA acc)"]) for r in records] == [(0, 100.0), (4, 50.0)]
