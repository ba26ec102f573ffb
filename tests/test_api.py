"""The Python API evaluates an in-memory model and gives the same rows as the command line."""

from __future__ import annotations

import idefics_eval
from idefics_eval.demo.model import build_model, build_processor
from idefics_eval.runner import RunConfig, run


def test_evaluate_in_memory_model_equals_the_runner(tmp_path):
    model, processor = build_model(0), build_processor()
    rows = idefics_eval.evaluate(model, processor, ["vqav2"], shots=[0, 4], limit=3, demo_data=True, num_beams=1,
                                 output_dir=tmp_path / "api", cache_dir=tmp_path / "cache")
    reference = run(RunConfig(task="vqav2", shots=(0, 4), output_dir=tmp_path / "cli", demo=True, demo_seed=0, limit=3, num_beams=1,
                              cache_dir=tmp_path / "cache", progress=False))
    assert [(r.task, r.shots, r.metrics, r.num_examples) for r in rows] == [(r.task, r.shots, r.metrics, r.num_examples) for r in reference]
    for name in ("vqav2_0shot.jsonl", "vqav2_4shot.jsonl"):
        assert (tmp_path / "api" / "predictions" / name).read_text() == (tmp_path / "cli" / "predictions" / name).read_text()
    assert rows[0].config["model"]["fingerprint"] == reference[0].config["model"]["fingerprint"]
