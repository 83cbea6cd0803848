"""A tiny Qwen3-VL captioner built in code: the real class with random weights, no files, no network.

It runs the captioner's real path (image processor, chat template, image tokens, multimodal RoPE,
`generate`) on a CPU in about a second, so the caption job and its tests work where no weights can
be downloaded. Its words are noise, and the page says so.

The tokenizer is byte-level BPE over printable ASCII with no merges (one token per character), plus
Qwen's chat and vision tokens; the chat template is a short one written here in Qwen's layout. Two
seeds give two different models: tests tell them apart by what they write.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..builtin import byte_alphabet
from .model import IMAGE_TOKEN, VIDEO_TOKEN, Captioner

TINY_CAPTIONER_SEED = 20261207
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  IMAGE_TOKEN, VIDEO_TOKEN)
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_tokenizer():
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    symbols = byte_alphabet()
    vocab = {symbols[code]: index for index, code in enumerate([10, *range(32, 127)])}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE)
    tokenizer.add_tokens([AddedToken(token, special=True) for token in SPECIAL_TOKENS])
    return tokenizer


def tiny_image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(patch_size=16, temporal_patch_size=2, merge_size=2,
                                    min_pixels=32 * 32, max_pixels=96 * 96)


def build_tiny_captioner(seed: int = TINY_CAPTIONER_SEED) -> Captioner:
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    tokenizer = tiny_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = Qwen3VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=4096,
                         pad_token_id=ids["<|endoftext|>"],
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2],
                                          "mrope_interleaved": True}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=32,
                           num_position_embeddings=64, deepstack_visual_indexes=[0]),
        image_token_id=ids[IMAGE_TOKEN], video_token_id=ids[VIDEO_TOKEN],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    config.architectures = ["Qwen3VLForConditionalGeneration"]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Qwen3VLForConditionalGeneration(config).eval().requires_grad_(False)
    finally:
        torch.random.set_rng_state(state)
    # Its noise is written in lowercase words (letters, spaces, commas), and short: a caption of noise
    # still passes through every rule a real one does. Kept in its generation_config, so a saved copy
    # served from a test hub writes the same.
    allowed = {tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>",)}
    allowed |= {tokenizer.convert_tokens_to_ids(byte_alphabet()[ord(ch)]) for ch in "abcdefghijklmnopqrstuvwxyz ,"}
    model.generation_config.suppress_tokens = [i for i in range(len(tokenizer)) if i not in allowed]
    model.generation_config.max_new_tokens = 24
    return Captioner(model, tokenizer, tiny_image_processor(), CHAT_TEMPLATE, "built in")


def save_tiny_captioner(folder: Path, seed: int = TINY_CAPTIONER_SEED) -> Path:
    """A tiny captioner in a Hub repo's layout (config, safetensors, tokenizer, image processor and
    the chat template beside them), for serving from a test hub."""
    folder = Path(folder)
    captioner = build_tiny_captioner(seed)
    captioner.model.save_pretrained(folder)
    captioner.tokenizer.save_pretrained(folder)
    captioner.image_processor.save_pretrained(folder)
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}), encoding="utf-8")
    return folder
