"""Tiny vision-language models of real transformers architectures, built from configs.

``build_tiny_vlm`` trains a byte-level BPE tokenizer on the given texts (the shapes world's
vocabulary, optionally with its annotator's critiques, :func:`tokenizer_corpus`, so world and
critique words become single tokens while any text still encodes), builds a processor
with a chat template, instantiates a randomly initialised model and saves both with
``save_pretrained``. The result loads by path exactly like a downloaded checkpoint, so every code
path (loading, inputs, training, generation) is the one real models take.

Architectures:
- ``llava``: CLIP vision tower + Llama LM (LLaVA-1.5's layout), the embedded default;
- ``llava_onevision``: SigLIP tower + Qwen2 LM with any-resolution tiling;
- ``qwen2_vl``: Qwen2-VL's own vision transformer with patch merging and M-RoPE.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mmrlhf.models.load import processor_class

ARCHITECTURES = ("llava", "llava_onevision", "qwen2_vl")

# Special tokens shared by all tiny tokenizers. The Qwen2-VL ones are only used by that
# architecture but keeping one vocabulary makes the three interchangeable in tests.
SPECIAL_TOKENS = [
    "<pad>",
    "<s>",
    "</s>",
    "<image>",
    "<video>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


# Vicuna-style template (LLaVA-1.5). ``{{ '\n' }}`` instead of literal newlines because
# transformers renders templates with trim_blocks. The prompt ends with "ASSISTANT:" and the
# completion is " <text></s>", so the prompt is an exact string prefix of the full conversation.
def llava_template(question_first: bool = False) -> str:
    """The Vicuna-style template of LLaVA-1.5, optionally with the question before the media.

    ``{{ '\\n' }}`` instead of literal newlines because transformers renders templates with
    trim_blocks. The prompt ends with "ASSISTANT:" and the completion is " <text></s>", so the
    prompt is an exact string prefix of the full conversation.

    ``question_first`` renders a user turn's text before its images. Why: attention is causal, so
    with the image first (LLaVA's convention) no image token can see the question, and "is there
    a red circle?" has to be matched against every image token from the text side; with the
    question first each image token can check itself against the question and the answer only
    needs to notice whether any did. Only our tiny models use it; real checkpoints keep their
    own templates.
    """
    media = (
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{{ '\\n' }}"
        "{% elif c['type'] == 'video' %}<video>{{ '\\n' }}{% endif %}{% endfor %}"
    )
    text = "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    user = (text + "{{ '\\n' }}" + media) if question_first else (media + text + "{{ '\\n' }}")
    return (
        "{% for m in messages %}"
        "{% if m['role'] == 'system' %}"
        "{{ m['content'][0]['text'] if m['content'] is not string else m['content'] }}{{ '\\n' }}"
        "{% elif m['role'] == 'user' %}USER: "
        "{% if m['content'] is string %}{{ m['content'] }}{{ '\\n' }}{% else %}"
        + user
        + "{% endif %}"
        "{% elif m['role'] == 'assistant' %}ASSISTANT: "
        "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
        "{% for c in m['content'] %}{{ c['text'] }}{% endfor %}{% endif %}</s>{{ '\\n' }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )


LLAVA_TEMPLATE = llava_template()

# ChatML as Qwen2-VL uses it.
QWEN2_VL_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}{{ '\n' }}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant{{ '\n' }}{% endif %}"
)


@dataclass
class TinyVLMConfig:
    """Sizes of a tiny VLM. Defaults: ~1M parameters, learnable on a laptop CPU in minutes."""

    arch: str = field(default="llava", metadata={"help": f"One of {', '.join(ARCHITECTURES)}."})
    image_size: int = field(default=72, metadata={"help": "Square input image side in pixels."})
    # 24 px patches on the 72 px world image: one image token per grid cell (objects are jittered
    # but stay inside their cell), 9 image tokens instead of 81 at patch 8. Measured: better
    # held-out accuracy and ~3x cheaper steps than patch 8 or 12 (docs/results.md).
    patch_size: int = field(
        default=24, metadata={"help": "Vision patch side (llava); others use 14."}
    )
    vision_hidden: int = field(default=128, metadata={"help": "Vision tower width."})
    vision_layers: int = field(default=2, metadata={"help": "Vision tower depth."})
    # 2 x 64 rather than 4 x 128: ~2.3x the optimizer steps in the same wall time, which the
    # world's question-to-image-token lookup needs more than width or depth. Measured on a
    # 10,000-scene world (docs/results.md, "A smaller, faster language model"): core short
    # answers 0.608 (4 x 128, 850 steps, 268 s) vs 0.668 (2 x 64, 2300 steps, 238 s).
    text_hidden: int = field(default=64, metadata={"help": "Language model width."})
    text_layers: int = field(default=2, metadata={"help": "Language model depth."})
    heads: int = field(default=4, metadata={"help": "Attention heads (both towers)."})
    vocab_size: int = field(default=1024, metadata={"help": "BPE vocabulary size to train."})
    max_positions: int = field(default=512, metadata={"help": "Maximum sequence length."})
    seed: int = field(default=0, metadata={"help": "Weight initialisation seed."})
    # transformers' default std 0.02 is sized for widths near 768-4096; at width 128 it is a
    # quarter of 1/sqrt(width) and attention starts nearly uniform. Measured on the world
    # (docs/results.md, "Initialisation"): 1/sqrt(width) instead of 0.02 lowers the SFT model's
    # CHAIR_i from 0.78 to 0.63 (seed 0) and 0.85 to 0.79 (seed 1) and raises core short-answer
    # accuracy by 4-5 points, same steps.
    init_std: float | None = field(
        default=None,
        metadata={"help": "Language-model init std (default 1/sqrt(text_hidden); HF uses 0.02)."},
    )
    question_first: bool = field(
        default=False, metadata={"help": "llava: render the question before the image."}
    )


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer: any text encodes, frequent words become single tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>"},
        model_max_length=100_000,
    )


def _lm_sizes(cfg: TinyVLMConfig, tok: PreTrainedTokenizerFast, kv_heads: int) -> dict:
    """Language-model size keywords shared by the three architectures' text configs."""
    return dict(
        vocab_size=len(tok),
        hidden_size=cfg.text_hidden,
        intermediate_size=cfg.text_hidden * 2,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=cfg.max_positions,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        initializer_range=cfg.init_std or cfg.text_hidden**-0.5,
    )


def _llava(cfg: TinyVLMConfig, tok: PreTrainedTokenizerFast) -> tuple[torch.nn.Module, object]:
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    image_proc = CLIPImageProcessorPil(
        size={"shortest_edge": cfg.image_size},
        crop_size={"height": cfg.image_size, "width": cfg.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    # With vision_feature_select_strategy="default" the CLS feature is dropped, so the processor
    # must count one additional token that the model then removes (MEASURED.md).
    processor = LlavaProcessor(
        image_processor=image_proc,
        tokenizer=tok,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=llava_template(cfg.question_first),
    )
    model_cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=cfg.vision_hidden,
            intermediate_size=cfg.vision_hidden * 2,
            num_hidden_layers=cfg.vision_layers,
            num_attention_heads=cfg.heads,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            projection_dim=cfg.vision_hidden,
        ),
        text_config=LlamaConfig(**_lm_sizes(cfg, tok, cfg.heads), bos_token_id=tok.bos_token_id),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    return LlavaForConditionalGeneration(model_cfg), processor


def _llava_onevision(
    cfg: TinyVLMConfig, tok: PreTrainedTokenizerFast
) -> tuple[torch.nn.Module, object]:
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    side, patch = 56, 14
    pinpoints = [[side, side], [side, 2 * side], [2 * side, side], [2 * side, 2 * side]]
    image_proc = LlavaOnevisionImageProcessorPil(
        size={"height": side, "width": side}, image_grid_pinpoints=pinpoints, do_pad=True
    )
    processor = processor_class(LlavaOnevisionProcessor)(
        image_processor=image_proc,
        tokenizer=tok,
        num_image_tokens=(side // patch) ** 2,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_TEMPLATE,
    )
    model_cfg = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=cfg.vision_hidden,
            intermediate_size=cfg.vision_hidden * 2,
            num_hidden_layers=cfg.vision_layers,
            num_attention_heads=cfg.heads,
            image_size=side,
            patch_size=patch,
        ),
        text_config=Qwen2Config(
            **_lm_sizes(cfg, tok, max(1, cfg.heads // 2)), bos_token_id=tok.bos_token_id
        ),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        video_token_id=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    return LlavaOnevisionForConditionalGeneration(model_cfg), processor


def _qwen2_vl(cfg: TinyVLMConfig, tok: PreTrainedTokenizerFast) -> tuple[torch.nn.Module, object]:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    # Qwen2-VL ends assistant turns with <|im_end|>: that is its end-of-sequence token.
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tok.backend_tokenizer,
        eos_token="<|im_end|>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        model_max_length=100_000,
    )
    image_proc = Qwen2VLImageProcessorPil(
        min_pixels=56 * 56, max_pixels=112 * 112, patch_size=14, merge_size=2, temporal_patch_size=2
    )
    processor = processor_class(Qwen2VLProcessor)(
        image_processor=image_proc, tokenizer=tok, chat_template=QWEN2_VL_TEMPLATE
    )
    head_dim = cfg.text_hidden // cfg.heads
    # M-RoPE splits the rotary half-dimension into (temporal, height, width) sections.
    half = head_dim // 2
    sections = [half - 2 * (half // 3), half // 3, half // 3]
    ids = tok.convert_tokens_to_ids
    model_cfg = Qwen2VLConfig(
        text_config=dict(
            **_lm_sizes(cfg, tok, max(1, cfg.heads // 2)),
            rope_parameters={
                "rope_type": "default",
                "mrope_section": sections,
                "rope_theta": 10000.0,
            },
            bos_token_id=None,
        ),
        vision_config=dict(
            depth=cfg.vision_layers,
            embed_dim=cfg.vision_hidden,
            hidden_size=cfg.text_hidden,
            num_heads=cfg.heads,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            in_channels=3,
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    return Qwen2VLForConditionalGeneration(model_cfg), processor


def build_tiny_vlm(
    out_dir: str | Path, texts: Iterable[str], cfg: TinyVLMConfig | None = None
) -> Path:
    """Train a tokenizer on ``texts``, build a tiny ``cfg.arch`` VLM, save model + processor.

    Returns ``out_dir``; load it back with ``mmrlhf.models.load.load_vlm``.
    """
    cfg = cfg or TinyVLMConfig()
    if cfg.arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {ARCHITECTURES}, got {cfg.arch!r}")
    tok = train_tokenizer(texts, cfg.vocab_size)
    torch.manual_seed(cfg.seed)
    build = {"llava": _llava, "llava_onevision": _llava_onevision, "qwen2_vl": _qwen2_vl}[cfg.arch]
    model, processor = build(cfg, tok)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def tokenizer_corpus(
    world: str | Path | None = None, files: Iterable[str | Path] = (), annotations: bool = False
) -> list[str]:
    """Texts to train a tiny tokenizer on: a world folder's records and vocabulary (and, with
    ``annotations``, the simulated annotator's critiques and reasons for a sample of its
    queries, the texts a critique RM writes), plus files.

    JSONL files contribute every query, response and caption of their records; other files
    contribute their lines. Repeating the vocabulary keeps every world word a single token.
    """
    import json

    texts: list[str] = []
    paths = [Path(f) for f in files]
    if world is not None:
        w = Path(world)
        paths += sorted(w.glob("*.jsonl"))
        meta = w / "world.json"
        if meta.exists():
            vocab = json.loads(meta.read_text()).get("vocabulary", [])
            texts += [" ".join(vocab)] * 20
            if annotations:
                from mmrlhf.world import load_world
                from mmrlhf.world.annotate import annotation_texts

                texts += annotation_texts(load_world(w))
    for p in paths:
        if p.suffix == ".jsonl":
            for line in p.read_text().splitlines():
                if not line.strip():
                    continue
                d = json.loads(line)
                texts += [t.get("text", "") for t in d.get("conversation", [])]
                texts += [
                    r.get("text", "") if isinstance(r, dict) else str(r)
                    for r in d.get("responses", [])
                ]
                texts += (d.get("facts") or {}).get("captions", [])
        else:
            texts += p.read_text().splitlines()
    return [t for t in texts if t]
