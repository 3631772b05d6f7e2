"""The one place where a record (+ a response) becomes model inputs.

Every training loop and every generator calls :func:`encode` and :func:`collate`. The model's own
processor and chat template do the work, so a LLaVA, LLaVA-OneVision or Qwen2-VL checkpoint gets
exactly the inputs it was trained with:

1. the record's conversation becomes chat messages; its images (or video) go into the first user
   turn, in order;
2. the prompt is rendered with ``add_generation_prompt=True``; the full conversation (with the
   response as the assistant turn) is rendered too, and the completion is the difference, so
   template-specific end tokens (``</s>``, ``<|im_end|>``) are part of what is learned;
3. the prompt goes through the processor (which expands image placeholders into image tokens);
   the completion is tokenised on its own and appended. Encoding the two separately keeps
   the prompt tokens identical whatever the response, which the shared-prefix DPO forward relies on;
4. labels are -100 on every prompt token: only response tokens train.

Errors name the record and the field: a placeholder count that does not match the images, image
tokens that disagree with the processor's expected count, or a sequence over ``max_length``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmrlhf.data.record import Record, RecordError

IGNORE_INDEX = -100

# Processor outputs that are per-token (padded like input_ids) vs per-image (concatenated).
TOKEN_KEYS = ("input_ids", "attention_mask", "labels", "mm_token_type_ids", "token_type_ids")


@dataclass
class Example:
    """One encoded (record, response) pair. Tensors have no batch dimension except the vision
    tensors, which keep the processor's per-image leading dimension."""

    record_id: str
    input_ids: torch.Tensor  # (T,)
    labels: torch.Tensor  # (T,) -100 on prompt tokens
    prompt_length: int
    vision: dict[str, torch.Tensor] = field(default_factory=dict)
    extra_token_tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # (T,) each
    # (T,) weight of each labelled token in an LM loss (1 elsewhere); None: all 1. Set by
    # encode(weight_spans=...); read by the critique RM's LM term (rm.critique_focus).
    label_weights: torch.Tensor | None = None

    @property
    def num_response_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def load_media(record: Record, media_root: str | Path | None = None) -> tuple[list[Any], list[Any]]:
    """The record's images and video frames (PIL), loaded once; pass them to :func:`encode` as
    ``images=`` when encoding several responses of one record."""
    return _images_for(record, media_root)


def _images_for(record: Record, media_root: str | Path | None) -> tuple[list[Any], list[Any]]:
    """Load the record's images and video frames (PIL), raising RecordError on failure."""
    from mmrlhf.data.media import MediaError, load_image, sample_video_frames

    images = []
    for i, ref in enumerate(record.images):
        try:
            images.append(load_image(ref, media_root))
        except MediaError as e:
            raise RecordError(f"images[{i}]", str(e), source=record.id) from None
    try:
        frames = sample_video_frames(record.video, media_root) if record.video is not None else []
    except MediaError as e:
        raise RecordError("video", str(e), source=record.id) from None
    return images, frames


def to_messages(record: Record, response: str | None = None) -> list[dict]:
    """The record's conversation as HF chat messages (content lists with image/video items)."""
    messages: list[dict] = []
    first_user = next(i for i, t in enumerate(record.conversation) if t.role == "user")
    for i, turn in enumerate(record.conversation):
        content: list[dict] = []
        if i == first_user:
            content += [{"type": "image"} for _ in record.images]
            if record.video is not None:
                content.append({"type": "video"})
        content.append({"type": "text", "text": turn.text})
        messages.append({"role": turn.role, "content": content})
    if response is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": response}]})
    return messages


def render(processor: Any, record: Record, response: str | None) -> tuple[str, str]:
    """(prompt text, completion text) through the processor's chat template."""
    prompt = processor.apply_chat_template(
        to_messages(record), add_generation_prompt=True, tokenize=False
    )
    if response is None:
        return prompt, ""
    return prompt, _completion_after(processor, record, response, prompt)


def _completion_after(processor: Any, record: Record, response: str, prompt: str) -> str:
    """The completion text: the full conversation rendered with ``response``, minus ``prompt``."""
    full = processor.apply_chat_template(to_messages(record, response), tokenize=False)
    if not full.startswith(prompt):
        raise RecordError(
            "conversation",
            "the chat template does not render the prompt as a prefix of the full conversation; "
            "cannot tell response tokens from prompt tokens",
            source=record.id,
        )
    # Newlines after the final end-of-turn token separate turns; nothing follows them, so they
    # are not trained.
    return full[len(prompt) :].rstrip("\n")


def _placeholder_count(processor: Any, text: str) -> tuple[int, int]:
    image_token = getattr(processor, "image_token", None) or "<image>"
    video_token = getattr(processor, "video_token", None) or "<video>"
    return text.count(image_token), text.count(video_token)


def _expected_image_tokens(processor: Any, images: list[Any]) -> int | None:
    """The number of image tokens the processor should produce, where it can tell us."""
    if not images or not hasattr(processor, "_get_num_multimodal_tokens"):
        return None
    try:
        data = processor._get_num_multimodal_tokens(
            image_sizes=[(im.height, im.width) for im in images]
        )
    except (NotImplementedError, TypeError, AttributeError, KeyError):
        return None
    counts = getattr(data, "num_image_tokens", None)
    if counts is None and isinstance(data, dict):
        counts = data.get("num_image_tokens")
    return int(sum(counts)) if counts else None


def encode(
    record: Record,
    response: str | int | None,
    processor: Any,
    *,
    media_root: str | Path | None = None,
    max_length: int | None = None,
    truncate_response: bool = False,
    images: tuple[list[Any], list[Any]] | None = None,
    weight_spans: tuple[Sequence[tuple[int, int]], float] | None = None,
) -> Example:
    """Encode ``record`` with ``response`` (text, index into ``record.responses``, or None for a
    generation prompt).

    ``weight_spans = (spans, w)``: character spans ``[start, end)`` of the response text; every
    labelled token overlapping one gets weight ``w`` in ``Example.label_weights`` (the others 1).

    ``max_length`` counts every token including image tokens. Over it, the default is a clear
    error; ``truncate_response=True`` cuts the response instead (never the prompt or its image
    tokens, which would desynchronise image features and image tokens).
    ``images`` lets a caller that encodes several responses of one record load its media once
    (:func:`encode_responses` goes further and runs the processor once).
    """
    text, field_name = _response_text(record, response)
    imgs, frames = images if images is not None else _images_for(record, media_root)
    prompt, completion = render(processor, record, text)
    prompt_ex = _encode_prompt(record, prompt, processor, imgs, frames)
    span_arg = None
    if weight_spans is not None and weight_spans[0]:
        assert text is not None, "weight_spans need a response"
        span_arg = (text, weight_spans[0], weight_spans[1])
    return _with_completion(
        record,
        prompt_ex,
        completion,
        processor,
        max_length,
        truncate_response,
        field_name,
        span_arg,
    )


def encode_responses(
    record: Record,
    responses: Sequence[int],
    processor: Any,
    *,
    media_root: str | Path | None = None,
    max_length: int | None = None,
    truncate_response: bool = False,
    images: tuple[list[Any], list[Any]] | None = None,
) -> tuple[Example, list[Example]]:
    """The generation prompt and ``record.responses[i]`` for each ``i``, with the processor
    (image preprocessing, template, tokenizer) run **once** for the prompt.

    Returns ``(prompt example, full examples)``; each full example equals
    ``encode(record, i, ...)`` token for token and shares the prompt's vision tensors (no copy).
    Why: the processor costs as much as a tiny model's forward, and preference training encodes
    K responses of one image.
    """
    imgs, frames = images if images is not None else _images_for(record, media_root)
    prompt, _ = render(processor, record, None)
    prompt_ex = _encode_prompt(record, prompt, processor, imgs, frames)
    fulls = []
    for i in responses:
        text, field_name = _response_text(record, i)
        # one template render per response: the prompt is the same for all of them
        completion = _completion_after(processor, record, text, prompt)
        fulls.append(
            _with_completion(
                record, prompt_ex, completion, processor, max_length, truncate_response, field_name
            )
        )
    return prompt_ex, fulls


def _response_text(record: Record, response: str | int | None) -> tuple[str | None, str]:
    if isinstance(response, int):
        if not 0 <= response < record.k:
            raise RecordError(
                "responses", f"index {response} out of range (K={record.k})", source=record.id
            )
        return record.responses[response].text, f"responses[{response}].text"
    return response, "response"


def _encode_prompt(
    record: Record, prompt: str, processor: Any, imgs: list[Any], frames: list[Any]
) -> Example:
    """The rendered prompt through the processor, with the image-token checks."""
    n_img, n_vid = _placeholder_count(processor, prompt)
    if n_img != len(imgs) or n_vid != (1 if frames else 0):
        raise RecordError(
            "conversation",
            f"the rendered prompt has {n_img} image and {n_vid} video placeholders but the record "
            f"has {len(imgs)} images and {'a' if frames else 'no'} video (is there a literal "
            "image token in the text?)",
            source=record.id,
        )
    proc_kwargs: dict[str, Any] = {"text": [prompt], "return_tensors": "pt"}
    if imgs:
        proc_kwargs["images"] = imgs
    if frames:
        if getattr(processor, "video_processor", None) is None:
            raise RecordError(
                "video",
                "this processor has no video processor (install torchvision)",
                source=record.id,
            )
        proc_kwargs["videos"] = [frames]
    enc = processor(**proc_kwargs)
    prompt_ids = enc["input_ids"][0]

    image_token_id = getattr(processor, "image_token_id", None)
    expected = _expected_image_tokens(processor, imgs)
    if image_token_id is not None and expected is not None:
        got = int((prompt_ids == image_token_id).sum())
        if got != expected:
            raise RecordError(
                "images",
                f"image tokens and image features disagree: {got} image tokens in the prompt, "
                f"the processor expects {expected} for {len(imgs)} image(s)",
                source=record.id,
            )
    vision = {k: v for k, v in enc.items() if k not in TOKEN_KEYS and isinstance(v, torch.Tensor)}
    extra = {k: enc[k][0] for k in ("mm_token_type_ids", "token_type_ids") if k in enc}
    return Example(
        record_id=record.id,
        input_ids=prompt_ids,
        labels=torch.full_like(prompt_ids, IGNORE_INDEX),
        prompt_length=len(prompt_ids),
        vision=vision,
        extra_token_tensors=extra,
    )


def _with_completion(
    record: Record,
    prompt: Example,
    completion: str,
    processor: Any,
    max_length: int | None,
    truncate_response: bool,
    field_name: str,
    weight_spans: tuple[str, Sequence[tuple[int, int]], float] | None = None,
) -> Example:
    """``prompt`` followed by the tokenized ``completion``, labels on the completion only.

    ``weight_spans = (response text, spans in it, w)``: see :func:`encode`."""
    prompt_ids = prompt.input_ids
    if weight_spans is None:
        tok = processor.tokenizer(completion, add_special_tokens=False)
    else:
        # The same tokenizer call plus character offsets (fast tokenizers only), so the
        # weighted tokens are exactly the ones trained.
        if not getattr(processor.tokenizer, "is_fast", False):
            raise ValueError("weighted label spans need a fast tokenizer (character offsets)")
        tok = processor.tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
    comp_ids = torch.tensor(tok["input_ids"], dtype=torch.long)
    total = len(prompt_ids) + len(comp_ids)
    if max_length is not None and total > max_length:
        if not truncate_response or len(prompt_ids) >= max_length:
            raise RecordError(
                field_name,
                f"sequence is {total} tokens (prompt {len(prompt_ids)} incl. image tokens, "
                f"response {len(comp_ids)}), over max_length {max_length}",
                source=record.id,
            )
        comp_ids = comp_ids[: max_length - len(prompt_ids)]

    weights = None
    if weight_spans is not None:
        text, spans, w = weight_spans
        at = completion.find(text)
        if at < 0:
            raise RecordError(
                field_name, "the chat template changed the response text", source=record.id
            )
        weights = torch.ones(len(prompt_ids) + len(comp_ids))
        for k, (a, b) in enumerate(tok["offset_mapping"][: len(comp_ids)]):
            if any(a < at + e and at + s < b for s, e in spans):
                weights[len(prompt_ids) + k] = w
    input_ids = torch.cat([prompt_ids, comp_ids])
    labels = input_ids.clone()
    labels[: len(prompt_ids)] = IGNORE_INDEX
    # Response tokens are text: token type 0.
    extra = {
        k: torch.cat([v, torch.zeros(len(comp_ids), dtype=v.dtype)])
        for k, v in prompt.extra_token_tensors.items()
    }
    return Example(
        record_id=record.id,
        input_ids=input_ids,
        labels=labels,
        prompt_length=len(prompt_ids),
        vision=prompt.vision,
        extra_token_tensors=extra,
        label_weights=weights,
    )


def _cat_padded(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dim 0, zero-padding trailing dims to the largest (any-res tiles)."""
    shape = [max(t.shape[d] for t in tensors) for d in range(1, tensors[0].dim())]
    out = []
    for t in tensors:
        pad = []
        for d in reversed(range(1, t.dim())):
            pad += [0, shape[d - 1] - t.shape[d]]
        out.append(torch.nn.functional.pad(t, pad) if any(pad) else t)
    return torch.cat(out, dim=0)


def collate(
    examples: Sequence[Example], pad_token_id: int, padding_side: str = "right"
) -> dict[str, Any]:
    """Pad a list of examples into a batch the model's ``forward`` takes.

    Right padding for training; left padding for generation (new tokens follow the prompt).
    Vision tensors are concatenated along their image dimension, as the processors do for batches.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be left or right, got {padding_side!r}")
    length = max(len(e.input_ids) for e in examples)
    n = len(examples)
    input_ids = torch.full((n, length), pad_token_id, dtype=torch.long)
    labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((n, length), dtype=torch.long)
    extra_keys = set().union(*(e.extra_token_tensors for e in examples))
    extra = {k: torch.zeros((n, length), dtype=torch.long) for k in extra_keys}
    for i, e in enumerate(examples):
        t = len(e.input_ids)
        sl = slice(0, t) if padding_side == "right" else slice(length - t, length)
        input_ids[i, sl] = e.input_ids
        labels[i, sl] = e.labels
        attention[i, sl] = 1
        for k, v in e.extra_token_tensors.items():
            extra[k][i, sl] = v
    batch: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "labels": labels,
        **extra,
    }
    vision_keys = set().union(*(e.vision for e in examples))
    for k in sorted(vision_keys):
        parts = [e.vision[k] for e in examples if k in e.vision]
        batch[k] = _cat_padded(parts)
    return batch
