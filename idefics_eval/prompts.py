"""Prompts: a task's examples and shots rendered into one interleaved image/text sequence.

A template (a YAML file under `prompts/`) has a `prefix`, written once, and an `example` pattern
with one `<image>` and `{field}` slots, and a target slot after the image: `{answer}` (generated
tasks) or `{class_name}` (ranked tasks). Shots are rendered in full; the query is cut just before
the target slot, so the model continues from the answer cue (and a ranked task scores each
candidate as that continuation).

Text between two images is merged into a single item. IdeficsProcessor inserts
`<end_of_utterance>` between consecutive text items for instruct checkpoints, so splitting a shot
into several strings would silently change the tokens.
"""

from __future__ import annotations

import hashlib
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import UserError
from .examples import Example, ImageRef
from .paths import Confinement
from .tasks import PROMPT_KEY, builtin_dir, is_prompt_file, read_yaml

IMAGE = "<image>"
FAKE_TOKEN = "<fake_token_around_image>"
TARGETS = ("{answer}", "{class_name}")
PROMPT_REQUIRED = frozenset({"name", "version", PROMPT_KEY})  # documented in docs/task-files.md
PROMPT_OPTIONAL = frozenset({"prefix"})
PROMPTS_SUBFOLDER = "prompts"  # a tasks folder's own prompt files: <tasks-dir>/prompts/<name>.yaml


@dataclass(frozen=True)
class Prompt:
    """Interleaved items (text or image) for one request, plus the shots it holds.

    A prompt cut from the left to fit the context (truncation `left`, `model_requests.fit_prompt`)
    keeps its items whole and says what is cut: its first `cut_tokens` tokens after the start token
    (`ModelAdapter.cut_ids`, by default `cut_left`, removes them wherever token ids are built:
    `ModelAdapter.token_ids` and the family's inputs), and `cut_images`, the images whose placeholder went with them, which `images` then
    leaves out of the image inputs.

    A prompt with `chat` (a protocol's `chat_template: true`) is shown to the model as one user turn
    of the checkpoint's chat template holding its items, then the assistant turn's start, then
    `reply`: a ranked candidate's text (`ModelAdapter.chat_text`).
    """

    items: tuple[str | ImageRef, ...]
    shot_ids: tuple[str, ...]
    cut_tokens: int = 0
    cut_images: int = 0
    chat: bool = False
    reply: str = ""

    @property
    def images(self) -> list[ImageRef]:
        """The images the model is given, in prompt order (less those cut from the left)."""
        return [item for item in self.items if not isinstance(item, str)][self.cut_images:]

    def processor_text(self, bos_token: str) -> str:
        """The text IdeficsProcessor builds for these items (tested equal to the processor's ids).

        Each text item is stripped of spaces at both ends; an image becomes
        `<fake><image><fake>`, sharing the middle fake token with an image right before it.
        """
        text, last_was_image = bos_token, False
        for item in self.items:
            if isinstance(item, str):
                text += item.strip(" ")
                last_was_image = False
            else:
                text += (IMAGE + FAKE_TOKEN) if last_was_image else (FAKE_TOKEN + IMAGE + FAKE_TOKEN)
                last_was_image = True
        return text


def cut_left(ids: list[int], prompt: Prompt, start: int) -> list[int]:
    """`ids` (the prompt's, or a longer sequence starting with them) less the prompt's `cut_tokens`
    from the left; its `start` first ids, the start token where the task has one, stay first (as a
    tokenizer that adds it after truncating keeps it). Every path that builds token ids goes through it (by way of
    `ModelAdapter.cut_ids`, where a family whose start token is not first has its own rule)."""
    if not prompt.cut_tokens:
        return ids
    return ids[:start] + ids[start + prompt.cut_tokens :]


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: int
    prefix: str
    example: str
    path: Path
    digest: str
    chat: bool = False  # render chat prompts (`Prompt.chat`): the protocol's chat_template

    @property
    def fields(self) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(self.example) if name}

    @property
    def target(self) -> str:
        after = self.example.split(IMAGE)[1]
        return next(slot for slot in TARGETS if slot in after)

    def _fill(self, text: str, values: dict[str, str], example_id: str) -> str:
        try:
            return text.format_map(values)
        except KeyError as error:
            raise UserError(
                f"{self.path}: the template uses {{{error.args[0]}}} but example {example_id} has no such field "
                f"(it has: {', '.join(sorted(values))}); map it in the task's columns or fix the template"
            ) from None

    def _render(self, example: Example, answer: str | None, cut: bool) -> list[str | ImageRef]:
        """One example: in full (a shot), cut before the target slot (`answer` None: the query),
        or with the candidate in the slot and the template's trailing whitespace removed (`cut`)."""
        before, after = self.example.split(IMAGE)
        if answer is None:
            after = after[: after.index(self.target)].rstrip(" ")
        elif cut:
            after = after.rstrip()
        values = {**example.fields, self.target[1:-1]: answer or ""}
        image = [] if example.image is None else [example.image]  # a text-only shot (Example.without_image)
        return [self._fill(before, values, example.id), *image, self._fill(after, values, example.id)]

    def render(
        self,
        shots: Sequence[Example],
        query: Example,
        shot_answer: Callable[[Example], str],
        candidate: str | None = None,
    ) -> Prompt:
        """The prompt for `query` after `shots`; with `candidate`, the query continued by it (ranking)."""
        return self._query_after(self._shots(shots, shot_answer), shots, query, candidate)

    def render_candidates(self, shots: Sequence[Example], query: Example, shot_answer: Callable[[Example], str],
                          candidates: Sequence[str]) -> list[Prompt]:
        """`render(shots, query, shot_answer, candidate=c)` for every candidate, the shots rendered once
        (ImageNet's 1,000 class names would otherwise render every shot 1,000 times)."""
        head = self._shots(shots, shot_answer)
        return [self._query_after(head, shots, query, candidate) for candidate in candidates]

    def _shots(self, shots: Sequence[Example], shot_answer: Callable[[Example], str]) -> list[str | ImageRef]:
        """The prefix and the shots, adjacent texts merged."""
        items: list[str | ImageRef] = [self.prefix]
        for shot in shots:
            items += self._render(shot, shot_answer(shot), cut=False)
        return _merged([], items)

    def _query_after(self, head: list[str | ImageRef], shots: Sequence[Example], query: Example,
                     candidate: str | None) -> Prompt:
        merged = _merged(list(head), self._render(query, candidate, cut=True))
        prompt = Prompt(tuple(i for i in merged if i != ""), tuple(shot.id for shot in shots))
        if not self.chat:
            return prompt
        if candidate is None:
            return replace(prompt, chat=True)
        context = self._query_after(head, shots, query, None)
        return replace(context, reply=_added_text(context, prompt))


def _added_text(context: Prompt, full: Prompt) -> str:
    """The text `full` (the query continued by a candidate) adds after `context`: with a chat template
    it goes after the assistant turn's start, not into the user turn."""
    last = len(context.items) - 1
    added = ""
    if isinstance(context.items[last], str):
        if not full.items[last].startswith(context.items[last]):
            raise AssertionError(f"a candidate's prompt does not continue its context: {full.items[last]!r}")
        added = full.items[last][len(context.items[last]):]
    return added + "".join(full.items[last + 1 :])


def _merged(merged: list[str | ImageRef], items: Sequence[str | ImageRef]) -> list[str | ImageRef]:
    """`merged` extended by `items`, each text joined to a text right before it."""
    for item in items:
        if isinstance(item, str) and merged and isinstance(merged[-1], str):
            merged[-1] += item
        else:
            merged.append(item)
    return merged


def most_common_answer(example: Example) -> str:
    """A VQA shot's answer: its most frequent ground-truth answer (ties: the earliest answer id)."""
    return Counter(example.answers).most_common(1)[0][0]


def parse_template(path: Path) -> PromptTemplate:
    raw = path.read_bytes()
    data = read_yaml(path, raw)
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping with name, version, prefix and example")
    allowed = PROMPT_REQUIRED | PROMPT_OPTIONAL
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
    missing = sorted(PROMPT_REQUIRED - set(data))
    if missing:
        raise UserError(f"{path}: missing required key {missing[0]!r}")
    for key in ("name", "prefix", "example"):
        if key in data and not isinstance(data[key], str):
            raise UserError(f"{path}: {key} must be a string, found {type(data[key]).__name__}")
    if not isinstance(data["version"], int) or isinstance(data["version"], bool):
        raise UserError(f"{path}: version must be an integer, found {data['version']!r}")
    example = data["example"]
    if example.count(IMAGE) != 1:
        raise UserError(f"{path}: example must contain {IMAGE} exactly once, found {example.count(IMAGE)}")
    if not any(slot in example.split(IMAGE)[1] for slot in TARGETS):
        raise UserError(f"{path}: example must contain {{answer}} or {{class_name}} after {IMAGE}")
    for part in example.split(IMAGE):
        _check_slots(path, part)
    return PromptTemplate(
        name=data["name"],
        version=data["version"],
        prefix=data.get("prefix", ""),
        example=example,
        path=path,
        digest=hashlib.sha256(raw).hexdigest(),
    )


class _AnyText(dict):
    def __missing__(self, key: str) -> str:
        return "text"


def _check_slots(path: Path, text: str) -> None:
    """Fill the slots of one part of the example (each side of the image is filled on its own) with
    placeholder text, so that a stray brace, a positional {} or a format that text cannot take is
    found when the template loads, not at the first query."""
    try:
        text.format_map(_AnyText())
    except (ValueError, IndexError, KeyError, AttributeError, TypeError) as error:
        raise UserError(f"{path}: the example template {text!r} cannot be filled ({error}); slots are {{field}} with a "
                        "field name, and a literal brace is written {{ or }}") from None


def prompt_folders(tasks_dirs: tuple[Path, ...] = (), prompts_dirs: tuple[Path, ...] = ()) -> list[tuple[Path, bool]]:
    """Where a prompt name is looked up, first match wins, each with whether only prompt files count.

    Every --prompts-dir (the last given first), then every --tasks-dir (the last given first): its
    `prompts/` subfolder, then the prompt files beside its tasks (only files that are prompt files,
    see `tasks.is_prompt_file`, so a task's own file is never read as its template); then the
    shipped prompts. User folders come first so that a user's template replaces a shipped one.
    """
    for folder in prompts_dirs:
        if not folder.is_dir():
            raise UserError(f"prompts folder not found: {folder}; give an existing folder to --prompts-dir")
    folders = [(folder, False) for folder in reversed(prompts_dirs)]
    for folder in reversed(tasks_dirs):
        folders += [(folder / PROMPTS_SUBFOLDER, False), (folder, True)]
    return [*folders, (builtin_dir("prompts"), False)]


def resolve_template(
    name: str, prompts_dirs: tuple[Path, ...] = (), where: str | None = None, *, tasks_dirs: tuple[Path, ...] = ()
) -> Path:
    """The file of template `name` (see `prompt_folders` for the search order).

    The name may not lead out of the folder it is looked up in (`../tasks/x`, `/etc/x`, a link out):
    a task file names a template, not any YAML file. `where` names the task file's key in messages.
    """
    searched = prompt_folders(tasks_dirs, prompts_dirs)
    for folder, prompts_only in searched:
        path = Confinement(folder, "the prompts folder").check(
            f"{name}.yaml", where or f"prompt {name!r}", "give the name of a template in it, without .yaml",
            what="template file",
        )
        if path.is_file() and (not prompts_only or is_prompt_file(path)):
            return path
    folders = ", ".join(str(folder) for folder, _ in searched)
    raise UserError(f"{where or 'prompt'}: template {name!r} not found in {folders}; "
                    f"put {name}.yaml in one of them (or in --prompts-dir), or fix the task's prompt key")


def load_template(
    name: str, prompts_dirs: tuple[Path, ...] = (), where: str | None = None, *, tasks_dirs: tuple[Path, ...] = ()
) -> PromptTemplate:
    """Template `name`, from the user's folders before the shipped ones (see `resolve_template`)."""
    return parse_template(resolve_template(name, prompts_dirs, where, tasks_dirs=tasks_dirs))
