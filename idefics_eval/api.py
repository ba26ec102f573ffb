"""The Python API for training loops: evaluate an already-loaded model, no reload, no subprocess."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from .models import LoadedModel, check_processor, weights_fingerprint
from .results import Result
from .runner import RunConfig, run


def evaluate(
    model,
    processor,
    tasks: Sequence[str],
    shots: Sequence[int] = (0,),
    *,
    limit: int | None = None,
    data: str | Mapping[str, str] | None = None,
    demo_data: bool = False,
    output_dir: str | Path | None = None,
    name: str | None = None,
    batch_size: int = 8,
    num_beams: int | None = None,
    selection: str = "rices",
    cache_dir: str | Path | None = None,
) -> list[Result]:
    """Evaluate `model` (an IdeficsForVisionText2Text, in place on its device) on `tasks`.

    `data` is one --data value for every task or a mapping task -> --data; `demo_data` uses the
    bundled sample data. Returns the result rows (also written, with predictions, to `output_dir`,
    a temporary folder by default). The model is left in eval mode.
    """
    check_processor(processor, name or "the model")
    processor.tokenizer.padding_side = "left"
    model.eval()
    parameter = next(model.parameters())
    loaded = LoadedModel(model, processor, name or str(model.config.name_or_path or "in-memory"),
                         weights_fingerprint(model), parameter.device, parameter.dtype)
    root = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="idefics-eval-"))
    rows: list[Result] = []
    for task in tasks:
        task_data = data.get(task) if isinstance(data, Mapping) else data
        config = RunConfig(
            task=task, shots=tuple(shots), output_dir=root, model=None, demo=demo_data and task_data is None,
            data=task_data, limit=limit, batch_size=batch_size, num_beams=num_beams, selection=selection,
            cache_dir=Path(cache_dir) if cache_dir else None, progress=False,
        )
        rows += run(config, loaded=loaded)
    return rows
