"""Tests for `idefics_eval.metrics.captioning` against pycocoevalcap 1.2, the official COCO caption code.

The module must give exactly what pycocoevalcap's own classes give when called the way
`COCOEvalCap.evaluate` calls them; a corpus small enough to work CIDEr-D out by hand pins the
scale (x100) and the IDF-from-the-evaluated-references behaviour; grouped CIDEr must equal CIDEr run
on each group alone. Each test starts the Java tokenizer at most a few times (~0.2 s each).
"""

from __future__ import annotations

import math
import os
import shutil

import pytest

from idefics_eval.errors import UserError
from idefics_eval.metrics.captioning import caption_metrics, grouped_cider, tokenize_captions

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's PTB tokenizer needs Java")

# Mixed case, punctuation, brackets, different numbers of references per image.
REFERENCES = {
    "img1": ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave!", "Man surfing in the ocean"],
    "img2": ["Two dogs play with a frisbee in the park.", "A pair of dogs chasing a frisbee on grass."],
    "img3": ["A plate of food with broccoli and rice.", "Broccoli, rice and chicken on a white plate.",
             "A dinner plate (with vegetables) on a table.", "Food on a plate."],
    "img4": ["A red double-decker bus on a city street.", "A bus driving down the road in London."],
    "img5": ["A cat sleeping on a laptop keyboard.", "A kitten lying on a computer.", "Cat asleep on a laptop."],
}
PREDICTIONS = {
    "img1": "A man riding a wave on a surfboard.",
    "img2": "Two dogs playing with a frisbee.",
    "img3": "A plate of food with broccoli.",
    "img4": "A red bus on a street.",
    "img5": "A dog sitting on a couch.",
}


def _official(predictions, references):
    """pycocoevalcap called directly, in COCOEvalCap.evaluate's order: tokenize gts, then res, then score."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in references[k]] for k in predictions})
    res = tokenizer.tokenize({k: [{"caption": predictions[k]}] for k in predictions})
    cider, cider_per_image = Cider().compute_score(gts, res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    return cider, dict(zip(gts, cider_per_image)), bleu[3], rouge


@needs_java
def test_equals_pycocoevalcap_on_the_same_captions() -> None:
    corpus, per_image = caption_metrics(PREDICTIONS, REFERENCES)
    cider, cider_per_image, bleu4, rouge = _official(PREDICTIONS, REFERENCES)
    assert corpus["cider"] == pytest.approx(100 * cider, abs=1e-12)
    assert corpus["bleu4"] == pytest.approx(100 * bleu4, abs=1e-12)
    assert corpus["rouge_l"] == pytest.approx(100 * rouge, abs=1e-12)
    assert set(per_image) == set(PREDICTIONS)
    for key in PREDICTIONS:
        assert per_image[key] == pytest.approx(100 * cider_per_image[key], abs=1e-12)
    # Sanity: a real spread of values, so the comparison above means something.
    assert 0 < corpus["cider"] < 1000 and len({round(v, 6) for v in per_image.values()}) == len(per_image)


@needs_java
def test_cider_worked_out_by_hand() -> None:
    # Two images, one reference each. N = 2 images, so IDF(g) = log 2 - log(df(g)): log 2 for an n-gram
    # found in one image's references, 0 for one found in both (here only the unigram "a").
    # Image B: prediction = reference, 4 words: every n = 1..4 has cosine 1 (the zero-weight "a" drops
    # out on both sides), no length difference -> 10 * mean(1, 1, 1, 1) = 10 -> x100 = 1000.
    # Image A: prediction "a dog runs" vs reference "a dog runs fast" (weights log 2, "a" has 0):
    #   n=1: {dog, runs} . {dog, runs, fast} / (sqrt2 * sqrt3) = 2/sqrt6
    #   n=2: {a dog, dog runs} vs {a dog, dog runs, runs fast}   -> 2/sqrt6
    #   n=3: {a dog runs} vs {a dog runs, dog runs fast}          -> 1/sqrt2
    #   n=4: the prediction has no 4-gram                          -> 0
    #   length penalty: "length" is the bigram count, 2 vs 3 -> exp(-(1**2) / (2 * 6**2)) = exp(-1/72)
    predictions = {"A": "a dog runs", "B": "a cat sleeps now"}
    references = {"A": ["a dog runs fast"], "B": ["a cat sleeps now"]}
    corpus, per_image = caption_metrics(predictions, references, extra=False)
    expected_a = 1000 * math.exp(-1 / 72) * (2 / math.sqrt(6) + 2 / math.sqrt(6) + 1 / math.sqrt(2) + 0) / 4
    assert per_image["B"] == pytest.approx(1000.0, abs=1e-9)
    assert per_image["A"] == pytest.approx(expected_a, abs=1e-9)
    assert corpus == {"cider": pytest.approx((expected_a + 1000.0) / 2, abs=1e-9)}


@needs_java
def test_grouped_cider_is_cider_of_each_group_alone() -> None:
    groups = {"img1": "in-domain", "img2": "in-domain", "img3": "near-domain", "img4": "near-domain",
              "img5": "near-domain"}
    grouped = grouped_cider(PREDICTIONS, REFERENCES, groups)
    assert set(grouped) == {"overall", "in-domain", "near-domain"}
    whole, per_image = caption_metrics(PREDICTIONS, REFERENCES, extra=False)
    assert grouped["overall"] == pytest.approx(whole["cider"], abs=1e-12)
    for group in ("in-domain", "near-domain"):
        keys = [k for k in PREDICTIONS if groups[k] == group]
        alone, _ = caption_metrics({k: PREDICTIONS[k] for k in keys}, {k: REFERENCES[k] for k in keys}, extra=False)
        assert grouped[group] == pytest.approx(alone["cider"], abs=1e-12)
        # IDF comes from the evaluated references: averaging the images' scores from the whole corpus
        # is a different (wrong) number.
        assert grouped[group] != pytest.approx(sum(per_image[k] for k in keys) / len(keys), rel=1e-3)


@needs_java
def test_line_separators_inside_a_caption_do_not_shift_later_captions() -> None:
    # The Java tokenizer ends a line at U+2028, "\r", vertical tab and form feed; the official wrapper
    # only replaces "\n", so "first<U+2028>second" would push "second" onto the next image.
    tokenized = tokenize_captions({"a": ["first\u2028second"], "b": ["x\ry"], "c": ["Last one."]})
    assert tokenized == {"a": ["first second"], "b": ["x y"], "c": ["last one"]}


def test_missing_java_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(UserError, match="default-jre-headless"):
        caption_metrics(PREDICTIONS, REFERENCES)


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        ({"a": "x"}, {"a": ["x"], "b": ["y"]}, "same image ids"),  # an extra reference would change the IDF
        ({"a": "x", "b": "y"}, {"a": ["x"]}, "same image ids"),
        ({}, {}, "no predictions"),
        ({"a": "x"}, {"a": "x"}, "non-empty sequence"),
        ({"a": "x"}, {"a": []}, "non-empty sequence"),
        ({"a": ["x"]}, {"a": ["x"]}, "one string"),
    ],
)
def test_bad_inputs_are_rejected_before_tokenizing(predictions, references, message) -> None:
    with pytest.raises(ValueError, match=message):
        caption_metrics(predictions, references)


def test_grouped_cider_needs_a_group_for_every_image() -> None:
    with pytest.raises(ValueError, match="without a group"):
        grouped_cider({"a": "x", "b": "y"}, {"a": ["x"], "b": ["y"]}, {"a": "in-domain"})
    with pytest.raises(ValueError, match="reserved"):
        grouped_cider({"a": "x"}, {"a": ["x"]}, {"a": "overall"})


def test_the_java_tokenizer_says_nothing_on_the_terminal(capfd):
    assert tokenize_captions({1: ["A dog."]}) == {1: ["a dog"]}
    captured = capfd.readouterr()
    assert "PTBTokenizer" not in captured.err and captured.err == ""


def test_a_failing_java_is_one_line_with_what_it_said(tmp_path, monkeypatch, capfd):
    fake = tmp_path / "java"
    fake.write_text("#!/bin/sh\necho 'Error: could not create the Java Virtual Machine.' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(UserError) as error:
        tokenize_captions({1: ["A dog."], 2: ["A cat."]})
    message = str(error.value)
    assert "\n" not in message and "could not create the Java Virtual Machine" in message
    assert capfd.readouterr().err == ""
