"""Hugging Face datasets built in tmp_path: save_to_disk folders, parquet/jsonl folders, and a faked hub."""

from __future__ import annotations

import json

import datasets
import pytest
from PIL import Image

from idefics_eval.errors import UserError
from idefics_eval.examples import DatasetImage, FileImage
from idefics_eval.formats.huggingface import load_huggingface
from idefics_eval.metrics.fairness import HF_CLASS_NAMES, group_value

COLUMNS = {
    "id": "question_id",
    "image": "image",
    "image_id": "image_id",
    "question": "question",
    "answers": "answers",
    "answer_type": "answer_type",
    "question_type": "question_type",
}
FEATURES = datasets.Features(
    {
        "question_id": datasets.Value("int64"),
        "image_id": datasets.Value("int64"),
        "image": datasets.Image(),
        "question": datasets.Value("string"),
        "answers": [{"answer": datasets.Value("string"), "answer_id": datasets.Value("int32")}],
        "answer_type": datasets.Value("string"),
        "question_type": datasets.Value("string"),
    }
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """load_dataset on a folder writes Arrow files to the datasets cache: keep them in tmp_path."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def vqa_dataset(offset: int = 0) -> datasets.Dataset:
    """Two VQAv2-style rows (HuggingFaceM4/VQAv2 columns), answers stored out of answer_id order."""
    return datasets.Dataset.from_dict(
        {
            "question_id": [offset + 1, offset + 2],
            "image_id": [offset + 10, offset + 10],
            # an RGBA and a grayscale image: both must come back RGB
            "image": [Image.new("RGBA", (5, 3), (255, 0, 0, 255)), Image.new("L", (4, 4), 128)],
            "question": ["What color?", "Is it gray?"],
            "answers": [
                [{"answer": "red", "answer_id": 2}, {"answer": "crimson", "answer_id": 1}],
                [{"answer": "yes", "answer_id": 1}, {"answer": "no", "answer_id": 2}],
            ],
            "answer_type": ["other", "yes/no"],
            "question_type": ["what color", "is it"],
        },
        features=FEATURES,
    )


@pytest.fixture
def saved_dict(tmp_path):
    folder = tmp_path / "vqav2-saved"
    datasets.DatasetDict({"train": vqa_dataset(100), "validation": vqa_dataset()}).save_to_disk(str(folder))
    return folder


def test_save_to_disk_dataset_dict(saved_dict):
    loaded = load_huggingface(str(saved_dict), "validation", COLUMNS, "vqav2/validation")
    assert loaded.name == "vqav2/validation" and len(loaded) == 2
    first, second = loaded.examples
    assert (first.id, first.image_id) == ("1", "10")
    assert first.fields == {"question": "What color?"}
    assert first.answers == ("crimson", "red")  # answer_id order
    assert second.answers == ("yes", "no")
    assert first.metadata == {"answer_type": "other", "question_type": "what color"}
    train = load_huggingface(str(saved_dict), "train", COLUMNS, "vqav2/train")
    assert [e.id for e in train.examples] == ["101", "102"]


def test_images_are_lazy_and_decode_to_rgb(saved_dict, monkeypatch):
    def no_decode(*args, **kwargs):
        raise AssertionError("an image was decoded while loading the split")

    monkeypatch.setattr(Image, "open", no_decode)
    monkeypatch.setattr(datasets.Image, "decode_example", no_decode)
    loaded = load_huggingface(str(saved_dict), "validation", COLUMNS, "vqav2/validation")
    monkeypatch.undo()
    first, second = (e.image for e in loaded.examples)
    assert isinstance(first, DatasetImage) and first.column == "image" and first.index == 0
    expected = datasets.load_from_disk(str(saved_dict))["validation"]._fingerprint
    assert first.fingerprint == expected and first.key == f"{expected}:0"
    red, gray = first.load(), second.load()
    assert (red.mode, red.size, red.getpixel((0, 0))) == ("RGB", (5, 3), (255, 0, 0))
    assert (gray.mode, gray.size, gray.getpixel((1, 1))) == ("RGB", (4, 4), (128, 128, 128))


def test_corrupt_image_is_a_user_error_when_loaded_not_before(tmp_path):
    dataset = datasets.Dataset.from_dict(
        {"id": ["a"], "image": [{"bytes": b"not an image", "path": None}], "answers": [["x"]]},
        features=datasets.Features(
            {"id": datasets.Value("string"), "image": datasets.Image(), "answers": datasets.List(datasets.Value("string"))}
        ),
    )
    dataset.save_to_disk(str(tmp_path / "bad"))
    columns = {"id": "id", "image": "image", "answers": "answers"}
    (example,) = load_huggingface(str(tmp_path / "bad"), "validation", columns, "t/validation").examples
    with pytest.raises(UserError, match=r"cannot decode image row 0 of column 'image'"):
        example.image.load()


def test_single_saved_dataset_and_default_image_id(tmp_path):
    folder = tmp_path / "single"
    vqa_dataset().save_to_disk(str(folder))
    columns = {k: v for k, v in COLUMNS.items() if k != "image_id"}
    loaded = load_huggingface(str(folder), "validation", columns, "vqav2/validation")
    assert [(e.id, e.image_id) for e in loaded.examples] == [("1", "1"), ("2", "2")]


def test_parquet_files_named_by_split(tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    vqa_dataset(100).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    vqa_dataset(200).to_parquet(str(folder / "validation-00000-of-00001.parquet"))
    loaded = load_huggingface(str(folder), "validation", COLUMNS, "vqav2/validation")
    assert [e.id for e in loaded.examples] == ["201", "202"]
    assert loaded.examples[0].answers == ("crimson", "red")
    assert loaded.examples[0].image.load().getpixel((2, 2)) == (255, 0, 0)


def write_jsonl(folder, split, rows):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


JSONL_COLUMNS = {"id": "qid", "image": "img", "question": "prompt", "answers": "answers", "answer_type": "answer_type"}


def test_jsonl_with_relative_image_paths(tmp_path):
    folder = tmp_path / "jl"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (2, 2), (0, 9, 0)).save(folder / "images" / "a.png")
    write_jsonl(folder, "validation", [
        {"qid": "q1", "img": "images/a.png", "prompt": "what?", "answers": ["x", "y"], "answer_type": "other"},
        {"qid": "q2", "img": str(folder / "images" / "a.png"), "prompt": "why?", "answers": ["z"], "answer_type": "other"},
    ])
    loaded = load_huggingface(str(folder), "validation", JSONL_COLUMNS, "t/validation")
    first, second = loaded.examples
    assert first.image == FileImage(folder.resolve() / "images" / "a.png")  # resolved against the folder
    assert second.image == FileImage(folder / "images" / "a.png")  # absolute kept
    assert first.image.load().getpixel((0, 0)) == (0, 9, 0)
    assert (first.fields, first.answers, first.metadata) == ({"question": "what?"}, ("x", "y"), {"answer_type": "other"})


def test_single_string_answers(tmp_path):
    folder = tmp_path / "jl"
    write_jsonl(folder, "validation", [{"qid": 3, "img": "a.png", "prompt": "p", "answers": "z", "answer_type": "t"}])
    (example,) = load_huggingface(str(folder), "validation", JSONL_COLUMNS, "t/validation").examples
    assert (example.id, example.answers) == ("3", ("z",))


def test_sequence_of_dicts_answers(tmp_path):
    """`Sequence({...})` columns come back as a dict of lists."""
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Image(),
            "answers": datasets.Sequence({"answer": datasets.Value("string"), "answer_id": datasets.Value("int32")}),
        }
    )
    dataset = datasets.Dataset.from_dict(
        {"id": ["a"], "image": [Image.new("RGB", (1, 1))], "answers": [{"answer": ["p", "q", "r"], "answer_id": [3, 1, 2]}]},
        features=features,
    )
    dataset.save_to_disk(str(tmp_path / "seq"))
    loaded = load_huggingface(str(tmp_path / "seq"), "validation", {"id": "id", "image": "image", "answers": "answers"}, "t/v")
    assert loaded.examples[0].answers == ("q", "r", "p")


def test_missing_split_lists_the_splits_there(saved_dict):
    with pytest.raises(UserError) as excinfo:
        load_huggingface(str(saved_dict), "test", COLUMNS, "vqav2/test")
    text = str(excinfo.value)
    assert "no split 'test'" in text and "train, validation" in text and str(saved_dict) in text


def test_missing_split_in_a_files_folder(tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    vqa_dataset().to_parquet(str(folder / "train-00000.parquet"))
    with pytest.raises(UserError, match=r"no split 'validation' \(it has: train\)"):
        load_huggingface(str(folder), "validation", COLUMNS, "vqav2/validation")


def test_missing_column_names_it_and_lists_columns(saved_dict):
    columns = dict(COLUMNS, question="text")
    with pytest.raises(UserError) as excinfo:
        load_huggingface(str(saved_dict), "validation", columns, "vqav2/validation")
    text = str(excinfo.value)
    assert "no column 'text'" in text and "question_id" in text and "answer_type" in text and "`columns`" in text


def test_duplicate_ids(tmp_path):
    dataset = vqa_dataset().map(lambda row: {"question_id": 5})
    dataset.save_to_disk(str(tmp_path / "dup"))
    with pytest.raises(UserError, match=r"duplicate id 5 in column 'question_id' \(rows 0 and 1\)"):
        load_huggingface(str(tmp_path / "dup"), "validation", COLUMNS, "vqav2/validation")


def test_non_image_column_mapped_as_image(saved_dict):
    with pytest.raises(UserError, match=r"column 'answers' is .*neither an image nor a path"):
        load_huggingface(str(saved_dict), "validation", dict(COLUMNS, image="answers"), "vqav2/validation")


def test_hub_id_goes_to_load_dataset_with_the_split(tmp_path, monkeypatch):
    calls = []

    def fake_load_dataset(path, *args, **kwargs):
        calls.append((path, args, kwargs))
        return vqa_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    loaded = load_huggingface("HuggingFaceM4/VQAv2", "validation", COLUMNS, "vqav2/validation", cache_dir=tmp_path / "run-cache")
    assert calls == [("HuggingFaceM4/VQAv2", (), {"split": "validation", "cache_dir": str(tmp_path / "run-cache" / "datasets")})]
    assert loaded.source == "HuggingFaceM4/VQAv2"
    assert loaded.examples[1].image.load().mode == "RGB"


def test_local_folder_never_goes_to_the_hub(saved_dict, monkeypatch):
    def fake_load_dataset(*args, **kwargs):
        raise AssertionError("load_dataset called for a save_to_disk folder")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert len(load_huggingface(str(saved_dict), "validation", COLUMNS, "vqav2/validation")) == 2


def test_hub_failure_is_a_user_error(tmp_path, monkeypatch):
    def fake_load_dataset(path, split=None, **kwargs):
        raise FileNotFoundError(f"Couldn't find any data file at {path}.\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as excinfo:
        load_huggingface("someone/missing", "validation", COLUMNS, "vqav2/validation")
    text = str(excinfo.value)
    assert "'someone/missing'" in text and "hub id" in text and "--data" in text and "\n" not in text


# --- the other benchmarks' column kinds: labels, candidates, relevance, a second image, captions ---


def save(dataset: datasets.Dataset, folder) -> str:
    dataset.save_to_disk(str(folder))
    return str(folder)


def test_int_label_and_string_candidates_without_answers(tmp_path):
    """ScienceQA-like: each question's own choices and the index of the right one; no answers column."""
    dataset = datasets.Dataset.from_dict(
        {
            "qid": ["s1", "s2"],
            "image": [Image.new("RGB", (2, 2))] * 2,
            "question": ["Which is a mammal?", "Which is hotter?"],
            "choices": [["frog", "cat"], ["ice", "sun", "snow"]],
            "answer": [1, 0],
            "domain": ["biology", "physics"],
        },
        features=datasets.Features(
            {
                "qid": datasets.Value("string"),
                "image": datasets.Image(),
                "question": datasets.Value("string"),
                "choices": datasets.List(datasets.Value("string")),
                "answer": datasets.ClassLabel(num_classes=3),
                "domain": datasets.Value("string"),
            }
        ),
    )
    columns = {"id": "qid", "image": "image", "question": "question", "candidates": "choices", "label": "answer", "domain": "domain"}
    first, second = load_huggingface(save(dataset, tmp_path / "sqa"), "test", columns, "scienceqa/test").examples
    assert (first.candidates, first.label, first.answers) == (("frog", "cat"), 1, ())
    assert (second.candidates, second.label) == (("ice", "sun", "snow"), 0)
    assert first.fields == {"question": "Which is a mammal?"} and first.metadata == {"domain": "biology"}


def test_bool_label_becomes_an_int(tmp_path):
    rows = [{"id": 1, "img": "a.png", "text": "t", "label": True}, {"id": 2, "img": "a.png", "text": "u", "label": False}]
    write_jsonl(tmp_path / "hm", "validation", rows)
    columns = {"id": "id", "image": "img", "text": "text", "label": "label"}
    loaded = load_huggingface(str(tmp_path / "hm"), "validation", columns, "t/v")
    assert [(e.label, e.answers, e.fields) for e in loaded.examples] == [(1, (), {"text": "t"}), (0, (), {"text": "u"})]


def test_string_label_is_kept_as_the_answer(tmp_path):
    rows = [{"id": "a", "img": "a.png", "label": "positive"}, {"id": "b", "img": "b.png", "label": "negative"}]
    write_jsonl(tmp_path / "sst", "test", rows)
    columns = {"id": "id", "image": "img", "label": "label"}
    loaded = load_huggingface(str(tmp_path / "sst"), "test", columns, "t/test")
    assert [(e.answers, e.label) for e in loaded.examples] == [(("positive",), None), (("negative",), None)]


def test_candidate_records_with_text_or_answer_keys_and_relevance(tmp_path):
    """VisDial-like: each round's answer options as records, and the options' dense relevance."""
    columns = {"id": "id", "image": "img", "history": "history", "candidates": "options", "label": "gt", "relevance": "relevance"}
    loaded = []
    for key, texts, relevance in [("text", ["yes", "no"], [0.0, 1]), ("answer", ["red", "blue"], [0.5, 0.25])]:
        row = {"id": f"d-{key}", "img": "a.png", "history": "a dog. is it big? yes", "options": [{key: t} for t in texts],
               "gt": 1, "relevance": relevance}
        (example,) = load_huggingface(save(datasets.Dataset.from_list([row]), tmp_path / key), "validation", columns, "v/v").examples
        loaded.append(example)
    first, second = loaded
    assert (first.candidates, first.label, first.metadata) == (("yes", "no"), 1, {"relevance": [0.0, 1.0]})
    assert (second.candidates, second.metadata["relevance"]) == (("red", "blue"), [0.5, 0.25])
    assert first.fields == {"history": "a dog. is it big? yes"}


def test_caption_references_as_raw_records_and_sequences(tmp_path):
    """Captioning: reference captions as a list of {"raw", ...} records, or a Sequence({...}) dict of lists."""
    write_jsonl(tmp_path / "coco", "test", [
        {"id": 1, "img": "a.png", "sentences": [{"raw": "A dog runs.", "tokens": ["a", "dog", "runs"]}, {"raw": "A dog.", "tokens": []}]},
    ])
    columns = {"id": "id", "image": "img", "answers": "sentences"}
    (example,) = load_huggingface(str(tmp_path / "coco"), "test", columns, "coco/test").examples
    assert example.answers == ("A dog runs.", "A dog.")

    features = datasets.Features(
        {"id": datasets.Value("int64"), "image": datasets.Image(),
         "sentences": datasets.Sequence({"raw": datasets.Value("string"), "sentid": datasets.Value("int32")})}
    )
    dataset = datasets.Dataset.from_dict(
        {"id": [7], "image": [Image.new("RGB", (1, 1))], "sentences": [{"raw": ["one", "two"], "sentid": [3, 4]}]},
        features=features,
    )
    columns = dict(columns, image="image")
    (example,) = load_huggingface(save(dataset, tmp_path / "flickr"), "test", columns, "flickr/test").examples
    assert example.answers == ("one", "two")


def winoground(tmp_path):
    features = datasets.Features(
        {"id": datasets.Value("int32"), "image_0": datasets.Image(), "image_1": datasets.Image(),
         "caption_0": datasets.Value("string"), "caption_1": datasets.Value("string")}
    )
    dataset = datasets.Dataset.from_dict(
        {"id": [0, 1], "image_0": [Image.new("RGB", (2, 2), (255, 0, 0)), Image.new("RGB", (2, 2), (0, 0, 255))],
         "image_1": [Image.new("RGB", (3, 3), (0, 255, 0)), Image.new("L", (3, 3), 7)],
         "caption_0": ["a red thing", "a blue thing"], "caption_1": ["a green thing", "a dark thing"]},
        features=features,
    )
    return save(dataset, tmp_path / "wino")


WINO_COLUMNS = {"id": "id", "image": "image_0", "extra_image": "image_1", "caption_0": "caption_0", "caption_1": "caption_1"}


def test_extra_image_column_is_lazy_and_keyed_apart(tmp_path, monkeypatch):
    folder = winoground(tmp_path)

    def no_decode(*args, **kwargs):
        raise AssertionError("an image was decoded while loading the split")

    monkeypatch.setattr(Image, "open", no_decode)
    monkeypatch.setattr(datasets.Image, "decode_example", no_decode)
    loaded = load_huggingface(folder, "test", WINO_COLUMNS, "winoground/test")
    monkeypatch.undo()
    first, second = loaded.examples
    assert first.answers == () and first.label is None and first.candidates == ()
    assert first.fields == {"caption_0": "a red thing", "caption_1": "a green thing"}
    (extra,) = first.extra_images
    assert isinstance(extra, DatasetImage) and extra.column == "image_1" and extra.index == 0
    assert extra.key != first.image.key and len({e.image.key for e in loaded.examples} | {e.extra_images[0].key for e in loaded.examples}) == 4
    assert first.image.load().getpixel((0, 0)) == (255, 0, 0)
    assert extra.load().getpixel((0, 0)) == (0, 255, 0)
    assert second.extra_images[0].load().getpixel((1, 1)) == (7, 7, 7)


def test_extra_image_as_paths(tmp_path):
    folder = tmp_path / "pairs"
    (folder / "img").mkdir(parents=True)
    Image.new("RGB", (1, 1), (1, 2, 3)).save(folder / "img" / "b.png")
    write_jsonl(folder, "test", [{"id": "p", "a": "img/a.png", "b": "img/b.png", "label": 0}])
    columns = {"id": "id", "image": "a", "extra_image": "b", "label": "label"}
    (example,) = load_huggingface(str(folder), "test", columns, "t/test").examples
    assert example.extra_images == (FileImage(folder.resolve() / "img" / "b.png"),)
    assert example.extra_images[0].load().getpixel((0, 0)) == (1, 2, 3)


def test_hub_config_goes_to_load_dataset(tmp_path, monkeypatch):
    calls = []

    def fake_load_dataset(path, *args, **kwargs):
        calls.append((path, args, kwargs))
        return vqa_dataset()

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.chdir(tmp_path)
    loaded = load_huggingface("facebook/textvqa", "validation", COLUMNS, "textvqa/validation", config="textvqa")
    assert calls == [("facebook/textvqa", ("textvqa",), {"split": "validation", "cache_dir": None})]
    assert loaded.source == "facebook/textvqa:textvqa" and len(loaded) == 2


def test_hub_failure_names_the_config(tmp_path, monkeypatch):
    def fake_load_dataset(*args, **kwargs):
        raise ValueError("BuilderConfig 'nope' not found")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"'facebook/textvqa' config 'nope' split 'validation'.*BuilderConfig"):
        load_huggingface("facebook/textvqa", "validation", COLUMNS, "textvqa/validation", config="nope")


# --- errors of the new column kinds ---


def test_no_answers_and_no_label_is_an_error(saved_dict):
    columns = {k: v for k, v in COLUMNS.items() if k != "answers"}
    with pytest.raises(UserError, match=r"vqav2/validation: the task's huggingface columns have no 'answers' entry \(nor 'label'\)"):
        load_huggingface(str(saved_dict), "validation", columns, "vqav2/validation")


@pytest.mark.parametrize("key", ["extra_image", "label", "candidates", "relevance"])
def test_missing_new_column_names_it_and_lists_columns(saved_dict, key):
    with pytest.raises(UserError) as excinfo:
        load_huggingface(str(saved_dict), "validation", dict(COLUMNS, **{key: "nowhere"}), "vqav2/validation")
    text = str(excinfo.value)
    assert f"no column 'nowhere' (for '{key}'; columns there: question_id, image_id, image," in text and "\n" not in text


def test_extra_image_column_that_is_not_an_image(saved_dict):
    with pytest.raises(UserError, match=r"column 'answers' is .*neither an image nor a path string.*\(extra_image\)"):
        load_huggingface(str(saved_dict), "validation", dict(COLUMNS, extra_image="answers"), "vqav2/validation")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("label", -1, r"holds label -1, which marks an unlabelled example"),
        ("label", 1.5, r"holds float 1.5, not an int or string label"),
        ("candidates", "cat", r"column 'c' holds str, not candidates"),
        ("candidates", [{"label": "x"}], r"column 'c' mixes kinds of candidates or lacks their text.*'answer'.*'text'"),
        ("candidates", ["x", None], r"mixes kinds of candidates"),
        ("relevance", [0.5, None], r"column 'c' holds \[0.5, None\], not a list of relevance numbers"),
        ("answers", [{"caption": "x"}], r"column 'c' mixes kinds of answers or lacks their text.*'answer'.*'raw'"),
        ("answers", 5, r"column 'c' holds int, not answers"),
    ],
)
def test_bad_values_of_the_new_column_kinds(tmp_path, key, value, message):
    write_jsonl(tmp_path / "bad", "test", [{"id": "q9", "img": "a.png", "c": value, "label": 0}])
    columns = {"id": "id", "image": "img", key: "c"} if key != "label" else {"id": "id", "image": "img", "label": "c"}
    if key not in ("label", "answers"):
        columns["label"] = "label"
    with pytest.raises(UserError, match=message) as excinfo:
        load_huggingface(str(tmp_path / "bad"), "test", columns, "t/test")
    assert "id q9" in str(excinfo.value)


def fairface_dataset() -> datasets.Dataset:
    """HuggingFaceM4/FairFace's shape: no id column, gender/race/age as ClassLabel integers."""
    return datasets.Dataset.from_dict(
        {
            "image": [Image.new("RGB", (2, 2))] * 3,
            "age": [1, 6, 8],
            "gender": [0, 1, 1],
            "race": [0, 5, 3],
            "service_test": [False, True, True],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "age": datasets.ClassLabel(names=list(HF_CLASS_NAMES["age"])),
                "gender": datasets.ClassLabel(names=list(HF_CLASS_NAMES["gender"])),
                "race": datasets.ClassLabel(names=list(HF_CLASS_NAMES["race"])),
                "service_test": datasets.Value("bool"),
            }
        ),
    )


FAIRFACE_COLUMNS = {"id": "@row", "image": "image", "label": "gender", "gender": "gender", "race": "race", "age": "age"}


def test_row_number_ids_where_there_is_no_id_column(tmp_path):
    examples = load_huggingface(save(fairface_dataset(), tmp_path / "ff"), "validation", FAIRFACE_COLUMNS, "f/v").examples
    assert [(e.id, e.image_id) for e in examples] == [("0", "0"), ("1", "1"), ("2", "2")]
    assert [e.image.index for e in examples] == [0, 1, 2]


def test_row_number_image_ids(tmp_path):
    columns = {**FAIRFACE_COLUMNS, "id": "@row", "image_id": "@row"}
    examples = load_huggingface(save(fairface_dataset(), tmp_path / "ff"), "validation", columns, "f/v").examples
    assert [e.image_id for e in examples] == ["0", "1", "2"]


def test_fairface_class_label_attributes_are_metadata_names(tmp_path):
    examples = load_huggingface(save(fairface_dataset(), tmp_path / "ff"), "validation", FAIRFACE_COLUMNS, "f/v").examples
    assert [e.label for e in examples] == [0, 1, 1]  # the label column stays the ClassLabel index
    assert [e.metadata for e in examples] == [
        {"gender": "Male", "race": "East Asian", "age": "3-9"},
        {"gender": "Female", "race": "Latino_Hispanic", "age": "50-59"},
        {"gender": "Female", "race": "White", "age": "more than 70"},
    ]
    assert all(e.fields == {} for e in examples)
    # fairface_accuracy's groups come from the metadata; the older fields route (ints by HF order) still works
    assert [group_value(e.metadata, e.fields, "race") for e in examples] == ["East Asian", "Latino_Hispanic", "White"]
    assert group_value({}, {"race": "5"}, "race") == "Latino_Hispanic"


def test_string_metadata_attributes_are_kept(tmp_path):
    rows = [{"file": "a.png", "gender": "Male"}, {"file": "b.png", "gender": "Female"}]
    write_jsonl(tmp_path / "ff", "validation", rows)
    columns = {"id": "@row", "image": "file", "label": "gender", "gender": "gender"}
    examples = load_huggingface(str(tmp_path / "ff"), "validation", columns, "f/v").examples
    assert [(e.id, e.answers, e.metadata) for e in examples] == [
        ("0", ("Male",), {"gender": "Male"}), ("1", ("Female",), {"gender": "Female"})
    ]
