"""IDEFICS's gated cross-attention with the image side computed once per batch, not once per pass.

transformers' `IdeficsAttention` projects the image features to keys and values on every call
(`k_proj(key_value_states)`; the gated layers take `cache=None  # not implemented`), so a decoding
loop pays for projecting every image latent at every step. For IDEFICS-9B at 32 shots that is
33 images x 64 latents, 1280 -> 4096 wide, twice in each of 8 layers: about 350 GFLOPs a row and
step, some twenty times the step's own language-model work.

`image_key_values(model, features, images)` projects them once and, for as long as its `with` block
lasts, hands each layer its tensors instead: the cross-attentions' `k_proj` and `v_proj` are
swapped, on this model instance only, for modules that return the stored projections (checking that
they are asked for the rows they were computed for). Everything after the projection (the heads'
reshaping, the optional key norm, the attention, the gate) is transformers' own code, so the logits
are those of the plain forward pass (tested: tests/test_engine_fast.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


class _Projected(torch.nn.Module):
    """Stands in for a cross-attention's k_proj or v_proj: its output for this batch, computed once."""

    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.output = output

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        if states.shape[:-1] != self.output.shape[:-1]:
            raise RuntimeError(f"image key/values were computed for {tuple(self.output.shape[:-1])}, "
                               f"asked for {tuple(states.shape[:-1])}")
        return self.output


@contextmanager
def image_key_values(model, features: torch.Tensor, images: int) -> Iterator[None]:
    """Within the block, `model`'s gated cross-attention layers use their key and value projections
    of `features` ((rows x images, tokens, dim), the forward pass's perceiver or encoder embeddings),
    computed here once, whatever the forward passes ask for meanwhile; afterwards the layers are as
    before. Forward passes inside must take these rows and `images` images a row."""
    states = features.reshape(-1, images * features.shape[1], features.shape[2])  # as IdeficsModel.forward views them
    swapped = []
    try:
        with torch.no_grad():
            for layer in model.model.gated_cross_attn_layers:
                attention = layer.cross_attn
                originals = (attention.k_proj, attention.v_proj)
                projected = (_Projected(originals[0](states)), _Projected(originals[1](states)))
                swapped.append((attention, originals))
                attention.k_proj, attention.v_proj = projected
        yield
    finally:
        for attention, (k_proj, v_proj) in swapped:
            attention.k_proj, attention.v_proj = k_proj, v_proj
