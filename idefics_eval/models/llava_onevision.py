"""LLaVA-OneVision (`llava_onevision`): image features in place of the image's tokens.

The processor expands each `<image>` into one token per visual feature, and the model puts the
projected vision features in those tokens' embeddings. How many depends on the prompt: a prompt
with a single image gets "anyres" features (the whole image, the crops of the grid pinpoint that
fits it best with the padding cut away, a newline feature after each row), a prompt with several
images (any few-shot prompt) gets each whole image only, padded to a square, and one newline
feature. This module writes the text with one `<image>` per image and leaves the rest to the
processor.

transformers (5.x) builds LlavaOnevisionProcessor only with a video processor, and its video
processor needs torchvision, which this harness does not depend on. The harness passes no
videos, so it loads the processor without that part: the same class, image processor and
tokenizer, so the same ids, pixels and image sizes (tested against the processor's own
`__call__`).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, BatchFeature, LlavaOnevisionProcessor

from ..examples import ImageRef
from ..prompts import Prompt

IMAGE_TOKEN = "<image>"
PROCESSOR_CONFIG = "processor_config.json"


class ImageTextProcessor(LlavaOnevisionProcessor):
    """LlavaOnevisionProcessor without its video processor (see the module's docstring)."""

    def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                 vision_feature_select_strategy=None, chat_template=None, image_token=IMAGE_TOKEN,
                 video_token="<video>", vision_aspect_ratio="anyres_max_9"):
        super().__init__(image_processor, tokenizer, None, num_image_tokens, vision_feature_select_strategy,
                         chat_template, image_token, video_token, vision_aspect_ratio)

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """LlavaOnevisionProcessor's files (AutoProcessor loads them where torchvision is installed)."""
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        self.image_processor.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        settings = {name: getattr(self, name) for name in _SETTINGS}
        config = {"processor_class": LlavaOnevisionProcessor.__name__, **settings}
        (path / PROCESSOR_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


_SETTINGS = [name for name in inspect.signature(ImageTextProcessor.__init__).parameters
             if name not in ("self", "image_processor", "tokenizer", "chat_template")]


def load_processor(path: Path) -> ImageTextProcessor:
    """The processor of a checkpoint folder: its image processor, tokenizer and processor settings."""
    config = json.loads((path / PROCESSOR_CONFIG).read_text()) if (path / PROCESSOR_CONFIG).is_file() else {}
    settings = {name: config[name] for name in _SETTINGS if name in config}
    return ImageTextProcessor(AutoImageProcessor.from_pretrained(path), AutoTokenizer.from_pretrained(path), **settings)


def prompt_text(prompt: Prompt, bos_token: str | None) -> str:
    """The prompt as the processor reads it: `bos_token` (Qwen2's tokenizers have none), then the
    text items as written and one `<image>` per image (the processor expands each)."""
    return (bos_token or "") + "".join(item if isinstance(item, str) else IMAGE_TOKEN for item in prompt.items)


def processor_inputs(
    processor: LlavaOnevisionProcessor, prompts: Sequence[Prompt], load: Callable[[ImageRef], Image.Image],
    bos_token: str | None,
) -> BatchFeature:
    """input_ids, attention_mask, pixel_values, image_sizes and batch_num_images for `prompts`,
    left-padded (generation continues every row at the end)."""
    return processor(
        images=[[load(ref) for ref in prompt.images] for prompt in prompts],
        text=[prompt_text(prompt, bos_token) for prompt in prompts],
        padding="longest",
        padding_side="left",
        return_tensors="pt",
    )
