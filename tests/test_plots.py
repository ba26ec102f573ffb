"""Plots: valid PNG files of the documented size, one panel per task, the published curve on request."""

from __future__ import annotations

import struct

from reporting_runs import scored_run, table_run, vqa_answers

from idefics_eval.cli import main
from idefics_eval.export import load_entries
from idefics_eval.plots import DPI, figure_size, reference_series, results_figure, shot_scaling_figure, shot_scaling_series

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def two_models(tmp_path):
    a = table_run(tmp_path / "a", "org/model-a", {
        ("vqav2", 0): {"vqa_accuracy": 45.0}, ("vqav2", 4): {"vqa_accuracy": 50.0}, ("vqav2", 8): {"vqa_accuracy": 52.0},
        ("coco", 0): {"cider": 40.0}, ("coco", 4): {"cider": 80.0},
        ("hatefulmemes", 0): {"roc_auc": 51.0, "accuracy": 50.0}})
    b = table_run(tmp_path / "b", "org/model-b", {("vqav2", 0): {"vqa_accuracy": 55.0}, ("vqav2", 8): {"vqa_accuracy": 60.0}})
    return a, b


def test_one_panel_per_task_one_line_per_model(tmp_path):
    series, metrics = shot_scaling_series(load_entries(two_models(tmp_path)))
    assert metrics == {"vqav2": "vqa_accuracy", "coco": "cider", "hatefulmemes": "roc_auc"}  # the card's order
    figure = shot_scaling_figure(series, metrics)
    panels = [ax for ax in figure.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["VQAv2", "Coco", "HatefulMemes"]
    assert [ax.get_ylabel() for ax in panels] == ["OE VQA acc", "CIDEr", "ROC AUC"]
    assert [len(ax.get_lines()) for ax in panels] == [2, 1, 1]
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["0", "4", "8"]
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["org/model-a", "org/model-b"]


def test_cli_plot_writes_a_png_of_the_documented_size_with_the_published_curve(tmp_path, capsys):
    a, b = two_models(tmp_path)
    main(["plot", str(a), str(b), "-o", str(tmp_path / "plots"), "--reference", "idefics-9b"])
    path = tmp_path / "plots" / "shot_scaling.png"
    assert f"wrote {path}" in capsys.readouterr().out
    width, height = figure_size(3, ["org/model-a", "org/model-b", "idefics-9b (model card)"])  # three tasks
    assert png_size(path) == (int(width * DPI), int(height * DPI))  # matplotlib truncates to whole pixels
    (vqa,) = [s for s in reference_series("idefics-9b", {"vqav2": "vqa_accuracy"})]
    assert vqa.x == [0, 4, 8, 16, 32] and vqa.y == [50.9, 55.6, 56.4, 57.2, 57.9] and vqa.reference


def test_intervals_are_drawn_from_the_predictions(tmp_path):
    run = scored_run(tmp_path / "run", "m", "vqav2", {0: vqa_answers(lambda i: i % 2 == 0), 4: vqa_answers(lambda i: i % 4 == 0)})
    (line,), _ = shot_scaling_series(load_entries([run]), intervals=True, resamples=200)
    assert all(low < y < high for low, y, high in zip(line.low, line.y, line.high))
    main(["plot", str(run), "-o", str(tmp_path / "plots"), "--ci", "--resamples", "100"])
    assert png_size(tmp_path / "plots" / "shot_scaling.png") == tuple(int(v * DPI) for v in figure_size(1, ["m"]))


def test_the_sweep_plot_has_a_panel_per_task_and_one_for_the_selection_score(tmp_path):
    from idefics_eval.plots import Series, sweep_figure
    from idefics_eval.sweep import Checkpoint, plot_sweep, selection_scores

    figure = sweep_figure([Series("0-shot", "vqav2", [100, 200], [1.0, 2.0]), Series("0-shot", "coco", [100, 200], [3.0, 4.0])],
                          {"vqav2": "vqa_accuracy", "coco": "cider"}, 200, "step-200", True,
                          Series("mean-normalised", "", [100, 200], [0.5, 1.0]))
    assert [ax.get_title() for ax in figure.axes if ax.get_visible()] == ["VQAv2", "Coco", "Selection score"]
    assert [t.get_text() for t in figure.legends[0].get_texts()] == ["0-shot", "best: step-200", "mean-normalised"]

    checkpoints = [Checkpoint(tmp_path / name, name, None) for name in ("early", "late")]  # no steps: plotted by name
    table = [{"checkpoint": c.name, "step": None, "task": task, "shots": shots, "metric": metric, "value": value + i}
             for i, c in enumerate(checkpoints) for task, metric, value in (("vqav2", "vqa_accuracy", 50.0), ("coco", "cider", 90.0))
             for shots in (0, 4)]
    path = plot_sweep(checkpoints, table, selection_scores(table), checkpoints[1], "mean-normalised", tmp_path / "sweep.png")
    assert png_size(path) == tuple(int(v * DPI) for v in figure_size(3, ["0-shot", "4-shot", "best: late", "mean-normalised"]))


def test_the_published_curve_beside_a_limited_run_says_it_is_partial(tmp_path):
    run = scored_run(tmp_path / "run", "m", "vqav2", {0: vqa_answers(lambda i: i % 2 == 0)}, limit=8)
    title = results_figure([run], ["idefics-9b"]).get_suptitle()
    assert " ".join(title.split()) == "Shot scaling partial, n below the model card's full splits: m (--limit 8, bundled demo data)"
    assert results_figure([run]).get_suptitle() == "Shot scaling"  # nothing to compare it with
    full = table_run(tmp_path / "full", "m", {("vqav2", 0): {"vqa_accuracy": 50.0}})
    assert results_figure([full], ["idefics-9b"]).get_suptitle() == "Shot scaling"


def test_characters_the_font_lacks_are_one_warning_line(tmp_path, capsys, recwarn):
    """A run named in CJK: matplotlib's default font has no glyphs for it, which it reports in two
    lines per character (with our source line); the plot says so once, in one line."""
    import matplotlib.pyplot as plt

    from idefics_eval.plots import save

    figure = plt.figure()
    figure.suptitle("名前 run")
    save(figure, tmp_path / "plot.png")
    plt.close(figure)
    err = capsys.readouterr().err
    assert not [w for w in recwarn if "Glyph" in str(w.message)]
    assert err.splitlines() == ["warning: the plot's font has no glyph for 名, 前; they show as boxes in the plot"], err
