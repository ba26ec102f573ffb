"""Train the canary from scratch on the synthetic world; the result becomes the `--demo` model.

    python -m idefics_eval.canary.train            # writes idefics_eval/canary/weights/

Fixed seed, two CPU threads, a fixed number of steps (the default takes about 20 minutes on two
cores). Every step is a batch of episodes with the same number of shots (0 to 8), mixing the
four kinds of episode of `world.py`; the loss is the answers' tokens (each shot's answer and its
newline, the query's answer and end-of-sequence). Progress lines print the loss and, on held-out
naming-game episodes, the accuracy of the query's first answer token with the shots' images and
with them blanked out: the gap between the two is the image-conditioned in-context learning the
canary exists for.
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

from ..engine import image_attention_mask
from ..models import CANARY_DIR
from .model import build_model, build_processor
from .world import CODE, SEED, Episode, World, answer_spans, render

# (shots, weight): longer episodes cost more, so they come less often per step but carry more answers.
SHOTS = ((0, 1), (1, 1), (2, 2), (4, 4), (8, 1.5))
KINDS = (("words", 6), ("colors", 1), ("vqa", 2), ("captioning", 1), ("imagenet", 1))
BOOTSTRAP_KINDS = (("words", 3), ("colors", 1))


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
          shots_mix=SHOTS, kinds_mix=KINDS, heads: int = 4, copy_init: bool = True,
          bootstrap: int = 600, bootstrap_lr: float = 1e-3, words_colors=(2, 4), init: Path | None = None,
          threads: int = 2) -> dict:
    """`bootstrap` steps of the naming game alone (4 shots, with colour questions) on one thread, then
    `steps` of the full mix on `threads`, each phase with a fresh AdamW whose learning rate warms up
    and anneals (cosine, to a tenth). Between the phases the weights are rounded to float16, as the
    shipped checkpoint stores them.

    The bootstrap runs on one thread because that makes it deterministic on a given machine (a
    multi-threaded reduction sums in a varying order): whether the shots' images come to matter in
    this short phase is sensitive to such rounding, and this seed is one where they do."""
    started = time.time()
    world = World(seed)
    world.colors = words_colors
    processor = build_processor()
    batches = Batches(world, processor)
    torch.manual_seed(seed)
    model = build_model(seed, heads)
    if init is not None:  # continue from an earlier canary checkpoint
        from safetensors.torch import load_file

        model.load_state_dict({k: v.float() for k, v in load_file(init / "model.safetensors").items()}, strict=False)
    elif copy_init:
        init_copy_heads(model, processor.tokenizer, CODE)
    held_out = copy.copy(world)  # the same images, episodes from a seed training never draws from
    held_out.rng = random.Random(f"{seed}:held-out")
    probe = [held_out.words_episode(4) for _ in range(64)]
    print(f"world: {len(world.images)} images rendered in {time.time() - started:.0f} s; "
          f"model: {sum(p.numel() for p in model.parameters()):,} parameters", flush=True)
    history: list[dict] = []
    phases = [("bootstrap", bootstrap, bootstrap_lr, 1, ((4, 1.0),), BOOTSTRAP_KINDS),
              ("main", steps, lr, threads, shots_mix, kinds_mix)]
    for name, phase_steps, phase_lr, phase_threads, phase_shots, phase_kinds in phases:
        if not phase_steps:
            continue
        torch.set_num_threads(phase_threads)
        world.rng = random.Random(seed)
        if history:  # after the first phase
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.copy_(parameter.half().float())
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=phase_lr, weight_decay=0.01, betas=(0.9, 0.98))
        run_phase(name, model, optimizer, world, batches, probe, phase_steps, batch_size, phase_shots, phase_kinds,
                  log_every, history)
    model.eval()
    save(model, processor, out, {"steps": steps, "bootstrap_steps": bootstrap, "batch_size": batch_size, "lr": lr,
                                 "bootstrap_lr": bootstrap_lr, "seed": seed, "copy_init": copy_init, "threads": threads,
                                 "shots": shots_mix, "kinds": kinds_mix,
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
        allowed = [(k, w) for k, w in kinds_mix if shots or k != "words"]  # the game needs a shot
        episodes = [world.episode(rng.choices(*zip(*allowed))[0], shots) for _ in range(batch_size)]
        loss = loss_of(model, batches.encode(episodes))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % log_every == 0 or step == steps:
            model.eval()
            with_images, blanked = words_accuracy(model, batches, probe), words_accuracy(model, batches, probe, True)
            model.train()
            elapsed = time.time() - start
            rate = step / elapsed
            history.append({"phase": name, "step": step, "loss": round(running, 4), "words_4shot": with_images,
                            "words_4shot_blank": blanked, "minutes": round(elapsed / 60, 2)})
            print(f"{name} step {step}/{steps} loss {running:.3f} naming game 4-shot {with_images:.2f} "
                  f"(shots' images blanked {blanked:.2f}) {rate:.1f} steps/s, ETA {(steps - step) / rate / 60:.1f} min",
                  flush=True)


def save(model, processor, out: Path, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out)
    processor.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(record, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CANARY_DIR)
    parser.add_argument("--steps", type=int, default=1000)
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
    parser.add_argument("--init", type=Path, help="Start from this canary checkpoint instead of random weights.")
    parser.add_argument("--words-colors", default="2,4", help="Fewest and most colours in a naming-game episode.")
    parser.add_argument("--bootstrap-steps", type=int, default=600,
                        help="Steps of the naming game alone (4 shots) before the full mix.")
    args = parser.parse_args(argv)
    train(args.out, args.steps, args.batch_size, args.lr, args.seed, args.log_every,
          parse_mix(args.shots_mix, int), parse_mix(args.kinds_mix, str),
          args.heads, not args.no_copy_init, args.bootstrap_steps, args.bootstrap_lr, tuple(int(n) for n in args.words_colors.split(",")),
          args.init, args.threads)


if __name__ == "__main__":
    main()
