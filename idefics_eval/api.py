"""The Python API for training loops: evaluate an already-loaded model, no reload, no subprocess.

`evaluate` takes the options of `idefics-eval run` that apply to a model already in memory (not
`--model`, `--demo`, `--device`, `--device-map`, `--dtype` or `--allow-pickle-weights`: the model is
evaluated where and as it is). It leaves the model and tokenizer as it found them.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from .distributed import torch_threads, world
from .errors import UserError
from .image_cache import DEFAULT_MAX_BYTES
from .models import (
    LoadedModel,
    check_processor,
    resolve_device,
    resolve_dtype,
    weights_fingerprint,
)
from .results import Result
from .runner import RunConfig, run_tasks
from .tasks import expand_task_names


class PlacementWarning(UserWarning):
    """The model is in another dtype or on another device than `idefics-eval run` would load it."""


def evaluate(
    model,
    processor,
    tasks: str | Sequence[str],
    shots: Sequence[int] = (0,),
    *,
    limit: int | None = None,
    data: str | Mapping[str, str] | None = None,
    support_data: str | Mapping[str, str] | None = None,
    demo_data: bool = False,
    output_dir: str | Path | None = None,
    name: str | None = None,
    selection: str = "rices",
    seeds: Sequence[int] = (0,),
    rices_encoder: str | None = None,
    protocol: str = "default",
    split: str = "reporting",
    zero_shot: str | None = None,
    batch_size: int | str = 8,
    num_beams: int | None = None,
    max_new_tokens: int | None = None,
    max_length: int | None = None,
    cache_dir: str | Path | None = None,
    image_cache_mb: int = DEFAULT_MAX_BYTES >> 20,
    image_cache_dir: str | Path | None = None,
    tasks_dirs: Sequence[str | Path] = (),
    prompts_dirs: Sequence[str | Path] = (),
    overwrite: bool = False,
    on_bad_example: str = "stop",
    plain_generation: bool = False,
    log_samples: bool = True,
    progress: bool = False,
    run_name: str | None = None,
    threads: int | None = None,
) -> list[Result]:
    """Evaluate `model` (of a supported family: docs/models.md; in place on its device) on `tasks`.

    `tasks` is a list of task or group names, or one string as `--task` takes it ("vqav2,fairface").
    `data` and `support_data` are one value for every task or a mapping task -> value; `demo_data`
    uses the bundled sample data for tasks without `data`. Every other keyword is the `run` option of
    the same name (`tasks_dirs` is `--tasks-dir` and `prompts_dirs` `--prompts-dir`, repeated;
    `run_name` is `--name`, since `name` names the model; `threads` is `--threads`, except that None leaves
    torch's thread count as the caller set it). Returns the result rows (also written, with
    predictions, to `output_dir`, a temporary folder by default).

    Warns (`PlacementWarning`, one line) when the model's dtype or device is not what the command
    line would use for the same checkpoint, since predictions then differ from `idefics-eval run`'s.
    The model's train/eval mode (of every submodule) and the tokenizer's padding side are restored
    on return.
    """
    check_processor(model, processor, name or "the model")
    folders = tuple(Path(folder) for folder in tasks_dirs)
    names = expand_task_names(tasks if isinstance(tasks, str) else ",".join(tasks), folders)
    data_of, support_of = _per_task(data, names, "data"), _per_task(support_data, names, "support_data")
    parameter = next(model.parameters())
    _warn_if_not_cli_placement(parameter.device, parameter.dtype)
    root = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="idefics-eval-"))
    config = RunConfig(
        task=names[0], shots=_counts(shots, "shots", "shot counts"), output_dir=root, limit=limit, selection=selection,
        seeds=_counts(seeds, "seeds", "seeds"),
        rices_encoder=rices_encoder, protocol=protocol, split=split, zero_shot=zero_shot, batch_size=batch_size, num_beams=num_beams,
        max_new_tokens=max_new_tokens, max_length=max_length, cache_dir=Path(cache_dir) if cache_dir is not None else None,
        image_cache_mb=image_cache_mb, image_cache_dir=Path(image_cache_dir) if image_cache_dir is not None else None,
        tasks_dirs=folders, prompts_dirs=tuple(Path(folder) for folder in prompts_dirs), overwrite=overwrite, progress=progress, on_bad_example=on_bad_example,
        plain_generation=plain_generation, run_name=run_name, log_samples=log_samples,
    )
    configs = [replace(config, task=task, data=data_of.get(task), support_data=support_of.get(task),
                       demo=demo_data and data_of.get(task) is None) for task in names]
    if threads is not None and threads < 1:
        raise UserError(f"threads={threads}: give a positive number of CPU threads, or None to keep torch's setting")
    with _evaluation_mode(model, processor), _threads(threads):
        loaded = LoadedModel(model, processor, name or str(model.config.name_or_path or "in-memory"),
                             weights_fingerprint(model), parameter.device, parameter.dtype)
        return run_tasks(configs, loaded=loaded)


def _counts(value: Sequence[int], keyword: str, what: str) -> tuple[int, ...]:
    """`shots` or `seeds` as a tuple: one number or a string such as "0,4" is refused (each entry is checked with the run's options)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise UserError(f"{keyword}={value!r}: give a list of {what}, like [0, 4]")
    return tuple(value)


def _per_task(value: str | Mapping[str, str] | None, tasks: Sequence[str], keyword: str) -> dict[str, str]:
    """One value for every task, or a mapping whose every key is one of the tasks evaluated."""
    if not isinstance(value, Mapping):
        return dict.fromkeys(tasks, value) if value is not None else {}
    unknown = [task for task in value if task not in tasks]
    if unknown:
        raise UserError(f"{keyword} names {unknown[0]!r}, which is not among the tasks ({', '.join(tasks)}); "
                        "give it a key of a task evaluated")
    return dict(value)


def _warn_if_not_cli_placement(device: torch.device, dtype: torch.dtype) -> None:
    """One line when `idefics-eval run` would load the same checkpoint elsewhere or in another dtype."""
    cli_device = resolve_device(world().device(None))
    cli_dtype = resolve_dtype(None, cli_device)
    if device.type == cli_device.type and dtype == cli_dtype:
        return
    shown = str(dtype).removeprefix("torch.")
    cli_shown = str(cli_dtype).removeprefix("torch.")
    warnings.warn(
        f"idefics_eval.evaluate: the model is {shown} on {device.type}, but `idefics-eval run` evaluates the same "
        f"checkpoint in {cli_shown} on {cli_device.type}, so predictions can differ from the command line's; "
        f"move the model with .to({cli_device.type!r}, torch.{cli_shown}) to match",
        PlacementWarning, stacklevel=2,  # one location: Python shows it once per process, not per evaluation
    )


@contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    """`torch_threads(threads)` when given, restored afterwards; None changes nothing (a training
    loop keeps the thread count it chose)."""
    if threads is None:
        yield
        return
    with torch_threads(threads):
        yield


@contextmanager
def _evaluation_mode(model: torch.nn.Module, processor) -> Iterator[None]:
    """Eval mode and left padding for the evaluation; afterwards each submodule's own mode and the
    tokenizer's padding side as they were, so a training loop goes on training as it did."""
    modes = {module: module.training for module in model.modules()}
    padding_side = processor.tokenizer.padding_side
    model.eval()
    processor.tokenizer.padding_side = "left"
    try:
        yield
    finally:
        for module, training in modes.items():
            module.training = training
        processor.tokenizer.padding_side = padding_side
