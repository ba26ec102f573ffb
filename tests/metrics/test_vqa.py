"""Tests for `idefics_eval.metrics.vqa` against the official VQA accuracy.

Official definition: GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py (commit
a013f0043c1e2cdc995922dfe257f7149aa9af06). The hand-derived cases below were worked out from that
script; the real-data test compares the module with `official_accuracy`, a second transliteration
kept in the script's own shape (answer records with answer_id, normalised in place, "other answers"
found by record inequality).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from idefics_eval.metrics.vqa import normalize_answer, vqa_accuracy

DATA = Path(__file__).resolve().parents[1] / "data" / "vqa_metric"

# ----------------------------------------------------------------------------------------------
# Hand-derived values
# ----------------------------------------------------------------------------------------------

OTHERS = ["dog", "bird", "fish", "cow", "horse", "sheep", "goat", "duck", "frog", "mouse"]


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        # k answers equal the prediction. Each of those k positions sees k-1 matches among the other
        # nine, each of the 10-k others sees k; a position scores min(1, seen/3); the mean is the value.
        (0, 0.0),
        (1, 0.3),  # (1*0 + 9*1/3) / 10
        (2, 0.6),  # (2*1/3 + 8*2/3) / 10
        (3, 0.9),  # (3*2/3 + 7*1) / 10: three matching answers are not full marks
        (4, 1.0),  # (4*1 + 6*1) / 10
        (10, 1.0),
    ],
)
def test_accuracy_by_number_of_matching_answers(matches: int, expected: float) -> None:
    answers = ["cat"] * matches + OTHERS[: 10 - matches]
    assert vqa_accuracy("cat", answers) == pytest.approx(expected, abs=1e-12)


def test_repeated_answers_count_per_position() -> None:
    # Both "cat" answers see the other "cat": 0.6. Leaving out every answer with the same text (as
    # comparing answer records without an answer_id would) would give (8 * 2/3) / 10 instead.
    assert vqa_accuracy("cat", ["cat", "dog", "cat", "dog", "dog", "dog", "dog", "dog", "bird", "dog"]) == (
        pytest.approx(0.6, abs=1e-12)
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Two", "2"),
        ("none", "0"),
        ("the dog.", "dog"),
        ("A Dog", "dog"),
        ("a", ""),
        ("yes!", "yes"),
        ("hello?", "hello"),
        ("(a)", ""),
        ("1,000", "1000"),  # digit,digit: every mark is deleted
        ("1,000 mother-in-law", "1000 motherinlaw"),  # ... anywhere in the text
        ("mother-in-law", "mother in law"),
        ("black/white", "black white"),  # mark touching no space: replaced by a space
        ("black / white", "black white"),  # mark touching a space: deleted
        ("black/white / grey", "blackwhite grey"),  # one "/" touches a space, so every "/" is deleted
        ("x;/y/z", "x y z"),  # adjacency is judged on the input, not after ";" became a space
        ("e.g.", "eg"),
        ("5.", "5"),
        ("3.5", "3.5"),  # a period followed by a digit stays
        (".5", ".5"),
        ("12:30", "12:30"),  # colons and apostrophes are not in the punctuation list
        ("it's", "it's"),
        ("dont", "don't"),
        ("Dont", "don't"),
        ("Im", "im"),  # the table's key is "Im", but lookups happen after lowercasing
        ("somebody'd", "somebodyd"),
        (" the  Cat\tis\nhere ", "cat is here"),
        ("٣,٥", "٣ ٥"),  # the official (Python 2) patterns' \d is ASCII-only: no digit,digit here
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_period_removal_stops_after_32_substitutions() -> None:
    # The official script passes re.UNICODE (== 32) where `sub` takes its count.
    assert normalize_answer("." * 40) == "." * 8
    assert normalize_answer("x." * 33) == "x" * 33 + "."
    assert vqa_accuracy("x." * 32, ["x" * 32] * 4 + OTHERS[:6]) == 1.0
    assert vqa_accuracy("x." * 33, ["x" * 33] * 4 + OTHERS[:6]) == 0.0


@pytest.mark.parametrize(
    ("prediction", "answers", "normalize", "expected"),
    [
        # "vqa": ten identical answers are compared as they are, after whitespace cleanup only.
        ("yes", ["yes"] * 10, "vqa", 1.0),
        ("Yes", ["yes"] * 10, "vqa", 0.0),
        ("yes.", ["yes"] * 10, "vqa", 0.0),
        (" yes\n", ["yes"] * 10, "vqa", 1.0),
        ("Yes", ["yes"] * 9 + [" yes\t"], "vqa", 0.0),  # identical once stripped
        ("Yes", ["yes"] * 9 + ["Yes"], "vqa", 1.0),  # not identical: all normalised
        ("Two", ["2"] * 4 + ["3"] * 6, "vqa", 1.0),
        ("the dog.", ["dog"] * 2 + OTHERS[2:], "vqa", 0.6),
        # "always": normalised even when the answers agree (TextVQA).
        ("Yes", ["yes"] * 10, "always", 1.0),
        ("The 2.", ["two"] * 10, "always", 1.0),
        # "prediction": only the prediction is normalised (VizWiz); answers are taken verbatim.
        ("Yes", ["yes"] * 10, "prediction", 1.0),
        ("yes", ["Yes"] * 10, "prediction", 0.0),
        ("yes", ["yes "] * 10, "prediction", 0.0),
        ("Two", ["2"] + OTHERS[1:], "prediction", 0.3),
    ],
)
def test_normalization_modes(prediction: str, answers: list[str], normalize: str, expected: float) -> None:
    assert vqa_accuracy(prediction, answers, normalize=normalize) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("answers", "normalize"),
    [(["yes"] * 10, "textvqa"), (["yes"] * 10, ""), ([], "vqa"), ("yes", "vqa")],
)
def test_invalid_arguments_raise(answers: list[str], normalize: str) -> None:
    with pytest.raises(ValueError):
        vqa_accuracy("yes", answers, normalize=normalize)


# ----------------------------------------------------------------------------------------------
# Independent transliteration of the official script
# ----------------------------------------------------------------------------------------------

# The official contraction table, as published (a dict literal here, a packed string in the module).
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
              "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
ARTICLES = ["a", "an", "the"]
PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
         ">", "<", "@", "`", ",", "?", "!"]  # fmt: skip
# The official patterns, verbatim; re.ASCII gives `\d` its Python 2 (non-UNICODE) meaning.
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)", re.ASCII)
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)", re.ASCII)


def test_contraction_table_is_the_official_one() -> None:
    assert len(CONTRACTIONS) == 120
    for written, replacement in CONTRACTIONS.items():
        # Capitalised keys are unreachable: the word is lowercased before the lookup.
        expected = replacement if written == written.lower() else written.lower()
        assert normalize_answer(written) == expected


def process_punctuation(in_text: str) -> str:
    out_text = in_text
    for p in PUNCT:
        if (p + " " in in_text or " " + p in in_text) or (COMMA_STRIP.search(in_text) is not None):
            out_text = out_text.replace(p, "")
        else:
            out_text = out_text.replace(p, " ")
    return PERIOD_STRIP.sub("", out_text, re.UNICODE)  # positional: the official count-of-32 quirk


def process_digit_article(in_text: str) -> str:
    manual_map = dict(MANUAL_MAP)
    out_text = []
    for word in in_text.lower().split():
        word = manual_map.setdefault(word, word)
        if word not in ARTICLES:
            out_text.append(word)
    for word_id, word in enumerate(out_text):
        if word in CONTRACTIONS:
            out_text[word_id] = CONTRACTIONS[word]
    return " ".join(out_text)


def official_accuracy(prediction: str, answer_texts: list[str], mode: str) -> float:
    """One question through VQAEval.evaluate ("vqa"; "always" drops the agreement condition) or, for
    "prediction", through the VizWiz script's loop (prediction normalised, answers untouched)."""
    answers = [
        {"answer": text, "answer_confidence": "yes", "answer_id": answer_id}
        for answer_id, text in enumerate(answer_texts, start=1)
    ]
    res_ans = prediction.replace("\n", " ").replace("\t", " ").strip()
    gt_acc = []
    if mode == "prediction":
        res_ans = process_digit_article(process_punctuation(res_ans))
        for i, _ in enumerate(answers):
            other_gt_ans = [item for j, item in enumerate(answers) if i != j]
            matching_ans = [item for item in other_gt_ans if item["answer"] == res_ans]
            gt_acc.append(min(1, float(len(matching_ans)) / 3))
        return float(sum(gt_acc)) / len(gt_acc)
    for ans_dic in answers:
        ans_dic["answer"] = ans_dic["answer"].replace("\n", " ").replace("\t", " ").strip()
    gt_answers = [ans["answer"] for ans in answers]
    if len(set(gt_answers)) > 1 or mode == "always":
        for ans_dic in answers:
            ans_dic["answer"] = process_punctuation(ans_dic["answer"])
            ans_dic["answer"] = process_digit_article(ans_dic["answer"])
        res_ans = process_punctuation(res_ans)
        res_ans = process_digit_article(res_ans)
    for gt_ans_datum in answers:
        other_gt_ans = [item for item in answers if item != gt_ans_datum]
        matching_ans = [item for item in other_gt_ans if item["answer"] == res_ans]
        gt_acc.append(min(1, float(len(matching_ans)) / 3))
    return float(sum(gt_acc)) / len(gt_acc)


def predictions_for(answer_texts: list[str]) -> list[str]:
    """Each distinct answer as given; the first answer upper-cased, with a trailing period and with
    "the " before it; and an answer nobody gave."""
    first = answer_texts[0]
    return [*dict.fromkeys(answer_texts), first.upper(), first + ".", "the " + first, "no such answer"]


@pytest.mark.parametrize(
    ("dataset", "mode", "step"),
    # The official rule on every question; the other two modes on every second one, to stay fast.
    [("textvqa", "vqa", 1), ("vizwiz", "vqa", 1), ("textvqa", "always", 2), ("vizwiz", "prediction", 2)],
)
def test_matches_official_transliteration_on_real_answers(dataset: str, mode: str, step: int) -> None:
    questions = json.loads((DATA / f"{dataset}_val_subset.json").read_text(encoding="utf-8"))["questions"]
    assert len(questions) >= 600
    values = set()
    for question in questions[::step]:
        answer_texts = question["answers"]
        for prediction in predictions_for(answer_texts):
            expected = official_accuracy(prediction, answer_texts, mode)
            actual = vqa_accuracy(prediction, answer_texts, normalize=mode)
            assert actual == expected, (question["question_id"], prediction, mode)
            values.add(round(expected, 6))
    # The data reaches every per-question value a ten-answer question can take.
    assert values == {0.0, 0.3, 0.6, 0.9, 1.0}
