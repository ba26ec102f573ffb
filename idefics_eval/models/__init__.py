"""Models: load a checkpoint (hub name, local folder, or the embedded demo) of a supported family,
its adapter (`base.ModelAdapter`, one module per family: `idefics.py`, ...) and the image encoders
that shot retrieval uses. This is the one place that decides devices and dtypes; the family comes
from the checkpoint's `config.model_type` (`ADAPTERS`).
"""

from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, PretrainedConfig

from ..errors import UserError
from .base import ModelAdapter

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# config.model_type -> (module of this package, its adapter class): a family's module, and with it
# its transformers classes, is imported only when a checkpoint of that family is used.
ADAPTERS = {
    "idefics": ("idefics", "IdeficsAdapter"),
    "idefics2": ("idefics2", "Idefics2Adapter"),
    "idefics3": ("idefics3", "Idefics3Adapter"),
    "smolvlm": ("idefics3", "SmolVLMAdapter"),
    "mllama": ("mllama", "MllamaAdapter"),
    "llava_onevision": ("llava_onevision", "LlavaOnevisionAdapter"),
}
# The config.model_type values that `load_model` evaluates.
SUPPORTED_FAMILIES = tuple(ADAPTERS)


def adapter_class(family: str, name: str) -> type[ModelAdapter]:
    """The adapter of `family` (a config.model_type); a UserError naming the supported ones if none."""
    check_family({"model_type": family}, name)
    module, cls = ADAPTERS[family]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


@dataclass
class LoadedModel:
    """A loaded model and what identifies it; `adapter` is what the engine, the ranker, the image
    cache and RICES talk to."""

    model: torch.nn.Module
    processor: object
    name: str  # what the user asked for: hub id, folder, or the demo name
    fingerprint: str  # changes whenever the weights do
    device: torch.device
    dtype: torch.dtype

    @cached_property
    def adapter(self) -> ModelAdapter:
        family = adapter_class(self.model.config.model_type, self.name)
        return family(self.processor, self.model.config, self.model, self.device, self.dtype)

    @property
    def max_length(self) -> int:
        return self.adapter.max_length

    @cached_property
    def weights_checksum(self) -> str:
        """`weights_checksum` of the model: a run's identity records it beside the sampled
        fingerprint, which an update in place can leave unchanged."""
        return weights_checksum(self.model)

    @cached_property
    def processor_digest(self) -> str:
        """`processor_digest` of the processor, once per loaded model (when a run's identity is first
        made): a run's identity records it beside the weights' fingerprint."""
        return processor_digest(self.processor)


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is visible; use --device cpu")
    return resolved


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)} or auto")
    return DTYPES[dtype]


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A cheap hash of the weights: every tensor's name and shape, and a strided sample of its values.

    Hashing every byte of an 80B model would take minutes; a sample of each tensor tells any two
    real checkpoints (or two random seeds) apart.
    """
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().flatten()
        step = max(1, flat.numel() // 256)
        sample = flat[::step][:256].to("cpu", torch.float32).numpy()
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        digest.update(np.ascontiguousarray(sample).tobytes())
    return digest.hexdigest()[:16]


# The constants of `weights_checksum`: the golden-ratio increment and the two multipliers of
# splitmix64's finaliser (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
# OOPSLA 2014), written as the signed int64 values torch multiplies with.
_GOLDEN, _MIX1, _MIX2 = (value - (1 << 64) for value in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))
_U64 = (1 << 64) - 1


def weights_checksum(model: torch.nn.Module, words_per_pass: int | None = None) -> str:
    """An exact checksum of every weight, computed where the weights are (a GPU model is not copied
    to the host): what tells a run folder's model from one updated in place (`store.Manifest`).

    Each tensor's bytes are read as little-endian 64-bit words w_0, w_1, ... (a last partial word
    byte by byte); word i becomes m(w_i + i * G mod 2^64), where m is splitmix64's finaliser (three
    xor-shifts and two odd multiplications, each a bijection of 64-bit integers) and G the golden
    ratio increment; the terms are summed mod 2^64. The tensor's sum, name, shape and dtype then go
    through SHA-256. Integer addition mod 2^64 does not depend on the order of its terms, so the
    value is the same on any device, thread count or `words_per_pass` (the chunk each pass of
    elementwise kernels covers: cache-sized on CPU, where it runs on one thread, large on a GPU;
    a test's knob otherwise).

    Collisions: a change of any one value (of any bytes within one word) always changes the
    checksum, since m is a bijection at a fixed position; so does a tensor renamed, reshaped or
    recast. Any other change collides about once in 2^64 for changes unrelated to the function (a
    training step, a re-save), but this is no cryptographic hash: changes can be built to collide
    (SHA-256 of the bytes would not be, at the price of a copy to the host). Cost (docs/architecture.md): on
    CPU about SHA-256's, 1 GB a second; on a GPU about 25 memory passes over the weights.
    """
    digest = hashlib.sha256()
    positions: dict[tuple[torch.device, int], torch.Tensor] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CPU kernels on cache-sized chunks: parallel ones lost 2-8x to contention here
    try:
        for name, tensor in model.state_dict().items():
            step = words_per_pass or (1 << 17 if tensor.device.type == "cpu" else 1 << 24)
            if (tensor.device, step) not in positions:
                positions[tensor.device, step] = torch.arange(step, dtype=torch.int64, device=tensor.device).mul_(_GOLDEN)
            total = _mixed_sum(tensor.detach().contiguous().reshape(-1).view(torch.uint8), positions[tensor.device, step])
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}:{total:016x}".encode())
    finally:
        torch.set_num_threads(threads)
    return digest.hexdigest()[:16]


def _mixed_sum(data: torch.Tensor, positions: torch.Tensor) -> int:
    """Sum over the 64-bit words w_i of `data` (bytes; a last partial word byte by byte) of
    m(w_i + i * G) mod 2^64, on `data`'s device; `positions` holds j * G for one chunk of words."""
    if data.storage_offset() % 8:
        data = data.clone()  # a view into a larger tensor's storage, not aligned to whole words
    whole = data.numel() // 8
    total = _mix_words(data[: whole * 8].view(torch.int64), 0, positions)
    return (total + _mix_words(data[whole * 8:].to(torch.int64), whole, positions)) & _U64


def _mix_words(words: torch.Tensor, first: int, positions: torch.Tensor) -> int:
    """Sum of m(words[k] + (first + k) * G) mod 2^64, `len(positions)` words per pass of kernels."""
    step = positions.numel()
    mixed = torch.empty(min(step, words.numel()), dtype=torch.int64, device=words.device)
    shifted = torch.empty_like(mixed)
    total = torch.zeros((), dtype=torch.int64, device=words.device)
    for start in range(0, words.numel(), step):
        x, t = mixed[: min(step, words.numel() - start)], shifted[: min(step, words.numel() - start)]
        torch.add(words[start: start + step], positions[: x.numel()], out=x)
        x.add_(_signed((first + start) * _GOLDEN))
        for shift, multiplier in ((30, _MIX1), (27, _MIX2), (31, None)):
            torch.bitwise_right_shift(x, shift, out=t)
            x.bitwise_xor_(t.bitwise_and_((1 << (64 - shift)) - 1))  # a logical shift: int64's >> keeps the sign
            if multiplier is not None:
                x.mul_(multiplier)
        total += x.sum()
    return int(total) & _U64


def _signed(value: int) -> int:
    """`value` mod 2^64 as the int64 of the same bits."""
    value &= _U64
    return value - (1 << 64) if value >> 63 else value


# The tokenizer's settings beside its tokenizer.json (tokenizer_config.json's) that change a prompt's
# token ids or a generation's text. Not the padding side: load_model sets it (left).
TOKENIZER_SETTINGS = ("special_tokens_map", "extra_special_tokens", "add_bos_token", "add_eos_token",
                      "split_special_tokens", "clean_up_tokenization_spaces", "model_max_length")


def processor_digest(processor) -> str:
    """A hash of what `processor` makes of a prompt, from its loaded state (not its files' dates or
    paths): the weights do not change when a checkpoint's tokenizer or preprocessor config does,
    and the prompts' token ids and pixels do.

    It covers the tokenizer's model (vocabulary, merges), normaliser, pre-tokeniser, post-processor,
    decoder and added tokens with their flags (a Python tokenizer, which has none of these objects:
    its vocabulary and added tokens), its `TOKENIZER_SETTINGS`, and the configuration of the
    processor and its image processor (`to_dict()`: the image processor's class, image size, mean
    and std, resampling, image splitting, image tokens per image). Left out: the tokenizer's padding
    and truncation, which every call sets, and the chat template (`store.identity_of` records it
    where it is used). Serialising the vocabulary is most of the cost (docs/architecture.md).
    """
    tokenizer = processor.tokenizer
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        for part in (backend.model, backend.normalizer, backend.pre_tokenizer, backend.post_processor, backend.decoder):
            digest.update(b"null\0" if part is None else part.__getstate__() + b"\0")  # each part's JSON, as tokenizer.json holds it
        added = backend.get_added_tokens_decoder()
    else:
        digest.update(_canonical(sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])))
        added = tokenizer.added_tokens_decoder
    tokens = [[index, token.content, token.single_word, token.lstrip, token.rstrip, token.normalized, token.special]
              for index, token in sorted(added.items())]
    settings = {name: getattr(tokenizer, name, None) for name in TOKENIZER_SETTINGS}
    digest.update(_canonical({"added_tokens": tokens, "tokenizer": settings, "processor": processor.to_dict()}))
    return digest.hexdigest()[:16]


def _canonical(value) -> bytes:
    """`value` as JSON with sorted keys: the same bytes in every process (a value JSON has no type for, an
    enum say, as its text)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()


def local_folder(name: str) -> Path | None:
    """The folder a --model value names, or None for a hub id ("org/name" or "name")."""
    path = Path(name).expanduser()
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/"):
        return path
    return None


def check_checkpoint(name: str, families: tuple[str, ...] = SUPPORTED_FAMILIES) -> str | None:
    """Fail fast, before any loading, on a local checkpoint folder that cannot hold a model of `families`;
    its family (config.model_type), or None for a hub id.

    A config of another architecture must be refused here: the model class would read it as a
    default-sized IDEFICS and allocate billions of parameters before failing (killed for memory).
    """
    path = local_folder(name)
    if path is None:
        return None
    if not path.is_dir():
        raise UserError(f"model folder not found: {name}; give a local checkpoint folder or a hub name")
    if not (path / "config.json").is_file():
        raise UserError(f"{name} holds no model (no config.json); point --model at a checkpoint folder")
    family = check_family(read_checkpoint_config(path / "config.json"), name, families)
    for weights in sorted(path.glob("*.safetensors")):
        check_safetensors(weights)
    return family


def check_safetensors(path: Path) -> None:
    """A safetensors file whose header does not parse or does not cover the file's bytes (an
    interrupted download) is found here: opening reads only the header, not the tensors."""
    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as error:
        raise UserError(f"{path} is corrupt or truncated ({error}); re-download it") from None


def read_checkpoint_config(path: Path) -> dict:
    """A checkpoint's config.json as a dict, or one line saying why it is not one."""
    fix = "restore the checkpoint's config.json"
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror}; {fix}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; {fix}") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON ({error}); {fix}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a model config (expected a JSON object); {fix}")
    return data


def hub_family(name: str) -> str:
    """The family of hub checkpoint `name`, from its config fetched alone (before any weights), checked
    as a folder's is."""
    return check_family(PretrainedConfig.get_config_dict(name)[0], name)


def check_family(config: dict, name: str, families: tuple[str, ...] = SUPPORTED_FAMILIES) -> str:
    family = config.get("model_type")
    supported = ", ".join(families)
    if not isinstance(family, str) or not family:
        raise UserError(f"{name}: config.json has no model_type, so its architecture is unknown; supported: {supported}")
    if family not in families:
        raise UserError(f"{name}: config.model_type {family!r} is not a supported family; supported: {supported}")
    return family


def check_processor(model: torch.nn.Module, processor, name: str) -> None:
    """A UserError when `processor` is not one of `model`'s family (the API's in-memory model)."""
    adapter_class(getattr(model.config, "model_type", None), name).check_processor(processor, name)


CANARY_NAME = "idefics-eval/canary"
CANARY_DIR = Path(__file__).resolve().parent.parent / "canary" / "weights"


def demo_model_name(demo_seed: int | None) -> str:
    """What `--demo` loads: the trained canary (a checkpoint folder shipped in the package, loaded
    like any other), or with a seed the random tiny model."""
    return "demo" if demo_seed is not None else str(CANARY_DIR)


def load_model(
    name: str,
    *,
    device: str | None = None,
    dtype: str | None = None,
    demo_seed: int | None = None,
    device_map: str | None = None,
    allow_pickle: bool = False,
    progress: bool = True,
) -> LoadedModel:
    """Load a checkpoint of a supported family (its adapter's `load`) and its processor; `demo_seed`
    builds the embedded tiny IDEFICS.

    `device_map` ("auto", "balanced", ...) lets accelerate split a model too large for one GPU over
    all visible GPUs (and CPU memory); inputs then go to the device of the first layers.
    Only safetensors weights load unless `allow_pickle` (a .bin file is a pickle that can run code),
    and remote code is never trusted: every family is part of transformers. `progress=False` (--no-progress)
    keeps the libraries' bars and warnings off stderr while the weights load.
    """
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    if device_map is not None and demo_seed is not None:
        raise UserError("--device-map applies to checkpoints loaded with --model; write the demo with demo-model first")
    if demo_seed is not None:
        from ..demo.model import build_model, build_processor

        model, processor = build_model(demo_seed), build_processor()
        name = model.config.name_or_path
        family = adapter_class(model.config.model_type, name)
    else:
        local = check_checkpoint(name)
        folder = Path(name).expanduser()
        if not allow_pickle and folder.is_dir() and not any(folder.glob("*.safetensors")) and any(folder.glob("*.bin")):
            raise UserError(f"{name} holds pickle (.bin) weights only; convert them to safetensors, or pass --allow-pickle-weights if you trust the file")
        try:
            family = adapter_class(local or hub_family(name), name)
            model, processor = family.load(name, dtype=resolved_dtype, device_map=device_map, allow_pickle=allow_pickle,
                                           quiet=not progress or folder.resolve() == CANARY_DIR)  # the canary loads in an instant: no bar
        except SafetensorError as error:  # a hub checkpoint's cached file (local folders are checked above)
            raise UserError(f"a weights file of {name} is corrupt or truncated ({error}); re-download it") from None
        except (OSError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            hint = "" if Path(name).expanduser().is_dir() else " (offline? download the checkpoint and pass its folder)"
            raise UserError(f"cannot load model {name!r}: {first}{hint}") from None
    family.check_processor(processor, name)
    processor.tokenizer.padding_side = "left"
    if device_map is None:
        model = model.to(device=resolved_device, dtype=resolved_dtype)
    else:
        resolved_device = next(model.parameters()).device
    model = model.eval()
    if demo_seed is None and Path(name).expanduser().resolve() == CANARY_DIR:
        name = CANARY_NAME  # the same name wherever the package is installed
    return LoadedModel(model, processor, name, weights_fingerprint(model), resolved_device, resolved_dtype)


@dataclass
class PromptSide:
    """What rendering and measuring prompts needs of a model, without its weights: an adapter built
    on the processor and config alone (`model_requests` reads only its text side, so a dry run loads
    no weights)."""

    adapter: ModelAdapter
    name: str

    @property
    def processor(self):
        return self.adapter.processor

    @property
    def max_length(self) -> int:
        return self.adapter.max_length


def load_prompt_side(name: str, *, demo_seed: int | None = None) -> PromptSide:
    """The processor and config of the checkpoint `load_model` would load, checked as it checks them."""
    if demo_seed is not None:
        from ..demo.model import DEMO_NAME, build_config, build_processor

        processor, config, name = build_processor(), build_config(), f"{DEMO_NAME}-seed{demo_seed}"  # as build_model names it
    else:
        local = check_checkpoint(name)
        try:
            if local is None:
                hub_family(name)
            config = AutoConfig.from_pretrained(name, trust_remote_code=False)
            processor = adapter_class(config.model_type, name).load_processor(name)
        except (OSError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            hint = "" if Path(name).expanduser().is_dir() else " (offline? download the checkpoint and pass its folder)"
            raise UserError(f"cannot load the processor of {name!r}: {first}{hint}") from None
        if Path(name).expanduser().resolve() == CANARY_DIR:
            name = CANARY_NAME
    family = adapter_class(config.model_type, name)
    family.check_processor(processor, name)
    return PromptSide(family(processor, config), name)


class VisionTowerEncoder:
    """RICES embeddings from the evaluated model's own vision tower (the adapter's `vision_embeddings`).

    `name` (recorded with the results) holds the tower's sampled fingerprint; the embeddings cached
    on disk are keyed by its `weights_checksum` too, since a training loop changes the tower in
    place, possibly in none of the values the fingerprint samples."""

    def __init__(self, loaded: LoadedModel):
        self.adapter = loaded.adapter
        self.name = f"{self.adapter.family}-vision:{weights_fingerprint(self.adapter.vision_tower)}"

    @cached_property
    def weights_checksum(self) -> str:
        """Every weight of the tower summed where it is: asked for only when a cache on disk is read or written."""
        return weights_checksum(self.adapter.vision_tower)

    def encode(self, images: list[Image.Image]) -> np.ndarray:
        return self.adapter.vision_embeddings(images)


class ClipEncoder:
    """RICES embeddings from a named CLIP model (hub id or folder): CLIPModel.get_image_features."""

    def __init__(self, name: str, device: torch.device):
        from transformers import AutoImageProcessor, CLIPModel

        check_checkpoint(name, families=("clip",))
        try:
            self.model = CLIPModel.from_pretrained(name).to(device).eval()
            self.image_processor = AutoImageProcessor.from_pretrained(name)
        except (OSError, ValueError) as error:
            raise UserError(f"cannot load CLIP model {name!r}: {str(error).strip().splitlines()[0]} "
                            "Give a local copy with --rices-encoder FOLDER, or --rices-encoder model for the "
                            "evaluated model's vision tower") from None
        self.device = device
        self.name = f"clip:{name}:{weights_fingerprint(self.model.vision_model)}"

    @torch.no_grad()
    def encode(self, images: list[Image.Image]) -> np.ndarray:
        pixels = self.image_processor(images, return_tensors="pt")["pixel_values"].to(self.device)
        features = self.model.get_image_features(pixel_values=pixels)
        features = features if isinstance(features, torch.Tensor) else features.pooler_output
        return features.float().cpu().numpy()
