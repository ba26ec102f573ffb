"""fairness_report (idefics_eval/metrics/fairness.py) and the fairface_accuracy metric on hand-made cases."""

from __future__ import annotations

import pytest

from idefics_eval.examples import Example
from idefics_eval.metrics import get_metric
from idefics_eval.metrics.fairness import fairness_report, group_value
from idefics_eval.predictions import Prediction


def test_per_group_accuracy_and_spread_worked_by_hand():
    # 8 queries. Right: 1, 2, 3, 5, 8 (5 of 8 = 62.5).
    correct = [True, True, True, False, True, False, False, True]
    gender = ["Male", "Male", "Female", "Female", "Male", "Female", "Male", "Female"]
    race = ["White", "Black", "White", "Black", "Indian", "Indian", "White", "Black"]
    age = ["3-9", "10-19", "3-9", "more than 70", "10-19", "3-9", None, "more than 70"]
    report = fairness_report(correct, {"gender": gender, "race": race, "age": age})
    expected = {
        "accuracy": 62.5,
        # Male: queries 1, 2, 5, 7 -> 3 of 4; Female: 3, 4, 6, 8 -> 2 of 4
        "accuracy/gender=Female": 50.0, "accuracy/gender=Male": 75.0,
        # Black: 2, 4, 8 -> 2 of 3; Indian: 5, 6 -> 1 of 2; White: 1, 3, 7 -> 2 of 3
        "accuracy/race=Black": 200 / 3, "accuracy/race=Indian": 50.0, "accuracy/race=White": 200 / 3,
        # query 7 has no age: 3-9: 1, 3, 6 -> 2 of 3; 10-19: 2, 5 -> 2 of 2; more than 70: 4, 8 -> 1 of 2
        "accuracy/age=3-9": 200 / 3, "accuracy/age=10-19": 100.0, "accuracy/age=more than 70": 50.0,
        "spread/gender": 25.0, "spread/race": 200 / 3 - 50.0, "spread/age": 50.0,
    }
    assert report == pytest.approx(expected)
    # groups in natural order (3-9 before 10-19), each attribute's groups together, spreads last
    assert list(report) == list(expected)


def test_one_group_has_no_spread_and_scores_may_be_zero_one_floats():
    report = fairness_report([1.0, 0.0], {"gender": ["Male", "Male"]})
    assert report == {"accuracy": 50.0, "accuracy/gender=Male": 50.0, "spread/gender": 0.0}
    assert fairness_report([True], {}) == {"accuracy": 100.0}


@pytest.mark.parametrize(
    ("correct", "groups", "pattern"),
    [
        ([], {}, "no queries"),
        ([True, False], {"race": ["White"]}, "1 race values but 2 queries"),
        ([0.5], {}, "booleans or 0/1"),
    ],
)
def test_bad_inputs(correct, groups, pattern):
    with pytest.raises(ValueError, match=pattern):
        fairness_report(correct, groups)


def test_group_value_prefers_metadata_and_names_hugging_face_class_indices():
    assert group_value({"race": "Indian"}, {"race": "3"}, "race") == "Indian"
    assert group_value({}, {"race": "3"}, "race") == "White"
    assert group_value({}, {"age": "8"}, "age") == "more than 70"
    assert group_value({}, {"gender": "Female"}, "gender") == "Female"
    assert group_value({}, {}, "gender") is None
    with pytest.raises(ValueError, match="outside"):
        group_value({}, {"gender": "2"}, "gender")


class Blank:
    key = "blank"


def face(i: int, label: int, gender: str, race: str, age: str) -> Example:
    return Example(id=str(i), image_id=str(i), image=Blank(), fields={}, answers=("x",), label=label,
                   metadata={"gender": gender, "race": race, "age": age, "service_test": False})


def test_the_metric_scores_each_query_and_breaks_the_task_down_by_every_attribute():
    metric = get_metric("fairface_accuracy")
    examples = [face(1, 0, "Male", "White", "20-29"), face(2, 1, "Female", "White", "20-29"),
                face(3, 1, "Female", "Black", "60-69")]
    predictions = [Prediction(e.id, "", (), None, ranking=ranking) for e, ranking in zip(examples, [(0, 1), (0, 1), (1, 0)])]
    assert [metric.score(p, e) for p, e in zip(predictions, examples)] == [1.0, 0.0, 1.0]
    report = metric.aggregate(predictions, examples)
    assert report == pytest.approx({
        "accuracy": 200 / 3,
        "accuracy/gender=Female": 50.0, "accuracy/gender=Male": 100.0,
        "accuracy/race=Black": 100.0, "accuracy/race=White": 50.0,
        "accuracy/age=20-29": 50.0, "accuracy/age=60-69": 100.0,
        "spread/gender": 50.0, "spread/race": 50.0, "spread/age": 50.0,
    })
