"""idefics-eval: few-shot evaluation of IDEFICS-style vision-language models.

The pipeline, one module per stage:
task spec (tasks) -> examples -> shot selection (shots) -> prompt (prompts) -> model requests
(engine) -> predictions -> metric (metrics) -> results -> reports.
"""

__version__ = "0.1.0"


def evaluate(*args, **kwargs):
    """Evaluate an already-loaded model; see `idefics_eval.api.evaluate`."""
    from .api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)
