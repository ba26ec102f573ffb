"""Captioning metrics: CIDEr (COCO, Flickr30k, NoCaps), with BLEU-4 and ROUGE-L alongside.

Definition followed: the COCO caption evaluation code as packaged on PyPI, pycocoevalcap 1.2
(`pycocoevalcap/eval.py` `COCOEvalCap.evaluate`, `cider/cider.py`, `cider/cider_scorer.py`,
`tokenizer/ptbtokenizer.py`). This module does not re-implement the scorers: it calls pycocoevalcap's
`PTBTokenizer`, `Cider`, `Bleu(4)` and `Rouge` exactly as `COCOEvalCap.evaluate` does, and only
prepares their input and rescales their output. Checked by `tests/metrics/test_captioning.py`:
equality with a direct call of the pycocoevalcap classes on the same captions, a corpus whose CIDEr
is worked out by hand, and per-group CIDEr equal to CIDEr run on each group alone.

What the official pipeline does, and so what these functions do:

* Tokenization: references and predictions are tokenized in two separate runs of the Stanford PTB
  tokenizer (a Java program; `java` must be on PATH), one caption per line, lowercased; tokens that
  are pure punctuation are dropped. Brackets are lowercased into "-lrb-"/"-rrb-" tokens, which the
  punctuation filter (written in upper case) does not catch, so they stay and count as words.
* CIDEr is pycocoevalcap's `Cider`, which is CIDEr-D: n-grams 1..4, TF-IDF vectors, the hypothesis
  counts clipped at the reference counts, a Gaussian length penalty (sigma 6) and a factor of 10.
  The "length" in that penalty is the number of *bigrams* of a caption (word count minus one).
* Document frequencies come from the references of the evaluated images only: an n-gram's IDF is
  log(#images) - log(#images whose references contain it). The score of a prediction therefore depends
  on which other images are evaluated with it. A single image always scores 0 (every n-gram found in
  its references has IDF log 1 - log 1 = 0). Record the evaluated subset with the score; a `--limit`
  run is not comparable with a full-split run.
* All values are reported x100 (CIDEr 1.05 in pycocoevalcap's units is reported as 105.0).

METEOR and SPICE are not computed. METEOR needs a second Java program (2 GB heap, paraphrase tables):
about 9 s for 1,000 images here, and the pycocoevalcap wrapper reads its stdout while never draining
its stderr pipe, which can hang on long runs. The IDEFICS model card reports CIDEr only.

One guard the official code lacks: it joins the captions with "\\n" after replacing "\\n" inside them
by spaces, but the Java tokenizer also ends a line at "\\r", vertical tab, form feed, U+2028 and U+2029;
a generated caption holding one of those shifts every later caption onto the wrong image, silently.
Those characters are replaced by spaces first, so that each caption stays one line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Hashable, Mapping, Sequence

from ..errors import UserError

__all__ = ["caption_metrics", "grouped_cider", "tokenize_captions"]

# Characters that end a line for the Stanford PTB tokenizer (besides "\n", which the official wrapper
# already replaces): found by feeding each one to the tokenizer bundled with pycocoevalcap 1.2.
_LINE_BREAKS = str.maketrans({ch: " " for ch in "\n\r\x0b\x0c\u2028\u2029"})

OVERALL = "overall"


def _require_java() -> None:
    if shutil.which("java") is None:
        raise UserError(
            "captioning metrics need Java (pycocoevalcap's PTB tokenizer runs `java`), and no `java` "
            "was found on PATH; install a Java runtime, e.g. `apt-get install default-jre-headless`"
        )


class _Captured:
    """What the tokenizer wrote to standard error (`said`), set when the capture ends."""

    said = ""


@contextlib.contextmanager
def _java_chatter_captured():
    """Send what the Java tokenizer writes to standard error (its "PTBTokenizer tokenized N tokens"
    line, JVM warnings) to a temporary file instead of the user's terminal. The tokenizer is a child
    process that inherits file descriptor 2, so `sys.stderr` redirection would not reach it."""
    with tempfile.TemporaryFile() as file:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(file.fileno(), 2)
        captured = _Captured()
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            file.seek(0)
            captured.said = file.read().decode(errors="replace")


def tokenize_captions(captions: Mapping[Hashable, Sequence[str]]) -> dict[Hashable, list[str]]:
    """Tokenize captions with pycocoevalcap's `PTBTokenizer`, in one run of the Java tokenizer.

    `captions` maps an image id to its captions (a list, even for one prediction). Returns the same ids,
    in the same order, each with its tokenized captions (lowercased, space-separated, punctuation
    tokens dropped). Raises `UserError` when Java is missing or the tokenizer's output does not line up
    with its input.
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    _require_java()
    records = {key: [{"caption": str(text).translate(_LINE_BREAKS)} for text in texts] for key, texts in captions.items()}
    try:
        with _java_chatter_captured() as chatter:
            tokenized = PTBTokenizer().tokenize(records)
    except FileNotFoundError as error:  # java vanished between the check and the call
        raise UserError(f"could not run the PTB tokenizer ({error}); install default-jre-headless") from error
    except PermissionError as error:
        raise UserError(
            f"pycocoevalcap's PTB tokenizer writes a temporary file next to its jar and could not ({error}); "
            "install pycocoevalcap where the evaluating user can write"
        ) from error
    # The wrapper pairs output lines with captions by position (zip), so a failed Java run shows up as
    # missing or short entries rather than as an error.
    if list(tokenized) != list(records) or any(len(tokenized[k]) != len(records[k]) for k in records):
        said = " ".join(chatter.said.split())[-300:]
        raise UserError(
            "the PTB tokenizer returned a different number of captions than it was given"
            + (f" (java said: {said})" if said else "") + "; check that `java -version` works (install default-jre-headless)"
        )
    return tokenized


def _check_inputs(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> None:
    if not predictions:
        raise ValueError("no predictions to score")
    missing = [key for key in predictions if key not in references]
    extra = [key for key in references if key not in predictions]
    if missing or extra:
        # The evaluated set fixes the IDF statistics, so it must be exactly the predicted images.
        raise ValueError(
            "predictions and references must cover the same image ids "
            f"(without references: {missing[:5]}{'...' if len(missing) > 5 else ''}; "
            f"without predictions: {extra[:5]}{'...' if len(extra) > 5 else ''})"
        )
    for key, prediction in predictions.items():
        if not isinstance(prediction, str):
            raise ValueError(f"prediction for {key!r} must be one string, got {type(prediction).__name__}")
        refs = references[key]
        if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"references for {key!r} must be a non-empty sequence of strings")


def _tokenize_pair(predictions, references):
    # Two tokenizer runs, references first, as COCOEvalCap.evaluate does; ids in the predictions' order.
    keys = list(predictions)
    gts = tokenize_captions({key: list(references[key]) for key in keys})
    res = tokenize_captions({key: [predictions[key]] for key in keys})
    return gts, res


def _cider(gts: Mapping, res: Mapping) -> tuple[float, dict]:
    from pycocoevalcap.cider.cider import Cider

    score, per_image = Cider().compute_score(gts, res)
    return 100.0 * float(score), {key: 100.0 * float(value) for key, value in zip(gts.keys(), per_image)}


def caption_metrics(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], extra: bool = True
) -> tuple[dict[str, float], dict[str, float]]:
    """Corpus captioning metrics of one prediction per image against its reference captions.

    `predictions` and `references` must have the same image ids: those ids are the evaluated corpus,
    from whose references CIDEr takes its document frequencies (see the module docstring).

    Returns `(corpus, per_image)`, all x100:

    * `corpus["cider"]`: pycocoevalcap CIDEr-D, the mean of the per-image values; with `extra`, also
      `corpus["bleu4"]` (pycocoevalcap `Bleu(4)`, corpus-level, "closest" reference length) and
      `corpus["rouge_l"]` (pycocoevalcap `Rouge`, mean of per-image ROUGE-L, beta 1.2);
    * `per_image[id]`: that image's CIDEr-D within this corpus.

    Raises ValueError for mismatched or malformed inputs, `UserError` when Java is missing.
    """
    _check_inputs(predictions, references)
    gts, res = _tokenize_pair(predictions, references)
    cider, per_image = _cider(gts, res)
    corpus = {"cider": cider}
    if extra:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.rouge.rouge import Rouge

        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        rouge, _ = Rouge().compute_score(gts, res)
        corpus["bleu4"] = 100.0 * float(bleu[3])
        corpus["rouge_l"] = 100.0 * float(rouge)
    return corpus, per_image


def grouped_cider(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], groups: Mapping[str, str]
) -> dict[str, float]:
    """CIDEr (x100) of each group of images, each computed on that group alone, plus `"overall"`.

    `groups` maps every predicted image id to its group (NoCaps: "in-domain", "near-domain",
    "out-domain"). Each group's value is the CIDEr of a corpus made of that group's images only, so its
    IDF statistics come from that group's references; `"overall"` is the CIDEr of all images together.
    The overall value is therefore not a weighted mean of the group values, and a group's value is not
    the mean of its images' per-image scores from the overall corpus.

    What NoCaps does: the official evaluation runs on the EvalAI server (challenge 355), whose script is
    not public. nocaps-org/updown-baseline `updown/utils/evalai.py` only submits predictions and reads
    back four separate result blocks, "in-domain", "near-domain", "out-domain" and "entire", each with
    the full set of COCO metrics; a server traceback quoted in updown-baseline issue #25 shows that the
    server's script runs pycocoevalcap's `COCOEvalCap.evaluate`. Public local re-implementations (e.g.
    Jiaxuan-Li/EVCap `scripts/eval_evcap_nocaps.sh`, and a BLIP-derived `nocaps_caption_eval`) write one
    annotation/result file per domain and run `COCOEvalCap` on each file separately, i.e. per-domain
    IDF, which is what is done here. Not verifiable against the server itself. The captions are
    tokenized once for all groups; the PTB tokenizer works line by line, so this equals tokenizing each
    group alone (the tests check that).
    """
    _check_inputs(predictions, references)
    unassigned = [key for key in predictions if key not in groups]
    if unassigned:
        raise ValueError(f"images without a group: {unassigned[:5]}{'...' if len(unassigned) > 5 else ''}")
    if OVERALL in set(groups[key] for key in predictions):
        raise ValueError(f"{OVERALL!r} is reserved for the score of all images; rename that group")
    gts, res = _tokenize_pair(predictions, references)
    result = {OVERALL: _cider(gts, res)[0]}
    for group in sorted({groups[key] for key in predictions}):
        keys = [key for key in gts if groups[key] == group]
        result[group] = _cider({k: gts[k] for k in keys}, {k: res[k] for k in keys})[0]
    return result
