"""Paths named in user files never leave their folder: image paths of every data reader (the bundled
sample data of one task per reader, and Hugging Face path columns and path-only image features),
a task's prompt and classes file; and the datasets library's cache goes under the run's cache folder."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from idefics_eval.errors import UserError
from idefics_eval.examples import DatasetImage, FileImage
from idefics_eval.formats import load_split
from idefics_eval.formats.huggingface import load_huggingface
from idefics_eval.plan import RunConfig, prepare
from idefics_eval.prompts import load_template
from idefics_eval.tasks import builtin_dir, load_task, parse_task

DEMO = Path(__file__).resolve().parents[1] / "idefics_eval" / "demo" / "data"

# One task per file reader, and how its image paths are named: "text" where the annotation files hold
# the file names (rewritten there), otherwise the task-file key the reader builds the paths from.
READERS = {
    "vqa_json": ("vqav2", "image_file"),
    "karpathy_json": ("coco", "images"),  # its file names must be plain names: the folder is what can escape
    "textcaps_json": ("textcaps", "images"),
    "visdial_json": ("visdial", "image_file"),
    "fairface_csv": ("fairface_gender", "text"),
    "hatefulmemes_jsonl": ("hatefulmemes", "text"),
    "imagenet_folder": ("imagenet", "images"),
    "class_folder": ("renderedsst2", "images"),
    "nocaps_json": ("nocaps", "images"),
    "scienceqa_json": ("scienceqa", "text"),
    "winoground_jsonl": ("winoground", "text"),
}
ESCAPES = ("relative ../", "absolute path", "symbolic link out")


def test_every_reader_is_covered():
    from idefics_eval.formats import file_formats

    assert set(READERS) == set(file_formats())


def escaping(target: Path, kind: str) -> str:
    """A path to `target` that leaves the data folder: climbing to the file system's root works from any folder."""
    return str(target) if kind == "absolute path" else "../" * 30 + str(target).lstrip("/")


def first_image(spec, data: Path) -> Path:
    example = load_split(spec, spec.query_split, str(data)).examples[0]
    assert isinstance(example.image, FileImage)
    return example.image.path


def rewrite_names(spec, data: Path, image: Path, outside: Path, kind: str) -> None:
    """Replace the image's name in the split's annotation files by a path to a copy outside the folder."""
    files = [data / value for value in spec.sources[next(iter(spec.sources))][spec.query_split].values()
             if (data / value).is_file()]
    relative = image.relative_to(data.resolve())
    names = [str(Path(*relative.parts[i:])) for i in range(len(relative.parts))] + [image.stem]
    for name in names:  # the longest that the files name (e.g. "val/1.jpg", else "1.jpg", else "1")
        token = re.compile(rf'(?<=[",\n]){re.escape(name)}(?=[",\n])')
        texts = {path: path.read_text() for path in files}
        if any(token.search(text) for text in texts.values()):
            target = outside / (image.name if name != image.stem else image.stem)
            shutil.copy(image, outside / image.name)
            for path, text in texts.items():
                path.write_text(token.sub(escaping(target, kind).replace("\\", "\\\\"), text))
            return
    raise AssertionError(f"no annotation file names {image}")


def rewrite_key(spec, data: Path, image: Path, outside: Path, kind: str, key: str):
    """The task names the images' folder (or the file pattern in it): point it at a copy outside."""
    format_name = next(iter(spec.sources))
    files = dict(spec.sources[format_name][spec.query_split])
    if key == "images":
        copy = shutil.copytree(data / files["images"], outside / files["images"])
        files["images"] = escaping(Path(copy), kind)
    else:
        copy = shutil.copytree(image.parent, outside / image.parent.name)
        files["image_file"] = escaping(Path(copy), kind) + "/" + Path(files["image_file"]).name
    sources = {**spec.sources, format_name: {**spec.sources[format_name], spec.query_split: files}}
    return dataclasses.replace(spec, sources=sources)


@pytest.mark.parametrize("kind", ESCAPES)
@pytest.mark.parametrize("reader", sorted(READERS))
def test_an_image_path_leaving_the_data_folder_is_refused_by_every_reader(reader, kind, tmp_path):
    task, naming = READERS[reader]
    spec = load_task(task)
    data, outside = tmp_path / "data", tmp_path / "outside"
    shutil.copytree(DEMO / task, data)
    outside.mkdir()
    image = first_image(spec, data)
    if kind == "symbolic link out":
        shutil.copy(image, outside / image.name)
        image.unlink()
        image.symlink_to(outside / image.name)
    elif naming == "text":
        rewrite_names(spec, data, image, outside, kind)
    else:
        spec = rewrite_key(spec, data, image, outside, kind, naming)
    with pytest.raises(UserError, match="leaves the data folder") as excinfo:
        load_split(spec, spec.query_split, str(data))
    text = str(excinfo.value)
    assert "\n" not in text and f"{task}/{spec.query_split} example " in text and str(data) in text
    assert ("symbolic link" in text) == (kind == "symbolic link out")


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_symbolic_link_that_stays_inside_the_data_folder_is_read(reader, tmp_path):
    task, _ = READERS[reader]
    spec = load_task(task)
    data = tmp_path / "data"
    shutil.copytree(DEMO / task, data)
    image = first_image(spec, data)
    pixels = Image.open(image).convert("RGB").tobytes()
    (data / "shared").mkdir()
    image.rename(data / "shared" / image.name)
    image.symlink_to(Path(os.path.relpath(data / "shared" / image.name, image.parent)))
    loaded = load_split(spec, spec.query_split, str(data)).examples[0].image
    assert loaded.path == image and loaded.load().tobytes() == pixels


# --- Hugging Face datasets: path columns (jsonl) and image features stored without bytes (parquet) ---

COLUMNS = {"id": "qid", "image": "img", "question": "q", "answers": "answers"}


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    """Whatever a test does not send to a cache folder of its own must not reach the home folder."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "library-default-cache")


def hf_folder(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A jsonl data folder whose second row's image path (returned) is `kind`: inside, or one escape."""
    folder, outside = tmp_path / "hf", tmp_path / "outside"
    (folder / "images").mkdir(parents=True)
    outside.mkdir()
    Image.new("RGB", (2, 2), (0, 9, 0)).save(folder / "images" / "a.png")
    Image.new("RGB", (2, 2), (9, 0, 0)).save(outside / "x.png")
    path = {
        "inside": "images/a.png",
        "relative ../": "../outside/x.png",
        "absolute path": str(outside / "x.png"),
        "symbolic link out": "images/link.png",
        "symbolic link in": "images/link.png",
    }[kind]
    if kind.startswith("symbolic link"):
        (folder / "images" / "link.png").symlink_to(outside / "x.png" if kind.endswith("out") else folder / "images" / "a.png")
    rows = [{"qid": "q1", "img": "images/a.png", "q": "what?", "answers": ["x"]},
            {"qid": "q2", "img": path, "q": "why?", "answers": ["y"]}]
    (folder / "validation.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder, path


@pytest.mark.parametrize("kind", ESCAPES)
def test_a_hugging_face_path_column_leaving_the_data_folder_is_refused(kind, tmp_path):
    folder, path = hf_folder(tmp_path, kind)
    with pytest.raises(UserError) as excinfo:
        load_huggingface(str(folder), "validation", COLUMNS, "t/validation")
    text = str(excinfo.value)
    assert "\n" not in text and "id q2" in text and path in text and "leaves the data folder" in text and "'img'" in text


def test_a_hugging_face_path_column_may_link_inside_the_data_folder(tmp_path):
    folder, _ = hf_folder(tmp_path, "symbolic link in")
    second = load_huggingface(str(folder), "validation", COLUMNS, "t/validation").examples[1]
    assert second.image.load().getpixel((0, 0)) == (0, 9, 0)


def write_path_only_parquet(folder: Path, path: str) -> None:
    """An image feature column whose row holds a path and no bytes (as datasets stores local image files)."""
    features = datasets.Features({"qid": datasets.Value("string"), "img": datasets.Image(),
                                  "q": datasets.Value("string"), "answers": datasets.List(datasets.Value("string"))})
    table = pa.table({"qid": ["q1"], "img": [{"bytes": None, "path": path}], "q": ["what?"], "answers": [["x"]]},
                     schema=features.arrow_schema)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "validation.parquet")


@pytest.mark.parametrize("kind", ESCAPES)
def test_an_image_feature_stored_as_a_path_leaving_the_data_folder_is_refused(kind, tmp_path):
    folder, outside = tmp_path / "pq", tmp_path / "outside"
    outside.mkdir()
    Image.new("RGB", (2, 2), (9, 0, 0)).save(outside / "x.png")
    if kind == "symbolic link out":
        (folder / "images").mkdir(parents=True)
        (folder / "images" / "x.png").symlink_to(outside / "x.png")
    path = {"relative ../": "../outside/x.png", "absolute path": str(outside / "x.png"),
            "symbolic link out": "images/x.png"}[kind]
    write_path_only_parquet(folder, path)
    with pytest.raises(UserError, match=rf"id q1: image path \(column 'img'\) {re.escape(path)} leaves the data folder"):
        load_huggingface(str(folder), "validation", COLUMNS, "t/validation")


def test_an_image_feature_stored_as_a_path_inside_is_read_and_confined_when_loaded(tmp_path, monkeypatch):
    folder = tmp_path / "pq"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (2, 2), (0, 0, 7)).save(folder / "images" / "a.png")
    write_path_only_parquet(folder, "images/a.png")
    (example,) = load_huggingface(str(folder), "validation", COLUMNS, "t/validation").examples
    assert isinstance(example.image, DatasetImage)
    monkeypatch.chdir(tmp_path)  # a relative path is the data folder's, not the working folder's
    assert example.image.load().getpixel((0, 0)) == (0, 0, 7)
    # The row changed after loading (the Arrow table is the dataset's): loading checks again.
    escaped = dataclasses.replace(example.image, dataset=[{"img": {"bytes": None, "path": "../../x.png"}}], index=0)
    with pytest.raises(UserError, match=r"row 0 of column 'img': image path \.\./\.\./x\.png leaves the data folder"):
        escaped.load()


def test_a_hub_dataset_image_path_must_lie_in_the_download_folders(tmp_path, monkeypatch):
    rows = datasets.Dataset.from_dict({"qid": ["q1"], "img": ["/etc/hostname"], "q": ["?"], "answers": [["x"]]})
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: rows)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="/etc/hostname leaves the datasets library's download folders"):
        load_huggingface("someone/dataset", "validation", COLUMNS, "t/validation", cache_dir=tmp_path / "cache")


# --- the datasets library's cache: under the run's cache folder, never the home folder ---

def test_the_datasets_cache_goes_under_the_run_cache_folder(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / ".cache" / "huggingface" / "datasets")
    folder, _ = hf_folder(tmp_path, "inside")
    cache = tmp_path / "run-cache"
    config = RunConfig(task="vqav2", shots=(0,), output_dir=tmp_path / "out", demo=True, data=str(folder),
                       cache_dir=cache, tasks_dirs=(hf_task(tmp_path),))
    prepared = prepare(config)
    assert [e.id for e in prepared.queries.examples] == ["q1", "q2"]
    assert any((cache / "datasets").rglob("*.arrow"))
    assert list(home.rglob("*")) == []


def hf_task(tmp_path: Path) -> Path:
    """vqav2 reading the jsonl folder's columns."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    text = (builtin_dir("tasks") / "vqav2.yaml").read_text()
    text = text[: text.index("    columns:")] + "    columns: {id: qid, image: img, question: q, answers: answers}\n"
    (folder / "vqav2.yaml").write_text(text)
    return folder


# --- task files: the prompt template and the classes file stay in their folders ---

@pytest.mark.parametrize("name", ["../tasks/vqav2", "/etc/hostname", "link"])
def test_a_prompt_leaving_the_prompts_folder_is_refused(name, tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "link.yaml").symlink_to(builtin_dir("tasks") / "vqav2.yaml")
    with pytest.raises(UserError, match="leaves the prompts folder") as excinfo:
        load_template(name, (prompts,), where="task.yaml: prompt")
    assert str(excinfo.value).startswith("task.yaml: prompt: template file ") and "\n" not in str(excinfo.value)


def test_a_prompt_linked_inside_the_prompts_folder_is_read(tmp_path):
    prompts = tmp_path / "prompts"
    (prompts / "shared").mkdir(parents=True)
    shutil.copy(builtin_dir("prompts") / "vqa.yaml", prompts / "shared" / "mine.yaml")
    (prompts / "mine.yaml").symlink_to(Path("shared") / "mine.yaml")
    assert load_template("mine", (prompts,)).example == load_template("vqa").example


@pytest.mark.parametrize("kind", ESCAPES)
def test_a_classes_file_leaving_the_task_folder_is_refused(kind, tmp_path):
    tasks, outside = tmp_path / "tasks", tmp_path / "outside"
    tasks.mkdir()
    outside.mkdir()
    (outside / "classes.txt").write_text("a\nb\n")
    (tasks / "link.txt").symlink_to(outside / "classes.txt")
    name = {"relative ../": "../outside/classes.txt", "absolute path": str(outside / "classes.txt"),
            "symbolic link out": "link.txt"}[kind]
    text = (builtin_dir("tasks") / "imagenet.yaml").read_text()
    (tasks / "imagenet.yaml").write_text(re.sub(r"classes_file: .*", f"classes_file: {name}", text))
    with pytest.raises(UserError, match=r"classes_file: file .* leaves the task's folder"):
        parse_task(tasks / "imagenet.yaml")
