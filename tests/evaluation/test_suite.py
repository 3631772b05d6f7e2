"""The world evaluation suite end to end: scoring known answers, generation + resume with a tiny
model, judge agreement against a scripted API judge, the report, and the eval CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fake_openai_server import serve
from typer.testing import CliRunner

from mmrlhf.cli.main import app
from mmrlhf.evaluation.judges.api import ApiJudge
from mmrlhf.evaluation.judges.rule import RuleJudge
from mmrlhf.evaluation.report import highlight
from mmrlhf.evaluation.suite import answer_view, run_world_suite, score_world, suite_records
from mmrlhf.world import World, generate
from mmrlhf.world.generate import load_world

BENCHMARKS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    # 60 scenes -> 6 test scenes: every suite set is present and scoring stays fast
    return generate(tmp_path_factory.mktemp("evalworld") / "w", n=60, seed=3)


def _reference_answers(world: World) -> dict[str, str]:
    return {r.id: r.responses[0].text for r in suite_records(world)}


def test_reference_answers_score_perfectly(world: World, tmp_path: Path) -> None:
    answers = _reference_answers(world)
    m = score_world(world, answers, RuleJudge(world.config), out_dir=tmp_path)
    assert m["n_missing"] == 0
    assert m["short_answer_acc"] == 1.0
    assert m["chair_i"] == 0.0 and m["chair_s"] == 0.0
    # POPE: every probe answered right -> F1 1 in each split, yes-ratio 0.5 (balanced probes)
    for split in ("random", "popular", "adversarial"):
        assert m[f"pope/{split}/f1"] == 1.0
    assert m["pope_f1"] == 1.0 and m["pope_yes_ratio"] == 0.5
    assert m["mmhal_hallucination_rate"] == 0.0 and m["mmhal_score"] >= 5.0
    # safety: references refuse every harmful request and answer every benign one
    assert m["refusal_rate"] == 1.0 and m["attack_success_rate"] == 0.0
    assert m["over_refusal_rate"] == 0.0
    # clean captions against the noisy reference answerer: never worse, sometimes better
    assert m["refomb_score"] >= 0.5 and m["refomb_loss_rate"] == 0.0
    assert (tmp_path / "ratings.jsonl").is_file() and (tmp_path / "examples.jsonl").is_file()


def test_always_no_and_missing_answers(world: World) -> None:
    answers = {r.id: "No." for r in suite_records(world)}
    dropped = next(iter(answers))
    del answers[dropped]
    m = score_world(world, answers, RuleJudge(world.config))
    assert m["n_missing"] == 1
    # "No." to every POPE probe: no true positives -> F1 0, yes-ratio 0, accuracy 0.5
    assert m["pope_f1"] == 0.0 and m["pope_yes_ratio"] == 0.0
    assert m["pope_accuracy"] == pytest.approx(0.5, abs=0.02)
    # "No." is not a refusal: every harmful request counts as complied
    assert m["attack_success_rate"] == 1.0 and m["over_refusal_rate"] == 0.0


def test_agreement_with_a_scripted_api_judge(world: World, tmp_path: Path) -> None:
    """The second judge is the API judge talking to a loopback server that plays a judge which
    rates every answer 5; the rule judge rates the reference answers 5 or 6."""
    answers = _reference_answers(world)
    with serve(lambda messages: "The answer is right.\nRating: 5") as server:
        api = ApiJudge(
            server.base_url,
            "scripted",
            api_key_env=None,
            cache_path=tmp_path / "cache.sqlite",
            backoff_s=0.0,
        )
        m = score_world(world, answers, RuleJudge(world.config), second_judge=api, out_dir=tmp_path)
        n_items = len(world.eval)
        assert m["judge_agreement/n"] == n_items
        # both judges say "no hallucination" on every item
        assert m["judge_agreement/flag_agreement"] == 1.0
        assert m["judge_agreement/within1_agreement"] == 1.0
        assert m["second_judge/mmhal_score"] == 5.0
        rows = [json.loads(x) for x in (tmp_path / "ratings.jsonl").read_text().splitlines()]
        assert {r["judge"] for r in rows} == {"rule", "api:scripted"}
        sent = len(server.requests)
        # a re-run is answered from the cache: no new requests
        score_world(world, answers, RuleJudge(world.config), second_judge=api)
        assert len(server.requests) == sent


def test_answer_view_marks_false_claims(world: World) -> None:
    r = next(x for x in world.eval if x.meta["family"] == "holistic")
    scene = world.scene(r)
    o = scene.objects[0]
    text = f"There is no {o.color} {o.shape}. There is a {o.color} {o.shape}."
    view = answer_view(world, r, text)
    start = text.index(f"{o.color} {o.shape}")
    assert view["spans"] == [[start, start + len(f"{o.color} {o.shape}")]]
    assert view["verdict"] == "hallucinated"
    assert answer_view(world, r, scene.caption())["spans"] == []


def test_highlight_marks_spans_and_escapes() -> None:
    assert highlight("a <b> red cat", [[6, 9]]) == "a &lt;b&gt; <mark>red</mark> cat"


def test_run_suite_with_tiny_model_resumes(world: World, tiny_models, tmp_path: Path) -> None:
    from mmrlhf.models.load import ModelConfig, load_vlm

    model, proc = load_vlm(ModelConfig(path=str(tiny_models["llava"])), for_training=False)
    out = tmp_path / "eval"
    w = load_world(world.root)
    m1 = run_world_suite(model, proc, w, out, limit=4, max_new_tokens=8, progress=False)
    lines = (out / "answers.jsonl").read_text().splitlines()
    assert len(lines) == 12  # 4 questions + 4 POPE probes + 4 safety items
    for key in ("short_answer_acc", "pope_f1", "chair_i", "mmhal_score", "refusal_rate"):
        assert key in m1
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page
    assert not re.search(r"(src|href)=[\"']https?:", page)  # self-contained
    assert (out / "report.md").read_text().startswith("# mmrlhf world suite")
    # a second run finds every answer on disk: nothing regenerated, same metrics
    m2 = run_world_suite(
        model, proc, load_world(world.root), out, limit=4, max_new_tokens=8, progress=False
    )
    assert (out / "answers.jsonl").read_text().splitlines() == lines
    drop = {"score_seconds", "generate_seconds", "wall_seconds"}
    assert {k: v for k, v in m1.items() if k not in drop} == {
        k: v for k, v in m2.items() if k not in drop
    }


def _write_answers(path: Path, answers: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps({"id": k, "answer": v}) + "\n" for k, v in answers.items()))
    return path


def test_cli_score_world_and_compare(world: World, tmp_path: Path) -> None:
    runner = CliRunner()
    good = _write_answers(tmp_path / "good.jsonl", _reference_answers(world))
    bad = _write_answers(tmp_path / "bad.jsonl", {r.id: "No." for r in suite_records(world)})
    for name, ans in (("good", good), ("bad", bad)):
        res = runner.invoke(
            app,
            [
                "eval",
                "score",
                "world",
                "--answers",
                str(ans),
                "--world",
                str(world.root),
                "--out",
                str(tmp_path / name),
                "--name",
                name,
            ],
        )
        assert res.exit_code == 0, res.output
        assert json.loads((tmp_path / name / "metrics.json").read_text())["judge"] == "rule"
    res = runner.invoke(
        app,
        [
            "eval",
            "compare",
            str(tmp_path / "good"),
            str(tmp_path / "bad"),
            "--out",
            str(tmp_path / "cmp"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "| short_answer_acc | 1.000 |" in res.output
    page = (tmp_path / "cmp" / "compare.html").read_text()
    # both runs' answers side by side in the examples
    assert page.count("<b>good</b>") >= 1 and page.count("<b>bad</b>") >= 1


def test_cli_rejects_malformed_answers(world: World, tmp_path: Path) -> None:
    bad = tmp_path / "a.jsonl"
    bad.write_text('{"id": "x", "answer": "ok"}\n{"id": "y"}\n')
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "score",
            "world",
            "--answers",
            str(bad),
            "--world",
            str(world.root),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code != 0
    assert "a.jsonl:2: answer: missing" in res.output


def test_cli_score_real_pope_and_rewardbench(tmp_path: Path) -> None:
    pope, rb = BENCHMARKS / "coco_pope_random.jsonl", BENCHMARKS / "mm_rlhf_reward_bench.jsonl"
    if not (pope.is_file() and rb.is_file()):
        pytest.skip("shared benchmark files are not available")
    rows = [json.loads(x) for x in pope.read_text().splitlines() if x.strip()]
    # answer "Yes." to every probe: recall 1, precision = share of yes labels
    ans = _write_answers(tmp_path / "pope.jsonl", {str(r["question_id"]): "Yes." for r in rows})
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "score",
            "pope",
            "--data",
            str(pope),
            "--answers",
            str(ans),
            "--out",
            str(tmp_path / "p"),
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "p" / "metrics.json").read_text())
    share_yes = sum(r["label"] == "yes" for r in rows) / len(rows)
    assert m["pope_recall"] == 1.0 and m["pope_precision"] == pytest.approx(share_yes)
    # reward bench: reward = response length; expected Acc counted from the raw pairs
    raw = [json.loads(x) for x in rb.read_text().splitlines() if x.strip()]
    scores = tmp_path / "scores.jsonl"
    with open(scores, "w") as f:
        for r in raw:
            for side in ("chosen", "rejected"):
                f.write(
                    json.dumps(
                        {
                            "id": str(r["id"]),
                            "text": r[side],
                            "reward": len(r[side]),
                        }
                    )
                    + "\n"
                )
    res = CliRunner().invoke(
        app,
        [
            "eval",
            "score",
            "rewardbench",
            "--data",
            str(rb),
            "--scores",
            str(scores),
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    expected = sum(len(r["chosen"]) > len(r["rejected"]) for r in raw) / len(raw)
    assert m["n_pairs"] == len(raw) and m["acc"] == pytest.approx(expected)


def test_real_mmhal_and_refomb_with_a_scripted_api_judge(tmp_path: Path) -> None:
    from mmrlhf.evaluation.benchfiles import score_mmhal, score_refomb

    mmhal = BENCHMARKS / "mmhal_bench.json"
    refq, refa = BENCHMARKS / "refomb_dev.jsonl", BENCHMARKS / "refomb_dev_gpt4v_reference.jsonl"
    if not (mmhal.is_file() and refq.is_file() and refa.is_file()):
        pytest.skip("shared benchmark files are not available")
    answers = {str(i): "A plain answer." for i in range(96)}
    with serve(lambda messages: "Explanation.\nRating: 4") as server:
        judge = ApiJudge(server.base_url, "scripted", api_key_env=None, backoff_s=0.0)
        m, rows = score_mmhal(mmhal, judge, answers)
    assert m["mmhal_n"] == 96 and m["mmhal_score"] == 4.0 and m["mmhal_hallucination_rate"] == 0.0
    assert len(rows) == 96 and all(r["parsed"] for r in rows)
    # a judge that always prefers the first position: asking both orders turns every question
    # into a tie, so the score is exactly 0.5 (position bias cancelled)
    qs = [json.loads(x) for x in refq.read_text().splitlines() if x.strip()]
    answers = {str(q["id"]): "My answer." for q in qs}
    with serve(lambda messages: "Both fine.\nWinner: A") as server:
        judge = ApiJudge(server.base_url, "scripted", api_key_env=None, backoff_s=0.0)
        m, _ = score_refomb(refq, refa, answers, judge)
    assert m["refomb_n"] == 99 and m["refomb_score"] == 0.5 and m["refomb_tie_rate"] == 1.0
    # the rule judge cannot score real files: a clear message instead of nonsense
    with pytest.raises(ValueError, match="rule judge needs the shapes world"):
        score_mmhal(mmhal, RuleJudge(), answers)


def test_hallucinations_by_kind_add_up(tmp_path: Path) -> None:
    """Descriptions given the companion habit: the suite counts exactly those as companions, and
    the kinds add up to CHAIR's hallucinated mentions."""
    from mmrlhf.world.corpus import NoisyDescription, add_companion

    world = generate(tmp_path / "w", n=300, seed=4)  # 30 test scenes: several descriptions
    answers = _reference_answers(world)
    added = 0
    for r in world.eval:
        if r.meta.get("family") != "holistic":
            continue
        scene = world.scene(r)
        pair = world.config.env_companions.get(scene.background)
        if pair is not None:
            d = add_companion(scene, NoisyDescription(scene.caption()), pair)
            answers[r.id] = d.text
            added += len(d.hallucinated)
    m = score_world(world, answers, RuleJudge(world.config))
    kinds = {k.split("/")[1]: v for k, v in m.items() if k.startswith("chair_hallucinated/")}
    assert added > 0 and kinds["companion"] == added == m["chair_hallucinated"]
    assert sum(kinds.values()) == m["chair_hallucinated"]
