"""The run viewer (`idefics-eval view`): the static site of a demo run, of a run edited or cut short
by the tests, and of a synthetic log large enough to page; the browser test opens it in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from idefics_eval.viewer import CHUNK_ROWS, THUMBNAIL_PIXELS

from conftest import invoke

FAST = ("--demo", "--demo-seed", "0", "--limit", "3", "--num-beams", "1", "--max-new-tokens", "3", "--no-progress")
CHROMIUM = Path("/usr/bin/chromium")
PAGE_ROWS = 50  # viewer.js's rows per page


class NoCapture:
    """What `invoke` reads output from, for the module's run (capsys is per test): nothing."""

    def readouterr(self):
        return type("Captured", (), {"out": "", "err": ""})()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A demo run of a generated and a ranked task at 0 and 2 shots."""
    folder = tmp_path_factory.mktemp("viewer") / "run"
    code, _, err = invoke(NoCapture(), "run", "--task", "vqav2,scienceqa", "--shots", "0,2", "--output-dir", str(folder),
                          "--cache-dir", str(folder.parent / "cache"), *FAST)
    assert code == 0, err
    return folder


def view(capsys, *args) -> tuple[int, str]:
    code, _, err = invoke(capsys, "view", *map(str, args))
    return code, err


def log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def script_value(path: Path):
    """The JSON a data file assigns (`VIEW_INDEX = {...};` or `VIEW_CHUNKS[n] = [...];`)."""
    body = path.read_text(encoding="utf-8").split("\n", 1)[1]
    return json.loads(body.split(" = ", 1)[1].rstrip().removesuffix(";"))


def page_rows(site: Path, name: str) -> tuple[dict, list[dict]]:
    """A page's index and every row of its data files, in order."""
    index = script_value(site / "data" / f"{name}_index.js")
    chunks = -(-index["rows"] // CHUNK_ROWS)
    rows = [row for n in range(chunks) for row in script_value(site / "data" / f"{name}_{n}.js")]
    return index, rows


def test_the_site_has_an_overview_and_a_page_per_task_and_shot_count(run, tmp_path, capsys):
    site = tmp_path / "site"
    code, err = view(capsys, run, "-o", site)
    assert code == 0, err
    index = (site / "index.html").read_text()
    rows = json.loads((run / "results.json").read_text())
    assert len(rows) == 4
    for row in rows:
        name = f"{row['task']}_{row['shots']}shot"
        assert f'href="{name}.html"' in index and (site / f"{name}.html").is_file()
        assert f'<table class="results" data-task="{row["task"]}">' in index
    assert (site / "shot_scaling_0.png").is_file() and 'src="shot_scaling_0.png"' in index
    assert "max_new_tokens: 3" in index  # the run's configuration (config.yaml)


def test_a_sample_pages_data_holds_every_query_of_its_log(run, tmp_path, capsys):
    site = tmp_path / "site"
    assert view(capsys, run, "-o", site)[0] == 0
    for log in sorted((run / "samples").glob("*.jsonl")):
        lines = log_lines(log)
        index, rows = page_rows(site, log.stem)
        assert [row["id"] for row in rows] == [line["id"] for line in lines]
        assert [row["prediction"] for row in rows] == [line["prediction"] for line in lines]
        assert [entry[0] for entry in index["index"]] == [int(line["score"] < 1) for line in lines]
        shots = int(re.search(r"_(\d+)shot", log.stem).group(1))
        assert all(len(row.get("shots", [])) == shots and len(row["images"]) == 1 for row in rows)


def test_thumbnails_are_small_copies_inside_the_site(tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.new("RGB", (1200, 800), (20, 120, 200)).save(big)
    folder = synthetic_run(tmp_path / "run", 3, image=big)
    site = tmp_path / "site"
    assert view(capsys, folder, "-o", site)[0] == 0
    _, rows = page_rows(site, "vqav2_2shot")
    thumbs = {picture["thumb"] for row in rows for picture in row["images"] + [shot["image"] for shot in row["shots"]]}
    assert len(thumbs) == 1  # one copy per image, however many rows show it
    (thumb,) = thumbs
    with Image.open(site / thumb) as image:
        assert max(image.size) <= THUMBNAIL_PIXELS and image.format == "JPEG"
    assert (site / thumb).stat().st_size < big.stat().st_size
    with Image.open(big) as original:
        assert original.size == (1200, 800)


def test_the_diff_page_lists_exactly_the_queries_whose_score_differs(run, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(run, other)
    log = other / "samples" / "vqav2_2shot.jsonl"
    lines = log_lines(log)
    flipped = [lines[0]["id"], lines[2]["id"]]
    for line in lines:
        if line["id"] in flipped:
            line["score"], line["prediction"] = 1 - line["score"], "edited"
    log.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    site = tmp_path / "site"
    code, err = view(capsys, run, other, "-o", site)
    assert code == 0, err
    _, rows = page_rows(site, "diff_vqav2_2shot")
    assert [row["id"] for row in rows] == flipped
    assert all(row["b"]["prediction"] == "edited" and row["a"]["score"] != row["b"]["score"] for row in rows)
    for name in ("vqav2_0shot", "scienceqa_0shot", "scienceqa_2shot"):
        assert page_rows(site, f"diff_{name}")[1] == []
    index = (site / "index.html").read_text()
    assert 'href="diff_vqav2_2shot.html"' in index and 'href="B_vqav2_2shot.html"' in index
    assert [row["prediction"] for row in page_rows(site, "B_vqav2_2shot")[1]] == [line["prediction"] for line in lines]


def test_a_run_in_progress_shows_the_lines_written_so_far(run, tmp_path, capsys):
    """As a kill leaves it: no results.json yet, the sample log only a partial file ending in half a line."""
    killed = tmp_path / "killed"
    shutil.copytree(run, killed)
    (killed / "results.json").unlink()
    log = killed / "samples" / "vqav2_2shot.jsonl"
    data = log.read_bytes().splitlines(keepends=True)
    log.with_name(log.name + ".partial.0").write_bytes(b"".join(data[:2]) + data[2][:30])
    log.unlink()
    site = tmp_path / "site"
    code, err = view(capsys, killed, "-o", site)
    assert code == 0, err
    _, rows = page_rows(site, "vqav2_2shot")
    assert [row["id"] for row in rows] == [json.loads(line)["id"] for line in data[:2]]
    assert "not finished" in (site / "vqav2_2shot.html").read_text()
    assert "No results yet" in (site / "index.html").read_text()


def test_a_rebuild_replaces_the_site_it_wrote(run, tmp_path, capsys):
    site = tmp_path / "site"
    assert view(capsys, run, "-o", site)[0] == 0
    (site / "data" / "stale.js").write_text("")
    assert view(capsys, run, "-o", site)[0] == 0
    assert not (site / "data" / "stale.js").exists() and (site / "index.html").is_file()


def test_a_failed_rebuild_leaves_the_previous_site(run, tmp_path, capsys):
    edited = tmp_path / "edited"
    shutil.copytree(run, edited)
    site = tmp_path / "site"
    assert view(capsys, edited, "-o", site)[0] == 0
    before = (site / "vqav2_0shot.html").read_text()
    log = edited / "samples" / "vqav2_0shot.jsonl"
    log.write_text(log.read_text().replace('"images": [', '"images": [7, '))
    code, err = view(capsys, edited, "-o", site)
    assert code == 2 and "is not a sample line as idefics-eval writes it" in err
    assert (site / "vqav2_0shot.html").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited", "site"]


def test_the_site_references_nothing_outside_itself(run, tmp_path, capsys):
    """No http(s) address (no CDN script, font or image), and every src/href names a file of the site."""
    site = tmp_path / "site"
    assert view(capsys, run, "-o", site)[0] == 0
    for file in [*site.glob("*.html"), *site.glob("static/*")]:
        text = file.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), file
        for target in re.findall(r'(?:src|href)="([^"#]+)', text):
            assert (site / target).is_file(), (file, target)


def synthetic_run(folder: Path, rows: int, image: Path) -> Path:
    """A run folder of one 2-shot VQA sample log of `rows` lines (every third one wrong), all showing `image`."""
    samples = folder / "samples"
    samples.mkdir(parents=True)
    with open(samples / "vqav2_2shot.jsonl", "w", encoding="utf-8") as handle:
        for n in range(rows):
            line = {"id": f"q{n:05d}", "prediction": "yes", "shots": ["s1", "s2"], "score": 0.0 if n % 3 == 0 else 1.0,
                    "dropped_shots": 0, "inputs": {"question": f"question {n}?"}, "answers": ["yes"] * 10,
                    "metadata": {"answer_type": ("yes/no", "other")[n % 2]}, "images": [str(image)],
                    "shown_shots": [{"id": s, "similarity": 0.5, "answer": "no", "image": str(image)} for s in ("s1", "s2")],
                    "prompt": "<s>Question: ...", "prompt_tokens": 12, "raw_prediction": " yes"}
            handle.write(json.dumps(line) + "\n")
    return folder


def test_a_large_log_is_split_into_data_files(tmp_path, capsys):
    folder = synthetic_run(tmp_path / "run", CHUNK_ROWS * 2 + 7, image=tmp_path / "missing.png")
    site = tmp_path / "site"
    assert view(capsys, folder, "-o", site)[0] == 0
    index, rows = page_rows(site, "vqav2_2shot")
    assert len(list((site / "data").glob("vqav2_2shot_[0-9]*.js"))) == 3
    assert [row["id"] for row in rows] == [f"q{n:05d}" for n in range(CHUNK_ROWS * 2 + 7)]
    assert index["filters"] == [{"key": "answer_type", "values": ["other", "yes/no"]}]
    assert index["scored"] == len(rows)  # the "wrong only" filter is offered (a CIDEr log: 0, and it is not)
    assert all(row["images"][0]["thumb"] is None for row in rows)  # an image that is not a file: no thumbnail


def dump_dom(page: Path, fragment: str, profile: Path, screenshot: Path | None = None) -> tuple[str, str]:
    """The page's DOM after its scripts ran (and its console's messages), in headless Chromium."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr",
             "--v=0", "--virtual-time-budget=5000", "--window-size=1200,900"]
    url = page.as_uri() + fragment
    done = subprocess.run([str(CHROMIUM), *flags, "--dump-dom", url], check=False, capture_output=True, text=True, timeout=120)
    if screenshot is not None:
        subprocess.run([str(CHROMIUM), *flags, f"--screenshot={screenshot}", url], check=False, capture_output=True, timeout=120)
    return done.stdout, done.stderr


def shown(dom: str) -> list[tuple[str, bool]]:
    """The rows drawn: (id, marked wrong)."""
    return [(query_id, bool(wrong)) for wrong, query_id in re.findall(r'class="sample( wrong)?" data-id="([^"]+)"', dom)]


@pytest.mark.browser
def test_the_site_renders_pages_and_filters_in_chromium(run, tmp_path, capsys):
    assert CHROMIUM.is_file(), "the browser test needs Debian's chromium (apt-get install chromium; .ci/run does)"
    folder = synthetic_run(tmp_path / "big", 120, image=Path(json.loads(
        (run / "samples" / "vqav2_0shot.jsonl").read_text().splitlines()[0])["images"][0]))
    site, profile = tmp_path / "site", tmp_path / "profile"
    assert view(capsys, folder, "-o", site)[0] == 0
    page = site / "vqav2_2shot.html"
    first, console = dump_dom(page, "", profile, tmp_path / "page1.png")
    assert "CONSOLE" not in console, console
    assert [query_id for query_id, _ in shown(first)] == [f"q{n:05d}" for n in range(PAGE_ROWS)]
    assert first.count('<figure class="image query">') == PAGE_ROWS and first.count('<figure class="image shot">') == 2 * PAGE_ROWS
    last, _ = dump_dom(page, "#page=3", profile)
    assert [query_id for query_id, _ in shown(last)] == [f"q{n:05d}" for n in range(2 * PAGE_ROWS, 120)]
    assert shown(dump_dom(page, "#page=99", profile)[0]) == shown(last)  # past the end: the last page
    wrong, _ = dump_dom(page, "#wrong=1", profile, tmp_path / "wrong.png")
    assert shown(wrong) == [(f"q{n:05d}", True) for n in range(0, 120, 3)]
    other, _ = dump_dom(page, "#wrong=1&answer_type=other", profile)
    assert shown(other) == [(f"q{n:05d}", True) for n in range(3, 120, 6)]
    demo_site = tmp_path / "demo_site"
    assert view(capsys, run, "-o", demo_site)[0] == 0
    overview, console = dump_dom(demo_site / "index.html", "", profile, tmp_path / "overview.png")
    assert "CONSOLE" not in console, console
    for row in json.loads((run / "results.json").read_text()):
        assert f'href="{row["task"]}_{row["shots"]}shot.html"' in overview
    sample, console = dump_dom(demo_site / "vqav2_2shot.html", "", profile)
    assert "CONSOLE" not in console and sample.count('<figure class="image shot">') == 2 * len(shown(sample)) == 6


@pytest.mark.browser
def test_the_diff_page_shows_the_changed_queries_in_chromium(tmp_path, capsys):
    assert CHROMIUM.is_file(), "the browser test needs Debian's chromium (apt-get install chromium; .ci/run does)"
    first = synthetic_run(tmp_path / "a", 60, image=tmp_path / "none.png")
    second = synthetic_run(tmp_path / "b", 60, image=tmp_path / "none.png")
    log = second / "samples" / "vqav2_2shot.jsonl"
    lines = log_lines(log)
    for line in lines[::7]:
        line["score"], line["prediction"] = 1 - line["score"], "changed"
    log.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    site = tmp_path / "site"
    assert view(capsys, first, second, "-o", site)[0] == 0
    dom, console = dump_dom(site / "diff_vqav2_2shot.html", "", tmp_path / "profile", tmp_path / "diff.png")
    assert "CONSOLE" not in console, console
    ids = re.findall(r'class="sample diff" data-id="([^"]+)"', dom)
    assert ids == [line["id"] for line in lines[::7]]
    assert dom.count("changed") == len(ids)


def test_a_random_selection_run_has_a_page_per_seed_and_its_curve(tmp_path, capsys):
    folder = tmp_path / "random"
    code, _, err = invoke(capsys, "run", "--task", "vqav2", "--shots", "0,2", "--selection", "random", "--seeds", "0,1",
                          "--output-dir", str(folder), "--cache-dir", str(tmp_path / "cache"), *FAST)
    assert code == 0, err
    site = tmp_path / "site"
    assert view(capsys, folder, "-o", site)[0] == 0
    index = (site / "index.html").read_text()
    for name in ("vqav2_0shot", "vqav2_2shot_seed0", "vqav2_2shot_seed1"):
        assert f'href="{name}.html"' in index and (site / f"{name}.html").is_file()
    assert 'src="shot_scaling_0.png"' in index  # random selection's curve: the run has no RICES rows
