"""`load_split`: which reader --data selects, split mapping, and the errors for data a task cannot read."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import datasets
import pytest
from PIL import Image

from idefics_eval.errors import UserError
from idefics_eval.examples import DatasetImage, FileImage
from idefics_eval.formats import load_split
from idefics_eval.tasks import Generation, HuggingFaceSource, TaskSpec, VqaJsonSplit

VQA = {
    "train": VqaJsonSplit("train_q.json", "train_a.json", "train2014", "COCO_train2014_{image_id:012d}.jpg"),
    "validation": VqaJsonSplit("val_q.json", "val_a.json", "val2014", "COCO_val2014_{image_id:012d}.jpg"),
}
HF = HuggingFaceSource(
    path="HuggingFaceM4/VQAv2",
    splits={"train": "train", "validation": "val"},  # the dataset calls it "val"
    columns={"id": "question_id", "image": "image", "question": "question", "answers": "answers"},
)
SPEC = TaskSpec(
    name="vqav2", version=1, title="VQAv2", request="generate", metric="vqa_accuracy", prompt="vqa",
    support_split="train", query_split="validation", generation=Generation(), sources={"vqa_json": {k: dataclasses.asdict(v) for k, v in VQA.items()}}, huggingface=HF,
    path=Path("tasks/vqav2.yaml"), digest="0" * 64,
)


@pytest.fixture(autouse=True)
def no_hub(tmp_path, monkeypatch):
    """Fail any hub access unless a test installs its own fake; keep folder caches in tmp_path."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")

    def refuse(path, *args, **kwargs):
        if Path(path).is_dir():  # folders of data files are fine
            return real_load_dataset(path, *args, **kwargs)
        raise AssertionError(f"load_dataset called with {path!r}")

    monkeypatch.setattr(datasets, "load_dataset", refuse)


real_load_dataset = datasets.load_dataset


def hf_rows(offset: int = 0) -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "question_id": [offset + 1],
            "image": [Image.new("RGB", (2, 2), (1, 2, 3))],
            "question": ["q?"],
            "answers": [["a", "b"]],
        },
        features=datasets.Features(
            {
                "question_id": datasets.Value("int64"),
                "image": datasets.Image(),
                "question": datasets.Value("string"),
                "answers": datasets.List(datasets.Value("string")),
            }
        ),
    )


def write_vqa_json(root: Path, split: str = "validation", image_id: int = 9) -> None:
    files = VQA[split]
    root.mkdir(parents=True, exist_ok=True)
    (root / files.questions).write_text(
        json.dumps({"questions": [{"image_id": image_id, "question": "What?", "question_id": 90}]})
    )
    (root / files.annotations).write_text(
        json.dumps({"annotations": [{"question_id": 90, "image_id": image_id, "answers": [{"answer": "x", "answer_id": 1}]}]})
    )
    (root / files.images).mkdir(exist_ok=True)
    Image.new("RGB", (2, 2)).save(root / files.images / files.image_file.format(image_id=image_id))


def test_vqa_json_folder(tmp_path):
    write_vqa_json(tmp_path)
    loaded = load_split(SPEC, "validation", str(tmp_path))
    assert loaded.name == "vqav2/validation" and loaded.source == str(tmp_path)
    (example,) = loaded.examples
    assert (example.id, example.answers) == ("90", ("x",))
    assert example.image == FileImage(tmp_path / "val2014" / "COCO_val2014_000000000009.jpg")


def test_vqa_json_folder_missing_this_splits_questions_names_the_file(tmp_path):
    write_vqa_json(tmp_path, "validation")  # only validation's files are there
    with pytest.raises(UserError) as excinfo:
        load_split(SPEC, "train", str(tmp_path))
    text = str(excinfo.value)
    assert "train_q.json not found" in text and str(tmp_path) in text


def test_save_to_disk_folder_maps_the_split(tmp_path):
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": hf_rows(100), "val": hf_rows(200)}).save_to_disk(str(folder))
    loaded = load_split(SPEC, "validation", str(folder))
    assert loaded.name == "vqav2/validation"
    assert [e.id for e in loaded.examples] == ["201"]
    assert isinstance(loaded.examples[0].image, DatasetImage)
    assert loaded.examples[0].image.load().getpixel((0, 0)) == (1, 2, 3)


def test_parquet_folder(tmp_path):
    folder = tmp_path / "pq"
    (folder / "data").mkdir(parents=True)
    hf_rows(100).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    hf_rows(200).to_parquet(str(folder / "data" / "val-00000-of-00001.parquet"))
    assert [e.id for e in load_split(SPEC, "train", str(folder)).examples] == ["101"]


def test_no_data_uses_the_hub_id_and_dataset_split(monkeypatch):
    calls = []

    def fake_load_dataset(path, *args, **kwargs):
        calls.append((path, kwargs))
        return hf_rows()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = load_split(SPEC, "validation", None, Path("/run/cache"))
    assert calls == [("HuggingFaceM4/VQAv2", {"split": "val", "cache_dir": "/run/cache/datasets"})]
    assert loaded.source == "HuggingFaceM4/VQAv2" and loaded.name == "vqav2/validation"


def test_a_hub_id_given_as_data(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda path, **kwargs: calls.append((path, kwargs)) or hf_rows())
    monkeypatch.chdir(tmp_path)
    load_split(SPEC, "train", "someone/vqav2-mirror")
    assert calls == [("someone/vqav2-mirror", {"split": "train", "cache_dir": None})]


@pytest.mark.parametrize("data", ["./not-here", "../nope/data", "/definitely/not/here", "~/no-such-folder-xyz"])
def test_missing_path_is_data_folder_not_found(tmp_path, monkeypatch, data):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"data folder not found"):  # and no_hub: load_dataset is never called
        load_split(SPEC, "validation", data)


def test_folder_with_nothing_readable(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError) as excinfo:
        load_split(SPEC, "validation", str(tmp_path))
    text = str(excinfo.value)
    assert "holds nothing" in text and "val_q.json" in text and "save_to_disk" in text


def test_data_that_is_a_file(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"")
    with pytest.raises(UserError, match=r"not a folder"):
        load_split(SPEC, "validation", str(tmp_path / "x.parquet"))


def test_hf_folder_for_a_task_without_huggingface_source(tmp_path):
    spec = dataclasses.replace(SPEC, huggingface=None)
    hf_rows().save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(UserError) as excinfo:
        load_split(spec, "validation", str(tmp_path / "saved"))
    text = str(excinfo.value)
    assert "no huggingface source" in text and "vqa_json (" in text and "val_q.json" in text


def test_no_data_for_a_task_without_huggingface_source():
    spec = dataclasses.replace(SPEC, huggingface=None)
    with pytest.raises(UserError, match=r"no huggingface source.*--data.*vqa_json"):
        load_split(spec, "validation", None)


def test_vqa_json_files_for_a_task_without_vqa_json_source(tmp_path):
    """Without a vqa_json source the JSON files are just json data files to the HF reader, which then fails clearly."""
    spec = dataclasses.replace(SPEC, sources={})
    write_vqa_json(tmp_path)
    with pytest.raises(UserError) as excinfo:
        load_split(spec, "validation", str(tmp_path))
    assert str(tmp_path) in str(excinfo.value)


def test_split_the_task_does_not_map(tmp_path):
    hf_rows().save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(UserError, match=r"sources\.huggingface has no split 'test' \(it has: train, validation\)"):
        load_split(SPEC, "test", str(tmp_path / "saved"))
