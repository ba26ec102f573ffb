"""Confidence intervals: the percentile bootstrap over queries, from a run's per-query predictions.

A run's metric is a statistic of its queries; resampling the queries with replacement `resamples`
times (B = 1,000 by default) and taking the 2.5th and 97.5th percentiles of the B recomputed values
gives a 95% interval (Efron and Tibshirani, *An Introduction to the Bootstrap*, ch. 13, the
percentile method). The draws come from a generator seeded with `seed`, so an interval is the same
on every machine. Two runs on the same queries are compared with the *paired* bootstrap: the same
resampled query ids for both, the interval of the difference of the two recomputed values.

How each kind of metric is recomputed on a resample:

* Means of a per-query score (VQA accuracies and their answer-type breakdown, accuracy, VisDial NDCG,
  the Winoground group score): the stored per-query `score`s are averaged over the resampled
  queries, vectorised. `MEAN_KEYS` lists these; each is checked to reproduce the run's own value
  before it is used, and a key that does not falls back to the general way below.
* CIDEr (COCO, Flickr30k, NoCaps, with NoCaps' per-domain values): a corpus metric, since its
  document frequencies come from the evaluated references. The captions are tokenized once (one
  PTB tokenizer run, as `metrics.captioning` does) and each resample's CIDEr-D is recomputed on the
  resampled corpus, duplicates included, by `CiderCorpus`: pycocoevalcap's formula written over
  n-gram count arrays, so that 1,000 resamples take seconds rather than hours (checked equal to
  pycocoevalcap's `Cider` in tests/test_bootstrap.py). ROUGE-L is the mean of per-image values and is
  resampled as a mean. BLEU-4 gets no interval.
* Everything else (ROC AUC, top-5 accuracy, MRR and recall@k, Winoground text and image scores, and
  metrics installed by other packages): the task's own `Metric.aggregate` on the resampled
  predictions and examples. A resample on which the metric is undefined (ROC AUC of a resample with
  one class only) is left out of the percentiles.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import UserError
from .examples import Example, ExampleSet
from .metrics import Metric, get_metric
from .predictions import Prediction, read_predictions
from .results import Result

DEFAULT_RESAMPLES = 1000
LEVEL = 0.95

# Metric (a task's `metric`) -> (the key that is 100 x the mean per-query score, the example metadata
# key its breakdown groups by). See metrics/__init__.py; `_mean_replicates` checks each against the run.
MEAN_KEYS: dict[str, tuple[str, str | None]] = {
    "vqa_accuracy": ("vqa_accuracy", "answer_type"),
    "textvqa_accuracy": ("textvqa_accuracy", "answer_type"),
    "vizwiz_accuracy": ("vizwiz_accuracy", "answer_type"),
    "accuracy": ("accuracy", None),
    "visdial_ndcg": ("ndcg", None),
    "winoground": ("group", None),
    "fairface_accuracy": ("accuracy", None),
}
_ELEMENTS_PER_CHUNK = 2_000_000  # resampled indices held in memory at once


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


NO_INTERVAL = Interval(math.nan, math.nan)


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> Interval:
    """The percentile interval of bootstrap replicates; NaN replicates (undefined resamples) are left
    out, and with fewer than half of them defined there is no interval."""
    values = np.asarray(replicates, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0 or 2 * len(values) < len(replicates):
        return NO_INTERVAL
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return Interval(float(low), float(high))


def resample_indices(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """The resampled query indices, in chunks of rows (one row per resample, n indices each).

    The draws depend only on (n, resamples, seed): two runs with the same number of queries get the
    same resamples, which is what the paired bootstrap needs.
    """
    if n < 1:
        raise ValueError("no queries to resample")
    rng = np.random.default_rng(seed)
    rows = max(1, _ELEMENTS_PER_CHUNK // n)
    for start in range(0, resamples, rows):
        yield rng.integers(0, n, size=(min(rows, resamples - start), n))


def replicates(metric: Metric, predictions: Sequence[Prediction], examples: Sequence[Example],
               resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, np.ndarray]:
    """Metric key -> its `resamples` values on resampled queries (`predictions[i]` answers `examples[i]`)."""
    if len(predictions) != len(examples):
        raise ValueError(f"{len(predictions)} predictions but {len(examples)} examples")
    observed = metric.aggregate(predictions, examples)
    if metric.name == "cider":  # recomputing through aggregate would run the Java tokenizer per resample
        return _caption_replicates(predictions, examples, observed, resamples, seed)
    found: dict[str, np.ndarray] = {}
    if metric.name in MEAN_KEYS:
        found |= _mean_replicates(metric.name, predictions, examples, observed, resamples, seed)
    remaining = [key for key in observed if key not in found]
    if remaining:
        found |= _aggregate_replicates(metric, predictions, examples, remaining, resamples, seed)
    return found


def intervals(metric: Metric, predictions: Sequence[Prediction], examples: Sequence[Example],
              resamples: int = DEFAULT_RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict[str, Interval]:
    """Metric key -> its percentile bootstrap interval (keys without one, as BLEU-4, are absent)."""
    return {key: percentile_interval(values, level)
            for key, values in replicates(metric, predictions, examples, resamples, seed).items()}


def paired_intervals(metric: Metric, baseline: Sequence[Prediction], candidate: Sequence[Prediction],
                     examples: Sequence[Example], resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
                     level: float = LEVEL) -> dict[str, Interval]:
    """Metric key -> interval of candidate minus baseline, both recomputed on the same resampled
    queries (`baseline[i]` and `candidate[i]` both answer `examples[i]`)."""
    if [p.id for p in baseline] != [p.id for p in candidate]:
        raise ValueError("the paired bootstrap needs the same queries in the same order in both runs")
    base = replicates(metric, baseline, examples, resamples, seed)
    other = replicates(metric, candidate, examples, resamples, seed)
    return {key: percentile_interval(other[key] - base[key], level) for key in base if key in other}


def _mean_replicates(name: str, predictions, examples, observed: dict[str, float], resamples: int, seed: int) -> dict[str, np.ndarray]:
    key, breakdown = MEAN_KEYS[name]
    valid = np.array([p.score is not None for p in predictions])
    scores = np.array([p.score if p.score is not None else 0.0 for p in predictions], dtype=float)
    masks = {key: valid}
    if breakdown:
        groups = [str(e.metadata[breakdown]) if breakdown in e.metadata else None for e in examples]
        for group in sorted({g for g in groups if g is not None}):
            masks[f"{key}/{group}"] = valid & np.array([g == group for g in groups])
    # Only keys whose mean over the full sample is the run's own value: the table above cannot drift
    # from metrics/__init__.py unnoticed.
    masks = {k: m for k, m in masks.items() if k in observed and m.any()
             and math.isclose(100.0 * scores[m].mean(), observed[k], rel_tol=1e-9, abs_tol=1e-9)}
    found: dict[str, list[np.ndarray]] = {k: [] for k in masks}
    for chunk in resample_indices(len(predictions), resamples, seed):
        drawn = scores[chunk]
        for k, mask in masks.items():
            counted = mask[chunk]
            with np.errstate(invalid="ignore", divide="ignore"):
                found[k].append(100.0 * (drawn * counted).sum(axis=1) / counted.sum(axis=1))
    return {k: np.concatenate(v) for k, v in found.items()}


def _aggregate_replicates(metric: Metric, predictions, examples, keys: list[str], resamples: int, seed: int) -> dict[str, np.ndarray]:
    found = {key: np.full(resamples, np.nan) for key in keys}
    row = 0
    for chunk in resample_indices(len(predictions), resamples, seed):
        for drawn in chunk:
            try:
                values = metric.aggregate([predictions[i] for i in drawn], [examples[i] for i in drawn])
            except (ValueError, ZeroDivisionError):  # undefined on this resample (e.g. one class only)
                values = {}
            for key in keys:
                found[key][row] = values.get(key, np.nan)
            row += 1
    return found


def _caption_replicates(predictions, examples, observed: dict[str, float], resamples: int, seed: int) -> dict[str, np.ndarray]:
    from pycocoevalcap.rouge.rouge import Rouge

    from .metrics.captioning import tokenize_captions

    keys = list(range(len(predictions)))
    references = tokenize_captions({i: list(examples[i].answers) for i in keys})
    candidates = tokenize_captions({i: [predictions[i].prediction] for i in keys})
    corpus = CiderCorpus(references, candidates)
    if not math.isclose(corpus.score(np.ones(len(keys))), observed["cider"], rel_tol=1e-9, abs_tol=1e-9):
        raise RuntimeError(f"the bootstrap's CIDEr ({corpus.score(np.ones(len(keys)))}) differs from the metric's "
                           f"({observed['cider']}): metrics/captioning.py and CiderCorpus disagree")
    subsets = {"cider": np.ones(len(keys), dtype=bool)}
    if "cider/overall" in observed:
        subsets["cider/overall"] = subsets["cider"]
    for key in observed:
        group = key.removeprefix("cider/")
        if key.startswith("cider/") and group != "overall":
            subsets[key] = np.array([str(e.metadata.get("domain")) == group for e in examples])
    found: dict[str, list[float]] = {key: [] for key in subsets}
    for chunk in resample_indices(len(predictions), resamples, seed):
        for drawn in chunk:
            weights = np.bincount(drawn, minlength=len(keys)).astype(float)
            for key, subset in subsets.items():
                found[key].append(corpus.score(weights * subset))
    result = {key: np.array(values) for key, values in found.items()}
    if "rouge_l" in observed:
        _, per_image = Rouge().compute_score(references, candidates)
        per_image = 100.0 * np.asarray(per_image, dtype=float)
        result["rouge_l"] = np.concatenate([per_image[chunk].mean(axis=1) for chunk in resample_indices(len(keys), resamples, seed)])
    return result


class CiderCorpus:
    """pycocoevalcap's CIDEr-D of any multiset of a fixed set of tokenized images, fast.

    `score(weights)` is the corpus CIDEr (x100) of the corpus holding image i `weights[i]` times: what
    pycocoevalcap's `Cider().compute_score` returns for that corpus with each copy under its own key.
    Written from pycocoevalcap 1.2 `cider/cider_scorer.py`: an n-gram's idf is log(N) - log(max(1,
    df)), with N the number of images in the corpus and df the number whose references contain it;
    the per-order similarity sum_g min(h_g, r_g) r_g idf_g^2 / (|h idf| |r idf|) with term counts h
    and r (pycocoevalcap clips the tf-idf values, the same thing since idf >= 0), times the Gaussian
    penalty of the bigram-count difference (sigma 6); the image's score is 10 x the mean over orders
    1-4 of the sum over references, divided by its number of references. Everything but idf is fixed
    by the captions, so each term is precomputed as a sparse array and a resample costs a few
    `np.bincount` calls.
    """

    ORDERS = 4
    SIGMA = 6.0

    def __init__(self, references: dict, candidates: dict):
        from pycocoevalcap.cider.cider_scorer import precook

        if list(references) != list(candidates):
            raise ValueError("references and candidates must have the same image keys in the same order")
        columns: dict[tuple, int] = {}

        def column(ngram: tuple) -> int:
            return columns.setdefault(ngram, len(columns))

        document_rows, document_cols = [], []  # image i's references contain n-gram g
        hyp_rows, hyp_cols, hyp_values = [], [], []  # (image, order) -> h_g^2
        ref_rows, ref_cols, ref_values = [], [], []  # (pair, order) -> r_g^2
        match_rows, match_cols, match_values = [], [], []  # (pair, order) -> min(h_g, r_g) r_g
        pair_image, penalties, reference_counts = [], [], []
        for image, key in enumerate(references):
            (candidate,) = candidates[key]
            hyp = precook(candidate, self.ORDERS)
            hyp_length = sum(count for ngram, count in hyp.items() if len(ngram) == 2)
            for ngram, count in hyp.items():
                hyp_rows.append(image * self.ORDERS + len(ngram) - 1)
                hyp_cols.append(column(ngram))
                hyp_values.append(count * count)
            cooked = [precook(reference, self.ORDERS) for reference in references[key]]
            reference_counts.append(len(cooked))
            for ngram in {ngram for ref in cooked for ngram in ref}:
                document_rows.append(image)
                document_cols.append(column(ngram))
            for ref in cooked:
                pair = len(pair_image)
                pair_image.append(image)
                ref_length = sum(count for ngram, count in ref.items() if len(ngram) == 2)
                penalties.append(math.exp(-((hyp_length - ref_length) ** 2) / (2 * self.SIGMA**2)))
                for ngram, count in ref.items():
                    row = pair * self.ORDERS + len(ngram) - 1
                    ref_rows.append(row)
                    ref_cols.append(column(ngram))
                    ref_values.append(count * count)
                    if ngram in hyp:
                        match_rows.append(row)
                        match_cols.append(columns[ngram])
                        match_values.append(min(hyp[ngram], count) * count)
        self.images = len(references)
        self.pairs = len(pair_image)
        self.vocabulary = len(columns)
        as_int = lambda values: np.asarray(values, dtype=np.int64)  # noqa: E731
        as_float = lambda values: np.asarray(values, dtype=float)  # noqa: E731
        self.document = (as_int(document_rows), as_int(document_cols))
        self.hyp = (as_int(hyp_rows), as_int(hyp_cols), as_float(hyp_values))
        self.ref = (as_int(ref_rows), as_int(ref_cols), as_float(ref_values))
        self.match = (as_int(match_rows), as_int(match_cols), as_float(match_values))
        self.pair_image = as_int(pair_image)
        self.penalties = as_float(penalties)
        self.reference_counts = as_float(reference_counts)

    def _weighted(self, triple, idf2: np.ndarray, size: int) -> np.ndarray:
        rows, cols, values = triple
        return np.bincount(rows, weights=values * idf2[cols], minlength=size)

    def per_image(self, weights: np.ndarray) -> np.ndarray:
        """Each image's CIDEr-D (x100) within the corpus `weights` describes."""
        size = float(weights.sum())
        rows, cols = self.document
        frequency = np.bincount(cols, weights=weights[rows], minlength=self.vocabulary)
        idf2 = (math.log(size) - np.log(np.maximum(1.0, frequency))) ** 2
        hyp = self._weighted(self.hyp, idf2, self.images * self.ORDERS).reshape(self.images, self.ORDERS)
        ref = self._weighted(self.ref, idf2, self.pairs * self.ORDERS).reshape(self.pairs, self.ORDERS)
        match = self._weighted(self.match, idf2, self.pairs * self.ORDERS).reshape(self.pairs, self.ORDERS)
        norms = np.sqrt(hyp[self.pair_image] * ref)
        with np.errstate(invalid="ignore", divide="ignore"):
            similarity = np.where(norms > 0, match / norms, 0.0)  # a zero norm means a zero match
        by_pair = similarity.mean(axis=1) * self.penalties
        return 1000.0 * np.bincount(self.pair_image, weights=by_pair, minlength=self.images) / self.reference_counts

    def score(self, weights: np.ndarray) -> float:
        """The corpus CIDEr-D (x100): the weighted mean of the per-image values."""
        total = float(weights.sum())
        if total == 0:
            return math.nan
        return float(np.dot(weights, self.per_image(weights)) / total)


@dataclass(frozen=True)
class Scored:
    """A results row's queries, in split order, with the run's predictions for them."""

    task: str
    metric: Metric
    predictions: list[Prediction]
    examples: list[Example]


class QueryData:
    """Loads the query splits that results rows were evaluated on, each once, from the data source
    the row records (`config.data.source`), and checks that it still holds the same queries
    (`scoring.load_queries` and `check_queries`, shared with `idefics-eval score`)."""

    def __init__(self, tasks_dirs: tuple[Path, ...] = ()):
        self.tasks_dirs = tasks_dirs
        self.splits: dict[tuple[str, str | None, str | None], ExampleSet] = {}

    def scored(self, row: Result, folder: Path) -> Scored:
        from .scoring import Given, check_queries, load_queries
        from .tasks import load_task

        if row.predictions is None:
            raise UserError(f"{folder}: the {row.task} {row.shots}-shot row is a mean over seeds; intervals come from single runs")
        spec = load_task(row.task, self.tasks_dirs)
        recorded = row.config.get("data", {})
        key = (row.task, recorded.get("source"), recorded.get("query_split"))  # a selection split is another split
        where = f"{folder}/results.json ({row.task})"
        if key not in self.splits:  # the recorded data, loaded and checked as `score` does
            try:
                self.splits[key] = load_queries(spec, row, Given(), where)
            except UserError as error:
                raise UserError(f"the confidence intervals need the query split: {error} (or pass --no-ci)") from None
        split = self.splits[key]
        check_queries(split, row, Given(), where, [], remedy="restore the data, or pass --no-ci")
        limit = row.config.get("limit")
        examples = list(split.examples[:limit] if limit else split.examples)
        if len(examples) != row.num_examples + row.num_skipped:
            raise UserError(f"{folder}: the {row.task} {row.shots}-shot row counts {row.num_examples} queries, but its "
                            f"split and limit give {len(examples)}; pass --no-ci")
        found = {p.id: p for p in read_predictions(folder / row.predictions)}
        examples = [e for e in examples if e.id not in found or found[e.id].error is None]  # skipped: not scored
        missing = [e.id for e in examples if e.id not in found]
        if missing:
            raise UserError(f"{folder / row.predictions}: no prediction for query {missing[0]} ({len(missing)} missing); "
                            "rerun the evaluation to finish it")
        metric = get_metric(spec.metric)
        predictions = [found[e.id] for e in examples]
        if any(p.score is None for p in predictions):  # rescored the way the runner scored them
            predictions = [replace(p, score=metric.score(p, e)) if p.score is None else p for p, e in zip(predictions, examples)]
        return Scored(row.task, metric, predictions, examples)

    def intervals(self, row: Result, folder: Path, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict[str, Interval]:
        scored = self.scored(row, folder)
        return intervals(scored.metric, scored.predictions, scored.examples, resamples, seed)
