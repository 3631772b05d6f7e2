"""Load any transformers vision-language model and its processor from a local path (or hub name).

The same function loads a downloaded LLaVA-OneVision-7B and the tiny models our tests build: the
tiny ones are saved with ``save_pretrained`` and are ordinary checkpoints.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForImageTextToText, AutoProcessor, ProcessorMixin

log = logging.getLogger(__name__)

# Submodule names that hold the vision encoder in the architectures we support (LLaVA and
# LLaVA-OneVision: ``vision_tower``; Qwen2-VL / Qwen2.5-VL: ``visual``). The projector / merger is
# not part of the tower: it stays trainable by default, as in LLaVA's recipes.
VISION_TOWER_NAMES = ("vision_tower", "visual", "vision_model")
PROJECTOR_NAMES = ("multi_modal_projector", "merger")

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass
class LoraSettings:
    """LoRA adapters through peft."""

    enabled: bool = field(
        default=False, metadata={"help": "Train LoRA adapters instead of all weights."}
    )
    r: int = field(default=16, metadata={"help": "LoRA rank."})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha (scaling = alpha / r)."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    target_modules: list[str] = field(
        default_factory=lambda: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ],
        metadata={"help": "Linear layer names of the language model that get adapters."},
    )
    modules_to_save: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Modules trained fully and saved with the adapter (e.g. multi_modal_projector)."
        },
    )


@dataclass
class ModelConfig:
    """Which VLM to load and how."""

    path: str = field(
        default="",
        metadata={"help": "Local model directory (or hub name where a hub is reachable)."},
    )
    dtype: str = field(
        default="float32", metadata={"help": "Weights dtype: float32, bfloat16 or float16."}
    )
    device: str = field(
        default="auto", metadata={"help": "auto (cuda if available, else cpu), cpu or cuda[:N]."}
    )
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "Attention kernel: eager, sdpa or flash_attention_2."}
    )
    freeze_vision_tower: bool = field(
        default=True, metadata={"help": "Keep the vision encoder frozen."}
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Trade compute for memory."}
    )
    lora: LoraSettings = field(default_factory=LoraSettings)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _image_only_processor_class(cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """A subclass of ``cls`` that drops its video processor.

    Why: video processors in transformers 5 require torchvision, which cannot always be installed
    beside a given torch build (e.g. a CPU-only torch). Image inputs do not need it, so rather than
    refusing to load Qwen2-VL or LLaVA-OneVision at all we load an image-only processor and say so.
    Video inputs then fail with a clear error (see ``models.inputs``).
    """

    class ImageOnly(cls):  # type: ignore[misc, valid-type]
        video_processor = None

        @classmethod
        def get_attributes(cls) -> list[str]:
            return [a for a in super().get_attributes() if a != "video_processor"]

    # Keep the parent's name: it is what save_pretrained writes as processor_class, and a
    # checkpoint saved here must load as the ordinary processor where torchvision exists.
    ImageOnly.__name__ = cls.__name__
    ImageOnly.__qualname__ = f"{cls.__name__}ImageOnly"
    return ImageOnly


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        return False
    return True


def processor_class(cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """``cls``, or its image-only form when torchvision is missing and ``cls`` owns a video
    processor. Both loading (``load_processor``) and building (``models.tiny``) go through this."""
    if not _has_torchvision() and "video_processor" in cls.get_attributes():
        return _image_only_processor_class(cls)
    return cls


def load_processor(path: str | Path) -> Any:
    """``AutoProcessor.from_pretrained`` with the image-only fallback described above.

    Without torchvision, ``AutoProcessor`` either raises or quietly returns the bare tokenizer
    for processors that own a video processor; both cases are caught here.
    """
    cfg_file = Path(path) / "processor_config.json"
    cls_name = (
        json.loads(cfg_file.read_text()).get("processor_class") if cfg_file.exists() else None
    )
    cls = getattr(transformers, cls_name or "", None)
    if cls is not None and processor_class(cls) is not cls:
        log.warning(
            "torchvision is not installed: loading %s without its video processor "
            "(image inputs work; video inputs need `pip install torchvision`).",
            cls_name,
        )
        return processor_class(cls).from_pretrained(str(path))
    processor = AutoProcessor.from_pretrained(str(path))
    if not isinstance(processor, ProcessorMixin):
        raise ValueError(
            f"{path}: no multimodal processor found (AutoProcessor gave {type(processor).__name__}); "
            "is this a vision-language model directory with processor_config.json?"
        )
    return processor


def _named_children_matching(
    model: torch.nn.Module, names: tuple[str, ...]
) -> list[torch.nn.Module]:
    found = []
    for name, module in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last in names and not any(name.startswith(p + ".") for p, _ in found):
            found.append((name, module))
    return [m for _, m in found]


def vision_tower(model: torch.nn.Module) -> torch.nn.Module | None:
    """The vision encoder submodule of a VLM (None for a text-only model)."""
    towers = _named_children_matching(model, VISION_TOWER_NAMES)
    return towers[0] if towers else None


def load_vlm(cfg: ModelConfig, *, for_training: bool = True) -> tuple[torch.nn.Module, Any]:
    """Load a VLM and its processor as ``cfg`` says; returns ``(model, processor)``.

    With ``cfg.lora.enabled`` the model is a peft ``PeftModel`` whose base weights are frozen; the
    reference model of DPO is then the same module with the adapter disabled (no second copy).
    """
    if not cfg.path:
        raise ValueError("model.path is empty: give a local model directory")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(DTYPES)}, got {cfg.dtype!r}")
    device = resolve_device(cfg.device)
    processor = load_processor(cfg.path)
    model = AutoModelForImageTextToText.from_pretrained(
        cfg.path, dtype=DTYPES[cfg.dtype], attn_implementation=cfg.attn_implementation
    )
    model.to(device)
    if not for_training:
        model.eval()
        model.requires_grad_(False)
        return model, processor

    if cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        # Adapters go on the language model only: the vision tower's linear layers share names
        # (q_proj, ...) with the LM's in some architectures, so the regex pins the LM.
        targets = "|".join(cfg.lora.target_modules)
        peft_cfg = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=rf".*language_model.*\.({targets})",
            modules_to_save=cfg.lora.modules_to_save or None,
        )
        model = get_peft_model(model, peft_cfg)
    elif cfg.freeze_vision_tower:
        tower = vision_tower(model)
        if tower is None:
            log.warning("freeze_vision_tower: no vision tower found in %s", type(model).__name__)
        else:
            tower.requires_grad_(False)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    return model, processor


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
