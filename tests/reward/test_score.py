"""score_records (rewards, margins, critiques, resume) and the reward CLI commands."""

import json

import pytest
import torch
from typer.testing import CliRunner

from mmrlhf.cli.main import app
from mmrlhf.data.io import load_records
from mmrlhf.data.pairs import derive_pairs
from mmrlhf.models.reward import RewardModel, RewardSpec
from mmrlhf.reward.score import score_records

runner = CliRunner()


@pytest.fixture(scope="module")
def saved_rms(tiny_models, tmp_path_factory):
    out = {}
    for t in ("scalar", "critique"):
        torch.manual_seed(0)
        rm = RewardModel.from_pretrained(
            tiny_models["llava"], init_head=True, spec=RewardSpec(type=t), device="cpu"
        )
        out[t] = rm.save_pretrained(tmp_path_factory.mktemp(f"rm-{t}") / "rm")
    return out


def _records(pref_data, n=5):
    return load_records(pref_data)[0][:n]


def test_scores_rewards_and_margins_and_resumes(saved_rms, pref_data, tmp_path):
    rm = RewardModel.from_pretrained(saved_rms["scalar"], device="cpu")
    root = pref_data.parent
    full = score_records(
        rm, rm.processor, _records(pref_data), batch_size=4, media_root=root, progress=False
    )
    for rec in full:
        assert all(isinstance(x.reward, float) for x in rec.responses)
        pairs = derive_pairs(rec)
        assert [(p.chosen, p.rejected) for p in rec.preferences] == [
            (p.chosen, p.rejected) for p in pairs
        ]
        for p in rec.preferences:
            assert p.margin == pytest.approx(
                rec.responses[p.chosen].reward - rec.responses[p.rejected].reward
            )
        # downstream (MM-DPO) reads the margin either way
        assert [p.margin for p in derive_pairs(rec, margin="reward")] == pytest.approx(
            [p.margin for p in rec.preferences]
        )
    # resume: a partial out file (2 records) is kept, the other 3 are scored and appended
    out = tmp_path / "scored.jsonl"
    score_records(
        rm, rm.processor, _records(pref_data, 2), media_root=root, out_path=out, progress=False
    )
    calls = []
    orig = rm.forward
    rm.forward = lambda b, **kw: calls.append(b["input_ids"].shape[0]) or orig(b, **kw)
    resumed = score_records(
        rm,
        rm.processor,
        _records(pref_data),
        batch_size=4,
        media_root=root,
        out_path=out,
        progress=False,
    )
    assert sum(calls) == 9  # 3 records x 3 responses: the first two were not scored again
    assert [r.id for r in resumed] == [r.id for r in full]
    lines = out.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == [r.id for r in full]
    for a, b in zip(resumed, full, strict=True):
        assert [x.reward for x in a.responses] == pytest.approx(
            [x.reward for x in b.responses], abs=1e-5
        )


@pytest.mark.parametrize("mode", ["generate", "sample", "given", "none"])
def test_critique_modes(saved_rms, pref_data, mode):
    rm = RewardModel.from_pretrained(saved_rms["critique"], device="cpu")
    recs = _records(pref_data, 2)
    human = recs[0].responses[0].critique
    out = score_records(
        rm,
        rm.processor,
        recs,
        mode=mode,
        n_samples=2,
        max_new_tokens=6,
        media_root=pref_data.parent,
        progress=False,
    )
    first = out[0].responses[0]
    assert isinstance(first.reward, float)
    if mode in ("generate", "sample"):
        assert first.meta["human_critique"] == human
        assert first.critique is not None
    else:
        assert first.critique == human and "human_critique" not in first.meta
    if mode == "sample":
        assert len(first.meta["critique_samples"]) == 2
        assert first.reward == pytest.approx(sum(first.meta["reward_samples"]) / 2)


def test_cli_help():
    for cmd in (
        ["train", "rm", "--help"],
        ["reward", "score", "--help"],
        ["eval", "rewardbench", "--help"],
    ):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 0, res.output
    assert "rm.lambda_critique" in runner.invoke(app, ["train", "rm", "--help"]).output


def test_cli_score_and_rewardbench(saved_rms, pref_data, tmp_path):
    out = tmp_path / "scored.jsonl"
    res = runner.invoke(
        app,
        [
            "reward",
            "score",
            str(pref_data),
            "--rm",
            str(saved_rms["scalar"]),
            "--out",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    assert len(out.read_text().splitlines()) == 24
    res = runner.invoke(
        app,
        [
            "eval",
            "rewardbench",
            "--rm",
            str(saved_rms["scalar"]),
            "--data",
            str(pref_data),
            "--out",
            str(tmp_path / "rb"),
            "--no-progress",
            "--device",
            "cpu",
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "rb" / "metrics.json").read_text())
    assert m["n_pairs"] == 48 and "acc/color" in m and "color" in res.output


def test_rewardbench_without_images_is_a_clear_error(saved_rms, pref_data, tmp_path):
    bench = tmp_path / "bench.jsonl"
    bench.write_text(pref_data.read_text())  # image paths now point nowhere
    res = runner.invoke(
        app,
        [
            "eval",
            "rewardbench",
            "--rm",
            str(saved_rms["scalar"]),
            "--data",
            str(bench),
            "--no-progress",
        ],
    )
    assert res.exit_code == 2
    assert "images[0]: image file not found" in res.output


def test_rewardbench_passes_the_sampling_temperature(saved_rms, pref_data, tmp_path):
    # At temperature 0 "sample" draws the greedy critique every time, so its mean reward is the
    # "generate" mode's reward; at the default temperature 1 the sampled critiques differ.
    def rewards(tag: str, *opts: str) -> list[float]:
        res = runner.invoke(
            app,
            ["eval", "rewardbench", "--rm", str(saved_rms["critique"]), "--data", str(pref_data)]
            + ["--out", str(tmp_path / tag), "--no-progress", "--device", "cpu", *opts],
        )
        assert res.exit_code == 0, res.output
        rows = (tmp_path / tag / "scored.jsonl").read_text().splitlines()
        return [x["reward"] for line in rows for x in json.loads(line)["responses"]]

    greedy = rewards("g", "--mode", "generate")
    cold = rewards("t0", "--mode", "sample", "--samples", "2", "--temperature", "0")
    hot = rewards("t1", "--mode", "sample", "--samples", "2")
    assert cold == pytest.approx(greedy, abs=1e-5)
    assert hot != pytest.approx(greedy, abs=1e-5)


def test_beam_search_critiques_are_batch_invariant_and_not_greedy(saved_rms, pref_data):
    # Beam search over a left-padded batch finds each item's critique as if it were alone (the
    # padding is masked out of every beam), and it is a different decoder from greedy: on the
    # untrained critic some critiques differ (this fails if num_beams were dropped).
    from mmrlhf.models.inputs import load_media
    from mmrlhf.reward.score import generate_critiques

    rm = RewardModel.from_pretrained(saved_rms["critique"], device="cpu").eval()
    recs = _records(pref_data, 3)
    items = [(r, x.text, load_media(r, pref_data.parent)) for r in recs for x in r.responses]
    beam = generate_critiques(rm, rm.processor, items, max_new_tokens=8, num_beams=4)
    alone = [
        generate_critiques(rm, rm.processor, [it], max_new_tokens=8, num_beams=4)[0] for it in items
    ]
    greedy = generate_critiques(rm, rm.processor, items, max_new_tokens=8)
    assert beam == alone
    assert any(b != g for b, g in zip(beam, greedy, strict=True))
    with pytest.raises(ValueError, match="temperature 0"):
        generate_critiques(rm, rm.processor, items[:1], num_beams=2, temperature=1.0)


def test_cli_beams_reach_the_critic_and_need_generate_mode(saved_rms, pref_data, tmp_path):
    from mmrlhf.models.inputs import load_media
    from mmrlhf.reward.score import generate_critiques

    base = ["eval", "rewardbench", "--rm", str(saved_rms["critique"]), "--data", str(pref_data)]
    base += ["--no-progress", "--device", "cpu", "--max-new-tokens", "8"]
    res = runner.invoke(app, base + ["--beams", "3", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    first = json.loads((tmp_path / "b" / "scored.jsonl").read_text().splitlines()[0])
    rm = RewardModel.from_pretrained(saved_rms["critique"], device="cpu").eval()
    rec = load_records(pref_data)[0][0]
    items = [(rec, x.text, load_media(rec, pref_data.parent)) for x in rec.responses]
    want = generate_critiques(rm, rm.processor, items, max_new_tokens=8, num_beams=3)
    assert [x["critique"] for x in first["responses"]] == [c[0] for c in want]
    res = runner.invoke(app, base + ["--beams", "3", "--mode", "sample"])
    assert res.exit_code == 2 and "mode generate" in res.output
