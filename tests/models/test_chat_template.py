"""A protocol's `chat_template: true`: an instruct checkpoint's prompt is one user turn of its own
chat template (the shots and the query, images where the template puts them) and the assistant
turn's start; the fast and plain paths' inputs equal the processor's on the text of
`processor.apply_chat_template`; a ranked candidate follows the assistant turn's start; a
checkpoint or family without a template is refused in one line.

Every family's tiny maker but IDEFICS's writes an instruct checkpoint (`instruct=True`, `demo-model
--instruct`), each with a template of its real instruct checkpoint's layout; the tests use those."""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import replace

import pytest
import torch
from transformers.utils import chat_template_utils

from idefics_eval.comparability import differences
from idefics_eval.demo import idefics2 as demo_idefics2
from idefics_eval.demo import idefics3 as demo_idefics3
from idefics_eval.demo import llava_onevision as demo_llava_onevision
from idefics_eval.demo import mllama as demo_mllama
from idefics_eval.demo.families import save_family_demo
from idefics_eval.engine import GenerationSettings, Generator
from idefics_eval.errors import UserError
from idefics_eval.image_cache import ImageFeatureCache
from idefics_eval.models import adapter_class, load_model, load_prompt_side
from idefics_eval.models.base import CHAT_DATE
from idefics_eval.plan import demo_data
from idefics_eval.prompts import load_template, most_common_answer
from idefics_eval.ranking import Ranker
from idefics_eval.results import read_results
from idefics_eval.tasks import load_task

from conftest import invoke
from family_prompts import example

FAMILIES = ["idefics2", "idefics3", "smolvlm", "mllama", "llava_onevision"]
# What each tiny instruct checkpoint's template writes after a user turn, to start the assistant's.
CLOSING = {"idefics2": "<end_of_utterance>\nAssistant:", "idefics3": "<end_of_utterance>\nAssistant:",
           "smolvlm": "<end_of_utterance>\nAssistant:",
           "mllama": "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
           "llava_onevision": "<|im_end|>\n<|im_start|>assistant\n"}


def chat_adapter(family: str, instruct: bool = True):
    """The family's adapter on its tiny processor and config (no weights): its instruct checkpoint's
    (with its chat template), or with `instruct=False` its base checkpoint's (none)."""
    if family == "idefics2":
        processor = demo_idefics2.build_processor(instruct=instruct)
        config = demo_idefics2.build_config(processor.tokenizer)
    elif family in ("idefics3", "smolvlm"):
        processor = demo_idefics3.build_processor(family, instruct=instruct)
        config = demo_idefics3.build_config(family, processor.tokenizer)
    else:
        maker = {"mllama": demo_mllama, "llava_onevision": demo_llava_onevision}[family]
        processor = maker.build_processor(instruct=instruct)
        config = maker.build_config(instruct=True) if family == "llava_onevision" else maker.build_config()
    processor.tokenizer.padding_side = "left"
    return adapter_class(family, f"tiny-{family}")(processor, config)


def templated(processor, prompt) -> str:
    """What a user of the processor writes for a chat prompt: `processor.apply_chat_template` on the
    user turn (an image content item where each image stands) with the assistant turn's start, less a
    start token the template writes."""
    content = [{"type": "text", "text": i} if isinstance(i, str) else {"type": "image"} for i in prompt.items]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
    bos = processor.tokenizer.bos_token
    return text.removeprefix(bos)


def chat_prompts(candidate: str | None = None):
    template = load_template("vqa")
    chat = replace(template, chat=True)  # as plan.prepare sets it from the protocol
    query = example(9)
    return [chat.render([example(i) for i in range(count)], query, most_common_answer, candidate) for count in (0, 1, 4)]


@pytest.mark.parametrize("family", ["idefics2", "idefics3", "smolvlm"])
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
        by_hand = templated(processor, prompt)
        assert by_hand.startswith("User: Instruction:") and by_hand.endswith("Answer:<end_of_utterance>\nAssistant:")
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


@pytest.mark.parametrize("family", FAMILIES)
def test_a_checkpoint_without_a_template_is_refused(family):
    with pytest.raises(Exception, match=rf"^p.yaml: chat_template: tiny-{family} has no chat template \(a base checkpoint\?\)"):
        chat_adapter(family, instruct=False).check_chat_template("p.yaml: chat_template", f"tiny-{family}")
    chat_adapter(family).check_chat_template("p.yaml: chat_template", f"tiny-{family}")  # has one: passes


def test_idefics_is_refused_saying_why():
    with pytest.raises(Exception, match=r"^p.yaml: chat_template: IDEFICS checkpoints ship no chat template \(m\)"):
        adapter_class("idefics", "m")(None, None).check_chat_template("p.yaml: chat_template", "m")


def by_hand(processor, prompts):
    """`templated` batched: the start token, each prompt's templated text, then the processor on
    those texts and the images, left-padded, its tokenizer adding no special tokens."""
    texts = [processor.tokenizer.bos_token + templated(processor, prompt) for prompt in prompts]
    images = [[ref.load() for ref in prompt.images] for prompt in prompts]
    return processor(text=texts, images=images, padding="longest", padding_side="left", add_special_tokens=False,
                     return_tensors="pt")


@pytest.mark.parametrize("family", FAMILIES)
def test_a_batch_s_inputs_equal_the_processor_on_apply_chat_template(family):
    adapter = chat_adapter(family)
    prompts = chat_prompts()  # 0, 1 and 4 shots in one batch
    expected = by_hand(adapter.processor, prompts)
    built, text = adapter.build_inputs(prompts, True), adapter.text_inputs(prompts, True)
    for key in expected:  # the plain path is the processor on the text the harness templated
        assert torch.equal(built[key], expected[key]), key
    for key in text:  # the fast path: the same ids, masks (and Llama 3.2 Vision's cross-attention mask)
        assert torch.equal(text[key], expected[key]), key
    for prompt in prompts:  # without the start token: the same ids less it
        assert adapter.token_ids(prompt, False) == adapter.token_ids(prompt, True)[1:]
    without = adapter.text_inputs(prompts, False)
    assert torch.equal(adapter.build_inputs(prompts, False)["input_ids"], without["input_ids"])


@pytest.mark.parametrize(("family", "opening", "closing"), [
    *((family, "<s>User: Instruction:", "Answer:<end_of_utterance>\nAssistant:") for family in ("idefics2", "idefics3", "smolvlm")),
    ("mllama", "<s><|start_header_id|>user<|end_header_id|>\n\nInstruction:",
     "Answer:<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
    ("llava_onevision", "<s><|im_start|>user\n<image>\n<image>\n<image>\n<image>\n<image>\nInstruction:",
     "Answer:<|im_end|>\n<|im_start|>assistant\n"),
])
def test_the_instruct_makers_templates_have_the_real_ones_layout(family, opening, closing):
    """Idefics2/3, SmolVLM: `User: ` (no space when the turn opens with an image), the items in order,
    `<end_of_utterance>`, a newline, `Assistant:`. Llama 3.2 Vision Instruct: one header per turn, the
    items in order, <|eot_id|>; no system turn when there are images. LLaVA-OneVision (llava-hf): the
    turn's images first, one line each, then its text. All are written by the makers, and the adapter
    templates with them."""
    adapter = chat_adapter(family)
    prompt = chat_prompts()[2]  # 4 shots: 5 images
    content = [{"type": "text", "text": i} if isinstance(i, str) else {"type": "image"} for i in prompt.items]
    text = adapter.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                                 tokenize=False)
    text = text if text.startswith("<s>") else "<s>" + text
    assert text.startswith(opening) and text.endswith(closing)
    assert text == adapter.tokenizer.bos_token + adapter.chat_text(prompt)
    if family == "mllama":
        assert text.count("<|image|>") == 5 and "Today Date" not in text
        assert "Image:<|image|>Question: What is shape 0?" in text  # each image where it stands


@pytest.mark.parametrize(("family", "writes_start_token"), [("idefics2", False), ("idefics3", True), ("smolvlm", True)])
def test_the_idefics2_style_turn_opens_without_a_space_before_an_image(family, writes_start_token):
    """As idefics2-8b's template (and Idefics3-8B-Llama3's, SmolVLM-Instruct's after their start
    token, which idefics2-8b's does not write)."""
    adapter = chat_adapter(family)
    prompt = replace(chat_prompts()[0], items=(example(0).image, "What?"))
    text = adapter.processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}], add_generation_prompt=True,
        tokenize=False)
    assert text == ("<s>" if writes_start_token else "") + "User:<image>What?<end_of_utterance>\nAssistant:"
    assert adapter.chat_text(prompt) == "User:<image>What?<end_of_utterance>\nAssistant:"


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
    assert f"{protocol}: chat_template: IDEFICS checkpoints ship no chat template" in err


def test_protocol_chat_template_must_be_a_boolean(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ndefault:\n  chat_template: yes please\n")
    code, _, err = invoke(capsys, "prompt", "--task", "vqav2", "--demo", "--shots", "0", "--protocol", str(path))
    assert code == 2 and "default.chat_template" in err and err.count("\n") == 1


@pytest.mark.parametrize("section", ["default", "task"])
def test_the_dry_run_shows_the_templated_prompt(tmp_path, capsys, section):
    protocol = protocol_file(tmp_path, section)

    def dry_run(folder):
        return invoke(capsys, "prompt", "--task", "vqav2", "--model", str(folder), "--data", demo_data(load_task("vqav2")),
                      "--shots", "1", "--protocol", protocol, "--cache-dir", str(tmp_path / "cache"), "--json")

    save_family_demo("idefics2", tmp_path / "base", seed=0)
    code, _, err = dry_run(tmp_path / "base")
    assert code == 2 and f"{tmp_path / 'base'} has no chat template" in err and err.count("\n") == 1
    save_family_demo("idefics2", tmp_path / "instruct", seed=0, instruct=True)
    code, out, err = dry_run(tmp_path / "instruct")
    assert code == 0, err
    text = json.loads(out)["text"]
    assert text.startswith("<s>User: Instruction:") and text.endswith("Answer:<end_of_utterance>\nAssistant:")
    assert load_prompt_side(str(tmp_path / "instruct")).adapter.chat_template == demo_idefics2.CHAT_TEMPLATE


@pytest.fixture(scope="module", params=FAMILIES)
def instruct_family(request, tmp_path_factory):
    """(family, folder, loaded model) of the family's tiny instruct checkpoint, as its maker writes it."""
    folder = tmp_path_factory.mktemp("instruct") / request.param
    save_family_demo(request.param, folder, seed=0, instruct=True)
    return request.param, folder, load_model(str(folder), device="cpu", dtype="float32", progress=False)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_fast_generation_equals_generate_on_chat_prompts(instruct_family, num_beams):
    _, _, loaded = instruct_family
    assert loaded.adapter.chat_template is not None  # loaded back from the checkpoint's files
    generator = Generator(loaded, GenerationSettings(max_new_tokens=6, num_beams=num_beams), ImageFeatureCache())
    assert generator.fast
    prompts = chat_prompts()
    assert torch.equal(generator.generate_ids_fast(prompts), generator.generate_ids_plain(prompts))


def test_prefix_cached_ranking_of_chat_prompts_equals_full_forwards(instruct_family):
    _, _, loaded = instruct_family
    context = chat_prompts()[2]
    continuations = [chat_prompts(candidate=c)[2] for c in ("red", "dark blue", "colour9")]
    ranker = Ranker(loaded, 2, ImageFeatureCache())
    with torch.no_grad():
        fast = ranker.loglikelihoods(context, continuations, "sum")
        assert fast == pytest.approx(ranker.loglikelihoods_full(context, continuations, "sum"), abs=1e-4)
    ids, scored = ranker.requests(context, continuations)[1]
    assert loaded.adapter.tokenizer.decode(ids[-scored:]) == " dark blue"  # after the assistant turn's start


def test_a_run_under_chat_template_records_the_templated_prompts(instruct_family, tmp_path, capsys):
    family, folder, _ = instruct_family
    out = tmp_path / "run"
    code, _, err = invoke(capsys, "run", "--model", str(folder), "--demo-data", "--task", "vqav2,hatefulmemes", "--shots", "2",
                          "--limit", "3", "--protocol", protocol_file(tmp_path), "--output-dir", str(out), "--no-progress",
                          "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    for task in ("vqav2", "hatefulmemes"):
        line = json.loads((out / "samples" / f"{task}_2shot.jsonl").read_text().splitlines()[0])
        assert line["prompt"].endswith(CLOSING[family]), line["prompt"][-80:]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_base_checkpoint_is_refused_in_one_line(family, tmp_path, capsys):
    folder = tmp_path / family
    save_family_demo(family, folder, seed=0)  # a base checkpoint: no template
    code, _, err = invoke(capsys, "prompt", "--task", "vqav2", "--model", str(folder), "--demo-data", "--shots", "1",
                          "--protocol", protocol_file(tmp_path), "--cache-dir", str(tmp_path / "cache"))
    assert code == 2 and f"{folder} has no chat template" in err and err.count("\n") == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_demo_model_instruct_writes_the_maker_s_template(family, tmp_path, capsys):
    code, out, err = invoke(capsys, "demo-model", str(tmp_path / "m"), "--family", family, "--instruct")
    assert code == 0, err
    assert out == f"wrote the tiny {family} instruct (seed 0) to {tmp_path / 'm'}\n"
    maker = {"idefics2": demo_idefics2, "idefics3": demo_idefics3, "smolvlm": demo_idefics3, "mllama": demo_mllama,
             "llava_onevision": demo_llava_onevision}[family]
    side = load_prompt_side(str(tmp_path / "m"))
    assert side.adapter.chat_template == maker.CHAT_TEMPLATE


def test_demo_model_instruct_is_refused_for_idefics_in_one_line(tmp_path, capsys):
    code, _, err = invoke(capsys, "demo-model", str(tmp_path / "m"), "--family", "idefics", "--instruct")
    assert code == 2 and err.count("\n") == 1
    assert "--instruct: IDEFICS checkpoints ship no chat template" in err
    assert not (tmp_path / "m").exists()


def test_idefics_instruct_turns_are_a_prompt_file_s_business(tmp_path, capsys):
    """What the IDEFICS refusal points to (docs/models.md#chat-templates): one User/Assistant exchange
    per shot, written by a prompt file that a protocol names, the query ending at `Assistant:`."""
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "vqa_instruct.yaml").write_text(
        'name: vqa_instruct\nversion: 1\nprefix: ""\n'
        'example: "User:<image>Question: {question}<end_of_utterance>\\nAssistant: {answer}<end_of_utterance>\\n"\n')
    protocol = tmp_path / "instruct.yaml"
    protocol.write_text("name: instruct\ntasks:\n  vqav2:\n    prompt: vqa_instruct\n")
    code, out, err = invoke(capsys, "prompt", "--task", "vqav2", "--demo", "--shots", "2", "--protocol", str(protocol),
                            "--prompts-dir", str(tmp_path / "prompts"), "--cache-dir", str(tmp_path / "cache"), "--json")
    assert code == 0, err
    text = json.loads(out)["text"]
    assert text.startswith("<s>User:<fake_token_around_image>") and text.count("<end_of_utterance>\nAssistant:") == 3
    assert text.endswith("<end_of_utterance>\nAssistant:")


class Today:
    """transformers' clock (`strftime_now` reads `datetime.now()` in its chat-template module) set to `day`."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch

    def __call__(self, day: datetime.datetime) -> None:
        fixed = type("FixedDatetime", (datetime.datetime,), {"now": classmethod(lambda cls, tz=None: day)})
        self.monkeypatch.setattr(chat_template_utils, "datetime", fixed)


DAYS = (datetime.datetime(2026, 12, 3), datetime.datetime(2027, 6, 1))
# A template that dates its one turn as Llama 3.x's do: date_string if given, else today (transformers' strftime_now).
DATED = ("{%- if date_string is not defined -%}{%- set date_string = strftime_now('%d %b %Y') -%}{%- endif -%}"
         "Today {{ date_string }}:{%- for part in messages[0]['content'] -%}{{- part['text'] -}}{%- endfor -%}")


def text_only_chat_prompt():
    return replace(chat_prompts()[0], items=("Question: What is red? Answer:",))


@pytest.mark.parametrize("family", FAMILIES)
def test_the_templated_text_does_not_depend_on_the_day_of_the_run(family, monkeypatch):
    adapter, today = chat_adapter(family), Today(monkeypatch)
    adapter.processor.chat_template = DATED
    prompt = text_only_chat_prompt()
    rendered = []
    for day in DAYS:
        today(day)
        by_hand = adapter.processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": "x"}]}],
                                                        tokenize=False)
        assert by_hand == f"Today {day:%d %b %Y}:x"  # the template, left to itself, dates by the day
        rendered.append(adapter.chat_text(prompt))
    assert rendered == [f"Today {CHAT_DATE}:Question: What is red? Answer:"] * 2


def test_llama_s_system_turn_is_dated_the_same_whatever_the_day(monkeypatch):
    """The tiny Llama 3.2 Vision instruct template, as the real one, writes a dated system turn for a
    prompt with no image: the harness's date, not the day's."""
    adapter, today = chat_adapter("mllama"), Today(monkeypatch)
    rendered = []
    for day in DAYS:
        today(day)
        rendered.append(adapter.prompt_text(text_only_chat_prompt(), True))
    assert rendered[0] == rendered[1]
    assert f"Today Date: {CHAT_DATE}\n\n<|eot_id|>" in rendered[0]


def test_a_template_that_reads_the_clock_anyway_is_refused_in_one_line():
    adapter = chat_adapter("idefics2")
    adapter.processor.chat_template = "{{ strftime_now('%d %b %Y') }}{{ messages[0]['content'][0]['text'] }}"
    with pytest.raises(UserError, match=r"^the chat template of .* writes today's date \(strftime_now\), so its prompts "
                                        r"would change with the day of the run; [^\n]*$"):
        adapter.chat_text(text_only_chat_prompt())


def test_the_chat_template_is_part_of_the_run_s_identity(tmp_path, capsys):
    """The weights' fingerprint stays when a checkpoint's template changes, and the prompts do not:
    the template's digest is recorded (manifest identity, results rows), so a changed template does
    not resume the old folder and its rows are not reported as comparable with the old ones."""
    folder = tmp_path / "idefics2"
    save_family_demo("idefics2", folder, seed=0, instruct=True)
    out, protocol = tmp_path / "run", protocol_file(tmp_path)

    def run(*extra):
        return invoke(capsys, "run", "--model", str(folder), "--demo-data", "--task", "vqav2", "--shots", "0", "--limit", "2",
                      "--output-dir", str(out), "--no-progress", "--cache-dir", str(tmp_path / "cache"), *extra)

    code, _, err = run("--protocol", protocol)
    assert code == 0, err
    before = read_results(out / "results.json")[0]
    assert before.config["chat_template"] == hashlib.sha256(demo_idefics2.CHAT_TEMPLATE.encode()).hexdigest()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["vqav2/rices"]["identity"]["chat_template"] == before.config["chat_template"]

    changed = demo_idefics2.CHAT_TEMPLATE.replace("'Assistant:'", "'Assistant: '")
    (folder / "chat_template.jinja").write_text(changed)
    code, _, err = run("--protocol", protocol)
    assert code == 2 and err.count("\n") == 1
    assert "predictions made with a different chat_template;" in err
    code, _, err = run("--protocol", protocol, "--overwrite")
    assert code == 0, err
    after = read_results(out / "results.json")[0]
    assert after.config["chat_template"] == hashlib.sha256(changed.encode()).hexdigest()
    old, new = before.config["chat_template"][:8], after.config["chat_template"][:8]
    assert differences(before, after) == [f"chat_template {old} vs {new}"]

    out = tmp_path / "plain"  # without the protocol's chat_template: nothing recorded (older folders still resume)
    code, _, err = run()
    assert code == 0, err
    assert "chat_template" not in read_results(out / "results.json")[0].config
