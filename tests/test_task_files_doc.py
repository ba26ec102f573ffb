"""docs/task-files.md documents exactly the keys the task, prompt and format parsers know: each key
table there is compared with the parser's own key sets, so neither can change without the other."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from idefics_eval import prompts, tasks
from idefics_eval.formats import file_formats

DOC = Path(__file__).resolve().parents[1] / "docs" / "task-files.md"


def key_table(name: str, text: str | None = None) -> list[list[str]]:
    """The body rows (cells stripped) of the table right after `<!-- keys: name -->`."""
    text = DOC.read_text() if text is None else text
    lines = text[text.index(f"<!-- keys: {name} -->"):].splitlines()[1:]
    table = []
    for line in lines:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return table[2:]  # without the header and its separator


def names(cell: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", cell))


def documented(name: str) -> tuple[set[str], set[str]]:
    """(all keys, required keys) of a key table whose second column says yes for required keys."""
    rows = key_table(name)
    keys = {row[0].strip("`") for row in rows}
    return keys, {row[0].strip("`") for row in rows if row[1] == "yes"}


@pytest.mark.parametrize(("table", "required", "optional"), [
    ("task", tasks.TASK_REQUIRED, tasks.TASK_OPTIONAL),
    ("candidates", tasks.CANDIDATES_REQUIRED, tasks.CANDIDATES_OPTIONAL),
    ("huggingface", tasks.HUGGINGFACE_REQUIRED, tasks.HUGGINGFACE_OPTIONAL),
    ("subset", tasks.SUBSET_REQUIRED, tasks.SUBSET_OPTIONAL),
    ("prompt", prompts.PROMPT_REQUIRED, prompts.PROMPT_OPTIONAL),
])
def test_documented_keys_are_the_parsers_keys(table, required, optional):
    keys, documented_required = documented(table)
    assert keys == set(required | optional)
    assert documented_required == set(required)


def test_documented_generation_keys_are_the_parsers():
    assert {row[0].strip("`") for row in key_table("generation")} == set(tasks.GENERATION_KEYS)


def test_documented_formats_are_the_built_in_formats_with_their_keys():
    table = {row[0].strip("`"): (names(row[1]), names(row[2])) for row in key_table("formats")}
    assert table == {f.name: (set(f.keys), set(f.optional)) for f in file_formats().values()}
    assert table["vqa_json"][0] == set(tasks.VQA_JSON_KEYS)


def test_the_comparison_sees_a_key_missing_from_the_doc():
    text = DOC.read_text().replace("| `seed` | no |", "| `seeds` | no |")
    assert "seed" not in {row[0].strip("`") for row in key_table("task", text)}
