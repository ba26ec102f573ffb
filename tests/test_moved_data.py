"""A data folder moved elsewhere is the same data: the fingerprints results and manifests record name
image files by their path inside the folder, so `score RUN_DIR --data NEW` and a resume accept the
moved folder, and still refuse changed content. Folders recorded before (full paths) keep working."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from idefics_eval import formats
from idefics_eval.cli import main
from idefics_eval.plan import RunConfig, prepare
from idefics_eval.tasks import load_task

from conftest import invoke

ROOT = Path(__file__).resolve().parents[1]
VQAV2_DATA = ROOT / "idefics_eval" / "demo" / "data" / "vqav2"
TINY = ["--demo", "--num-beams", "1", "--max-new-tokens", "3", "--limit", "3", "--no-progress"]


def fingerprint_before(split) -> str:
    """The fingerprint as results recorded it before 2026-12-03: image files by their full path."""
    digest = hashlib.sha256()
    for e in split.examples:
        digest.update(f"{e.id}\x1f{e.image_id}\x1f{e.image.key}\x1f".encode())
        digest.update("\x1f".join(e.answers).encode())
        digest.update(f"\x1d{e.label}\x1d".encode() + "\x1f".join(e.candidates).encode())
        digest.update("".join(ref.key for ref in e.extra_images).encode())
        digest.update(b"\x1e")
    return digest.hexdigest()[:16]


def index_fingerprint_before(split, encoder: str) -> str:
    content = hashlib.sha256(fingerprint_before(split).encode())
    for image_id, ref in split.unique_images():
        content.update(f"\x1e{image_id}\x1f{hashlib.sha256(ref.path.read_bytes()).hexdigest()}".encode())
    images = len(split.unique_images())
    return hashlib.sha256("\x1f".join([split.name, content.hexdigest()[:16], encoder, str(images)]).encode()).hexdigest()[:16]


def load(folder: Path):
    spec = load_task("vqav2")
    return formats.load_split(spec, spec.query_split, str(folder))


def change_an_answer(folder: Path) -> None:
    path = folder / "v2_mscoco_val2014_annotations.json"
    annotations = json.loads(path.read_text())
    annotations["annotations"][0]["answers"][0]["answer"] = "something else"
    path.write_text(json.dumps(annotations))


def test_the_fingerprint_names_the_content_not_the_place(tmp_path):
    shutil.copytree(VQAV2_DATA, tmp_path / "a")
    shutil.copytree(VQAV2_DATA, tmp_path / "b")
    here, there = load(tmp_path / "a"), load(tmp_path / "b")
    assert here.fingerprint == there.fingerprint and here.content_fingerprint == there.content_fingerprint
    assert fingerprint_before(here) != fingerprint_before(there)  # what made a moved folder "different data"
    assert here.fingerprint_at(here.source) == fingerprint_before(here)
    assert there.fingerprint_at(here.source) == fingerprint_before(here)  # the old record, recognised from the new place
    assert there.is_recorded_as(fingerprint_before(here), here.source) and not there.is_recorded_as(fingerprint_before(here), there.source)
    change_an_answer(tmp_path / "b")
    assert load(tmp_path / "b").fingerprint != here.fingerprint
    image = next((tmp_path / "a").rglob("*.jpg"))
    image.write_bytes(next(p for p in (tmp_path / "a").rglob("*.jpg") if p != image).read_bytes())
    replaced = load(tmp_path / "a")
    assert replaced.fingerprint == here.fingerprint  # the same names and answers...
    assert replaced.content_fingerprint != here.content_fingerprint  # ...but the caches of what the images gave miss


def run(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["run", "--task", "vqav2", "--data", str(data), "--shots", "0,1", "--output-dir", str(out), "--cache-dir", str(cache),
            *TINY, *extra]


def predictions(out: Path) -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted((out / "predictions").glob("*.jsonl"))}


def make_old(out: Path, data: Path, cache: Path) -> None:
    """Rewrite the folder's records as a run before 2026-12-03 wrote them: fingerprints over full paths."""
    p = prepare(RunConfig("vqav2", (0, 1), out, demo=True, data=str(data), cache_dir=cache, limit=3), writes=False)
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest.values():
        entry["identity"]["data"]["query_fingerprint"] = fingerprint_before(p.all_queries)
        for shots in entry["files"].values():
            if shots:
                shots["support_fingerprint"] = fingerprint_before(p.support)
                shots["index_fingerprint"] = index_fingerprint_before(p.support, shots["encoder"])
    (out / "manifest.json").write_text(json.dumps(manifest))
    rows = json.loads((out / "results.json").read_text())
    for row in rows:
        row["config"]["data"]["query_fingerprint"] = fingerprint_before(p.all_queries)
    (out / "results.json").write_text(json.dumps(rows))


@pytest.mark.parametrize("recorded", ["today", "before 2026-12-03"])
def test_a_moved_data_folder_rescores_and_resumes_and_changed_data_is_refused(recorded, tmp_path, capsys):
    first, moved, out, cache = tmp_path / "data", tmp_path / "elsewhere" / "vqav2", tmp_path / "run", tmp_path / "cache"
    shutil.copytree(VQAV2_DATA, first)
    main(run(first, out, cache))
    made = predictions(out)
    if recorded != "today":
        make_old(out, first, cache)
    shutil.copytree(first, moved)
    shutil.rmtree(first)

    code, _, err = invoke(capsys, "score", str(out), "--task", "vqav2", "--data", str(moved), "-o", str(tmp_path / "rescored.json"))
    assert code == 0, err
    assert "note:" not in err  # not "the queries are not those the run scored"
    code, _, err = invoke(capsys, *run(moved, out, cache))
    assert code == 0, err  # resumed, not refused as other data
    assert predictions(out) == made
    assert {row["config"]["data"]["source"] for row in json.loads((out / "results.json").read_text())} == {str(moved)}
    code, _, err = invoke(capsys, "score", str(out))  # from the record, which names the new place now
    assert code == 0 and "note:" not in err, err

    change_an_answer(moved)
    code, _, err = invoke(capsys, *run(moved, out, cache))
    assert code == 2 and "already holds vqav2/rices predictions made with a different data" in err, err
    code, _, err = invoke(capsys, "score", str(out))
    assert code == 2 and "are not those the run scored" in err, err
