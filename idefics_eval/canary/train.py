"""Train the canary from scratch on the synthetic world; the result becomes the `--demo` model.

    python -m idefics_eval.canary.train            # writes idefics_eval/canary/weights/

Fixed seed, two CPU threads, a fixed number of steps. Every step is a batch of episodes with the
same number of shots, mixing the kinds of episode of `world.py`; the loss is the answers' tokens
(each shot's answer and its newline, the query's answer and end-of-sequence).

Two phases. The bootstrap phase starts from a structured initialisation (small resampler latents,
two copy heads, one head fitted as the naming game's colour matcher, `init_match_head`) and trains
the layers above the matcher over frozen features; the main phase trains everything on the full
mix, the matcher's features at a tenth of the rate. Progress lines print the loss and, on held-out
naming-game episodes whose shots all show different colours (and recency episodes, where the later
of two names counts), the accuracy of the query's answer with the shots' images and with them
blanked out: the gap between the two is the image-conditioned in-context learning the canary
exists for.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.idefics import image_attention_mask
from ..models import CANARY_DIR
from .model import build_model, build_processor
from .world import CODE, COLORS, SEED, Episode, World, answer_spans, render

# (shots, weight): longer episodes cost more, so they come less often per step but carry more answers.
SHOTS = ((0, 1), (1, 1), (2, 2), (4, 4), (8, 1.5), (16, 0.5))
KINDS = (("words", 3), ("contrast", 2), ("recency", 1), ("colors", 1), ("vqa", 2), ("captioning", 1), ("imagenet", 1))
BOOTSTRAP_KINDS = (("words", 3), ("contrast", 1), ("recency", 1), ("colors", 1))
BOOTSTRAP_SHOTS = ((2, 1), (4, 2), (8, 1))
BOOTSTRAP_STEPS = 400
LOWER_LR = 0.1
PROBE_SHOTS = (2, 4, 8)
GAMES = ("words", "contrast", "recency")  # the naming game's kinds: they need shots


class Batches:
    """Token ids, masks, pixels and labels for batches of episodes, built as the harness builds them."""

    def __init__(self, world: World, processor):
        self.world = world
        self.tokenizer = processor.tokenizer
        out = processor.image_processor(world.images, return_tensors="pt")
        self.pixels = out if isinstance(out, torch.Tensor) else out["pixel_values"]

    def encode(self, episodes: list[Episode]) -> dict[str, torch.Tensor]:
        texts, spans = [], []
        for episode in episodes:
            template = self.world.templates[episode.template]
            prompt = render(template, episode)
            text = prompt.processor_text(self.tokenizer.bos_token) + self.tokenizer.eos_token
            spans.append(answer_spans(template, episode, text) + [(len(text) - len(self.tokenizer.eos_token), len(text))])
            texts.append(text)
        encoded = self.tokenizer(texts, add_special_tokens=False, padding="longest", return_tensors="pt",
                                 return_offsets_mapping=True)
        ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
        learn = torch.zeros_like(ids, dtype=torch.bool)
        for row, row_spans in enumerate(spans):
            starts, ends = offsets[row, :, 0], offsets[row, :, 1]
            real = encoded["attention_mask"][row].bool()
            for start, end in row_spans:
                learn[row] |= real & (ends > start) & (starts < end)
        n_images = 1 + len(episodes[0].shots)
        images = [[ex.image.index for ex in (*e.shots, e.query)] for e in episodes]
        return {
            "input_ids": ids,
            "attention_mask": encoded["attention_mask"],
            "image_attention_mask": image_attention_mask(ids, self.tokenizer, n_images),
            "pixel_values": self.pixels[torch.tensor(images)],
            "learn": learn,
        }


@torch.no_grad()
def init_copy_heads(model, tokenizer, words, layers=(1, 2)) -> None:
    """Start one attention head per layer in `layers` as a copier of `words`: its value and output
    maps together project onto the span of the words' (tied) embeddings, so a word the head attends
    to raises that word's logit. Copying is half of in-context naming and, from a random start, the
    slow half (found late, if at all, in a short run); with it given, the other half (which shot to
    attend to: the one whose image matches) has a gradient from the first step."""
    ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in words]
    basis, _ = torch.linalg.qr(model.get_input_embeddings().weight[ids].T.float())  # hidden x len(words)
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    for layer in layers:
        attention = model.model.layers[layer].self_attn
        rows = slice(0, head_dim)  # head 0
        attention.v_proj.weight[rows] = 0
        attention.v_proj.weight[: len(words)] = basis.T
        attention.o_proj.weight[:, rows] = 0
        attention.o_proj.weight[:, : len(words)] = basis * 4


LATENT_SCALE = 0.02


@torch.no_grad()
def shrink_resampler_latents(model, factor: float = LATENT_SCALE) -> None:
    """The perceiver resampler's learnt latents start as unit normals (norm ~8 in 64 dimensions)
    while its attention and MLP start at 0.02: its output, what the text cross-attends to, is then
    nearly the same for every image (measured: the image-dependent part of the text stream's hidden
    state is 1e-4 of its mean square, 2e-2 with the latents shrunk by 0.02). Small latents make the
    resampled tokens carry the image from the first step."""
    model.model.perceiver_resampler.latents.mul_(factor)


def _hidden_before(model, batch: dict, layer: int) -> torch.Tensor:
    """The (normalised) hidden states that `layer`'s self-attention reads, for a batch."""
    captured = {}

    def keep(module, args, kwargs) -> None:
        captured["h"] = kwargs["hidden_states"]

    hook = model.model.layers[layer].self_attn.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        model(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_attention_mask")})
    finally:
        hook.remove()
    return captured["h"]


def _ridge(x: torch.Tensor, targets: torch.Tensor, ridge: float) -> torch.Tensor:
    """Least squares with an L2 penalty: (features x outputs)."""
    return torch.linalg.solve(x.T @ x + ridge * len(x) * torch.eye(x.shape[1]), x.T @ targets)


@torch.no_grad()
def init_match_head(model, batches: Batches, world: World, tokenizer, words=CODE, layer: int = 1,
                    scale: float = 8.0, word_bias: float = 12.0, episodes: int = 256, ridge: float = 1e-2) -> dict:
    """Start head 0 of `layer` (a copier, `init_copy_heads`) as the naming game's matcher: from the
    query's "Answer:" it attends to the shot's word whose image has the query's colour.

    Fitted by least squares on the untrained model's own hidden states over contrast episodes: the
    query and key maps read the colour of the image each position cross-attends to (a centred
    one-hot code, in the head's four lowest rotary frequencies, which barely turn over a prompt's
    length), and one more key dimension reads "this token is a naming word" (so the head looks at
    the words, not at every token of the matching shot). The features feeding `layer` are then
    frozen for the bootstrap phase (`frozen_below`), so that the fit stays true while the layers
    above learn to use it. Returns the fits' accuracies (training set) for the record."""
    config = model.config
    head_dim = config.hidden_size // config.num_attention_heads
    half = head_dim // 2
    colour_rows = [half - 4 + i for i in range(4)] + [head_dim - 4 + i for i in range(4)]
    bias_row = half - 5
    rng, world.rng = world.rng, random.Random(f"{SEED}:match-init")
    try:
        sample = [world.contrast_episode(3) for _ in range(episodes)]
    finally:
        world.rng = rng
    batch = batches.encode(sample)
    hidden = _hidden_before(model, batch, layer)
    word_ids = torch.tensor([tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in words])
    color_index = {c: i for i, c in enumerate(COLORS)}
    colour_of = dict(world.singles)
    queries, query_colours, keys, key_colours, positions, is_word = [], [], [], [], [], []
    for row, episode in enumerate(sample):
        ids = batch["input_ids"][row]
        at = int(batch["learn"][row].nonzero().flatten()[-2]) - 1  # the token that predicts the answer
        queries.append(hidden[row, at])
        query_colours.append(color_index[colour_of[episode.query.image.index]])
        word = torch.isin(ids[:at], word_ids)
        positions.append(hidden[row, :at])
        is_word.append(word.float())
        for position, shot in zip(word.nonzero().flatten(), episode.shots):
            keys.append(hidden[row, position])
            key_colours.append(color_index[colour_of[shot.image.index]])

    def colour_map(x: list[torch.Tensor], colours: list[int]) -> tuple[torch.Tensor, float]:
        x, y = torch.stack(x), torch.tensor(colours)
        target = F.one_hot(y, len(COLORS)).float()
        target -= target.mean(0)
        mean = x.mean(0) / x.mean(0).norm()
        centring = torch.eye(x.shape[1]) - torch.outer(mean, mean)  # the mean lies along `mean`: drop it
        weights = _ridge(x @ centring, target, ridge).T @ centring
        return weights, float(((x @ weights.T).argmax(1) == y).float().mean())

    query_map, query_fit = colour_map(queries, query_colours)
    key_map, key_fit = colour_map(keys, key_colours)
    x = torch.cat(positions)
    word_map = _ridge(torch.cat([x, torch.ones(len(x), 1)], 1), torch.cat(is_word), ridge)[:-1]
    mean_query = torch.stack(queries).mean(0)
    attention = model.model.layers[layer].self_attn
    rows = slice(0, head_dim)
    attention.q_proj.weight[rows] = 0
    attention.k_proj.weight[rows] = 0
    attention.q_proj.weight[colour_rows] = scale * query_map
    attention.k_proj.weight[colour_rows] = scale * key_map
    gain = (word_bias * head_dim ** 0.5) ** 0.5  # q.k / sqrt(head_dim) = word_bias on a naming word
    attention.q_proj.weight[bias_row] = gain * mean_query / (mean_query @ mean_query)
    attention.k_proj.weight[bias_row] = gain * word_map
    return {"query_colour_fit": round(query_fit, 3), "key_colour_fit": round(key_fit, 3)}


def frozen_below(model, layer: int = 1) -> list[torch.nn.Parameter]:
    """Everything that computes what `layer`'s self-attention reads (the vision tower, the
    resampler, the embeddings, the cross-attention and decoder layers below it, its own input norm):
    the parameters the bootstrap phase keeps fixed so that `init_match_head`'s fit stays valid."""
    inner = model.model
    modules = [inner.vision_model, inner.perceiver_resampler, inner.embed_tokens, inner.layers[layer].input_layernorm,
               *inner.gated_cross_attn_layers[: layer + 1], *inner.layers[:layer]]
    return [p for module in modules for p in module.parameters()]


def loss_of(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                pixel_values=batch["pixel_values"], image_attention_mask=batch["image_attention_mask"])
    logits = out.logits[:, :-1]
    targets = batch["input_ids"][:, 1:].masked_fill(~batch["learn"][:, 1:], -100)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100)


@torch.no_grad()
def words_accuracy(model, batches: Batches, episodes: list[Episode], blank_shots: bool = False) -> float:
    """Share of naming-game queries whose answer token is the argmax after "Answer:"."""
    batch = batches.encode(episodes)
    if blank_shots:  # the shots' text no longer sees any image: only the query's image is left
        batch["image_attention_mask"][:, :, :-1] = 0
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                pixel_values=batch["pixel_values"], image_attention_mask=batch["image_attention_mask"])
    learn = batch["learn"]
    correct = 0
    for row in range(len(episodes)):
        positions = learn[row].nonzero().flatten()
        answer_at = positions[-2]  # the query's answer token (the last learnt token is </s>)
        correct += int(out.logits[row, answer_at - 1].argmax() == batch["input_ids"][row, answer_at])
    return correct / len(episodes)


def parse_mix(text: str, cast) -> tuple:
    """"words:5,vqa:3" -> (("words", 5.0), ("vqa", 3.0))"""
    return tuple((cast(name), float(weight)) for name, weight in (part.split(":") for part in text.split(",")))


def train(out: Path, steps: int, batch_size: int, lr: float, seed: int, log_every: int,
          shots_mix=SHOTS, kinds_mix=KINDS, heads: int = 4, copy_init: bool = True, match_init: bool = True,
          bootstrap: int = BOOTSTRAP_STEPS, bootstrap_lr: float = 1e-3, lower_lr: float = LOWER_LR,
          words_colors=(2, 4), init: Path | None = None, threads: int = 2) -> dict:
    """`bootstrap` steps of the naming game (with colour questions) over the frozen features that
    `init_match_head` was fitted on, then `steps` of the full mix with everything learning (the
    frozen part at `lower_lr` times the rate, so the features the matcher reads drift slowly). Each
    phase has a fresh AdamW whose learning rate warms up and anneals (cosine, to a tenth); between
    them the weights are rounded to float16, as the shipped checkpoint stores them."""
    started = time.time()
    torch.set_num_threads(threads)
    world = World(seed)
    world.colors = words_colors
    processor = build_processor()
    batches = Batches(world, processor)
    torch.manual_seed(seed)
    model = build_model(seed, heads)
    fits: dict = {}
    if init is not None:  # continue from an earlier canary checkpoint
        from safetensors.torch import load_file

        model.load_state_dict({k: v.float() for k, v in load_file(init / "model.safetensors").items()}, strict=False)
    else:
        shrink_resampler_latents(model)
        if copy_init:
            init_copy_heads(model, processor.tokenizer, CODE)
        if match_init:
            model.eval()
            fits = init_match_head(model, batches, world, processor.tokenizer)
    held_out = copy.copy(world)  # the same images, episodes from a seed training never draws from
    held_out.rng = random.Random(f"{seed}:held-out")
    probe = {f"contrast_{shots}shot": [held_out.contrast_episode(shots) for _ in range(64)] for shots in PROBE_SHOTS}
    probe["recency_4shot"] = [held_out.recency_episode(4) for _ in range(64)]
    print(f"world: {len(world.images)} images rendered in {time.time() - started:.0f} s; "
          f"model: {sum(p.numel() for p in model.parameters()):,} parameters; matcher fit {fits}", flush=True)
    history: list[dict] = []
    frozen = {id(p) for p in frozen_below(model)} if match_init and init is None else set()
    # The main phase lets the matcher's features drift slowly, except the (tied) embeddings: they are
    # also the output layer, which every task needs to learn at the full rate.
    slow = frozen - {id(p) for p in model.get_input_embeddings().parameters()}
    phases = [("bootstrap", bootstrap, bootstrap_lr, BOOTSTRAP_SHOTS, BOOTSTRAP_KINDS, frozen, 0.0),
              ("main", steps, lr, shots_mix, kinds_mix, slow, lower_lr)]
    for name, phase_steps, phase_lr, phase_shots, phase_kinds, lower, lower_factor in phases:
        if not phase_steps:
            continue
        world.rng = random.Random(f"{seed}:{name}")
        if history:  # after the first phase
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.copy_(parameter.half().float())
        model.train()
        upper = [p for p in model.parameters() if id(p) not in lower]
        groups = [{"params": upper, "lr": phase_lr}]
        if lower and lower_factor:
            groups.append({"params": [p for p in model.parameters() if id(p) in lower], "lr": phase_lr * lower_factor})
        for parameter in model.parameters():
            parameter.requires_grad_(id(parameter) not in lower or bool(lower_factor))
        optimizer = torch.optim.AdamW(groups, weight_decay=0.01, betas=(0.9, 0.98))
        run_phase(name, model, optimizer, world, batches, probe, phase_steps, batch_size, phase_shots, phase_kinds,
                  log_every, history)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    model.eval()
    save(model, processor, out, {"steps": steps, "bootstrap_steps": bootstrap, "batch_size": batch_size, "lr": lr,
                                 "bootstrap_lr": bootstrap_lr, "lower_lr": lower_lr, "seed": seed,
                                 "copy_init": copy_init, "match_init": match_init, "matcher_fit": fits,
                                 "threads": threads, "shots": shots_mix, "kinds": kinds_mix,
                                 "bootstrap_shots": BOOTSTRAP_SHOTS, "bootstrap_kinds": BOOTSTRAP_KINDS,
                                 "minutes": round((time.time() - started) / 60, 2), "history": history})
    return history[-1]


def run_phase(name, model, optimizer, world, batches, probe, steps, batch_size, shots_mix, kinds_mix, log_every,
              history) -> None:
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    shot_counts, shot_weights = zip(*shots_mix)
    rng = world.rng
    running, start = None, time.time()
    for step in range(1, steps + 1):
        shots = rng.choices(shot_counts, shot_weights)[0]
        allowed = [(k, w) for k, w in kinds_mix if shots or k not in GAMES]  # the game needs a shot
        episodes = [world.episode(rng.choices(*zip(*allowed))[0], shots) for _ in range(batch_size)]
        loss = loss_of(model, batches.encode(episodes))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        schedule.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % log_every == 0 or step == steps:
            model.eval()
            scores = {name: (words_accuracy(model, batches, episodes), words_accuracy(model, batches, episodes, True))
                      for name, episodes in probe.items()}
            model.train()
            elapsed = time.time() - start
            rate = step / elapsed
            history.append({"phase": name, "step": step, "loss": round(running, 4), "minutes": round(elapsed / 60, 2),
                            **{k: v[0] for k, v in scores.items()}, **{f"{k}_blank": v[1] for k, v in scores.items()}})
            shown = ", ".join(f"{k.replace('_', ' ')} {v[0]:.2f} (blanked {v[1]:.2f})" for k, v in scores.items())
            print(f"{name} step {step}/{steps} loss {running:.3f}; naming game: {shown}; "
                  f"{rate:.1f} steps/s, ETA {(steps - step) / rate / 60:.1f} min", flush=True)


def save(model, processor, out: Path, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out)
    processor.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CANARY_DIR)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--bootstrap-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--shots-mix", default=",".join(f"{k}:{w}" for k, w in SHOTS))
    parser.add_argument("--kinds-mix", default=",".join(f"{k}:{w}" for k, w in KINDS))
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--no-copy-init", action="store_true", help="Start every attention head at random.")
    parser.add_argument("--no-match-init", action="store_true",
                        help="No fitted matcher head and nothing frozen in the bootstrap phase.")
    parser.add_argument("--lower-lr", type=float, default=LOWER_LR,
                        help="Main phase: learning-rate factor for the features the matcher reads (0 keeps them frozen).")
    parser.add_argument("--init", type=Path, help="Start from this canary checkpoint instead of random weights.")
    parser.add_argument("--words-colors", default="2,4", help="Fewest and most colours in a naming-game episode.")
    parser.add_argument("--bootstrap-steps", type=int, default=BOOTSTRAP_STEPS,
                        help="Steps of the naming game and colour questions before the full mix.")
    args = parser.parse_args(argv)
    train(args.out, args.steps, args.batch_size, args.lr, args.seed, args.log_every,
          shots_mix=parse_mix(args.shots_mix, int), kinds_mix=parse_mix(args.kinds_mix, str), heads=args.heads,
          copy_init=not args.no_copy_init, match_init=not args.no_match_init, bootstrap=args.bootstrap_steps,
          bootstrap_lr=args.bootstrap_lr, lower_lr=args.lower_lr,
          words_colors=tuple(int(n) for n in args.words_colors.split(",")), init=args.init, threads=args.threads)


if __name__ == "__main__":
    main()
