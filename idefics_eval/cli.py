"""The command line: `idefics-eval run | prompt | score | submission | tasks | demo-model | sweep | export | plot | compare`.

User mistakes (`UserError`, bad flags) print one line and exit with status 2; anything else is an
internal error: one line, status 1, and `--debug` shows the traceback. A sweep that finished but
could not evaluate some checkpoints exits with status 3 (`SWEEP_INCOMPLETE`), after writing its
table: distinct from 2, since the sweep's own arguments were fine and the other checkpoints' results
stand, and from 1, since nothing inside idefics-eval broke.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .console import one_line, quiet_libraries
from .errors import UserError

SWEEP_INCOMPLETE = 3  # a sweep wrote its table, but some checkpoints failed
DEMO_FAMILIES = ("idefics", "idefics2", "idefics3", "smolvlm", "mllama", "llava_onevision")  # demo.families.FAMILIES, without importing it


def shared_option(*decls: str, **attrs):
    """An option defined once for every command that takes it, so that its name, type, default and meaning
    cannot drift apart between commands: `OPTION()` adds it, `OPTION(help=...)` changes one attribute."""
    return lambda **overrides: click.option(*decls, **(attrs | overrides))


TASK_OPTION = shared_option("--task", help="Task name, comma-separated names, or a group such as fairface (see `idefics-eval tasks`).")
DEMO_DATA_OPTION = shared_option("--demo-data", is_flag=True, help="The bundled sample data of each task (and of the task its shots "
                                 "come from) where --data / --support-data is not given, with any model.")
SELECTION_OPTION = shared_option("--selection", type=click.Choice(["rices", "random"]), default="rices", show_default=True,
                                 help="Shot selection: retrieval by image similarity (RICES) or random.")
SEEDS_OPTION = shared_option("--seeds", default="0", show_default=True, help="Seeds for --selection random; several give mean and std.")
RICES_ENCODER_OPTION = shared_option("--rices-encoder", help="Image encoder for RICES: 'model' (the evaluated model's vision tower) "
                                     "or a CLIP hub id / folder (default: the protocol's, else model).")
PROTOCOL_OPTION = shared_option("--protocol", default="default", show_default=True,
                                help="Evaluation protocol: a shipped name (default, idefics, openflamingo) or a protocol file "
                                     "(docs/protocols.md).")
SPLIT_OPTION = shared_option("--split", type=click.Choice(["reporting", "selection"]), default="reporting", show_default=True,
                             help="The queries: the task's query split (reporting), or the selection split held out of train, "
                                  "disjoint from the support set and the reporting split (docs/protocols.md).")
ZERO_SHOT_OPTION = shared_option("--zero-shot", type=click.Choice(["none", "text-only"]),  # protocols.ZERO_SHOT, not imported here
                                 help="0-shot prompts: none (no shots) or text-only (Flamingo's: the first two support examples "
                                      "without their images); default: the protocol's, else none.")
MAX_LENGTH_OPTION = shared_option("--max-length", type=int, help="Context limit in tokens (default: the protocol's, else the model's); "
                                  "longer prompts lose their least similar shots, or their first tokens under a protocol's "
                                  "truncation: left.")
TASKS_DIR_OPTION = shared_option("--tasks-dir", "tasks_dirs", multiple=True, type=click.Path(path_type=Path),
                                 help="Extra folder of task files; their prompt files go in its prompts/ subfolder or beside them "
                                      "(docs/task-files.md); repeatable.")
RESAMPLES_OPTION = shared_option("--resamples", type=click.IntRange(min=1), default=1000, show_default=True, help="Bootstrap resamples.")
BOOTSTRAP_SEED_OPTION = shared_option("--bootstrap-seed", default=0, show_default=True,
                                      help="Seed of the bootstrap resampling: the same seed gives the same intervals.")
PROMPTS_DIR_OPTION = shared_option("--prompts-dir", "prompts_dirs", multiple=True, type=click.Path(path_type=Path),
                                   help="Extra folder of prompt files, searched before the tasks folders and the shipped prompts; repeatable.")


def parse_counts(value: str, flag: str) -> tuple[int, ...]:
    """'0,4,8' -> (0, 4, 8); every entry a whole number >= 0."""
    parts = [part.strip() for part in value.split(",")]
    if not value.strip() or any(part == "" for part in parts):
        raise UserError(f"{flag} {value!r} has an empty entry; give comma-separated whole numbers like 0,4,8")
    counts = []
    for part in parts:
        if not part.lstrip("-").isdigit():
            raise UserError(f"{flag} {value!r}: {part!r} is not a whole number; give numbers like 0,4,8")
        if int(part) < 0:
            raise UserError(f"{flag} {value!r}: {part} is negative; counts start at 0")
        counts.append(int(part))
    return tuple(dict.fromkeys(counts))


class BatchSize(click.ParamType):
    """A positive whole number, or `auto` (the largest batch that fits on the GPU; 8 off GPU)."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or (isinstance(value, int) and value > 0):
            return value
        text = str(value).strip()
        if text.isdigit() and int(text) > 0:
            return int(text)
        self.fail(f"{value!r}: give a positive whole number or auto", param, ctx)


LIMIT_OPTION = shared_option("--limit", type=int, help="Evaluate only the first N queries of each task.")
BATCH_SIZE_OPTION = shared_option("--batch-size", type=BatchSize(), default=8, show_default=True, help="Requests per forward pass; auto: "
                                  "the largest that fits on the GPU (probed on the longest requests), 8 off GPU.")
THREADS_OPTION = shared_option("--threads", type=click.IntRange(min=1),
                                help="CPU threads for torch (default: OMP_NUM_THREADS if set, else the cores other programs "
                                     "leave free, at least 1; docs/performance.md).")
DEVICE_OPTION = shared_option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
DTYPE_OPTION = shared_option("--dtype", default="auto", show_default=True, help="auto (bfloat16 on GPU, float32 on CPU), bfloat16, float16, float32.")
NUM_BEAMS_OPTION = shared_option("--num-beams", type=int, help="Beam count (task default: 3; 1 = greedy).")
MAX_NEW_TOKENS_OPTION = shared_option("--max-new-tokens", type=int, help="Tokens to generate (task default: 15).")
CACHE_DIR_OPTION = shared_option("--cache-dir", type=click.Path(path_type=Path),
                                 help="Where retrieval indexes and embeddings are kept (default: ~/.cache/idefics-eval).")
OVERWRITE_OPTION = shared_option("--overwrite", is_flag=True, help="Replace predictions in --output-dir made under another configuration.")
NO_PROGRESS_OPTION = shared_option("--no-progress", is_flag=True, help="Hide progress bars.")
LOG_SAMPLES_OPTION = shared_option("--log-samples/--no-log-samples", default=True, show_default=True,
                                   help="Write samples/<task>_<shots>shot.jsonl: per query its inputs, references, shots, "
                                        "prompt and scores (docs/outputs.md).")



def run_and_sweep_options(command):
    """The shot, protocol and generation options `run` and `sweep` share, in one order: each sweep
    checkpoint is a run, so a setting a run takes, a sweep takes the same way."""
    for option in reversed((SELECTION_OPTION, SEEDS_OPTION, RICES_ENCODER_OPTION, PROTOCOL_OPTION, ZERO_SHOT_OPTION, LIMIT_OPTION,
                            BATCH_SIZE_OPTION, DEVICE_OPTION, THREADS_OPTION, DTYPE_OPTION, NUM_BEAMS_OPTION, MAX_NEW_TOKENS_OPTION,
                            MAX_LENGTH_OPTION)):
        command = option()(command)
    return command

@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the full traceback of internal errors.")
@click.version_option(package_name="idefics-eval")
def cli(debug: bool) -> None:
    """Few-shot evaluation of IDEFICS-style vision-language models with retrieved in-context examples."""


RUN_CONFIG_FILE = "config.yaml"  # in the output folder: the options of the run that last finished there


def _option_key(param: click.Parameter) -> str:
    """The key of an option in a config file: its long name with underscores (`--tasks-dir` -> tasks_dir)."""
    return max(param.opts, key=len).lstrip("-").replace("-", "_")


def _config_defaults(ctx: click.Context, param: click.Parameter, path: Path | None) -> Path | None:
    """--config FILE: the file's options become the command's defaults, so the command line overrides them."""
    if path is not None:
        ctx.default_map = read_run_config(ctx, path)
    return path


def read_run_config(ctx: click.Context, path: Path) -> dict:
    """A YAML mapping of `run` options (keys with underscores or dashes) -> click's default map, every
    value checked as the command line would check it; null stands for the option's default."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        reason = " ".join(str(getattr(error, "strerror", None) or error).split())
        raise UserError(f"--config {path} cannot be read as YAML ({reason}); give a file of run options like `max_new_tokens: 3`") from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path} is not a mapping of run options; write one `option: value` per line, like `max_new_tokens: 3`")
    options = {_option_key(p): p for p in ctx.command.params if isinstance(p, click.Option) and p.name != "config"}
    defaults = {}
    for key, value in data.items():
        option = options.get(str(key).replace("-", "_"))
        if option is None:
            raise UserError(f"--config {path}: unknown option {key!r}; the keys are the options of `idefics-eval run --help`, "
                            "like max_new_tokens")
        if value is None:
            continue
        if option.multiple and not isinstance(value, list):
            value = [value]
        elif isinstance(value, list) and not option.multiple:  # shots: [0, 4] as --shots 0,4
            value = ",".join(map(str, value))
        try:
            option.type_cast_value(ctx, value)
        except click.BadParameter as error:
            raise UserError(f"--config {path}: {key}: {error.message}") from None
        defaults[option.name] = value
    return defaults


def write_run_config(command: click.Command, options: dict, path: Path) -> None:
    """The options a run resolved (given, from --config, or defaults), as the file --config reads."""
    import yaml

    from .results import write_text_atomic

    def plain(value):
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    resolved = {_option_key(p): plain(options[p.name]) for p in command.params if isinstance(p, click.Option) and p.name != "config"}
    write_text_atomic(path, yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))


@cli.command()
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), is_eager=True, expose_value=False,
              callback=_config_defaults,
              help=f"YAML file of run options (max_new_tokens: 3); options given here override it. Each run writes OUTPUT_DIR/{RUN_CONFIG_FILE}.")
@TASK_OPTION(required=True)
@click.option("--shots", default="0,4,8,16,32", show_default=True, help="Comma-separated shot counts.")
@click.option("--model", help="Hub name (e.g. HuggingFaceM4/idefics-9b) or local checkpoint folder.")
@click.option("--demo", is_flag=True, help="Use the trained canary model and, without --data, the bundled sample data.")
@DEMO_DATA_OPTION()
@click.option("--demo-seed", type=int, help="With --demo: the random tiny model with weights from this seed, instead of the canary.")
@click.option("--data", help="Data: a folder of official files, a save_to_disk folder, a folder of parquet/jsonl files, or a hub id.")
@click.option("--support-data", help="Data of the task shots come from, where it is another task (NoCaps: COCO).")
@click.option("--output-dir", type=click.Path(path_type=Path), default=Path("runs/latest"), show_default=True,
              help="Folder of the run's predictions, results.json and manifest; a rerun there resumes.")
@SPLIT_OPTION()
@run_and_sweep_options
@click.option("--device-map", help="accelerate device_map (e.g. auto): split one large model over the visible GPUs.")
@CACHE_DIR_OPTION()
@click.option("--image-cache-mb", type=click.IntRange(min=0), default=1024, show_default=True,
              help="Memory for image features (each image through the vision tower once); least recently used go beyond it.")
@click.option("--image-cache-dir", type=click.Path(path_type=Path),
              help="Write image features evicted from memory to files here and read them back instead of recomputing (default: no spill).")
@TASKS_DIR_OPTION()
@PROMPTS_DIR_OPTION()
@OVERWRITE_OPTION()
@NO_PROGRESS_OPTION()
@click.option("--on-bad-example", type=click.Choice(["stop", "skip"]), default="stop", show_default=True,
              help="A corrupt or missing image met during the run: stop naming it, or skip the query (counted).")
@click.option("--plain-generation", is_flag=True,
              help="Use the reference paths (transformers generate on pixels; one full forward pass per ranked candidate): slower, same predictions.")
@LOG_SAMPLES_OPTION()
@click.option("--allow-pickle-weights", is_flag=True, help="Allow loading .bin (pickle) weights; by default only safetensors load.")
@click.option("--name", help="A name for this run, recorded in its results and shown by export and compare (default: none).")
def run(**options) -> None:
    """Evaluate a model on one or more tasks (comma-separated, or a group) at several shot counts."""
    from dataclasses import replace

    from .plan import RunConfig, check, with_bundled_data
    from .tasks import expand_task_names

    names = expand_task_names(options["task"], tuple(options["tasks_dirs"]))
    config = RunConfig(
        task=names[0],
        shots=parse_counts(options["shots"], "--shots"),
        output_dir=options["output_dir"],
        model=options["model"],
        demo=options["demo"],
        demo_seed=options["demo_seed"],
        data=options["data"],
        support_data=options["support_data"],
        selection=options["selection"],
        seeds=parse_counts(options["seeds"], "--seeds"),
        rices_encoder=options["rices_encoder"], protocol=options["protocol"], split=options["split"], zero_shot=options["zero_shot"],
        limit=options["limit"],
        batch_size=options["batch_size"],
        device=options["device"],
        device_map=options["device_map"],
        dtype=options["dtype"],
        num_beams=options["num_beams"],
        max_new_tokens=options["max_new_tokens"],
        max_length=options["max_length"],
        cache_dir=options["cache_dir"] or default_cache_dir(),
        image_cache_mb=options["image_cache_mb"],
        image_cache_dir=options["image_cache_dir"],
        tasks_dirs=tuple(options["tasks_dirs"]),
        prompts_dirs=tuple(options["prompts_dirs"]),
        overwrite=options["overwrite"],
        progress=not options["no_progress"],
        on_bad_example=options["on_bad_example"],
        plain_generation=options["plain_generation"],
        allow_pickle_weights=options["allow_pickle_weights"],
        run_name=options["name"],
        log_samples=options["log_samples"],
    )
    configs = [replace(config, task=name) for name in names]
    configs = [with_bundled_data(c) for c in configs] if options["demo_data"] else configs
    for each in configs:  # a bad argument is reported before torch and transformers are imported
        check(each)

    from .distributed import torch_threads
    from .reports import summary_table
    from .runner import run_tasks
    from .splits import selection_note

    with torch_threads(options["threads"]):
        rows = run_tasks(configs)
    if rows:  # under torchrun only rank 0 reports
        write_run_config(click.get_current_context().command, options, config.output_dir / RUN_CONFIG_FILE)
        click.echo(summary_table(rows))
        notes = [selection_note(row.task, row.config["split"]) for row in rows if "split" in row.config]
        notes += [note for row in rows for note in row.config.get("notes", [])]
        notes += [row.config["metric_skipped"] for row in rows if "metric_skipped" in row.config]
        for note in dict.fromkeys(notes):
            click.echo(f"note: {note}")
        for note in truncation_notes(rows):
            click.echo(f"note: {note}")
        click.echo(f"results: {config.output_dir / 'results.json'}")


@cli.command()
@click.option("--task", required=True, help="One task (see `idefics-eval tasks`).")
@click.option("--shots", type=click.IntRange(min=0), required=True, help="Shot count, as one of run's --shots.")
@click.option("--query-index", type=int, help="The query's position in the query split (default: 0, the first).")
@click.option("--query-id", help="The query's id in the query split (instead of --query-index).")
@click.option("--model", help="Hub name or local checkpoint folder (its processor; its weights only for RICES with --rices-encoder model).")
@click.option("--demo", is_flag=True, help="The trained canary model and, without --data, the bundled sample data.")
@click.option("--demo-seed", type=int, help="With --demo: the random tiny model with weights from this seed.")
@DEMO_DATA_OPTION()
@click.option("--data", help="The task's data, as for run.")
@click.option("--support-data", help="Data of the task shots come from, where it is another task (NoCaps: COCO).")
@SELECTION_OPTION()
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="The seed of --selection random.")
@RICES_ENCODER_OPTION()
@PROTOCOL_OPTION()
@SPLIT_OPTION()
@ZERO_SHOT_OPTION()
@MAX_LENGTH_OPTION()
@MAX_NEW_TOKENS_OPTION(help="Tokens kept for the answer when fitting the prompt (task default: 15).")
@CACHE_DIR_OPTION()
@TASKS_DIR_OPTION()
@PROMPTS_DIR_OPTION()
@DEVICE_OPTION(help="Where RICES embeds the images: auto, cpu, cuda or cuda:N.")
@DTYPE_OPTION(help="The RICES encoder's dtype: auto (bfloat16 on GPU, float32 on CPU), bfloat16, float16, float32.")
@click.option("--allow-pickle-weights", is_flag=True, help="Allow loading .bin (pickle) weights.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: text, input_ids, shot_ids, similarities, split (ranked: candidates).")
def prompt(**options) -> None:
    """Dry run: print the prompt run feeds the model for one query (text, token count, shots); nothing is generated."""
    import json

    from .plan import RunConfig, check, with_bundled_data

    config = RunConfig(
        task=options["task"], shots=(options["shots"],), output_dir=Path("."),  # a dry run writes nothing
        model=options["model"], demo=options["demo"], demo_seed=options["demo_seed"], data=options["data"],
        support_data=options["support_data"], selection=options["selection"], seeds=(options["seed"],),
        rices_encoder=options["rices_encoder"], protocol=options["protocol"], split=options["split"], zero_shot=options["zero_shot"],
        device=options["device"],
        dtype=options["dtype"],
        max_length=options["max_length"], max_new_tokens=options["max_new_tokens"],
        cache_dir=options["cache_dir"] or default_cache_dir(), tasks_dirs=tuple(options["tasks_dirs"]),
        prompts_dirs=tuple(options["prompts_dirs"]),
        progress=False, allow_pickle_weights=options["allow_pickle_weights"],
    )
    if options["selection"] == "rices" and options["seed"] != 0:
        raise UserError("--seed applies to --selection random only (RICES shots do not depend on a seed)")
    config = with_bundled_data(config) if options["demo_data"] else config
    check(config, writes=False)  # before the dry run's model libraries are imported

    from .dry_run import format_view, prompt_view

    view = prompt_view(config, options["query_index"], options["query_id"])
    click.echo(json.dumps(view.to_json()) if options["as_json"] else format_view(view))


@cli.command()
@click.argument("run_dir", required=False, type=click.Path(path_type=Path))
@click.option("--predictions", "predictions_file", type=click.Path(path_type=Path), help="One predictions file, instead of RUN_DIR.")
@click.option("--task", help="Task of the predictions (needed only for a file outside a run folder); with RUN_DIR: only these "
                              "tasks (comma-separated).")
@click.option("--data", help="The task's data (as for `run`); default: what the run recorded.")
@click.option("--demo", is_flag=True, help="Score against the bundled sample data; default: what the run recorded.")
@click.option("--limit", type=int, help="Score the first N queries; default: the run's --limit.")
@TASKS_DIR_OPTION(help="Extra folder of task files; default: the run's.")
@click.option("--cache-dir", type=click.Path(path_type=Path),
              help="The run's --cache-dir, where a Hugging Face dataset's files are kept (default: ~/.cache/idefics-eval).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Also write the metrics as JSON (RUN_DIR: rows as in results.json).")
def score(run_dir: Path | None, predictions_file: Path | None, task: str | None, data: str | None, demo: bool, limit: int | None,
          tasks_dirs: tuple[Path, ...], cache_dir: Path | None, output: Path | None) -> None:
    """Re-score a run folder (RUN_DIR) or one predictions file without a model, as the run recorded it."""
    import json
    from dataclasses import asdict

    from .scoring import Given, score_file, score_run

    if (run_dir is None) == (predictions_file is None):
        raise UserError("give a run folder (RUN_DIR) or --predictions FILE, one of the two")
    if limit is not None and limit < 1:
        raise UserError(f"--limit {limit}: give a positive number of queries")
    given = Given(data=data, demo=demo, limit=limit, tasks_dirs=tuple(tasks_dirs), cache_dir=cache_dir or default_cache_dir())
    if run_dir is not None:
        from .reports import summary_table

        names = None if task is None else [name.strip() for name in task.split(",") if name.strip()]
        with quiet_libraries():  # no bars of its own: the data loading's would only surround its output
            rescored = score_run(run_dir, given, names)
        click.echo(summary_table(rescored.rows))
        notes, text = rescored.notes, json.dumps([asdict(row) for row in rescored.rows], indent=2, ensure_ascii=False) + "\n"
    else:
        from .reports import format_metrics

        with quiet_libraries():
            name, metrics, count, notes = score_file(predictions_file, task, given)
        click.echo(f"{name}: {count} predictions")
        click.echo(format_metrics(metrics))
        text = json.dumps({"task": name, "predictions": str(predictions_file), "num_examples": count, "metrics": metrics}, indent=2) + "\n"
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if output is not None:
        _write_or_print(text, output)


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--task", required=True, help="A test-server task the run evaluated (vqav2_testdev, vizwiz_test, textcaps_test, nocaps_test).")
@click.option("--shots", type=int, help="Which row: its shot count (needed when the run has several).")
@click.option("--seed", type=int, help="Which row of a --selection random run: its seed.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The JSON file to upload.")
@click.option("--data", help="The split's data, where it moved since the run (default: the folder the run recorded).")
@TASKS_DIR_OPTION()
def submission(run_dir: Path, task: str, shots: int | None, seed: int | None, output: Path, data: str | None,
               tasks_dirs: tuple[Path, ...]) -> None:
    """Write a test-split run's predictions as its evaluation server's JSON file, checked against the split."""
    from .results import check_not_a_run_file
    from .submission import write_submission

    check_not_a_run_file(output)
    count = write_submission(run_dir, task, output, shots, seed, data, tuple(tasks_dirs))
    click.echo(f"wrote {output}: {count} entries, every question of the split once")


@cli.command()
@TASKS_DIR_OPTION()
@PROMPTS_DIR_OPTION()
@click.option("--show", "show", metavar="NAME", help="Print one task's resolved definition: its keys after defaults, its prompt file and template.")
def tasks(tasks_dirs: tuple[Path, ...], prompts_dirs: tuple[Path, ...], show: str | None) -> None:
    """List the tasks with their metric, splits and request kind (or, with --show, one task in full)."""
    if show is not None:
        from .reports import task_definition

        click.echo(task_definition(show, tuple(tasks_dirs), tuple(prompts_dirs)), nl=False)
        return
    from .reports import task_table

    click.echo(task_table(tuple(tasks_dirs)))


@cli.command("demo-model")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--demo-seed", type=int, help="Seed of the random weights, as run's --demo-seed (default 0).")
@click.option("--seed", "old_seed", type=int, hidden=True, help="The old spelling of --demo-seed (deprecated).")
@click.option("--family", type=click.Choice(DEMO_FAMILIES), default="idefics", show_default=True,
              help="The model family (its config.model_type) of the tiny random model.")
@click.option("--instruct", is_flag=True,
              help="Write it as the family's instruct checkpoint, with a chat template shaped like the real one's "
                   "(every family but idefics, whose checkpoints ship none).")
def demo_model(directory: Path, family: str, instruct: bool, **options) -> None:
    """Write the embedded tiny IDEFICS (or another family's tiny model) as a checkpoint folder that `--model DIR` loads."""
    from .demo.families import save_family_demo

    seed = _old_spelling(options, "demo_seed", "old_seed")
    seed = 0 if seed is None else seed

    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise UserError(f"{directory} is not an empty folder; choose a new folder for the checkpoint")
    try:
        save_family_demo(family, directory, seed, instruct)
    except OSError as error:
        raise UserError(f"cannot write the checkpoint to {directory}: {error.strerror or error}; choose another folder") from None
    kind = " instruct" if instruct else ""
    click.echo(f"wrote the tiny {'IDEFICS' if family == 'idefics' else family}{kind} (seed {seed}) to {directory}")


@cli.command()
@click.option("--checkpoints", required=True, help="Glob of checkpoint folders, quoted: 'ckpts/step-*'.")
@TASK_OPTION()
@click.option("--tasks", "old_tasks", hidden=True, help="The old spelling of --task (deprecated).")
@click.option("--shots", default="0,4", show_default=True, help="Comma-separated shot counts.")
@click.option("--output-dir", type=click.Path(path_type=Path), required=True, help="One results folder per checkpoint goes here.")
@click.option("--select-by", default="mean-normalised", show_default=True,
              help="mean-normalised, a metric key (vqa_accuracy) or TASK:METRIC.")
@click.option("--data", "data_values", multiple=True, help="TASK=PATH, or one PATH for every task: validation data for selection.")
@click.option("--support-data", "support_values", multiple=True, help="TASK=PATH: data of the task shots come from (NoCaps: COCO).")
@DEMO_DATA_OPTION()
@SPLIT_OPTION(default="selection", help="The queries checkpoints are compared on: each task's selection split, held out of "
              "train (the default: selection never sees the reporting split), or its reporting split.")
@run_and_sweep_options
@CACHE_DIR_OPTION()
@TASKS_DIR_OPTION()
@PROMPTS_DIR_OPTION()
@OVERWRITE_OPTION(help="Replace predictions in a checkpoint's results folder made under another configuration.")
@LOG_SAMPLES_OPTION()
@NO_PROGRESS_OPTION()
@click.option("--name", help="A name for this sweep, recorded in every checkpoint's results (default: none).")
def sweep(**options) -> None:
    """Evaluate every checkpoint on every task and shot count; name the best checkpoint."""
    from .sweep import SweepConfig, parse_task_values, run_sweep, split_line, summary_lines
    from .tasks import expand_task_names

    task_value = _old_spelling(options, "task", "old_tasks")
    if task_value is None:
        raise UserError("missing option --task; give task names like vqav2,okvqa or a group (see `idefics-eval tasks`)")
    task_names = tuple(expand_task_names(task_value, tuple(options["tasks_dirs"])))
    config = SweepConfig(
        checkpoints=options["checkpoints"],
        tasks=task_names,
        shots=parse_counts(options["shots"], "--shots"),
        output_dir=options["output_dir"],
        limit=options["limit"],
        data=parse_task_values(options["data_values"], task_names, "--data"),
        support_data=parse_task_values(options["support_values"], task_names, "--support-data"),
        demo_data=options["demo_data"],
        select_by=options["select_by"],
        selection=options["selection"],
        seeds=parse_counts(options["seeds"], "--seeds"),
        rices_encoder=options["rices_encoder"], protocol=options["protocol"], split=options["split"], zero_shot=options["zero_shot"],
        batch_size=options["batch_size"],
        num_beams=options["num_beams"],
        max_new_tokens=options["max_new_tokens"],
        max_length=options["max_length"],
        device=options["device"],
        dtype=options["dtype"],
        cache_dir=options["cache_dir"] or default_cache_dir(),
        tasks_dirs=tuple(options["tasks_dirs"]),
        prompts_dirs=tuple(options["prompts_dirs"]),
        overwrite=options["overwrite"],
        progress=not options["no_progress"],
        run_name=options["name"],
        log_samples=options["log_samples"],
        threads=options["threads"],
    )
    click.echo(split_line(config.split))
    result = run_sweep(config)
    click.echo("\n".join(summary_lines(result, config.select_by)))
    if result.failed:
        click.echo(f"error: {len(result.failed)} of {len(result.checkpoints)} checkpoints failed ({', '.join(result.failed)}); "
                   "the reasons are in the table and sweep.json; fix them and rerun the same command, which retries "
                   "them and reuses every finished cell", err=True)
        sys.exit(SWEEP_INCOMPLETE)


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["csv", "markdown", "json"]), default="markdown", show_default=True,
              help="Table format: markdown to read, csv or json (every digit) for other tools.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="File to write (default: print).")
@click.option("--layout", type=click.Choice(["card", "long"]), default="card", show_default=True,
              help="card: the model card's table; long: one row per metric with its 95% bootstrap interval.")
@SELECTION_OPTION(help="Which rows the card layout reports: those of RICES or of random shots.")
@click.option("--decimals", type=click.IntRange(min=0), default=1, show_default=True,
              help="Decimals in the card layout's markdown (CSV and JSON keep every digit).")
@click.option("--no-ci", is_flag=True, help="Long layout without bootstrap intervals (no data needed).")
@RESAMPLES_OPTION()
@BOOTSTRAP_SEED_OPTION()
@TASKS_DIR_OPTION(help="Extra folder of task files the results' tasks come from; repeatable.")
@click.option("--allow-partial", is_flag=True,
              help="Card layout: export rows of --limit runs, the bundled demo data or skipped queries, marked as partial.")
def export(results: tuple[Path, ...], fmt: str, output: Path | None, layout: str, selection: str, decimals: int, no_ci: bool,
           resamples: int, bootstrap_seed: int, tasks_dirs: tuple[Path, ...], allow_partial: bool) -> None:
    """Export results folders as the model card's table or a long table with intervals."""
    from .export import export as export_table

    with quiet_libraries():  # no bars of its own: the data loading's would only surround its output
        text = export_table(list(results), fmt, layout, selection, decimals, not no_ci, resamples, bootstrap_seed,
                            tuple(tasks_dirs), allow_partial)
    _write_or_print(text, output)


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output-dir", type=click.Path(path_type=Path), required=True, help="Folder for the PNG files.")
@click.option("--reference", "references", multiple=True, type=click.Choice(["idefics-9b", "idefics-80b"]),
              help="Also draw the model card's curve (dashed).")
@SELECTION_OPTION(help="Which rows the curves show: those of RICES or of random shots.")
@click.option("--ci", is_flag=True, help="Draw 95% bootstrap intervals (reads the predictions and the query data).")
@RESAMPLES_OPTION()
@BOOTSTRAP_SEED_OPTION()
@TASKS_DIR_OPTION(help="Extra folder of task files the results' tasks come from; repeatable.")
def plot(results: tuple[Path, ...], output_dir: Path, references: tuple[str, ...], selection: str, ci: bool, resamples: int,
         bootstrap_seed: int, tasks_dirs: tuple[Path, ...]) -> None:
    """Plot shot-scaling curves (metric against shots, one panel per task) as PNG."""
    from .plots import plot_results

    with quiet_libraries():
        paths = plot_results(list(results), output_dir, references, selection, ci, resamples, bootstrap_seed, tuple(tasks_dirs))
    for path in paths:
        click.echo(f"wrote {path}")


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--reference", type=click.Choice(["idefics-9b", "idefics-80b"]), help="Compare one run with the model card's numbers.")
@click.option("--all-metrics", is_flag=True, help="Every metric, not only each task's headline metric (two runs).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "json"]), default="markdown", show_default=True,
              help="Table format: markdown to read (with the differences between the runs above it), csv or json for other tools.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="File to write (default: print).")
@click.option("--no-ci", is_flag=True, help="Without the run's bootstrap intervals (--reference only).")
@RESAMPLES_OPTION()
@BOOTSTRAP_SEED_OPTION()
@TASKS_DIR_OPTION(help="Extra folder of task files the results' tasks come from; repeatable.")
def compare(runs: tuple[Path, ...], reference: str | None, all_metrics: bool, fmt: str, output: Path | None, no_ci: bool,
            resamples: int, bootstrap_seed: int, tasks_dirs: tuple[Path, ...]) -> None:
    """RUN_A RUN_B: paired difference B - A with its 95% interval; RUN --reference: next to the model card."""
    from .compare import PAIRED_HEADER, REFERENCE_HEADER, compare_reference, compare_runs
    from .export import to_csv, to_json, to_markdown

    if reference is not None:
        if len(runs) != 1:
            raise UserError(f"--reference compares one run, {len(runs)} given")
        with quiet_libraries():
            comparison = compare_reference(runs[0], reference, not no_ci, resamples, bootstrap_seed, tuple(tasks_dirs))
        header, title = REFERENCE_HEADER, f"{runs[0]} against the model card's {reference}"
    else:
        if len(runs) != 2:
            raise UserError(f"give two runs to compare (RUN_A RUN_B), or one with --reference; {len(runs)} given")
        with quiet_libraries():
            comparison = compare_runs(runs[0], runs[1], all_metrics, resamples, bootstrap_seed, tuple(tasks_dirs))
        a, b = (f"{run} ({name})" if name else str(run) for run, name in zip(runs, comparison.names))
        header, title = PAIRED_HEADER, f"A = {a}, B = {b}; paired bootstrap, 95% interval of B - A"
    differ = f"A and B differ in: {'; '.join(comparison.differences)}" if comparison.differences else None
    warning = f"warning: {comparison.warning}" if comparison.warning else None
    if fmt == "csv":
        text = to_csv(comparison.records, header)
    elif fmt == "json":
        text = to_json(comparison.records)
    else:  # what makes the numbers incomparable comes before them
        lines = [title, *filter(None, (differ, warning))]
        text = "\n".join(lines) + "\n\n" + to_markdown(comparison.records, header, left=("model", "task", "selection", "metric",
                                                                                         "excludes 0"), decimals=2)
    if fmt != "markdown" or output is not None:  # the table's file holds no prose: say it where a person reads
        for line in filter(None, (differ, warning)):
            click.echo(line, err=True)
    _write_or_print(text, output)
    for note in comparison.notes:
        click.echo(f"note: {note}", err=True)


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output-dir", type=click.Path(path_type=Path), help="Folder of the site (default: RUN_DIR/view).")
def view(runs: tuple[Path, ...], output_dir: Path | None) -> None:
    """RUN_DIR [RUN_DIR2]: a static site of the run (open its index.html): results, samples, with two runs the queries that changed."""
    from .viewer import build_site

    with quiet_libraries():
        site = build_site(list(runs), output_dir)
    click.echo(f"wrote {site / 'index.html'}")


def _old_spelling(options: dict, name: str, old: str) -> str | None:
    """The value of option `name`, or of its old spelling `old` (kept for one release, with one line on stderr)."""
    flag, old_flag = f"--{name.replace('_', '-')}", f"--{old.removeprefix('old_').replace('_', '-')}"
    if options[old] is not None:
        if options[name] is not None:
            raise UserError(f"{flag} and {old_flag} both given: {old_flag} is the old spelling of {flag}; keep only {flag}")
        click.echo(f"warning: {old_flag} is deprecated and will go in the next release; use {flag} (same values)", err=True)
        return options[old]
    return options[name]


def _write_or_print(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    from .results import check_not_a_run_file, write_text_atomic

    check_not_a_run_file(output)
    try:
        write_text_atomic(output, text)
    except OSError as error:
        raise UserError(f"cannot write {output}: {error.strerror}; choose another -o") from None
    click.echo(f"wrote {output}")


def truncation_notes(rows) -> list[str]:
    """One line per row whose prompts were fitted to the context: how many, and how."""
    notes = []
    for row in rows:
        if row.num_truncated and "generation" in row.config:
            generation = row.config["generation"]
            how = ("cut from the left" if generation.get("truncation") == "left" else "lost their least similar shots")
            notes.append(f"{row.task} {row.shots}-shot: {row.num_truncated} of {row.num_examples} prompts {how} to fit "
                         f"{generation['max_length']} tokens (num_truncated; each line's dropped_shots / cut_tokens)")
    return notes


def default_cache_dir() -> Path:
    import os

    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "idefics-eval"


def main(argv: list[str] | None = None) -> None:
    """The `idefics-eval` program (`argv` None: the process's own arguments, and the process ends after)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=args, prog_name="idefics-eval", standalone_mode=False)
    except UserError as error:
        click.echo(f"error: {one_line(error)}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("interrupted; rerun the same command to continue where it stopped", err=True)
        sys.exit(130)
    except click.ClickException as error:
        click.echo(f"error: {one_line(error.format_message())}", err=True)
        sys.exit(2)
    except Exception as error:  # an internal error: one line unless --debug
        if _out_of_space(error):  # the user's to fix, and the same command continues once there is room
            click.echo(f"error: no space left on the device{f' writing {error.filename}' if error.filename else ''}; free some "
                       "space (or choose another --output-dir / --cache-dir) and rerun the same command: it keeps what was written", err=True)
            sys.exit(2)
        if "--debug" in args:
            raise
        click.echo(f"internal error: {type(error).__name__}: {one_line(error)} (re-run with --debug for the traceback)", err=True)
        sys.exit(1)
    finally:
        if argv is None:  # called with a list (tests, scripts), the caller's process goes on: its garbage is collected
            _skip_the_exit_collections()


def _out_of_space(error: Exception) -> bool:
    import errno

    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def _skip_the_exit_collections() -> None:
    """Let the process end without the garbage collector's passes over every object that torch and
    transformers created (some 370,000): about a second of CPU at each exit. Objects are still freed
    as their references go and atexit handlers still run; cyclic garbage is left to the OS."""
    import gc

    gc.freeze()
