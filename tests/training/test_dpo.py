"""MM-DPO loop on a tiny LLaVA: learning, reference cache reuse, resume, accumulation, shared vs
separate forwards, LoRA reference, degenerate batches."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mmrlhf.config import load_config
from mmrlhf.data.record import Ranking, Record, Response
from mmrlhf.training.dpo import DPOConfig, run_dpo

ANSWERS = {
    "red": "The circle is red.",
    "blue": "The circle is blue.",
    "green": "The circle is green.",
}


def _prefs(circle_data: Path, out: Path, *, negative_delta: bool = False, n: int = 12) -> Path:
    """Preference records: the true answer ranked first, two fixed wrong answers tied below it
    (learnable by a tiny random model in a few steps); rewards give margins (negative when
    ``negative_delta``: the RM disagrees with every label)."""
    rows = [json.loads(x) for x in circle_data.read_text().splitlines()][:n]
    with open(out, "w") as f:
        for row in rows:
            rec = Record.from_dict(row)
            truth = next(c for c in ANSWERS if c in rec.responses[0].text)
            wrong = ["I do not know.", "The circle is purple."]
            rec.responses = [Response(text=t) for t in (ANSWERS[truth], *wrong)]
            for j, r in enumerate(rec.responses):
                r.reward = (1.0 if j == 0 else 0.0) * (-1 if negative_delta else 1)
            rec.ranking = Ranking.parse("1>2=3")
            rec.images[0].path = str(circle_data.parent / rec.images[0].path)
            f.write(json.dumps(rec.to_dict()) + "\n")
    return out


def _cfg(tiny_models, data, out, *extra):
    return load_config(
        DPOConfig,
        None,
        [
            f"model.path={tiny_models['llava']}",
            "model.device=cpu",
            f"data.train={data}",
            f"ref.cache_dir={Path(out).parent}/refcache",
            f"train.output_dir={out}",
            "train.batch_size=4",
            "train.lr=1e-3",
            "train.warmup_ratio=0",
            "train.tensorboard=false",
            "train.progress=false",
            "train.log_every=1",
            "train.group_by_length=false",
            "loss.beta=0.5",
            *extra,
        ],
    )


def test_dpo_learns_and_reuses_the_reference_cache(tiny_models, circle_data, tmp_path):
    data = _prefs(circle_data, tmp_path / "prefs.jsonl")
    a = run_dpo(
        _cfg(tiny_models, data, tmp_path / "a", "train.max_steps=9", "loss.w=0.5", "train.lr=5e-3")
    )
    # 12 queries x 3 responses, all computed once for the reference in the first epoch
    assert a["ref_computed"] == 36 and a["shared_prefix"]
    assert a["data"]["pairs"] == 24  # 2 pairs per query (ties skipped)
    first = a["history"][0]
    # the policy starts equal to the reference: every pair's loss is log 2
    assert first["loss/dpo"] == pytest.approx(math.log(2), abs=1e-5)
    assert a["history"][-1]["loss"] < first["loss"] and a["history"][-1]["rewards/accuracies"] > 0.5
    # a second run with the same data and reference model computes no reference forward
    b = run_dpo(
        _cfg(tiny_models, data, tmp_path / "b", "train.max_steps=9", "loss.w=0.5", "train.lr=5e-3")
    )
    assert b["ref_computed"] == 0
    torch.testing.assert_close(torch.tensor(b["losses"]), torch.tensor(a["losses"]))


def test_reference_copy_and_lookahead_equal_loading_the_reference(
    tiny_models, circle_data, tmp_path
):
    """Default: the reference is a copy of the untrained policy, and a cache miss also computes
    the next queries (up to ref.batch_queries). Loading ref.path from disk and computing one
    step's queries at a time must give the same losses."""
    data = _prefs(circle_data, tmp_path / "prefs.jsonl")
    a = run_dpo(_cfg(tiny_models, data, tmp_path / "a", "train.max_steps=3"))
    b = run_dpo(
        _cfg(
            tiny_models,
            data,
            tmp_path / "b",
            "train.max_steps=3",
            f"ref.path={tiny_models['llava']}",
            f"ref.cache_dir={tmp_path}/refcache_b",
            "ref.batch_queries=1",
        )
    )
    assert a["ref_computed"] == 36  # 12 queries x 3: the look-ahead filled the whole epoch
    assert b["ref_computed"] == 36
    torch.testing.assert_close(
        torch.tensor(a["losses"]), torch.tensor(b["losses"]), atol=1e-6, rtol=1e-6
    )


def test_shared_prefix_and_full_forwards_train_the_same(tiny_models, circle_data, tmp_path):
    data = _prefs(circle_data, tmp_path / "prefs.jsonl")
    s = run_dpo(_cfg(tiny_models, data, tmp_path / "s", "train.max_steps=3"))
    f = run_dpo(_cfg(tiny_models, data, tmp_path / "f", "train.max_steps=3", "shared_prefix=false"))
    assert s["shared_prefix"] and not f["shared_prefix"]
    torch.testing.assert_close(
        torch.tensor(s["losses"]), torch.tensor(f["losses"]), atol=1e-5, rtol=1e-5
    )


def test_resume_and_accumulation(tiny_models, circle_data, tmp_path):
    data = _prefs(circle_data, tmp_path / "prefs.jsonl")
    full = run_dpo(
        _cfg(tiny_models, data, tmp_path / "a", "train.max_steps=5", "train.save_every=2")
    )
    cfg = _cfg(tiny_models, data, tmp_path / "b", "train.max_steps=5", "train.save_every=2")
    assert run_dpo(cfg, stop_after=3)["stopped_at"] == 3
    resumed = run_dpo(cfg, resume="auto")
    torch.testing.assert_close(
        torch.tensor(resumed["losses"]), torch.tensor(full["losses"]), atol=1e-6, rtol=1e-6
    )
    acc = run_dpo(
        _cfg(
            tiny_models,
            data,
            tmp_path / "c",
            "train.max_steps=2",
            "train.batch_size=2",
            "train.grad_accum=2",
        )
    )
    torch.testing.assert_close(
        torch.tensor(acc["losses"]), torch.tensor(full["losses"][:2]), atol=1e-5, rtol=1e-5
    )


def test_single_pair_and_negative_deltas_do_not_nan(tiny_models, circle_data, tmp_path):
    data = _prefs(circle_data, tmp_path / "neg.jsonl", negative_delta=True)
    r = run_dpo(
        _cfg(
            tiny_models,
            data,
            tmp_path / "n",
            "train.max_steps=3",
            "train.batch_size=1",
            "data.max_pairs_per_query=1",
            "loss.w=1.0",
        )
    )
    assert all(math.isfinite(x) for x in r["losses"])
    assert all(h["beta/min"] == pytest.approx(0.01) for h in r["history"])  # floored


def test_lora_reference_is_the_adapter_disabled_policy(tiny_models, circle_data, tmp_path):
    data = _prefs(circle_data, tmp_path / "prefs.jsonl")
    r = run_dpo(
        _cfg(
            tiny_models,
            data,
            tmp_path / "l",
            "train.max_steps=2",
            "model.lora.enabled=true",
            "model.lora.r=4",
        )
    )
    assert r["history"][0]["loss/dpo"] == pytest.approx(math.log(2), abs=1e-5)
    assert (Path(r["final"]) / "adapter").is_dir()


def test_missing_rewards_with_scaling_is_a_clear_error(tiny_models, circle_data, tmp_path):
    data = _prefs(circle_data, tmp_path / "prefs.jsonl")
    rows = [json.loads(x) for x in data.read_text().splitlines()]
    for row in rows:
        for resp in row["responses"]:
            resp.pop("reward", None)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="needs a reward margin"):
        run_dpo(_cfg(tiny_models, data, tmp_path / "e", "train.max_steps=1", "loss.w=0.5"))
