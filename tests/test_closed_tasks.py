"""The task files and prompts of Hateful Memes, VisDial, ScienceQA and Winoground: what they declare, and the
prompts they render from the bundled demo data (the text a ranked candidate is scored after)."""

from __future__ import annotations

import pytest

from idefics_eval.demo.make_closed_data import DEFAULT_OUT
from idefics_eval.formats import load_split
from idefics_eval.prompts import load_template
from idefics_eval.tasks import load_task

HATEFUL_PREFIX = (
    "It's a conversation between a human, the user, and an intelligent visual AI, Bot. The user sends memes with "
    "text written on them, and Bot has to say whether the meme is hateful or not."
)


@pytest.mark.parametrize(
    "task, request_, metric, support, query, candidates",
    [
        ("hatefulmemes", "rank", "roc_auc", "train", "test", ("classes", ("no", "yes"), "sum")),
        ("visdial", "rank", "visdial_ndcg", "train", "validation", ("example", (), "sum")),
        ("scienceqa", "rank", "accuracy", "train", "test", ("example", (), "sum")),
        ("winoground", "match", "winoground", "test", "test", ("example", (), "mean")),
    ],
)
def test_task_declares_request_metric_splits_and_candidates(task, request_, metric, support, query, candidates):
    spec = load_task(task)
    assert (spec.request, spec.metric, spec.prompt) == (request_, metric, task)
    assert (spec.support_split, spec.query_split) == (support, query)
    assert (spec.candidates.source, spec.candidates.classes, spec.candidates.normalize) == candidates
    assert spec.zero_shot_only == (task == "winoground")
    if request_ == "rank":
        assert spec.shot_answer == "label"
    official = {"hatefulmemes": "hatefulmemes_jsonl", "visdial": "visdial_json", "scienceqa": "scienceqa_json",
                "winoground": "winoground_jsonl"}[task]
    assert set(spec.sources) == {official}


def test_huggingface_sources_map_the_harness_keys():
    hateful = load_task("hatefulmemes").huggingface
    assert (hateful.path, hateful.config) == ("HuggingFaceM4/Hateful-Memes", "seen")
    assert hateful.columns == {"id": "id", "image": "image", "text": "text", "label": "label"}
    winoground = load_task("winoground").huggingface
    assert (winoground.path, winoground.splits) == ("facebook/winoground", {"test": "test"})
    assert winoground.columns["extra_image"] == "image_1" and {"caption_0", "caption_1"} <= set(winoground.columns)
    visdial = load_task("visdial").huggingface
    assert {"candidates", "relevance", "caption", "history"} <= set(visdial.columns)
    assert load_task("scienceqa").huggingface is None  # the hub copies have no id column (see the task file)


def test_prompts_are_the_protocol_templates():
    hateful = load_template("hatefulmemes")
    assert hateful.prefix == HATEFUL_PREFIX
    assert hateful.example == '<image>is an image with written "{text}" on it. Is it hateful? Answer: {class_name}'
    assert (load_template("visdial").prefix, load_template("visdial").example) == ("", "<image>{caption}. {history}{class_name}.")
    assert load_template("scienceqa").example == "<image>{context}Answer: The best answer is {class_name}."
    assert (load_template("winoground").prefix, load_template("winoground").example) == ("", "<image>{class_name}")
    assert all(load_template(t).target == "{class_name}" for t in ("hatefulmemes", "visdial", "scienceqa", "winoground"))


def texts(prompt) -> list[str]:
    return [item for item in prompt.items if isinstance(item, str)]


def demo(task: str, split: str):
    return load_split(load_task(task), split, str(DEFAULT_OUT / task)).examples


def test_hatefulmemes_prompt_scores_the_class_after_the_answer_cue():
    template = load_template("hatefulmemes")
    shot, query = demo("hatefulmemes", "train")[0], demo("hatefulmemes", "test")[0]
    classes = load_task("hatefulmemes").candidates.classes
    prompt = template.render([shot], query, lambda e: classes[e.label], candidate="yes")
    assert texts(prompt) == [
        HATEFUL_PREFIX,
        f'is an image with written "{shot.fields["text"]}" on it. Is it hateful? Answer: {shot.answers[0]}',
        f'is an image with written "{query.fields["text"]}" on it. Is it hateful? Answer: yes',
    ]
    assert len(prompt.images) == 2


def test_visdial_prompt_continues_the_dialog_with_the_option():
    template = load_template("visdial")
    shot, query = demo("visdial", "train")[0], demo("visdial", "validation")[0]
    prompt = template.render([shot], query, lambda e: e.candidates[e.label], candidate=query.candidates[5])
    shot_text, query_text = texts(prompt)
    assert shot_text.startswith(shot.fields["caption"] + ". Question: ") and shot_text.count("Question: ") == 10
    assert shot_text.endswith(f"Answer: {shot.answers[0]}.")
    assert query_text == f"{query.fields['caption']}. {query.fields['history']}{query.candidates[5]}."
    assert query_text.count("Question: ") == query.metadata["round_id"]
    cut = template.render([], query, lambda e: "")  # the query alone stops at the answer cue
    assert texts(cut)[-1].strip().endswith("Answer:")


def test_scienceqa_prompt_puts_the_choice_after_the_best_answer_cue():
    template = load_template("scienceqa")
    query = demo("scienceqa", "test")[0]
    prompt = template.render([], query, lambda e: "", candidate=query.candidates[0])
    assert texts(prompt) == [f"{query.fields['context']}Answer: The best answer is {query.candidates[0]}."]
    assert query.fields["context"].startswith(f"Question: {query.fields['question']}\nContext: ")


def test_winoground_prompt_is_the_caption_after_its_image():
    template = load_template("winoground")
    query = demo("winoground", "test")[0]
    for k in (0, 1):
        prompt = template.render([], query, lambda e: "", candidate=query.fields[f"caption_{k}"])
        assert texts(prompt) == [query.fields[f"caption_{k}"]] and prompt.images == [query.image]
