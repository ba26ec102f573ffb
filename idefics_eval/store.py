"""The run store: what a run folder holds and how a rerun may reuse it.

`manifest.json` records the identity of every predictions file (a rerun with another configuration
is refused), `.lock` keeps two runs out of one folder, and earlier results.json rows tell what an
earlier run used.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError
from .plan import Prepared
from .protocols import load_protocol
from .predictions import written_for
from .results import Result, read_json_file, read_results, write_json_atomic

if TYPE_CHECKING:  # the run folder's checks come before torch is imported (plan.check)
    from .models import LoadedModel


def identity_of(p: Prepared, loaded: LoadedModel) -> dict:
    """What determines every predictions file of this task: a rerun in the same folder must match.

    Round-tripped through JSON so that it compares equal to the copy read back from the manifest.
    A selection-split run (`--split selection`) adds `split`, the draw's record (splits.py). A task
    whose prompts go through the checkpoint's chat template (the protocol's `chat_template: true`)
    adds `chat_template`, the template's digest: the weights' fingerprint does not change when a
    checkpoint's template does, and the prompts do. For the same reason the model is named by its
    processor's digest too (`models.processor_digest`: its tokenizer and image processor as loaded).
    What the shots depend on (support data,
    selection, index) is recorded per file instead, since zero-shot files do not depend on it.
    """
    from .model_requests import context_limit  # torch: the model is loaded by now

    chat = {"chat_template": hashlib.sha256(loaded.adapter.chat_template.encode()).hexdigest()} if p.template.chat else {}
    return plain({
        "task": {"name": p.spec.name, "version": p.spec.version, "digest": p.spec.digest},
        "prompt": {"name": p.template.name, "version": p.template.version, "digest": p.template.digest},
        "data": {"source": p.queries.source, "query_split": p.queries.name, "query_fingerprint": p.all_queries_fingerprint},
        "model": {"name": loaded.name, "fingerprint": loaded.fingerprint, "weights_checksum": loaded.weights_checksum,
                  "processor": loaded.processor_digest,
                  "dtype": str(loaded.dtype).replace("torch.", "")},
        "generation": asdict(p.generation) | {"max_length": context_limit(p, loaded), "truncation": p.truncation},
        "protocol": (p.protocol or load_protocol()).identity,
        "zero_shot": p.config.zero_shot or "none",
    } | ({"split": p.split} if p.split else {}) | chat)  # a selection split's draw; absent: the reporting split


# Generation settings recorded since 2026-12-03, with the value every earlier run used implicitly
# (the beam search then read length_penalty 1.0 and early_stopping False, banned the newline and image
# tokens, started each prompt with <s>, and dropped whole shots from a prompt too long): a folder made
# before them still resumes.
SETTINGS_ADDED = {"length_penalty": 1.0, "early_stopping": False, "banned_words": None, "add_start_token": True,
                  "truncation": "drop-shots"}
# Likewise for the run's own settings: before zero-shot styles existed, zero-shot showed no shots.
IDENTITY_ADDED = {"zero_shot": "none"}


def with_settings_added_since(identity: dict) -> dict:
    """A recorded identity with the settings it predates filled in as they then were: a folder made
    before protocols existed was made under today's `default` protocol (its overrides are empty)."""
    generation = identity.get("generation")
    if not isinstance(generation, dict):
        return identity
    return {"protocol": load_protocol().identity} | IDENTITY_ADDED | identity | {"generation": SETTINGS_ADDED | generation}


# What names the model since 2026-12-03 beside its name, sampled fingerprint and dtype: the weights'
# exact checksum and the processor's digest (tokenizer and image processor).
MODEL_ADDED = ("weights_checksum", "processor")


def with_model_added_since(recorded: dict, current: dict) -> dict:
    """A recorded identity whose model predates some of `MODEL_ADDED`, with the current run's values
    of those: such a folder names its model by what it recorded, and resumes on that as it did."""
    model, now = recorded.get("model"), current.get("model") or {}
    if not isinstance(model, dict):
        return recorded
    return recorded | {"model": {key: now[key] for key in MODEL_ADDED if key in now} | model}


def relocated(identity: dict, p: Prepared) -> dict:
    """A recorded identity whose queries are this run's (the same fingerprint, or the one recorded
    before fingerprints stopped naming image files by full path, computed at the recorded source),
    with this run's source and fingerprint: a data folder moved elsewhere is still the same data."""
    data = identity.get("data")
    if not isinstance(data, dict) or p.all_queries is None:
        return identity
    if not p.all_queries.is_recorded_as(data.get("query_fingerprint"), data.get("source")):
        return identity
    return identity | {"data": data | {"source": p.queries.source, "query_fingerprint": p.all_queries_fingerprint}}


def relocated_shots(recorded: dict, current: dict, p: Prepared) -> dict:
    """A predictions file's recorded shots identity whose support split is this run's at another place
    (as `relocated`), with this run's source and fingerprints; the RICES index's fingerprint as
    recorded before 2026-12-03 is recognised too."""
    fingerprint, source = recorded.get("support_fingerprint"), recorded.get("support_source")
    if not current or not p.support.is_recorded_as(fingerprint, source):
        return recorded
    if fingerprint == p.support.fingerprint:
        return recorded | {"support_source": current["support_source"]}
    moved = recorded | {"support_source": current["support_source"], "support_fingerprint": current["support_fingerprint"]}
    index, encoder = recorded.get("index_fingerprint"), recorded.get("encoder")
    if index is not None and isinstance(encoder, str):
        from .shots import embedding_fingerprint

        if index == embedding_fingerprint(p.support, encoder, recorded_at=source):
            moved["index_fingerprint"] = current.get("index_fingerprint")
    return moved


def plain(data: dict) -> dict:
    return json.loads(json.dumps(data))


def read_manifest(path: Path) -> dict:
    """A run folder's manifest.json ({} when there is none); a damaged one is a `UserError`."""
    if not path.exists():
        return {}
    data = read_json_file(path, "run manifest")
    valid = isinstance(data, dict) and all(
        isinstance(entry, dict) and isinstance(entry.get("identity"), dict) and isinstance(entry.get("files"), dict)
        for entry in data.values())
    if not valid:
        raise UserError(f"{path} is not a run manifest written by idefics-eval (unexpected layout); restore it, or move it away and rerun")
    return data


class Manifest:
    """`manifest.json`: per task and selection, the identity of the run and of each predictions file.

    A rerun whose identity differs from what the folder holds is refused (or, with --overwrite, the
    old predictions are deleted), so predictions made under two configurations never mix. Beside the
    identity, not in it, each entry records the latest run's `--name` (`run_name`).
    """

    def __init__(self, p: Prepared, identity: dict, run_name: str | None = None):
        self.p = p
        self.path = p.config.output_dir / "manifest.json"
        self.data = read_manifest(self.path)
        self.key = f"{p.spec.name}/{p.config.selection}"
        entry = self.data.get(self.key)
        if entry is not None:
            entry["identity"] = self._as_now(entry["identity"], identity)
        if entry is not None and not entry["files"]:
            entry = None  # it holds nothing (a run refused at its first file): nothing to protect
        if entry is not None and entry["identity"] != identity:
            self._refuse(entry["identity"], identity)
            for stale in {*self._files(f"{p.spec.name}_*shot*.jsonl*"), *self._listed(entry)}:
                stale.unlink(missing_ok=True)
            entry = None
        self.entry = (entry or {"identity": identity, "files": {}}) | {"run_name": run_name}  # the latest run's --name
        self._save()

    def _files(self, pattern: str) -> list[Path]:
        return [f for f in (self.p.config.output_dir / "predictions").glob(pattern)
                if ("_seed" in f.name) == (self.p.config.selection == "random")]

    def _listed(self, entry: dict) -> list[Path]:
        """The files (and their partial copies) an entry claims; the zero-shot file has no seed in its name."""
        folder = self.p.config.output_dir / "predictions"
        return [folder / f"{name}{partial}" for name in entry["files"] for partial in ("", ".partial")]

    def _as_now(self, recorded: dict, identity: dict) -> dict:
        """A recorded identity in today's terms: settings added since filled in, the data where it is now."""
        return with_model_added_since(relocated(with_settings_added_since(recorded), self.p), identity)

    def _conflict(self, what: str, key: str | None = None, remedy: str = "use another --output-dir") -> None:
        if not self.p.config.overwrite:
            raise UserError(
                f"{self.p.config.output_dir} already holds {key or self.key} predictions made with {what}; "
                f"{remedy}, or --overwrite to replace them"
            )

    def _refuse(self, recorded: dict, identity: dict, key: str | None = None, shared: str = "") -> None:
        """`_conflict` naming what differs; for weights changed where the sampled fingerprint does not
        look (an update in place between two runs into one folder), both checksums; for a processor
        changed beside the same weights (a checkpoint's tokenizer or preprocessor config edited), both
        digests."""
        old, new = recorded.get("model") or {}, identity["model"]
        if _differing(recorded, identity) == ["model"] and _differing(old, new) == ["weights_checksum"]:
            self._conflict(f"other weights (the same sampled fingerprint {new['fingerprint']}, but a checksum of every "
                           f"weight of {old['weights_checksum']}, not {new['weights_checksum']}: updated in place?){shared}",
                           key, "use a new --output-dir or delete the folder")
        elif _differing(recorded, identity) == ["model"] and _differing(old, new) == ["processor"]:
            self._conflict(f"a different processor (the same weights, but a tokenizer or image processor whose settings' "
                           f"digest is {old['processor']}, not {new['processor']}){shared}", key)
        else:
            self._conflict(f"a different {', '.join(_differing(recorded, identity))}{shared}", key)

    def claim(self, path: Path, shots_identity: dict) -> None:
        """Before a predictions file is written or reused: it must have been made with these shots."""
        shots_identity = plain(shots_identity)
        self._check_shared(path)
        previous = self.entry["files"].get(path.name)
        if previous is not None and previous != shots_identity:
            previous = relocated_shots(previous, shots_identity, self.p)
        if previous is not None and previous != shots_identity:
            self._conflict(f"different shots ({', '.join(_differing(previous, shots_identity))}) in {path.name}")
            for stale in written_for(path):
                stale.unlink(missing_ok=True)
        self.entry["files"][path.name] = shots_identity
        self._save()

    def _check_shared(self, path: Path) -> None:
        """Zero-shot files do not depend on the selection, so a RICES and a random run of one task
        share them: only while both runs have the same identity (model, data, prompt, generation)."""
        for key, other in self.data.items():
            recorded = self._as_now(other["identity"], self.entry["identity"])
            if key == self.key or path.name not in other["files"] or recorded == self.entry["identity"]:
                continue
            self._refuse(recorded, self.entry["identity"], key, f" (it shares {path.name})")
            for stale in written_for(path):
                stale.unlink(missing_ok=True)
            del other["files"][path.name]

    def _save(self) -> None:
        self.data[self.key] = self.entry
        write_json_atomic(self.path, self.data)


def _differing(old: dict, new: dict) -> list[str]:
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))  # `split`: on one side only


def shots_identity(p: Prepared, selection: dict, shots: int) -> dict:
    """What a predictions file's shots depend on: nothing for true zero-shot; the support split and
    which of its examples were shown for text-only zero-shot (`shots.ZeroShot.describe`)."""
    if shots == 0 and "text_only_shots" not in selection:
        return {}
    subset = {"support_subset": p.support_subset} if p.support_subset else {}  # absent: the whole support split
    return selection | {"support_split": p.support.name, "support_source": p.support.source} | subset


class RunFolder:
    """The output folder a run writes into, and a check that it is still there.

    A folder removed during the run (by hand, by a cleanup job) would otherwise be recreated piece by
    piece by the next write: predictions appended to unlinked files vanish, and results.json would name
    predictions files that are gone, or a second run could take the new folder. So the run does not
    recreate it: it stops at its next write with one line, and a rerun starts from what exists. The
    folder counts as the same while its `.lock` is the file this run locked (same inode), so a folder
    removed and created again by someone else is caught too.
    """

    def __init__(self, path: Path, lock=None):
        self.path = path
        self.lock = lock  # the open .lock file, on the process that holds it

    def check(self) -> None:
        if not self._unchanged():
            raise UserError(f"the output folder {self.path} was removed during the run, and with it the predictions "
                            "written there; the run stops rather than recreate half a folder: rerun the command")

    def _unchanged(self) -> bool:
        if self.lock is None:
            return self.path.is_dir()
        try:
            return os.path.samestat(os.stat(self.path / ".lock"), os.fstat(self.lock.fileno()))
        except FileNotFoundError:
            return False


@contextmanager
def folder_lock(output_dir: Path, enabled: bool = True):
    """Hold `output_dir/.lock` for the run: a second run into the same folder is refused, not interleaved.
    Yields the `RunFolder`, whose check the run makes around its writes."""
    if not enabled:
        yield RunFolder(output_dir)
        return
    import fcntl

    handle = open(output_dir / ".lock", "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise UserError(f"another idefics-eval run ({holder}) is writing to {output_dir}; wait for it to finish or use another --output-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield RunFolder(output_dir, handle)
    finally:
        handle.close()


def recorded_rows(output_dir: Path) -> dict[tuple, Result]:
    """The rows of an earlier results.json in `output_dir`, by row key: what the run that made a
    predictions file used (batch size) and when it ran, where a rerun finds the file finished."""
    path = output_dir / "results.json"
    return {row.key: row for row in (read_results(path) if path.exists() else [])}
