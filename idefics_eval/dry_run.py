"""A dry run (`idefics-eval prompt`): the prompt the run feeds the model for one query, and nothing more.

It is built by the run's own code, not a copy of it: `plan.prepare` checks the settings and loads the
annotations, `runner.shot_selector` chooses the shots, `model_requests` fits the prompt to the
context (`fit_prompt`, `ranked_context`, `matched_requests`) and the tokenizer measures it as the
run does (`engine.token_ids`). Nothing is generated or scored, and no weights are loaded unless RICES
embeds the images with the model's own vision tower (then the model loads as the run loads it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .engine import token_ids
from .errors import UserError
from .examples import Example, ExampleSet
from .model_requests import (
    candidates_of,
    check_context,
    continuation_prompts,
    fit_prompt,
    matched_requests,
    ranked_context,
)
from .models import (
    ClipEncoder,
    PromptSide,
    VisionTowerEncoder,
    demo_model_name,
    load_model,
    load_prompt_side,
    resolve_device,
)
from .plan import Prepared, RunConfig, prepare
from .prompts import Prompt
from .ranking import continuations_ids
from .runner import shot_selector
from .splits import REPORTING


@dataclass(frozen=True)
class Request:
    """One context the model reads, and for ranked and matched tasks the candidates appended to it."""

    prompt: Prompt
    text: str  # the processor text: image placeholders as the family's processor writes them
    input_ids: list[int]
    candidates: list[tuple[str, list[int]]] | None  # (candidate, the ids scored after the context)

    def to_json(self) -> dict:
        out: dict = {"text": self.text, "input_ids": self.input_ids}
        if self.candidates is not None:
            out["candidates"] = [{"candidate": c, "continuation_ids": ids} for c, ids in self.candidates]
        return out


@dataclass(frozen=True)
class PromptView:
    task: str
    request: str  # the task's request kind: generate, rank or match
    query: Example
    shots: int  # asked for; the prompt may show fewer (`dropped` least similar ones left out to fit)
    selection: str
    shot_ids: tuple[str, ...]  # the shots shown, in prompt order
    similarities: list[float] | None  # RICES: each shown shot's cosine similarity to the query image
    dropped: int
    requests: list[Request]  # one; Winoground (match): one per image
    protocol: dict | None = None  # the protocol's name and digest, as the run records them
    split: dict | None = None  # the query split: its name and "queries"; a selection split's record as the run's rows hold it

    def to_json(self) -> dict:
        first = self.requests[0].to_json()
        out = {"task": self.task, "query_id": self.query.id, "text": first["text"], "input_ids": first["input_ids"],
               "shot_ids": list(self.shot_ids), "similarities": self.similarities, "dropped_shots": self.dropped,
               "cut_tokens": self.requests[0].prompt.cut_tokens, "protocol": self.protocol, "split": self.split}
        if "candidates" in first:
            out["candidates"] = first["candidates"]
        if len(self.requests) > 1:
            out["contexts"] = [request.to_json() for request in self.requests]
        return out


def find_query(queries: ExampleSet, index: int | None, query_id: str | None) -> Example:
    if index is not None and query_id is not None:
        raise UserError("--query-index and --query-id both given; choose the query by one of them")
    if query_id is not None:
        found = next((q for q in queries.examples if q.id == query_id), None)
        if found is None:
            first = ", ".join(q.id for q in queries.examples[:3])
            raise UserError(f"--query-id {query_id!r}: no query of {queries.name} has that id (its first: {first}); "
                            "give an id from the query split")
        return found
    index = 0 if index is None else index
    if not 0 <= index < len(queries.examples):
        raise UserError(f"--query-index {index}: {queries.name} has {len(queries.examples)} queries; "
                        f"give 0 to {len(queries.examples) - 1}")
    return queries.examples[index]


def _model_and_encoder(config: RunConfig):
    """The processor side of the model, or the whole model where RICES embeds with its vision tower."""
    rices = config.selection == "rices" and max(config.shots) > 0
    name = config.model or demo_model_name(config.demo_seed)
    demo_seed = config.demo_seed if config.demo else None
    if rices and config.rices_encoder == "model":
        loaded = load_model(name, device=config.device, dtype=config.dtype, demo_seed=demo_seed,
                            allow_pickle=config.allow_pickle_weights, progress=False)
        return loaded, VisionTowerEncoder(loaded)
    side = load_prompt_side(name, demo_seed=demo_seed)
    return side, (ClipEncoder(config.rices_encoder, resolve_device(config.device)) if rices else None)


def _request(loaded: PromptSide, context: Prompt, continuations: list[Prompt] | None,
             candidates: tuple[str, ...] | None, add_start_token: bool) -> Request:
    tokenizer = loaded.processor.tokenizer
    text = loaded.adapter.prompt_text(context, add_start_token)  # the task's add_start_token, as the run
    scored = None
    if continuations is not None:  # what the ranker scores: each full text's tokens past the context's
        fulls = continuations_ids(tokenizer, text, [loaded.adapter.prompt_text(c, add_start_token) for c in continuations])
        scored = [(candidate, ids[len(ids) - count:]) for candidate, (ids, count) in zip(candidates, fulls)]
    return Request(context, text, token_ids(loaded, context, add_start_token), scored)


def prompt_view(config: RunConfig, query_index: int | None = None, query_id: str | None = None) -> PromptView:
    """The prompt `run` would feed the model for one query at `config.shots[0]` shots."""
    if len(config.shots) != 1:
        raise UserError("--shots: give one shot count for a dry run")
    p = prepare(replace(config, progress=False), writes=False)
    query = find_query(p.queries, query_index, query_id)
    loaded, encoder = _model_and_encoder(p.config)
    check_context(p, loaded)
    k, seed = config.shots[0], config.seeds[0] if config.selection == "random" else None
    selector = shot_selector(p, ExampleSet(p.queries.name, p.queries.source, (query,)), seed, k, encoder, False)
    chosen = selector.select(query, k)
    dropped, requests = _requests(p, loaded, query, chosen)
    similarities = selector.similarities(query, k) if config.selection == "rices" else None  # random: none to show
    return PromptView(p.spec.name, p.spec.request, query, k, config.selection, tuple(s.id for s in chosen[dropped:]),
                      similarities if similarities is None else similarities[dropped:], dropped, requests,
                      p.protocol.identity if p.protocol else None, query_split(p))


def query_split(p: Prepared) -> dict:
    """Which queries the dry run's query is one of: the reporting split, or the selection split's record."""
    if p.split:
        return {**p.split, "queries": p.queries.name}
    return {"name": REPORTING, "queries": p.queries.name, "size": p.num_queries}


def split_words(split: dict) -> str:
    """The query split as the header line names it."""
    if split["name"] == REPORTING:
        return f"{split['queries']}, the reporting split ({split['size']} queries)"
    return (f"{split['queries']}, the selection split ({split['size']} queries held out of {split['drawn_from']}, "
            f"seed {split['seed']})")


def _requests(p: Prepared, loaded: PromptSide, query: Example, chosen: list[Example]) -> tuple[int, list[Request]]:
    """The shots dropped to fit, and the requests, as the run's `_generate`, `ranked` and `matched` build them."""
    if p.spec.request == "generate":
        prompt, dropped, _ = fit_prompt(p, loaded, chosen, query, p.generation.max_new_tokens)
        return dropped, [_request(loaded, prompt, None, None, p.generation.add_start_token)]
    if p.spec.request == "match":
        captions = tuple(query.fields[f"caption_{c}"] for c in (0, 1))
        return 0, [_request(loaded, context, continuations, captions, p.generation.add_start_token)
                   for context, continuations in matched_requests(p, loaded, query)]
    context, dropped, _, _ = ranked_context(p, loaded, query, chosen)
    continuations = continuation_prompts(p, query, chosen[dropped:])
    return dropped, [_request(loaded, context, continuations, candidates_of(p.spec, query), p.generation.add_start_token)]


def format_view(view: PromptView) -> str:
    """The human-readable dry run: the shots, then each context with its token count and candidates."""
    protocol = f", protocol {view.protocol['name']}" if view.protocol else ""
    lines = [f"task {view.task} ({view.request}), query {view.query.id} of {split_words(view.split)}, {view.shots} shots "
             f"({view.selection}){protocol}"]
    if view.shots == 0 and view.shot_ids:
        lines.append("  zero-shot text-only: support examples shown without their images (the same for every query)")
    for position, shot_id in enumerate(view.shot_ids):
        similarity = view.similarities[position] if view.similarities is not None else None
        shown = f"  similarity {similarity:.4f}" if similarity is not None else ""
        lines.append(f"  shot {position + 1}: {shot_id}{shown}")
    if view.selection == "rices" and view.shots and view.shot_ids:
        lines.append("  (most similar last, right before the query)")
    if view.dropped:
        lines.append(f"  {view.dropped} least similar shots dropped to fit the context")
    cut = view.requests[0].prompt
    if cut.cut_tokens:
        lines.append(f"  its first {cut.cut_tokens} tokens (after <s>, where it has one) cut to fit the context, "
                     f"{cut.cut_images} shot images with them (truncation: left); the text below is before the cut")
    for number, request in enumerate(view.requests):
        which = f" {number + 1} of {len(view.requests)}" if len(view.requests) > 1 else ""
        lines += [f"--- prompt{which}: {len(request.input_ids)} tokens ---", request.text]
        if request.candidates is not None:
            lines.append(f"--- {len(request.candidates)} candidates, each appended to the prompt above ---")
            lines += [f"  {candidate!r}: {len(ids)} tokens" for candidate, ids in request.candidates]
    return "\n".join(lines)
