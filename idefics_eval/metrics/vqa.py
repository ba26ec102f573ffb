"""VQA accuracy: the soft, ten-annotator accuracy of VQA v2, TextVQA and VizWiz.

Definition followed: GT-Vision-Lab/VQA, `PythonEvaluationTools/vqaEvaluation/vqaEval.py`
(`VQAEval.evaluate`, `processPunctuation`, `processDigitArticle`; commit
a013f0043c1e2cdc995922dfe257f7149aa9af06). `normalize="vqa"` reproduces that script's per-question
value exactly, quirks included. Checked by `tests/metrics/test_vqa.py`: hand-derived cases, and
`test_matches_official_transliteration_on_real_answers`, which compares this module with a separate
transliteration of the script, in the script's own shape, on TextVQA and VizWiz answers.

The official per-question value, for a prediction and N human answers:

* newlines and tabs become spaces and outer whitespace is stripped, in the prediction and the answers;
* only when the (stripped) answers are not all identical are the prediction and the answers normalised
  (`normalize_answer`); when all annotators agree the texts are compared as they are, case included;
* each answer position i scores min(1, (#answers at positions other than i equal to the prediction) / 3),
  and the value is the mean of those N scores. Answers are told apart by position (the official
  script compares answer records carrying distinct `answer_id`s), so repeated texts each count.

With ten answers this gives 0 / 0.3 / 0.6 / 0.9 / 1.0 for 0 / 1 / 2 / 3 / >=4 matching answers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["NORMALIZE_MODES", "normalize_answer", "vqa_accuracy"]

NORMALIZE_MODES = ("vqa", "always", "prediction")

# Marks handled by the punctuation step, in the official order. Periods have their own rule below;
# apostrophes and colons are not in the list, so "don't" and "12:30" keep them.
_PUNCTUATION = tuple(';/[]"{}()=+\\_-><@`,?!')

# The official script is Python 2 and compiles its patterns without re.UNICODE as a flag, so `\d` is
# ASCII-only there; re.ASCII keeps that meaning under Python 3.
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d", re.ASCII)
# Official pattern: "(?!<=\d)(\.)(?!\d)". Its first group is a negative *lookahead* for the text "<="
# plus a digit (a mistyped lookbehind); in front of a "." it always holds, so the only effective
# condition is "a period not followed by a digit": "3.5" and ".5" keep theirs, "e.g." and "5." lose them.
_LONE_PERIOD = re.compile(r"\.(?!\d)", re.ASCII)
# The official call is `periodStrip.sub("", text, re.UNICODE)`: the flag lands in the positional
# `count` parameter, and re.UNICODE == 32, so at most the first 32 such periods are removed.
_PERIOD_SUBSTITUTIONS = int(re.UNICODE)

_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})

# The official contraction table, entry for entry ("written=replacement"). Words are looked up after
# lowercasing, so the four entries with a capital I (Id've, I'dve, Im, Ive) can never apply; and the
# table maps "somebody'd" to "somebodyd", the reverse of its neighbours. Both are kept as published.
_CONTRACTIONS = dict(
    entry.split("=")
    for entry in """
    aint=ain't arent=aren't cant=can't couldve=could've couldnt=couldn't couldn'tve=couldn't've
    couldnt've=couldn't've didnt=didn't doesnt=doesn't dont=don't hadnt=hadn't hadnt've=hadn't've
    hadn'tve=hadn't've hasnt=hasn't havent=haven't hed=he'd hed've=he'd've he'dve=he'd've hes=he's
    howd=how'd howll=how'll hows=how's Id've=I'd've I'dve=I'd've Im=I'm Ive=I've isnt=isn't itd=it'd
    itd've=it'd've it'dve=it'd've itll=it'll let's=let's maam=ma'am mightnt=mightn't
    mightnt've=mightn't've mightn'tve=mightn't've mightve=might've mustnt=mustn't mustve=must've
    neednt=needn't notve=not've oclock=o'clock oughtnt=oughtn't ow's'at='ow's'at 'ows'at='ow's'at
    'ow'sat='ow's'at shant=shan't shed've=she'd've she'dve=she'd've she's=she's shouldve=should've
    shouldnt=shouldn't shouldnt've=shouldn't've shouldn'tve=shouldn't've somebody'd=somebodyd
    somebodyd've=somebody'd've somebody'dve=somebody'd've somebodyll=somebody'll somebodys=somebody's
    someoned=someone'd someoned've=someone'd've someone'dve=someone'd've someonell=someone'll
    someones=someone's somethingd=something'd somethingd've=something'd've
    something'dve=something'd've somethingll=something'll thats=that's thered=there'd
    thered've=there'd've there'dve=there'd've therere=there're theres=there's theyd=they'd
    theyd've=they'd've they'dve=they'd've theyll=they'll theyre=they're theyve=they've twas='twas
    wasnt=wasn't wed've=we'd've we'dve=we'd've weve=we've werent=weren't whatll=what'll
    whatre=what're whats=what's whatve=what've whens=when's whered=where'd wheres=where's
    whereve=where've whod=who'd whod've=who'd've who'dve=who'd've wholl=who'll whos=who's
    whove=who've whyll=why'll whyre=why're whys=why's wont=won't wouldve=would've wouldnt=wouldn't
    wouldnt've=wouldn't've wouldn'tve=wouldn't've yall=y'all yall'll=y'all'll y'allll=y'all'll
    yall'd've=y'all'd've y'alld've=y'all'd've y'all'dve=y'all'd've youd=you'd youd've=you'd've
    you'dve=you'd've youll=you'll youre=you're youve=you've
    """.split()
)


def _clean_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def _process_punctuation(text: str) -> str:
    # A mark is deleted when it touches a space anywhere in the input text, or when the input holds a
    # digit-comma-digit anywhere (then every mark is deleted, so "1,000" -> "1000"); otherwise each of
    # its occurrences becomes a space ("black/white" -> "black white"). Both conditions look at the
    # input text, not at the partly processed one.
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in _PUNCTUATION:
        touches_space = mark + " " in text or " " + mark in text
        out = out.replace(mark, "" if delete_all or touches_space else " ")
    return _LONE_PERIOD.sub("", out, count=_PERIOD_SUBSTITUTIONS)


def _process_words(text: str) -> str:
    # Lowercase, split on whitespace, number words to digits, drop articles, expand contractions.
    words = (_NUMBER_WORDS.get(word, word) for word in text.lower().split())
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def normalize_answer(text: str) -> str:
    """Normalise an answer the way the official VQA script does before comparing.

    Whitespace cleanup, then punctuation (`processPunctuation`), then words (`processDigitArticle`):
    "The Dog." -> "dog", "Two" -> "2", "1,000" -> "1000", "black/white" -> "black white", "dont" -> "don't".
    """
    return _process_words(_process_punctuation(_clean_whitespace(text)))


def vqa_accuracy(prediction: str, answers: Sequence[str], normalize: str = "vqa") -> float:
    """Per-question VQA accuracy in [0, 1] of `prediction` against the human `answers` (in order).

    `normalize` chooses when texts are normalised (`normalize_answer`) before they are compared:

    * "vqa": the official VQA v2 rule, only when the answers are not all identical (see module docstring).
    * "always": the prediction and the answers, always (the TextVQA convention). MMF's TextVQA evaluator
      (its EvalAIAnswerProcessor) also lowercases, drops "," and "?" and splits "'s" off before this
      normalisation; that extra step is not applied here.
    * "prediction": the prediction only; the answers are compared verbatim, not even stripped. This is
      what the VizWiz VQA evaluation script (vqaEval.py, author Qing Li, distributed through vizwiz.org;
      read in third-party copies, its original repository was not found) does. That script's
      contraction table writes the apostrophes of most replacements as "’" (U+2019); the official VQA
      table with "'" is used here, so a prediction such as "dont" can differ.

    Raises ValueError for an unknown mode, or for answers that are empty or a single string.
    """
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    if isinstance(answers, str) or not answers:
        raise ValueError("answers must be a non-empty sequence of answer strings")
    if normalize == "prediction":
        prediction, references = normalize_answer(prediction), list(answers)
    else:
        prediction, references = _clean_whitespace(prediction), [_clean_whitespace(a) for a in answers]
        if normalize == "always" or len(set(references)) > 1:
            prediction, references = normalize_answer(prediction), [normalize_answer(a) for a in references]
    hits = [reference == prediction for reference in references]
    total_hits = sum(hits)
    # Position i sees the hits at every other position: total_hits minus its own.
    return sum(min(1.0, (total_hits - own) / 3) for own in hits) / len(hits)
