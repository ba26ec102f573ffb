"""The packed passes' blocked self-attention equals the masked attention it replaces."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import PretrainedConfig

from idefics_eval.ranking import _Plan
from idefics_eval.trie_attention import BLOCK, NAME, TrieAttention, _attention


def trie_passes(budget: int) -> list:
    """The passes of a plan over 400 random remainders of 1 to 9 tokens from 5: deep, shared beginnings."""
    rng = random.Random(0)
    remainders = [[rng.randrange(5) for _ in range(rng.randint(1, 9))] for _ in range(400)]
    return _Plan(remainders, [len(r) for r in remainders], True, budget).passes


def masked(query, key, value, mask):
    """The reference: sdpa over every key under the pass's additive mask, key heads repeated."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    return torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask).transpose(1, 2)


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2)])
@pytest.mark.parametrize("budget", [50, 300])
def test_blocked_attention_equals_the_masked_attention(heads, kv_heads, budget):
    """Passes smaller than a block and of several blocks (the last one partial), plain and grouped-query heads."""
    passes = trie_passes(budget)
    sizes = [len(p.tokens) for p in passes]
    assert any(size % BLOCK for size in sizes) and (budget < BLOCK or max(sizes) > 2 * BLOCK)
    generator = torch.Generator().manual_seed(0)
    for packed in passes:
        nodes, prefix = len(packed.tokens), 7
        assert packed.blocks.keys.shape[1] - BLOCK <= int(packed.depths.max())  # earlier keys: the first node's ancestors
        mask = torch.zeros(nodes, prefix + nodes).masked_fill_(
            ~torch.nn.functional.pad(packed.visible, (prefix, 0), value=True), torch.finfo(torch.float32).min)[None, None]
        query = torch.randn(1, heads, nodes, 16, generator=generator)
        key, value = (torch.randn(1, kv_heads, prefix + nodes, 16, generator=generator) for _ in range(2))
        trie = TrieAttention(mask, packed.blocks)
        assert trie.pays == (nodes >= 2 * prefix + 3 * packed.blocks.keys.shape[1])
        out = trie.attend(query, key, value, None)
        assert out.shape == (1, nodes, heads, 16)
        torch.testing.assert_close(out, masked(query, key, value, mask), atol=1e-5, rtol=1e-5)


def test_other_calls_and_other_masks_go_to_sdpa():
    """Cross-attention (another mask) or no pass running: the registered function is plain sdpa."""
    packed = trie_passes(300)[0]
    nodes = len(packed.tokens)
    mask = torch.zeros(1, 1, nodes, 3 + nodes)
    trie = TrieAttention(mask, packed.blocks)
    module = torch.nn.Module()
    query, key, value = torch.randn(1, 2, nodes, 8), torch.randn(1, 2, 3 + nodes, 8), torch.randn(1, 2, 3 + nodes, 8)
    other = mask.clone()
    expected = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=other).transpose(1, 2)
    config = PretrainedConfig()
    config._attn_implementation_internal = "sdpa"
    module.config = config
    with trie.running(module):
        assert config._attn_implementation == NAME
        assert torch.equal(_attention(module, query, key, value, other)[0], expected)
    assert config._attn_implementation == "sdpa" and TrieAttention.active is None
    assert torch.equal(_attention(module, query, key, value, mask)[0], expected)
