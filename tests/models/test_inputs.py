"""The one record -> inputs path, on tiny LLaVA, LLaVA-OneVision and Qwen2-VL checkpoints."""

import pytest
import torch
from transformers import AutoModelForImageTextToText

from mmrlhf.data.record import ImageRef, Record, RecordError
from mmrlhf.models.inputs import IGNORE_INDEX, collate, encode
from mmrlhf.models.load import ModelConfig, load_processor, load_vlm, vision_tower

ARCHS = ["llava", "llava_onevision", "qwen2_vl"]


def _record(circle_data):
    return Record.single(
        "q1",
        "What color is the circle?",
        ["The circle is red.", "The circle is blue and large."],
        images=[ImageRef(path=str(circle_data.parent / "images" / "0.png"))],
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_labels_mask_prompt_and_match_model_loss(arch, tiny_models, circle_data):
    processor = load_processor(tiny_models[arch])
    model = AutoModelForImageTextToText.from_pretrained(tiny_models[arch])
    rec = _record(circle_data)
    ex = encode(rec, 0, processor)
    # only response tokens train, and they decode to the response plus the template's end token
    assert (ex.labels[: ex.prompt_length] == IGNORE_INDEX).all()
    assert (ex.labels[ex.prompt_length :] == ex.input_ids[ex.prompt_length :]).all()
    decoded = processor.tokenizer.decode(ex.input_ids[ex.prompt_length :])
    assert decoded.strip().startswith("The circle is red.")
    assert decoded.strip() != "The circle is red."  # the end-of-turn token is learned too
    # the prompt is identical whatever the response (the shared-prefix forward relies on it)
    ex2 = encode(rec, 1, processor)
    assert torch.equal(ex.input_ids[: ex.prompt_length], ex2.input_ids[: ex2.prompt_length])
    # a batch of two, padded: the model's own loss over our labels equals ours per example
    batch = collate([ex, ex2], processor.tokenizer.pad_token_id)
    out = model(**batch)
    single = model(**collate([ex], processor.tokenizer.pad_token_id))
    assert torch.isfinite(out.loss)
    # the padded example gives the same logits on its real tokens as when run alone
    n = len(ex.input_ids)
    torch.testing.assert_close(out.logits[0, :n], single.logits[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_generation_prompt_and_load_vlm(arch, tiny_models, circle_data):
    model, processor = load_vlm(
        ModelConfig(path=str(tiny_models[arch]), device="cpu"), for_training=True
    )
    tower = vision_tower(model)
    assert tower is not None and not any(p.requires_grad for p in tower.parameters())
    assert any(p.requires_grad for p in model.parameters())
    ex = encode(_record(circle_data), None, processor)
    assert len(ex.input_ids) == ex.prompt_length
    batch = collate([ex, ex], processor.tokenizer.pad_token_id, padding_side="left")
    batch.pop("labels")
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[0] == 2


def test_lora_wraps_language_model_only(tiny_models):
    cfg = ModelConfig(path=str(tiny_models["llava"]), device="cpu")
    cfg.lora.enabled = True
    cfg.lora.r = 4
    model, _ = load_vlm(cfg)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert all("language_model" in n for n in names)


def test_placeholder_in_text_is_a_clear_error(tiny_models, circle_data):
    processor = load_processor(tiny_models["llava"])
    rec = _record(circle_data)
    rec.conversation[0].text = "<image>\nWhat color is the circle?"
    with pytest.raises(
        RecordError, match=r"conversation: the rendered prompt has 2 image .* record has 1 images"
    ):
        encode(rec, 0, processor)


def test_image_token_count_checked(tiny_models, circle_data, monkeypatch):
    processor = load_processor(tiny_models["llava"])
    rec = _record(circle_data)
    # the processor says how many image tokens an image needs; disagreeing is an error
    real = processor._get_num_multimodal_tokens

    def off_by_one(**kw):
        data = real(**kw)
        data.num_image_tokens = [n + 1 for n in data.num_image_tokens]
        return data

    monkeypatch.setattr(processor, "_get_num_multimodal_tokens", off_by_one)
    with pytest.raises(RecordError, match="image tokens and image features disagree"):
        encode(rec, 0, processor)


def test_too_long_is_error_or_truncates_response(tiny_models, circle_data):
    processor = load_processor(tiny_models["llava"])
    rec = _record(circle_data)
    n = len(encode(rec, 1, processor).input_ids)
    p = encode(rec, None, processor).prompt_length
    with pytest.raises(
        RecordError,
        match=rf"q1: responses\[1\].text: sequence is {n} tokens .* over max_length {n - 1}",
    ):
        encode(rec, 1, processor, max_length=n - 1)
    ex = encode(rec, 1, processor, max_length=p + 2, truncate_response=True)
    assert len(ex.input_ids) == p + 2 and ex.prompt_length == p
    with pytest.raises(RecordError, match="over max_length"):
        encode(rec, 1, processor, max_length=p - 1, truncate_response=True)


def test_missing_image_names_record_and_field(tiny_models, tmp_path):
    processor = load_processor(tiny_models["llava"])
    rec = Record.single("q9", "What?", ["A."], images=[ImageRef(path="nope.png")])
    with pytest.raises(RecordError, match=r"q9: images\[0\]: .*not found"):
        encode(rec, 0, processor, media_root=tmp_path)


def test_multi_turn_context_is_prompt(tiny_models, circle_data):
    from mmrlhf.data.record import Turn

    processor = load_processor(tiny_models["llava"])
    rec = _record(circle_data)
    rec.conversation = [
        Turn("user", "Hi."),
        Turn("assistant", "Hello."),
        Turn("user", "What color?"),
    ]
    ex = encode(rec, 0, processor)
    prompt = processor.tokenizer.decode(ex.input_ids[: ex.prompt_length])
    assert "Hello." in prompt and "What color?" in prompt
    assert "Hello." not in processor.tokenizer.decode(ex.input_ids[ex.prompt_length :])


def test_question_first_template_orders_text_before_image(tmp_path, circle_data):
    from mmrlhf.models.tiny import TinyVLMConfig, build_tiny_vlm

    texts = ["What color is the circle?", "The circle is red."] * 20
    build_tiny_vlm(
        tmp_path, texts, TinyVLMConfig(question_first=True, text_hidden=32, text_layers=1)
    )
    processor = load_processor(tmp_path)
    ex = encode(_record(circle_data), 0, processor)
    ids = ex.input_ids.tolist()
    first_image = ids.index(processor.image_token_id)
    before = processor.tokenizer.decode(ids[:first_image])
    assert "What color is the circle?" in before  # the question precedes every image token
    assert (ex.labels[: ex.prompt_length] == IGNORE_INDEX).all()
    assert (
        processor.tokenizer.decode(ex.input_ids[ex.prompt_length :])
        .strip()
        .startswith("The circle is red.")
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_language_model_init_std_is_fan_in(arch, tiny_models):
    """The tiny builder initialises the LM with std 1/sqrt(width) (0.125 at the fixtures' 64),
    not transformers' 0.02 (docs/results.md, "Initialisation"); the config says so too, so a
    re-initialisation from the saved config reproduces it."""
    model = AutoModelForImageTextToText.from_pretrained(tiny_models[arch])
    text = model.config.get_text_config()
    assert text.hidden_size == 64 and text.initializer_range == pytest.approx(64**-0.5)
    q = model.get_decoder().layers[0].self_attn.q_proj.weight
    assert q.std().item() == pytest.approx(64**-0.5, rel=0.1)
