"""Self-attention of a packed trie pass (`ranking.Ranker`) over the keys each node sees, not the whole pass.

A packed pass runs a trie's nodes as one sequence on the shared prefix's key/value cache, and its
4-d mask lets each node see the prefix and its own ancestors (itself included: a path of a dozen
nodes at most) out of the pass's hundreds. Through that mask, attention costs nodes x (prefix +
nodes), most of it thrown away. `TrieAttention` cuts the pass into blocks of consecutive nodes
(`TrieBlocks`): a block's nodes see the prefix, a few nodes before the block (its first node's
ancestors) and nodes of the block, so one sdpa call over the blocks, each with those keys and the
pass's mask cut to them, computes the same softmax over the same kept keys: equal up to float32
rounding (tested: `tests/test_trie_attention.py`), at nodes x (prefix + ancestors + block) cost.

It is registered in transformers' `AttentionInterface` and switched on, for the duration of a
pass, in place of "sdpa" in the model's configs (`TrieAttention.running`). Only a call handed the
very mask tensor of the pass takes it (the self-attention layers of every family here, which
receive a 4-d mask as given: tested); every other call (cross-attention to images, a model that
copies the mask) goes to sdpa with its own arguments, so a family that does not fit is slower,
never wrong.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

NAME = "idefics_eval_trie"


BLOCK = 64  # trie nodes per block of queries: fewer pay more for sdpa's per-block overhead (measured on CPU)
# The blocks take the pass only where they cut the keys a node attends to (prefix + nodes) to a third
# or less: each block copies the prefix's keys, and on CPU a prefix as long as the pass made them slower
# (prefix 320, 512 nodes: 5.7 ms a layer against 3.7 for the masked pass; prefix 60: 1.5 against 2.9).
SAVING = 3


@dataclass
class TrieBlocks:
    """A pass's nodes in blocks of `BLOCK` consecutive ones, and the keys each block needs besides the
    prefix's: `keys` (blocks, earlier + BLOCK), the nodes before the block that some node of it sees
    (padded), then the block's own; `visible` (blocks, BLOCK, earlier + BLOCK), which of them each
    node of the block sees (the pass's mask, cut to them). The plan numbers the nodes depth first
    (a subtree is a run of numbers), so the nodes before a block that it sees are its first node's
    ancestors: a dozen at most."""

    keys: torch.Tensor
    visible: torch.Tensor

    @classmethod
    def of(cls, visible: torch.Tensor) -> TrieBlocks:
        """From the pass's (nodes, nodes) mask: row n sees n and its ancestors."""
        nodes = visible.shape[0]
        inside = torch.arange(0, nodes, BLOCK)[:, None] + torch.arange(BLOCK)  # (blocks, BLOCK), past the end too
        queries = inside.clamp(max=nodes - 1)  # the last block's padding repeats the last node; dropped
        outside = visible[queries].any(dim=1)  # (blocks, nodes): seen by some node of the block ...
        outside[torch.arange(len(inside))[:, None], queries] = False  # ... from before it
        width = max(1, int(outside.sum(1).max()))
        ancestors = torch.sort(torch.where(outside, torch.arange(nodes), nodes), dim=1).values[:, :width]
        keys = torch.cat([ancestors, inside], dim=1)
        real = keys < nodes  # padding: past the last node (seen by none)
        keys = keys.where(real, 0)
        return cls(keys, visible[queries[:, :, None], keys[:, None, :]] & real[:, None, :])


class TrieAttention:
    """One pass's trie: `mask` (1, 1, nodes, prefix + nodes), the tensor handed to the model, and its
    `blocks` (`TrieBlocks`)."""

    active: TrieAttention | None = None  # the pass now running (passes do not nest)

    def __init__(self, mask: torch.Tensor, blocks: TrieBlocks):
        self.mask = mask
        nodes, device = mask.shape[-2], mask.device
        prefix = mask.shape[-1] - nodes
        count, width = blocks.keys.shape
        self.pays = SAVING * (prefix + width) <= prefix + nodes
        keys = blocks.keys.to(device)
        self.key_index = torch.cat([torch.arange(prefix, device=device).expand(count, prefix), prefix + keys], 1).flatten()
        self.block_mask = torch.zeros((count, 1, BLOCK, prefix + width), dtype=mask.dtype, device=device)
        self.block_mask[..., prefix:].masked_fill_(~blocks.visible.to(device)[:, None], torch.finfo(mask.dtype).min)

    @contextmanager
    def running(self, model: torch.nn.Module):
        """This pass's attention in place of sdpa in every config of `model` that uses sdpa (where it `pays`)."""
        if not self.pays:
            yield
            return
        configs = {id(m.config): m.config for m in model.modules() if getattr(m, "config", None) is not None}
        switched = [c for c in configs.values() if getattr(c, "_attn_implementation_internal", None) == "sdpa"]
        for config in switched:
            config._attn_implementation_internal = NAME  # this config only: the setter recurses into sub-configs
        TrieAttention.active = self
        try:
            yield
        finally:
            TrieAttention.active = None
            for config in switched:
                config._attn_implementation_internal = "sdpa"

    def attend(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float | None) -> torch.Tensor:
        """Attention of the nodes' queries (1, heads, nodes, dim) over the keys and values (1, kv heads,
        prefix + nodes, dim) that the mask lets them see: one sdpa call over the blocks, each block's
        queries on the prefix's keys and its own (`TrieBlocks`). (1, nodes, heads, dim), as sdpa's
        caller expects."""
        _, heads, nodes, dim = query.shape
        count, _, _, width = self.block_mask.shape
        queries = torch.nn.functional.pad(query[0], (0, 0, 0, count * BLOCK - nodes)).view(heads, count, BLOCK, dim)
        keys, values = (t[0].index_select(1, self.key_index).view(t.shape[1], count, width, -1) for t in (key, value))
        if keys.shape[0] != heads:  # grouped-query attention: each key head serves a group of query heads
            keys, values = (t.repeat_interleave(heads // t.shape[0], dim=0) for t in (keys, values))
        out = torch.nn.functional.scaled_dot_product_attention(
            queries.transpose(0, 1), keys.transpose(0, 1), values.transpose(0, 1), attn_mask=self.block_mask, scale=scaling)
        return out.transpose(0, 1).reshape(heads, count * BLOCK, -1)[:, :nodes].transpose(0, 1)[None].contiguous()


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """The registered function: the active pass's own self-attention calls take `TrieAttention.attend`."""
    trie = TrieAttention.active
    if trie is None or attention_mask is not trie.mask or dropout or kwargs.get("softcap") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    return trie.attend(query, key, value, scaling), None


AttentionInterface.register(NAME, _attention)
