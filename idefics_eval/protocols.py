"""Protocols: a named set of per-task overrides (prompt, start token, chat template, generation, ranking, shots) that
reproduces one group's evaluation settings without editing the task files.

A protocol file (`protocols/<name>.yaml`, or any path given with `--protocol`) has a `default:`
section applied to every task and a `tasks:` section per task, the task's entry winning. It is
applied in one place, `plan.prepare`, so that run, sweep, the prompt dry run and the API all see the
same task spec. Its name and digest go into the run's identity (store.identity_of). docs/protocols.md
documents the format and each shipped protocol.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .errors import UserError
from .tasks import (
    GENERATION_KEYS,
    NORMALIZE,
    SHOT_ANSWERS,
    TaskSpec,
    _check_keys,
    _choice,
    _generation,
    _typed,
    builtin_dir,
    subset,
    read_yaml,
    task_files,
)

DEFAULT = "default"
PROTOCOL_REQUIRED = frozenset({"name"})
PROTOCOL_OPTIONAL = frozenset({"description", "default", "tasks", "rices_encoder"})
OVERRIDE_KEYS = frozenset({"prompt", "add_start_token", "generation", "normalize", "shot_answer", "support_subset",
                           "selection_split", "zero_shot", "truncation", "max_length", "chat_template"})
ZERO_SHOT = ("none", "text-only")  # shots.ZeroShot: true zero-shot, or two support examples shown as text only
TEXT_ONLY_SHOTS = 2  # Flamingo's zero-shot shows two support examples
# model_requests.fit_prompt: drop whole shots, least similar first (ours), or cut tokens from the left (the IDEFICS authors')
TRUNCATION = ("drop-shots", "left")


@dataclass(frozen=True)
class Protocol:
    name: str
    path: Path
    digest: str  # sha256 of the file's bytes, recorded with every result
    default: dict[str, Any]  # overrides for every task (validated, generation keys only those given)
    tasks: dict[str, dict[str, Any]]  # task name -> overrides, over `default`
    rices_encoder: str | None = None  # the RICES encoder a run uses unless --rices-encoder names one

    @property
    def identity(self) -> dict:
        return {"name": self.name, "digest": self.digest}

    def overrides(self, task: str) -> dict[str, Any]:
        """The default section's overrides with the task's own on top (generation merged key by key)."""
        own = self.tasks.get(task, {})
        merged = self.default | own
        if "generation" in self.default or "generation" in own:
            merged["generation"] = self.default.get("generation", {}) | own.get("generation", {})
        return merged


def protocol_path(value: str) -> Path:
    """`--protocol NAME|PATH`: a shipped protocol by name, or a YAML file."""
    if value.endswith((".yaml", ".yml")) or "/" in value:
        path = Path(value)
        if not path.is_file():
            raise UserError(f"--protocol {value}: no such file; give a protocol file or a shipped name ({shipped_names()})")
        return path
    path = builtin_dir("protocols") / f"{value}.yaml"
    if not path.is_file():
        raise UserError(f"--protocol {value!r}: unknown protocol; available: {shipped_names()} (or a path to a protocol file)")
    return path


def shipped_names() -> str:
    return ", ".join(sorted(p.stem for p in builtin_dir("protocols").glob("*.yaml")))


def load_protocol(value: str = DEFAULT, tasks_dirs: tuple[Path, ...] = ()) -> Protocol:
    """Read and validate a protocol; every problem is a one-line `UserError` naming the file and key."""
    path = protocol_path(value)
    raw = path.read_bytes()
    where = str(path)
    top = _check_keys(where, read_yaml(path, raw), PROTOCOL_REQUIRED, PROTOCOL_OPTIONAL)
    tasks = top.get("tasks") or {}
    if not isinstance(tasks, dict):
        raise UserError(f"{where}: tasks: expected a mapping of task names to overrides, found {type(tasks).__name__}")
    known = task_files(tasks_dirs)
    for name in tasks:
        if name not in known:
            raise UserError(f"{where}: tasks: unknown task {name!r}; available: {', '.join(sorted(known))}")
    return Protocol(
        name=_typed(f"{where}: name", top["name"], str),
        path=path,
        digest=hashlib.sha256(raw).hexdigest(),
        default=_overrides(f"{where}: default", top.get("default") or {}),
        tasks={str(name): _overrides(f"{where}: tasks.{name}", entry or {}) for name, entry in tasks.items()},
        rices_encoder=_typed(f"{where}: rices_encoder", top["rices_encoder"], str) if "rices_encoder" in top else None,
    )


def _overrides(where: str, data: Any) -> dict[str, Any]:
    """One section's overrides, typed as the task file types them."""
    section = _check_keys(where, data, set(), OVERRIDE_KEYS)
    found: dict[str, Any] = {}
    if "prompt" in section:
        found["prompt"] = _typed(f"{where}.prompt", section["prompt"], str)
    for key in ("add_start_token", "chat_template"):
        if key in section:
            found[key] = _typed(f"{where}.{key}", section[key], bool)
    if "normalize" in section:
        found["normalize"] = _choice(f"{where}.normalize", section["normalize"], NORMALIZE)
    if "shot_answer" in section:
        found["shot_answer"] = _choice(f"{where}.shot_answer", section["shot_answer"], SHOT_ANSWERS)
    for key in ("support_subset", "selection_split"):
        if key in section:
            found[key] = subset(f"{where}.{key}", section[key])
    if "zero_shot" in section:
        found["zero_shot"] = _choice(f"{where}.zero_shot", section["zero_shot"], ZERO_SHOT)
    if "truncation" in section:
        found["truncation"] = _choice(f"{where}.truncation", section["truncation"], TRUNCATION)
    if "max_length" in section:
        found["max_length"] = _typed(f"{where}.max_length", section["max_length"], int)
        if found["max_length"] < 1:
            raise UserError(f"{where}.max_length: expected a positive number of tokens, found {found['max_length']}")
    if "generation" in section:
        given = _check_keys(f"{where}.generation", section["generation"], set(), GENERATION_KEYS)
        parsed = _generation(where, given)  # typed as in a task file; only the keys given override
        found["generation"] = {key: getattr(parsed, key) for key in given}
    return found


def apply_protocol(spec: TaskSpec, protocol: Protocol) -> TaskSpec:
    """The task spec as the protocol runs it. A task's own entry must fit the task (normalize on a
    generated task is refused); the default section applies where it fits (normalize to ranked tasks)."""
    changes = protocol.overrides(spec.name)
    own = protocol.tasks.get(spec.name, {})
    updates: dict[str, Any] = {}
    for key in ("prompt", "add_start_token", "shot_answer", "support_subset", "selection_split"):
        if key in changes:
            updates[key] = changes[key]
    if "generation" in changes:
        known = {f.name for f in fields(spec.generation)}
        updates["generation"] = replace(spec.generation, **{k: v for k, v in changes["generation"].items() if k in known})
    if "normalize" in changes:
        if spec.candidates is not None:
            updates["candidates"] = replace(spec.candidates, normalize=changes["normalize"])
        elif "normalize" in own:
            raise UserError(f"{protocol.path}: tasks.{spec.name}.normalize applies to rank and match tasks only "
                            f"(request is {spec.request}); remove it")
    return replace(spec, **updates)


def zero_shot_style(spec: TaskSpec, protocol: Protocol, given: str | None) -> str:
    """The zero-shot style a run of `spec` uses: `given` (--zero-shot) when given, else the
    protocol's, else none. A zero-shot-only task has no support set to show: the default section's
    text-only passes it by, a task entry or --zero-shot asking for it is refused."""
    if given is not None and given not in ZERO_SHOT:
        raise UserError(f"--zero-shot {given!r}: use {' or '.join(ZERO_SHOT)}")
    style = given or protocol.overrides(spec.name).get("zero_shot", "none")
    if style == "text-only" and spec.zero_shot_only:
        if given is None and "zero_shot" not in protocol.tasks.get(spec.name, {}):
            return "none"
        where = "--zero-shot text-only" if given else f"{protocol.path}: tasks.{spec.name}.zero_shot"
        raise UserError(f"{where}: task {spec.name} is zero-shot only (it has no support set to show as text); "
                        "use none for it")
    return style
