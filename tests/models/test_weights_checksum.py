"""`models.weights_checksum`: exact over every weight, the same wherever and however it is computed."""

from __future__ import annotations

import pytest
import torch

from idefics_eval.models import CANARY_DIR, _mixed_sum, load_model, weights_checksum

U64 = (1 << 64) - 1
GOLDEN, MIX1, MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def mixed_sum_in_python(data: bytes) -> int:
    """The docstring's definition, word by word in Python integers: the plain path of `_mixed_sum`."""
    def mix(x: int) -> int:
        x ^= x >> 30
        x = x * MIX1 & U64
        x ^= x >> 27
        x = x * MIX2 & U64
        return x ^ (x >> 31)

    whole = len(data) // 8
    words = [int.from_bytes(data[8 * i: 8 * i + 8], "little") for i in range(whole)] + list(data[8 * whole:])
    return sum(mix((word + i * GOLDEN) & U64) for i, word in enumerate(words)) & U64


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("chunk", [1, 3, 64, 1 << 16])
def test_the_kernels_compute_the_definition(dtype, chunk):
    values = torch.randn(203, generator=torch.Generator().manual_seed(0)).to(dtype)  # bfloat16: 406 bytes, a partial last word
    data = values.view(torch.uint8)
    positions = torch.arange(chunk, dtype=torch.int64).mul_(GOLDEN - (1 << 64))
    assert _mixed_sum(data, positions) == mixed_sum_in_python(bytes(data.numpy()))


def test_equal_for_the_same_weights_loaded_twice():
    first = load_model(str(CANARY_DIR), device="cpu", progress=False)
    second = load_model(str(CANARY_DIR), device="cpu", progress=False)
    assert first.model is not second.model
    assert weights_checksum(first.model) == weights_checksum(second.model) == first.weights_checksum


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_any_single_value_changed_changes_it(dtype):
    """Every value of a layer, one at a time, by the smallest step its dtype has, and by a sign flip."""
    layer = torch.nn.Linear(5, 7).to(dtype)  # bfloat16: 70 bytes of weight, a partial last word
    before = weights_checksum(layer)
    seen = {before}
    with torch.no_grad():
        for tensor in (layer.weight, layer.bias):
            flat = tensor.view(-1)
            for i in range(flat.numel()):
                value = flat[i].clone()
                for changed in (torch.nextafter(value, value + 1), -value):
                    flat[i] = changed
                    seen.add(weights_checksum(layer))
                flat[i] = value
    assert weights_checksum(layer) == before
    assert len(seen) == 1 + 2 * (7 * 5 + 7)


def test_the_same_on_cpu_whatever_the_thread_count_or_chunk():
    model = load_model(str(CANARY_DIR), device="cpu", progress=False).model
    threads = torch.get_num_threads()
    try:
        found = set()
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            found |= {weights_checksum(model), weights_checksum(model, words_per_pass=1 << 20)}
            assert torch.get_num_threads() == count  # the caller's setting, as it was
    finally:
        torch.set_num_threads(threads)
    assert found == {weights_checksum(model, words_per_pass=4099)}
