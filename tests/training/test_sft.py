"""SFT loop invariants on a tiny LLaVA: resume, accumulation, checkpoints, final save."""

import json

import pytest
import torch

from mmrlhf.config import load_config
from mmrlhf.models.load import ModelConfig, load_vlm
from mmrlhf.training.common import list_checkpoints, lr_lambda, resolve_resume
from mmrlhf.training.sft import SFTConfig, run_sft


def _cfg(tiny_models, data, out, *extra):
    return load_config(
        SFTConfig,
        None,
        [
            f"model.path={tiny_models['llava']}",
            "model.device=cpu",
            "model.freeze_vision_tower=false",
            f"data.train={data}",
            f"train.output_dir={out}",
            "train.batch_size=4",
            "train.lr=1e-3",
            "train.tensorboard=false",
            "train.progress=false",
            "train.log_every=1",
            *extra,
        ],
    )


def test_resume_after_kill_reproduces_losses(tiny_models, circle_data, tmp_path):
    # 12 records / batch 4 = 3 steps per epoch; 7 steps cross two epoch boundaries.
    full = run_sft(
        _cfg(tiny_models, circle_data, tmp_path / "a", "train.max_steps=7", "train.save_every=2")
    )
    cfg_b = _cfg(
        tiny_models, circle_data, tmp_path / "b", "train.max_steps=7", "train.save_every=2"
    )
    killed = run_sft(cfg_b, stop_after=5)  # the "kill": last complete checkpoint is step 4
    assert killed["stopped_at"] == 5
    assert [p.name for p in list_checkpoints(tmp_path / "b")][-1] == "step-00000004"
    resumed = run_sft(cfg_b, resume="auto")
    assert len(full["losses"]) == 7 and len(resumed["losses"]) == 7
    assert resumed["losses"][:4] == full["losses"][:4]
    torch.testing.assert_close(
        torch.tensor(resumed["losses"]), torch.tensor(full["losses"]), rtol=1e-6, atol=1e-7
    )
    # and the final weights agree
    ma, _ = load_vlm(ModelConfig(path=full["final"], device="cpu"), for_training=False)
    mb, _ = load_vlm(ModelConfig(path=resumed["final"], device="cpu"), for_training=False)
    for (na, pa), (_, pb) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=na)


def test_grad_accumulation_matches_big_batch(tiny_models, circle_data, tmp_path):
    one = run_sft(
        _cfg(
            tiny_models,
            circle_data,
            tmp_path / "a",
            "train.max_steps=2",
            "train.batch_size=4",
            "train.grad_accum=1",
        )
    )
    two = run_sft(
        _cfg(
            tiny_models,
            circle_data,
            tmp_path / "b",
            "train.max_steps=2",
            "train.batch_size=2",
            "train.grad_accum=2",
        )
    )
    torch.testing.assert_close(
        torch.tensor(one["losses"]), torch.tensor(two["losses"]), rtol=1e-5, atol=1e-6
    )


def test_training_reduces_loss_and_final_loads(tiny_models, circle_data, tmp_path):
    res = run_sft(_cfg(tiny_models, circle_data, tmp_path, "train.max_steps=40", "train.lr=3e-3"))
    assert res["losses"][-1] < 0.3 * res["losses"][0]
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 40 and "train/tokens_per_s" in metrics[-1]
    model, processor = load_vlm(ModelConfig(path=res["final"], device="cpu"), for_training=False)
    assert processor.tokenizer.pad_token_id is not None


def test_lora_run_saves_merged_model_and_adapter(tiny_models, circle_data, tmp_path):
    res = run_sft(
        _cfg(
            tiny_models,
            circle_data,
            tmp_path,
            "train.max_steps=2",
            "model.lora.enabled=true",
            "model.lora.r=4",
        )
    )
    final = tmp_path / "final"
    assert (final / "adapter" / "adapter_config.json").exists()
    model, _ = load_vlm(ModelConfig(path=res["final"], device="cpu"), for_training=False)
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_half_written_checkpoint_is_ignored(tmp_path):
    ckpts = tmp_path / "checkpoints"
    (ckpts / "step-00000002").mkdir(parents=True)
    (ckpts / "step-00000002" / "trainer_state.json").write_text("{}")
    (ckpts / ".tmp-step-00000004").mkdir()  # a write killed half-way
    assert resolve_resume("auto", tmp_path).name == "step-00000002"
    assert resolve_resume("auto", tmp_path / "elsewhere") is None
    with pytest.raises(FileNotFoundError):
        resolve_resume(str(tmp_path / "missing"), tmp_path)


def test_schedule_warmup_then_cosine():
    # warmup 2 of 10 steps: 0.5, 1.0, then cosine from 1 down to min_ratio 0.1 at step 10
    assert lr_lambda(0, 10, 2, 0.1) == 0.5
    assert lr_lambda(1, 10, 2, 0.1) == 1.0
    assert lr_lambda(2, 10, 2, 0.1) == pytest.approx(1.0)
    assert lr_lambda(6, 10, 2, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway: cos(pi/2) = 0
    assert lr_lambda(10, 10, 2, 0.1) == pytest.approx(0.1)


def test_sort_within_step_keeps_each_steps_examples():
    """Lengths 0..11 shuffled; steps of 4: sorting within a step changes the order inside each
    step only, so every step (and its accumulated gradient) holds the same examples."""
    from mmrlhf.training.sft import epoch_order

    lengths = [5, 1, 9, 3, 7, 2, 8, 6, 4, 0, 11, 10]
    plain = epoch_order(lengths, 4, seed=3, group_by_length=False)
    mixed = epoch_order(lengths, 4, seed=3, group_by_length=False, sort_within_step=True)
    for b in range(0, 12, 4):
        assert sorted(plain[b : b + 4]) == sorted(mixed[b : b + 4])
        assert [lengths[i] for i in mixed[b : b + 4]] == sorted(
            lengths[i] for i in plain[b : b + 4]
        )
    assert mixed != plain  # seed 3 does not happen to produce sorted steps
