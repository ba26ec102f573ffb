"""Every built-in task runs on its bundled demo data at 0 and 4 shots (Winoground: 0), writes its
metric, and `score` re-scores its predictions to the same numbers."""

from __future__ import annotations

import pytest

from idefics_eval.runner import RunConfig, run
from idefics_eval.scoring import score_file
from idefics_eval.tasks import load_task, task_files

MODEL_CARD_TASKS = {"vqav2", "okvqa", "textvqa", "vizwiz", "coco", "nocaps", "flickr30k", "imagenet", "visdial",
                    "hatefulmemes", "scienceqa", "renderedsst2", "winoground", "textcaps"}
HEADLINE = {"vqa_accuracy": "vqa_accuracy", "textvqa_accuracy": "textvqa_accuracy", "vizwiz_accuracy": "vizwiz_accuracy",
            "cider": "cider", "accuracy": "accuracy", "roc_auc": "roc_auc", "visdial_ndcg": "ndcg", "winoground": "group"}


def test_the_model_card_benchmarks_are_listed():
    assert MODEL_CARD_TASKS <= set(task_files())


@pytest.mark.parametrize("task", sorted(MODEL_CARD_TASKS))
def test_demo_run_and_rescore(task, tmp_path):
    spec = load_task(task)
    shots = (0,) if spec.zero_shot_only else (0, 4)
    rows = run(RunConfig(task=task, shots=shots, output_dir=tmp_path / "out", demo=True, limit=6, num_beams=1,
                         max_new_tokens=8, cache_dir=tmp_path / "cache", progress=False))
    assert [r.shots for r in rows] == list(shots)
    for row in rows:
        assert HEADLINE[spec.metric] in row.metrics and row.num_examples == 6
        scored_task, rescored, count, _ = score_file(tmp_path / "out" / row.predictions)  # from the run's record
        assert scored_task == task
        assert count == 6
        assert rescored == pytest.approx(row.metrics, abs=1e-9)
