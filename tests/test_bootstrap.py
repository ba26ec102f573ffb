"""Bootstrap intervals on cases with known answers, and the fast CIDEr against pycocoevalcap's."""

from __future__ import annotations

import math
import random
import shutil

import numpy as np
import pytest
from conftest import make_example
from pycocoevalcap.cider.cider import Cider
from reporting_runs import demo_queries

from idefics_eval.bootstrap import CiderCorpus, intervals, paired_intervals, percentile_interval, resample_indices
from idefics_eval.metrics import get_metric
from idefics_eval.predictions import Prediction

VQA = get_metric("vqa_accuracy")


def vqa_case(n: int, correct) -> tuple[list[Prediction], list]:
    """n questions whose 10 answers are all "yes"; query i answered "yes" (score 1) when correct(i)."""
    examples = [make_example(f"q{i}", f"img{i}", "Is it?", ["yes"] * 10, answer_type="yes/no" if i % 2 else "other")
                for i in range(n)]
    predictions = [Prediction(id=e.id, prediction="yes" if correct(i) else "no", shots=(), score=float(correct(i)))
                   for i, e in enumerate(examples)]
    return predictions, examples


def test_a_constant_score_gives_a_zero_width_interval():
    predictions, examples = vqa_case(50, lambda i: True)
    found = intervals(VQA, predictions, examples)
    assert found["vqa_accuracy"].width == 0
    assert found["vqa_accuracy"].low == pytest.approx(100.0)
    assert found["vqa_accuracy/yes/no"].width == 0


def test_the_interval_of_a_mean_narrows_as_n_grows_and_matches_the_normal_approximation():
    widths = {}
    for n in (40, 400, 4000):
        predictions, examples = vqa_case(n, lambda i: i % 2 == 0)  # mean 50%
        interval = intervals(VQA, predictions, examples)["vqa_accuracy"]
        assert interval.low < 50.0 < interval.high
        widths[n] = interval.width
    assert widths[40] > widths[400] > widths[4000]
    # 95% normal interval of a proportion of 0.5 over 4,000 queries: 2 x 1.96 x sqrt(0.25 / 4000) x 100
    assert widths[4000] == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 4000) * 100, rel=0.1)


def test_the_paired_interval_of_a_run_against_itself_is_zero():
    predictions, examples = vqa_case(60, lambda i: i % 3 == 0)
    found = paired_intervals(VQA, predictions, predictions, examples)
    assert (found["vqa_accuracy"].low, found["vqa_accuracy"].high) == (0.0, 0.0)


def test_a_paired_difference_is_centred_on_the_difference_and_narrower_than_unpaired_noise():
    baseline, examples = vqa_case(400, lambda i: i % 2 == 0)  # 50%
    candidate, _ = vqa_case(400, lambda i: i % 2 == 0 or i % 10 == 1)  # 60%: 40 more questions right
    found = paired_intervals(VQA, baseline, candidate, examples)["vqa_accuracy"]
    assert found.low < 10.0 < found.high and found.excludes_zero()
    assert found.width < intervals(VQA, candidate, examples)["vqa_accuracy"].width


def test_intervals_are_reproducible_and_the_seed_matters():
    predictions, examples = vqa_case(100, lambda i: i % 4 == 0)
    assert intervals(VQA, predictions, examples, seed=3) == intervals(VQA, predictions, examples, seed=3)
    assert intervals(VQA, predictions, examples, seed=3) != intervals(VQA, predictions, examples, seed=4)
    chunks = list(resample_indices(7, 5, seed=0))
    assert sum(len(c) for c in chunks) == 5 and all(c.shape[1] == 7 for c in chunks)


def test_percentile_interval_leaves_out_undefined_resamples():
    values = np.array([1.0, 2.0, 3.0, np.nan])
    assert percentile_interval(values, level=0.5) == percentile_interval(values[:3], level=0.5)
    assert math.isnan(percentile_interval(np.array([1.0, np.nan, np.nan])).low)


def test_roc_auc_is_recomputed_on_each_resample():
    metric = get_metric("roc_auc")
    examples = [make_example(f"m{i}", f"m{i}", "", ["no"]) for i in range(60)]
    examples = [type(e)(**{**e.__dict__, "label": i % 2}) for i, e in enumerate(examples)]
    rng = random.Random(0)
    # log-likelihoods of ("no", "yes"): the positives lean "yes", with noise, so the AUC is well inside (50, 100)
    predictions = []
    for i, e in enumerate(examples):
        lean = (1.0 if e.label else -1.0) + rng.gauss(0, 1.5)
        predictions.append(Prediction(id=e.id, prediction="", shots=(), score=None, scores=(0.0, lean),
                                      ranking=(1, 0) if lean > 0 else (0, 1)))
    observed = metric.aggregate(predictions, examples)["roc_auc"]
    found = intervals(metric, predictions, examples, resamples=100)["roc_auc"]
    assert found.low < observed < found.high and 0 < found.width < 50


def test_cider_corpus_equals_pycocoevalcap_on_the_corpus_and_on_a_resample_with_duplicates():
    rng = random.Random(0)
    words = "a the dog cat red blue on in sits runs man woman table grass two".split()

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))  # empty captions included

    references = {i: [sentence() for _ in range(rng.randint(1, 5))] for i in range(80)}
    candidates = {i: [sentence()] for i in range(80)}
    corpus = CiderCorpus(references, candidates)
    score, per_image = Cider().compute_score(references, candidates)
    assert corpus.score(np.ones(80)) == pytest.approx(100 * score, rel=1e-12)
    assert np.allclose(corpus.per_image(np.ones(80)), 100 * per_image, rtol=1e-12, atol=1e-12)
    drawn = np.random.default_rng(1).integers(0, 80, 80)  # a resample: duplicates count as separate images
    expected, _ = Cider().compute_score({j: references[i] for j, i in enumerate(drawn)}, {j: candidates[i] for j, i in enumerate(drawn)})
    assert corpus.score(np.bincount(drawn, minlength=80).astype(float)) == pytest.approx(100 * expected, rel=1e-12)


@pytest.mark.skipif(shutil.which("java") is None, reason="CIDEr's PTB tokenizer needs java")
def test_cider_intervals_on_the_demo_captions():
    examples = demo_queries("coco")
    predictions = [Prediction(id=e.id, prediction=e.answers[i % len(e.answers)] if i % 2 else "a picture", shots=(), score=None)
                   for i, e in enumerate(examples)]
    metric = get_metric("cider")
    observed = metric.aggregate(predictions, examples)
    found = intervals(metric, predictions, examples, resamples=200)
    assert "bleu4" not in found and {"cider", "rouge_l"} <= set(found)
    assert found["cider"].low < observed["cider"] < found["cider"].high
    assert found["rouge_l"].low < observed["rouge_l"] < found["rouge_l"].high
