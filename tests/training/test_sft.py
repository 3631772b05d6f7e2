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


@pytest.mark.parametrize("norm", ["token", "sequence"])
def test_grad_accumulation_matches_big_batch(tiny_models, circle_data, tmp_path, norm):
    one = run_sft(
        _cfg(
            tiny_models,
            circle_data,
            tmp_path / "a",
            "train.max_steps=2",
            "train.batch_size=4",
            "train.grad_accum=1",
            f"loss_norm={norm}",
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
            f"loss_norm={norm}",
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


class _UniformLM(torch.nn.Module):
    """Stand-in model: equal logits over 4 tokens at every position (token loss = ln 4)."""

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0):
        b, t = input_ids.shape
        keep = logits_to_keep or t
        return type("Out", (), {"logits": torch.zeros(b, keep, 4, requires_grad=True)})()


def test_token_loss_sum_per_token_and_per_sequence():
    """Row 0 labels 1 token, row 1 labels 2 (position t predicts label t+1). Every token loss is
    ln 4, so the token sum is 3 ln 4 over 3 tokens; per sequence it is ln 4 / 1 + 2 ln 4 / 2 =
    2 ln 4, a sum of two per-example means (the loop divides by the 2 examples)."""
    from mmrlhf.training.sft import token_loss_sum

    ids = torch.zeros(2, 4, dtype=torch.long)
    labels = torch.tensor([[-100, -100, -100, 1], [-100, -100, 2, 3]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    ln4 = torch.log(torch.tensor(4.0))
    tok, n, _ = token_loss_sum(_UniformLM(), batch)
    seq, n2, _ = token_loss_sum(_UniformLM(), batch, per_sequence=True)
    assert int(n) == int(n2) == 3
    torch.testing.assert_close(tok, 3 * ln4)
    torch.testing.assert_close(seq, 2 * ln4)


def test_lr_multipliers_make_per_module_groups():
    """lr 1e-3, projector x5: its matrix and bias get 5e-3 (the bias without decay); the rest
    1e-3; the scheduler keeps the 5:1 ratio; lr-1 groups come first (logged as train/lr)."""
    from mmrlhf.training.common import TrainConfig, make_optimizer, make_scheduler

    model = torch.nn.ModuleDict(
        {"language_model": torch.nn.Linear(3, 3), "multi_modal_projector": torch.nn.Linear(3, 3)}
    )
    cfg = TrainConfig(
        lr=1e-3, weight_decay=0.1, warmup_ratio=0.5, lr_multipliers={"multi_modal_projector": 5.0}
    )
    opt_ = make_optimizer(model, cfg)
    got = [(g["lr"], g["weight_decay"], len(g["params"])) for g in opt_.param_groups]
    assert got == [(1e-3, 0.1, 1), (1e-3, 0.0, 1), (5e-3, 0.1, 1), (5e-3, 0.0, 1)]
    assert opt_.param_groups[2]["params"][0] is model["multi_modal_projector"].weight
    sched = make_scheduler(opt_, cfg, total_steps=4)
    lrs = sched.get_last_lr()
    assert lrs[2] == pytest.approx(5 * lrs[0]) and lrs[0] == pytest.approx(1e-3 / 2)
    assert "lr_multipliers" in TrainConfig(lr_multipliers={"": 2.0}).validate()[0]
