"""A protocol's `chat_template: true`: an instruct checkpoint's prompt is one user turn of its own
chat template (the shots and the query, images where they are) and the assistant turn's start; the
fast path's ids equal the processor's on the templated text; a ranked candidate follows the
assistant turn's start; a checkpoint or family without a template is refused in one line.

The tiny checkpoints have no chat template (base models): the tests give their processor a small
one in the Idefics2 style, written here."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from transformers import AutoProcessor

from idefics_eval.demo import idefics2 as demo_idefics2
from idefics_eval.demo import idefics3 as demo_idefics3
from idefics_eval.demo.families import save_family_demo
from idefics_eval.engine import GenerationSettings, Generator
from idefics_eval.image_cache import ImageFeatureCache
from idefics_eval.models import adapter_class, load_model, load_prompt_side
from idefics_eval.plan import demo_data
from idefics_eval.prompts import load_template, most_common_answer
from idefics_eval.ranking import Ranker
from idefics_eval.tasks import load_task

from conftest import invoke
from family_prompts import example

TEMPLATE = ("{% for message in messages %}{{ message['role'] | capitalize }}:{% for part in message['content'] %}"
            "{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}{% endfor %}"
            "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")
FAMILIES = ["idefics2", "idefics3", "smolvlm"]


def chat_adapter(family: str, template: str | None = TEMPLATE):
    """The family's adapter on its tiny processor and config (no weights), with `template`."""
    if family == "idefics2":
        processor = demo_idefics2.build_processor()
        config = demo_idefics2.build_config(processor.tokenizer)
    else:
        processor = demo_idefics3.build_processor(family)
        config = demo_idefics3.build_config(family, processor.tokenizer)
    processor.chat_template = template
    processor.tokenizer.padding_side = "left"
    return adapter_class(family, f"tiny-{family}")(processor, config)


def chat_prompts(candidate: str | None = None):
    template = load_template("vqa")
    chat = replace(template, chat=True)  # as plan.prepare sets it from the protocol
    query = example(9)
    return [chat.render([example(i) for i in range(count)], query, most_common_answer, candidate) for count in (0, 1, 4)]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("add_start_token", [True, False])
def test_fast_and_plain_ids_equal_the_processor_on_the_templated_text(family, add_start_token):
    adapter = chat_adapter(family)
    prompts = chat_prompts()
    built = adapter.build_inputs(prompts, add_start_token)
    text = adapter.text_inputs(prompts, add_start_token)
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(built[key], text[key]), key
    processor = adapter.processor
    for prompt, ids in zip(prompts, (adapter.token_ids(p, add_start_token) for p in prompts)):
        content = [{"type": "text", "text": i} if isinstance(i, str) else {"type": "image"} for i in prompt.items]
        by_hand = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                                tokenize=False)
        assert by_hand.startswith("User:Instruction:") and by_hand.endswith("Answer:<end_of_utterance>\nAssistant:")
        images = [ref.load() for ref in prompt.images]
        expected = processor(text=[(processor.tokenizer.bos_token if add_start_token else "") + by_hand], images=[images],
                             add_special_tokens=False, return_tensors="pt")
        assert ids == expected["input_ids"][0].tolist()


@pytest.mark.parametrize("family", ["idefics2", "idefics3"])
def test_a_ranked_candidate_follows_the_assistant_turn_start(family):
    adapter = chat_adapter(family)
    context, full = chat_prompts()[2], chat_prompts(candidate="blue")[2]
    assert full.items == context.items and full.reply == " blue" and context.reply == ""
    context_text, full_text = adapter.prompt_text(context, True), adapter.prompt_text(full, True)
    assert full_text == context_text + " blue" and context_text.endswith("<end_of_utterance>\nAssistant:")


def test_without_chat_template_the_prompt_is_the_task_s():
    adapter = chat_adapter("idefics2")
    plain = load_template("vqa").render([example(0)], example(9), most_common_answer)
    assert not plain.chat and "User:" not in adapter.prompt_text(plain, True)


def test_a_checkpoint_or_family_without_a_template_is_refused():
    with pytest.raises(Exception, match=r"^p.yaml: chat_template: tiny-idefics2 has no chat template \(a base checkpoint\?\)"):
        chat_adapter("idefics2", template=None).check_chat_template("p.yaml: chat_template", "tiny-idefics2")
    chat_adapter("idefics2").check_chat_template("p.yaml: chat_template", "tiny-idefics2")  # has one: passes
    for family in ("idefics", "mllama", "llava_onevision"):  # no chat turns in these adapters
        with pytest.raises(Exception, match=rf"^p.yaml: chat_template: chat templates are not supported for {family} checkpoints"):
            adapter_class(family, "m")(None, None).check_chat_template("p.yaml: chat_template", "m")


def protocol_file(tmp_path, section: str = "default") -> str:
    path = tmp_path / "chat.yaml"
    body = "  chat_template: true\n" if section == "default" else "  vqav2:\n    chat_template: true\n"
    path.write_text(f"name: chat\n{'default' if section == 'default' else 'tasks'}:\n{body}")
    return str(path)


def test_idefics_refuses_the_chat_template_in_one_line(tmp_path, capsys):
    protocol = protocol_file(tmp_path)
    code, _, err = invoke(capsys, "prompt", "--task", "vqav2", "--demo", "--shots", "0", "--protocol", protocol,
                          "--cache-dir", str(tmp_path / "cache"))
    assert code == 2 and err.count("\n") == 1
    assert f"{protocol}: chat_template: chat templates are not supported for idefics checkpoints" in err


def test_protocol_chat_template_must_be_a_boolean(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ndefault:\n  chat_template: yes please\n")
    code, _, err = invoke(capsys, "prompt", "--task", "vqav2", "--demo", "--shots", "0", "--protocol", str(path))
    assert code == 2 and "default.chat_template" in err and err.count("\n") == 1


@pytest.mark.parametrize("section", ["default", "task"])
def test_the_dry_run_shows_the_templated_prompt(tmp_path, capsys, section):
    folder = tmp_path / "idefics2"
    save_family_demo("idefics2", folder, seed=0)
    protocol = protocol_file(tmp_path, section)
    args = ("prompt", "--task", "vqav2", "--model", str(folder), "--data", demo_data(load_task("vqav2")), "--shots", "1",
            "--protocol", protocol,
            "--cache-dir", str(tmp_path / "cache"), "--json")
    code, _, err = invoke(capsys, *args)
    assert code == 2 and f"{folder} has no chat template" in err and err.count("\n") == 1  # a base checkpoint
    processor = AutoProcessor.from_pretrained(folder)
    processor.chat_template = TEMPLATE
    processor.save_pretrained(folder)
    code, out, err = invoke(capsys, *args)
    assert code == 0, err
    text = json.loads(out)["text"]
    assert text.startswith("<s>User:Instruction:") and text.endswith("Answer:<end_of_utterance>\nAssistant:")
    side = load_prompt_side(str(folder))
    assert side.adapter.chat_template == TEMPLATE


@pytest.fixture(scope="module")
def instruct(tmp_path_factory):
    """The tiny Idefics2, loaded, with the test's chat template."""
    folder = tmp_path_factory.mktemp("instruct") / "idefics2"
    save_family_demo("idefics2", folder, seed=0)
    loaded = load_model(str(folder), device="cpu", dtype="float32", progress=False)
    loaded.processor.chat_template = TEMPLATE
    return loaded


@pytest.mark.parametrize("num_beams", [1, 3])
def test_fast_generation_equals_generate_on_chat_prompts(instruct, num_beams):
    generator = Generator(instruct, GenerationSettings(max_new_tokens=6, num_beams=num_beams), ImageFeatureCache())
    assert generator.fast
    prompts = chat_prompts()
    assert torch.equal(generator.generate_ids_fast(prompts), generator.generate_ids_plain(prompts))


def test_prefix_cached_ranking_of_chat_prompts_equals_full_forwards(instruct):
    context = chat_prompts()[2]
    continuations = [chat_prompts(candidate=c)[2] for c in ("red", "dark blue", "colour9")]
    ranker = Ranker(instruct, 2, ImageFeatureCache())
    with torch.no_grad():
        fast = ranker.loglikelihoods(context, continuations, "sum")
        assert fast == pytest.approx(ranker.loglikelihoods_full(context, continuations, "sum"), abs=1e-4)
    tokenizer = instruct.processor.tokenizer
    ids, scored = ranker.requests(context, continuations)[1]
    assert tokenizer.decode(ids[-scored:]) == " dark blue"  # after "Assistant:", not inside the user turn


def test_a_run_under_chat_template_records_the_templated_prompts(tmp_path, capsys):
    folder = tmp_path / "idefics2"
    save_family_demo("idefics2", folder, seed=0)
    processor = AutoProcessor.from_pretrained(folder)
    processor.chat_template = TEMPLATE
    processor.save_pretrained(folder)
    out = tmp_path / "run"
    code, _, err = invoke(capsys, "run", "--model", str(folder), "--demo-data", "--task", "vqav2,hatefulmemes", "--shots", "2",
                          "--limit", "3", "--protocol", protocol_file(tmp_path), "--output-dir", str(out), "--no-progress")
    assert code == 0, err
    for task in ("vqav2", "hatefulmemes"):
        line = json.loads((out / "samples" / f"{task}_2shot.jsonl").read_text().splitlines()[0])
        assert line["prompt"].startswith("User:") or line["prompt"].startswith("<s>User:")
        assert line["prompt"].endswith("<end_of_utterance>\nAssistant:")
