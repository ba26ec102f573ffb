"""The tables printed for people: the run's summary, one table per task."""

from __future__ import annotations

from idefics_eval.reports import summary_table
from idefics_eval.results import Result


def row(task: str, shots: int, metrics: dict[str, float], seed: int | None = None, selection: str = "rices",
        std: dict[str, float] | None = None) -> Result:
    return Result(task=task, shots=shots, selection=selection, seed=seed, metrics=metrics, num_examples=2,
                  num_truncated=0, predictions=None, metrics_std=std)


def test_each_task_has_its_own_columns_and_a_missing_metric_is_a_dash():
    text = summary_table([
        row("vqav2", 0, {"vqa_accuracy": 50.0}),
        row("fairface_age", 0, {"accuracy": 25.0, "accuracy/age=20-29": 100.0}),
        row("fairface_age", 4, {"accuracy": 75.0}),  # no query of that group at this shot count
    ])
    vqa, fairface = text.split("\n\n")
    assert vqa.splitlines()[0] == "vqav2"
    assert vqa.splitlines()[1].split() == ["shots", "selection", "n", "truncated", "skipped", "vqa_accuracy"]
    assert fairface.splitlines()[0] == "fairface_age" and "vqa_accuracy" not in fairface
    assert fairface.splitlines()[3].split() == ["4", "rices", "2", "0", "0", "75.00", "-"]
    assert "NaN" not in text


def test_a_mean_over_seeds_stands_for_its_own_task_only():
    text = summary_table([
        row("vqav2", 4, {"vqa_accuracy": 40.0}, seed=0, selection="random"),
        row("vqav2", 4, {"vqa_accuracy": 60.0}, seed=1, selection="random"),
        row("vqav2", 4, {"vqa_accuracy": 50.0}, selection="random", std={"vqa_accuracy": 14.14}),
        row("okvqa", 4, {"vqa_accuracy": 30.0}, seed=0, selection="random"),
    ])
    vqa, okvqa = text.split("\n\n")
    assert [line.split()[-1] for line in vqa.splitlines()[2:]] == ["14.14"]  # "50.00 ± 14.14": the mean row only
    assert okvqa.splitlines()[2].split() == ["4", "random", "2", "0", "0", "30.00"]


def test_one_rounding_rule_for_every_printed_number():
    from idefics_eval.export import _number
    from idefics_eval.results import number_text

    # halves round away from zero on the number as written (Python's format gives 6.2 and 0.12)
    assert [number_text(6.25, 1), number_text(0.125), number_text(-2.5, 0), number_text(53.75)] == ["6.3", "0.13", "-3", "53.75"]
    assert number_text(100.0, 1) == "100.0" and number_text(float("nan")) == "nan"
    assert _number(6.25, 1) == "6.3"  # export's markdown follows the same rule


def test_text_table_aligns_columns_and_marks_missing_cells():
    from idefics_eval.reports import text_table

    table = text_table([{"shots": 0, "accuracy": "52.50"}, {"shots": 32, "accuracy": "6.25", "accuracy/yes": "0.00"}])
    assert table.splitlines() == [
        "shots accuracy accuracy/yes",
        "    0    52.50            -",
        "   32     6.25         0.00",
    ]
