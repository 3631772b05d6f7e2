"""`mmrlhf demo` end to end on a miniature world (a few steps per stage): every stage runs (SFT,
candidates, annotation, critique RM, reward bench, margins, MM-DPO, both evaluations, report),
the metrics file has the documented keys, and a re-run is served from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmrlhf.demo import DemoSettings, run_demo

KEYS = (
    "chair_i",
    "chair_s",
    "pope_f1",
    "mmhal_score",
    "mmhal_hallucination_rate",
    "short_answer_acc",
    "refusal_rate",
    "over_refusal_rate",
)


def test_demo_runs_and_caches(tmp_path: Path) -> None:
    settings = DemoSettings(
        out=tmp_path / "demo",
        n_scenes=40,
        test_scenes=4,
        overrides=("train.max_steps=3", "train.batch_size=4", "train.save_every=2"),
        rm_queries=12,
        dpo_queries=8,
        bench_queries=6,
        rm_steps=2,
        rm_overrides=("train.batch_size=4", "train.save_every=0"),
        dpo_overrides=("train.max_steps=2", "train.batch_size=4", "train.save_every=0"),
        sample_weight=1000.0,  # always drawn, so every DPO query has them
        samples_per_query=2,
        candidate_weights=("false_denial=0", "wrong_color=2"),
        vision_steps=3,
        # the whole pipeline (SFT, critique RM, shared-prefix DPO, evaluation) with the
        # question before the image; image-first is what every other tiny-model test runs
        question_first=True,
    )
    first = run_demo(settings)
    template = (tmp_path / "demo/tiny-llava/chat_template.jinja").read_text()
    assert template.index("c['type'] == 'text'") < template.index("<image>")
    # the tower was pretrained inside the scratch folder, which was renamed when done
    assert (tmp_path / "demo/tiny-llava/vision_pretrain.json").exists()
    assert not (tmp_path / "demo/.tiny-llava.tmp").exists()
    dpo_recs = [json.loads(x) for x in (tmp_path / "demo/prefs/dpo_train.jsonl").open()]
    assert all(any(r["source"] == "sft@0.7" for r in d["responses"]) for d in dpo_recs)
    # two samples per query, each from its own seed and file; distinct ones both get drawn
    assert (tmp_path / "demo/prefs/sft_samples.jsonl").exists()
    assert (tmp_path / "demo/prefs/sft_samples_1.jsonl").exists()
    assert any(sum(r["source"] == "sft@0.7" for r in d["responses"]) == 2 for d in dpo_recs)
    rm_recs = [json.loads(x) for x in (tmp_path / "demo/prefs/rm_train.jsonl").open()]
    assert not any(
        r["source"] == "false_denial" for d in rm_recs + dpo_recs for r in d["responses"]
    )
    for key in KEYS:
        assert key in first["sft"] and key in first["aligned"], key
    assert 0.0 <= first["reward_bench"]["acc"] <= 1.0
    assert first["dpo"]["steps"] == 2 and first["dpo"]["shared_prefix"]
    saved = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert saved["sft"] == first["sft"] and saved["wall_seconds"] > 0
    # the SFT evaluation and the reward bench ran in the worker process, beside other stages
    assert {"eval_sft", "rewardbench", "margins", "dpo"} <= set(first["stage_seconds"])
    page = (tmp_path / "demo" / "report.html").read_text()
    assert "reward bench" in page and "MM-DPO training" in page and "<b>aligned</b>" in page
    again = run_demo(settings)
    assert again["sft"] == first["sft"]
    # every stage was cached: the second run only reads files back
    assert again["wall_seconds"] < first["wall_seconds"]


def test_folder_from_before_companions_reads_as_companion_rate_zero(tmp_path: Path) -> None:
    """A folder stamped before ``companion_rate`` existed ran a world without companions: the
    new default (0.8) must not pass for it, 0 must; its world is cached only at its own rate."""
    from mmrlhf.demo import DemoSettingsChanged, _check_settings, _world_companion_rate

    out = tmp_path / "old"
    out.mkdir()
    _check_settings(DemoSettings(out=out, seed=1))
    stamp = json.loads((out / "demo_settings.json").read_text())
    for key in ("companion_rate", "critique_quotes_question", "rm_safety_share"):
        del stamp[key]
    (out / "demo_settings.json").write_text(json.dumps(stamp))
    with pytest.raises(DemoSettingsChanged, match=r"companion_rate: 0.0 -> 0.8") as e:
        _check_settings(DemoSettings(out=out, seed=1))
    assert "critique_quotes_question: True -> False" in str(e.value)
    assert "rm_safety_share: None -> 0.333" in str(e.value)
    old = {"companion_rate": 0.0, "critique_quotes_question": True, "rm_safety_share": None}
    _check_settings(DemoSettings(out=out, seed=1, **old))
    assert _world_companion_rate({"test_fraction": 0.02}) == 0.0  # world.json from before
    assert _world_companion_rate({"env_companions": {"meadow": "yellow circle"}}) == 0.0
    on = {"env_companions": {"meadow": "yellow circle"}, "companion_rate": 0.8}
    assert _world_companion_rate(on) == 0.8
    assert _world_companion_rate({**on, "env_companions": {}}) == 0.0
    with pytest.raises(ValueError, match="companion_rate must be in"):
        DemoSettings(out=out, companion_rate=1.5)


def test_rerun_with_other_settings_is_refused(tmp_path: Path) -> None:
    """Stages are cached by their files: a re-run in the same folder with other settings would
    reuse results made with the old ones, so it stops with the changed settings named."""
    from typer.testing import CliRunner

    from mmrlhf.cli.main import app
    from mmrlhf.demo import DemoSettingsChanged, _check_settings

    out = tmp_path / "demo"
    out.mkdir()
    _check_settings(DemoSettings(out=out, seed=1, overrides=("train.max_steps=3",)))
    _check_settings(DemoSettings(out=out, seed=1, overrides=("train.max_steps=3",)))  # same: ok
    with pytest.raises(DemoSettingsChanged, match=r"critique_order: 'reason_first' -> 'verdict"):
        _check_settings(
            DemoSettings(
                out=out, seed=1, overrides=("train.max_steps=3",), critique_order="verdict_first"
            )
        )
    with pytest.raises(DemoSettingsChanged, match=r"overrides: \['train.max_steps=3'\] -> \[\]"):
        _check_settings(DemoSettings(out=out, seed=1))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "demo_settings.json").write_text("{half")
    with pytest.raises(DemoSettingsChanged, match=r"demo_settings.json: unreadable"):
        _check_settings(DemoSettings(out=tmp_path / "bad"))
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--seed", "2"])
    assert res.exit_code == 2 and "seed: 1 -> 2" in res.output and "new --out" in res.output
    # the recipe preset is the five settings it names
    res = CliRunner().invoke(
        app, ["demo", "--out", str(out), "--seed", "1", "--pretrained-lm", "train.max_steps=3"]
    )
    for change in (
        "annotation_vocabulary: False -> True",
        "language_steps: 0 -> 12000",
        "relation_steps: 0 -> 3000",
        "question_first: False -> True",
        "relation_rationale: False -> True",
    ):
        assert change in res.output, res.output
    with pytest.raises(DemoSettingsChanged, match=r"vision_steps: 1000 -> 0"):
        _check_settings(
            DemoSettings(out=out, seed=1, overrides=("train.max_steps=3",), vision_steps=0)
        )
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "v"), "--vision-steps", "-1"])
    assert res.exit_code == 2 and "vision_steps must be >= 0" in res.output
    assert not (tmp_path / "v").exists()  # refused before any stage ran
    res = CliRunner().invoke(
        app,
        ["demo", "--out", str(tmp_path / "v"), "--vision-steps", "0", "--language-steps", "5"],
    )
    assert res.exit_code == 2 and "language_steps needs the vision tower" in res.output
    res = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "v"), "--relation-steps", "5"])
    said = " ".join(res.output.replace("│", " ").split())  # the error box wraps lines
    assert res.exit_code == 2 and "needs language_steps > 0" in said
    assert "--relation-steps" in said
    assert not (tmp_path / "v").exists()
    res = CliRunner().invoke(
        app, ["demo", "--out", str(tmp_path / "v"), "--samples-per-query", "0"]
    )
    assert res.exit_code == 2 and "samples_per_query must be >= 1" in res.output
    res = CliRunner().invoke(
        app,
        ["demo", "--out", str(tmp_path / "w"), "--candidate-weight", "wrong_colour=1"],
        env={"COLUMNS": "300"},
    )
    assert res.exit_code == 2 and "unknown source 'wrong_colour'" in res.output
    assert not (tmp_path / "w").exists()
    with pytest.raises(
        DemoSettingsChanged, match=r"candidate_weights: \[\] -> \['false_denial=0'\]"
    ):
        _check_settings(
            DemoSettings(
                out=out,
                seed=1,
                overrides=("train.max_steps=3",),
                candidate_weights=("false_denial=0",),
            )
        )
    # a folder made before a setting existed: the missing setting reads as its default
    stamp = json.loads((out / "demo_settings.json").read_text())
    del stamp["candidate_weights"]
    (out / "demo_settings.json").write_text(json.dumps(stamp))
    _check_settings(DemoSettings(out=out, seed=1, overrides=("train.max_steps=3",)))
    with pytest.raises(DemoSettingsChanged, match=r"candidate_weights"):
        _check_settings(
            DemoSettings(
                out=out, seed=1, overrides=("train.max_steps=3",), candidate_weights=("model=1",)
            )
        )


def test_dpo_queries_keep_yes_and_no_level(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from mmrlhf.demo import _split_queries

    def q(i: int, family: str, answer: str | None) -> SimpleNamespace:
        return SimpleNamespace(
            id=f"q{i}", meta={"family": family}, facts=SimpleNamespace(short_answer=answer)
        )

    # three "no" for every "yes", plus other families: an unbalanced pool like a plain draw
    pool = [q(i, "existence", "yes" if i % 4 == 0 else "no") for i in range(200)]
    pool += [q(200 + i, "counting", str(i % 3)) for i in range(100)]
    pool += [q(300 + i, "holistic", None) for i in range(100)]
    s = DemoSettings(
        out=tmp_path,
        rm_queries=50,
        dpo_queries=120,
        dpo_description_share=0.25,
        rm_safety_share=None,
    )
    out = _split_queries(pool, s)
    rm, dpo = out[:50], out[50:]
    assert len(dpo) == 120 and not {r.id for r in rm} & {r.id for r in dpo}
    assert sum(r.meta["family"] == "holistic" for r in dpo) == 30
    answers = [r.facts.short_answer for r in dpo]
    assert abs(answers.count("yes") - answers.count("no")) <= 1
    assert answers.count("yes") > 10  # the scarce answer is all kept, not the level forced low


def test_rm_safety_share_leaves_the_dpo_queries_alone(tmp_path: Path) -> None:
    """The RM's queries get their safety share (drawn, then spare pool records, then new ones on
    training scenes); the DPO queries are the ones drawn without it; the two stay disjoint."""
    from mmrlhf.demo import _split_queries
    from mmrlhf.world import generate
    from mmrlhf.world.annotate import annotation_queries

    world = generate(tmp_path / "w", n=120, seed=5)
    pool = annotation_queries(world, "train")
    base = DemoSettings(out=tmp_path, rm_queries=90, dpo_queries=60, rm_safety_share=None)
    plain = _split_queries(pool, base)
    for share in (1 / 3, 0.9):
        s = DemoSettings(out=tmp_path, rm_queries=90, dpo_queries=60, rm_safety_share=share)
        out = _split_queries(pool, s, world)
        rm, dpo = out[:90], out[90:]
        assert [r.id for r in dpo] == [r.id for r in plain[90:]]
        assert sum(r.meta["family"] == "safety" for r in rm) == round(90 * share)
        assert len({r.id for r in out}) == len(out) and len(rm) == 90
    assert any("-rmsafety-" in r.id for r in rm)  # 81 safety queries: the pool ran out


def test_sft_overrides_lower_the_lr_for_a_pretrained_lm(tmp_path: Path) -> None:
    from mmrlhf.config import load_config
    from mmrlhf.demo import PRETRAINED_LM_SFT_LR, REPO_CONFIGS, sft_overrides
    from mmrlhf.training.sft import SFTConfig

    def lr(**kw: object) -> float:
        s = DemoSettings(out=tmp_path, **kw)  # type: ignore[arg-type]
        ov = sft_overrides(s, tmp_path / "m", tmp_path / "w", tmp_path / "sft")
        return load_config(SFTConfig, REPO_CONFIGS / "world" / "sft.yaml", ov).train.lr

    assert lr() == 2e-3  # the shipped config's, for a random LM
    assert lr(language_steps=5) == PRETRAINED_LM_SFT_LR
    assert lr(language_steps=5, overrides=("train.lr=1e-3",)) == 1e-3  # the user's wins


def test_the_demos_rm_stage_is_the_measured_one(tmp_path: Path) -> None:
    """The demo's RM stage stays 150 steps of 8 queries on one thread in MM-RLHF's layout (its
    measured results) whatever the standalone rm_critique.yaml trains; the user's overrides win."""
    from mmrlhf.config import load_config
    from mmrlhf.demo import REPO_CONFIGS, rm_overrides
    from mmrlhf.training.reward import RewardConfig

    def cfg(**kw: object) -> RewardConfig:
        s = DemoSettings(out=tmp_path, **kw)  # type: ignore[arg-type]
        ov = rm_overrides(s, tmp_path / "sft", tmp_path / "t.jsonl", tmp_path / "rm")
        return load_config(RewardConfig, REPO_CONFIGS / "world" / "rm_critique.yaml", ov)

    c = cfg()
    assert (c.train.max_steps, c.train.batch_size, c.train.num_threads) == (150, 8, 1)
    assert c.rm.type == "critique" and not c.rm.response_first
    assert c.data.eval == "" and c.model.path == str(tmp_path / "sft")
    assert cfg(rm_overrides=("train.batch_size=4",)).train.batch_size == 4
