"""Fine-grained preference data for the shapes world (mmrlhf.world.annotate)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmrlhf.cli.main import app
from mmrlhf.data import derive_pairs, load_records
from mmrlhf.data.record import Record, Response
from mmrlhf.evaluation.judges.rule import RuleJudge
from mmrlhf.world import (
    Glyph,
    Scene,
    SceneObject,
    World,
    WorldConfig,
    check_short_answer,
    is_refusal,
)
from mmrlhf.world.annotate import (
    CORRUPTIONS,
    DEFAULT_WEIGHTS,
    AnnotateConfig,
    agreement_stats,
    annotate_records,
    annotation_queries,
    bench_category,
    candidate_pool,
    correct_description,
    count_empty_answers,
    fleiss_kappa,
    judge_response,
    kendall_tau_b,
    padding,
    parse_weights,
    reward_bench,
    truth_text,
)
from mmrlhf.world.truth import stated_value

runner = CliRunner()
WRONG = ("wrong_count", "wrong_color", "wrong_shape", "wrong_position", "wrong_value")


def _queries(world: World) -> list:
    return annotation_queries(world, "train", 250, seed=1) + annotation_queries(world, "test")


@pytest.fixture(scope="module")
def clean(small_world: World) -> list:
    return annotate_records(_queries(small_world), small_world, AnnotateConfig(noise=0.0))


def test_corruptions_are_wrong_per_ground_truth(small_world: World) -> None:
    judge = RuleJudge(small_world.config)
    seen: set[str] = set()
    for rec in _queries(small_world):
        scene = small_world.scene(rec)
        truth = truth_text(rec, scene)
        short = rec.facts.short_answer is not None and rec.meta.get("safety") != "harmful"
        for src, text in candidate_pool(rec, scene, small_world.config, random.Random(0)):
            seen.add(src)
            a = judge.assess(rec.query, text, scene, rec, reference=truth)
            if src == "truth":
                assert a.violations == 0 and a.rating >= 5, (rec.id, text)
                if short:
                    assert check_short_answer(rec, text, small_world.config)
            elif src in WRONG:
                assert a.violations >= 1, (rec.id, src, text)
                if short:
                    assert not check_short_answer(rec, text, small_world.config), (rec.id, text)
            elif src == "absent_object":
                # asserts something the scene lacks: a fabricated mention, or a wrong "yes"
                assert a.hallucinated or (short and a.stated and not a.correct), (rec.id, text)
            elif src == "false_denial":
                # denies the object the question is about, which the scene has
                assert a.denied and a.violations >= 1, (rec.id, text)
                if rec.meta["asks"] != "yes_no":  # "No, ..." can be the right yes/no by chance
                    assert not check_short_answer(rec, text, small_world.config), (rec.id, text)
            elif src == "unsafe_compliance":
                assert rec.meta["safety"] == "harmful" and not is_refusal(text)
            elif src == "verbose":
                assert a.violations == 0 and padding(text, a.kind) >= 2, (rec.id, text)
                if short:
                    assert check_short_answer(rec, text, small_world.config), (rec.id, text)
            elif src == "refusal":
                assert is_refusal(text) and rec.meta.get("safety") != "harmful"
            elif src == "incomplete":
                assert a.violations == 0 and a.recall is not None and a.recall < 1
    assert seen == {"truth", *CORRUPTIONS}


def test_noise_free_annotator_is_correct(small_world: World, clean: list) -> None:
    judge = RuleJudge(small_world.config)
    assert len(clean) > 300
    for rec in clean:
        assert rec.ranking is not None and rec.ranking.problems(rec.k) == []
        assert 2 <= rec.k <= 4 and len(rec.ranking.groups) >= 2
        assert len({r.text for r in rec.responses}) == rec.k
        rank = rec.ranking.rank_of()
        (ti,) = [i for i, r in enumerate(rec.responses) if r.source == "truth"]
        truth = rec.responses[ti]
        assert rank[ti] == 0, rec.id
        assert [truth.helpfulness.value, truth.faithfulness.value, truth.ethics.value] == [5] * 3
        scene = small_world.scene(rec)
        for i, r in enumerate(rec.responses):
            for s in r.scores().values():
                assert 1 <= s.value <= 5 and s.reason
            assert r.critique and r.critique.count(". ") + 1 >= 2
            if r.source in WRONG or r.source == "absent_object":
                assert r.faithfulness.value < 5 and rank[i] > 0
            if r.source == "unsafe_compliance":
                assert r.ethics.value <= 2 and rank[i] == len(rec.ranking.groups) - 1
            if r.source == "verbose":
                assert r.helpfulness.value < truth.helpfulness.value
                assert r.faithfulness.value == 5
            if r.source == "refusal":
                assert r.helpfulness.value <= 2 and r.faithfulness.value == 5
            # the critique names what is wrong: every hallucinated mention, the wrong value
            a = judge.assess(rec.query, r.text, scene, rec, reference=truth.text)
            for h in a.hallucinated:
                assert h in r.critique and h in r.faithfulness.reason, (h, r.critique)
            if a.kind == "short" and a.stated and not a.correct:
                v = stated_value(rec, r.text, small_world.config)
                if v is None or v == "none":  # e.g. an answer about an absent object: quoted
                    v = r.text.split(". ")[0].rstrip(".")
                assert v in r.critique and v in r.faithfulness.reason, (v, r.critique)
        assert rec.category == bench_category(rec)
        assert rec.meta["family"] and len(rec.meta["annotators"]) == 3


def test_ranking_follows_the_rule(clean: list) -> None:
    for rec in clean:
        keys = [(r.ethics.value, r.faithfulness.value, r.helpfulness.value) for r in rec.responses]
        for g, h in zip(rec.ranking.groups, rec.ranking.groups[1:], strict=False):
            assert len({keys[i] for i in g}) == 1
            assert keys[g[0]] > keys[h[0]]
        assert rec.ranking.reason.startswith("Ranked by ethics")


def test_deterministic_by_seed(small_world: World) -> None:
    qs = _queries(small_world)[:80]
    cfg = AnnotateConfig(noise=0.2, seed=3)
    a = [r.to_dict() for r in annotate_records(qs, small_world, cfg)]
    b = [r.to_dict() for r in annotate_records(qs, small_world, AnnotateConfig(noise=0.2, seed=3))]
    c = [r.to_dict() for r in annotate_records(qs, small_world, AnnotateConfig(noise=0.2, seed=4))]
    assert a == b and a != c


def test_verdict_first_moves_only_the_verdict(small_world: World, clean: list) -> None:
    """verdict_first writes the same sentences with the closing "Overall it is ..." in front;
    scores, rankings and everything else are unchanged."""
    qs = _queries(small_world)
    vf = annotate_records(
        qs, small_world, AnnotateConfig(noise=0.0, critique_order="verdict_first")
    )
    assert len(vf) == len(clean)
    n = 0
    for a, b in zip(clean, vf, strict=True):
        assert a.ranking == b.ranking
        for ra, rb in zip(a.responses, b.responses, strict=True):
            assert (ra.text, ra.faithfulness, ra.helpfulness) == (
                rb.text,
                rb.faithfulness,
                rb.helpfulness,
            )
            verdict = "Overall it is" + ra.critique.rsplit("Overall it is", 1)[1]
            assert rb.critique.startswith(verdict) and ra.critique.endswith(verdict)
            assert sorted(rb.critique.split()) == sorted(ra.critique.split())
            n += rb.critique != ra.critique
    assert n > 0
    with pytest.raises(ValueError, match="critique_order"):
        AnnotateConfig(critique_order="verdict_last")


def test_noise_lowers_agreement(small_world: World, clean: list) -> None:
    stats = agreement_stats(clean)
    assert stats["records"] == len(clean) and stats["annotators"] == 3
    assert stats["pair_agreement"] == 1.0 and stats["kendall_tau"] == 1.0
    assert all(v == 1.0 for v in stats["score_agreement"].values())
    assert all(v == 1.0 for v in stats["fleiss_kappa"].values())

    noisy = annotate_records(_queries(small_world), small_world, AnnotateConfig(noise=0.3))
    assert [r.id for r in noisy] == [r.id for r in clean]  # same queries and candidates
    changed = sum(
        x.to_dict()["responses"] != y.to_dict()["responses"] or x.ranking.groups != y.ranking.groups
        for x, y in zip(clean, noisy, strict=True)
    )
    assert changed > len(clean) // 4
    ns = agreement_stats(noisy)
    assert ns["pair_agreement"] < 1.0 and ns["kendall_tau"] < 1.0
    assert all(v < 1.0 for v in ns["score_agreement"].values())
    assert 0 < ns["fleiss_kappa"]["faithfulness"] < 1.0
    for r in noisy:  # noisy labels stay on the scale and the rankings stay valid
        assert r.ranking.problems(r.k) == []
        assert all(1 <= s.value <= 5 for x in r.responses for s in x.scores().values())


def test_reward_bench(small_world: World) -> None:
    bench = reward_bench(small_world, AnnotateConfig(noise=0.5))  # the bench forces noise 0
    assert bench and agreement_stats(bench)["pair_agreement"] == 1.0
    assert {r.category for r in bench} <= {"short", "long", "safety", "existence"}
    assert {"short", "long", "safety"} <= {r.category for r in bench}
    for r in bench:
        assert small_world.scene(r).split == "test" and r.meta["family"]
        assert any(not p.is_tie for p in derive_pairs(r))


def test_model_answers_join_the_candidates(small_world: World) -> None:
    qs = [q for q in _queries(small_world) if q.meta.get("safety") != "harmful"][:40]
    fake = {q.id: [("model@0.7", "I do not know."), ("model@1", "Purple.")] for q in qs}
    weights = {"model": 100.0, "verbose": 1.0}
    cfg = AnnotateConfig(k=3, weights=weights)
    recs = annotate_records(qs, small_world, cfg, model_answers=fake)
    assert recs
    judge = RuleJudge(small_world.config)
    for rec in recs:
        srcs = [r.source for r in rec.responses]
        assert "truth" in srcs and "model@0.7" in srcs
        rank = rec.ranking.rank_of()
        ti = srcs.index("truth")
        for i, r in enumerate(rec.responses):
            if r.source == "model@0.7":  # no claim: faithful but unhelpful, below the truth
                assert r.faithfulness.value == 5 and r.helpfulness.value <= 2
                assert rank[i] > rank[ti]
            if r.source == "model@1":  # graded from the text like any answer
                scene = small_world.scene(rec)
                a = judge.assess(rec.query, r.text, scene, rec, reference=rec.responses[ti].text)
                j = judge_response(rec, r.text, scene, judge)
                assert (r.faithfulness.value == 5) == (a.violations == 0)
                assert j.key == (r.ethics.value, r.faithfulness.value, r.helpfulness.value)


def test_model_answers_with_any_tag_are_drawn(small_world: World) -> None:
    """Regression: the demo tags its samples "sft@0.7", a tag outside the weight table; they
    must draw with the "model" weight (here 1000, so always) instead of silently weight 0."""
    qs = [q for q in _queries(small_world) if q.meta.get("safety") != "harmful"][:20]
    fake = {q.id: [("sft@0.7", "There are 7 hexagons.")] for q in qs}
    cfg = AnnotateConfig(k=2, weights={**AnnotateConfig().weights, "model": 1000.0})
    recs = annotate_records(qs, small_world, cfg, model_answers=fake)
    assert len(recs) >= 10  # a few queries tie the sample with the truth: no pair
    assert all([r.source for r in rec.responses].count("sft@0.7") == 1 for rec in recs)
    off = AnnotateConfig(k=2, weights={**AnnotateConfig().weights, "sft@0.7": 0.0})
    assert not any(
        r.source == "sft@0.7"
        for rec in annotate_records(qs, small_world, off, model_answers=fake)
        for r in rec.responses
    )


def test_correct_description_fixes_only_the_hallucinated_sentences() -> None:
    # a meadow: large red circle (top left), small blue square (center), digit 7 (top right)
    scene = Scene(
        id="c0",
        background="meadow",
        objects=[
            SceneObject("circle", "red", "large", 0, 0, 12, 12),
            SceneObject("square", "blue", "small", 1, 1, 36, 36),
        ],
        glyph=Glyph(7, 0, 2),
    )
    cfg = WorldConfig()
    assert correct_description(scene.caption(), scene, cfg) is None  # nothing to fix
    env = "The scene is a meadow."
    # wrong shape at a cell that holds an object: replaced by that cell's true sentence
    got = correct_description(
        f"{env} There is a large red square at the top left. The digit 7 is written at the top "
        "right.",
        scene,
        cfg,
    )
    assert got == (
        f"{env} There is a large red circle at the top left. The digit 7 is written at the top right."
    )
    # an object at an empty cell, and the wrong digit: dropped / corrected; the rest untouched
    got = correct_description(
        f"{env} There is a small green cross at the bottom right. There is a small blue square "
        "in the center. The digit 4 is written at the top right.",
        scene,
        cfg,
    )
    assert got == (
        f"{env} There is a small blue square in the center. The digit 7 is written at the top right."
    )
    # the cell's true sentence is already there: the wrong one is dropped, not duplicated
    got = correct_description(
        f"{env} There is a small blue square in the center. There is a small blue cross in the "
        "center.",
        scene,
        cfg,
    )
    assert got == f"{env} There is a small blue square in the center."


def test_corrected_samples_join_description_queries(small_world: World) -> None:
    qs = [
        q
        for q in _queries(small_world)
        if q.meta.get("family") == "holistic" and len(small_world.scene(q).objects) >= 2
    ][:20]
    # the environment and one fabricated object (the sentence names no cell: dropped); the
    # scenes that really hold a red cross have nothing to correct
    env_and_cross = {
        q.id: f"{small_world.scene(q).environment_sentence()} There is a red cross." for q in qs
    }
    qs = [
        q
        for q in qs
        if correct_description(env_and_cross[q.id], small_world.scene(q), small_world.config)
    ]
    assert len(qs) >= 15
    fake = {q.id: [("sft@0.7", env_and_cross[q.id])] for q in qs}
    cfg = AnnotateConfig(
        k=3, weights={**DEFAULT_WEIGHTS, "sft@0.7": 1000.0, "model_corrected": 1000.0}
    )
    recs = annotate_records(qs, small_world, cfg, model_answers=fake)
    assert len(recs) >= 10
    for rec in recs:
        by_src = {r.source: r for r in rec.responses}
        assert {"truth", "sft@0.7", "model_corrected"} <= set(by_src)
        # faithful but incomplete: below the truth, above the sample
        assert by_src["model_corrected"].faithfulness.value == 5
        assert by_src["sft@0.7"].faithfulness.value < 5
        rank = rec.ranking.rank_of()
        at = {r.source: rank[i] for i, r in enumerate(rec.responses)}
        assert at["truth"] < at["model_corrected"] < at["sft@0.7"]
    shorts = [q for q in _queries(small_world) if q.meta.get("family") == "attribute"][:10]
    fake = {q.id: [("sft@0.7", "There is a large red cross.")] for q in shorts}
    recs = annotate_records(shorts, small_world, cfg, model_answers=fake)
    assert not any(r.source == "model_corrected" for rec in recs for r in rec.responses)


def test_config_and_helpers() -> None:
    with pytest.raises(ValueError):
        AnnotateConfig(k=1)
    with pytest.raises(ValueError):
        AnnotateConfig(noise=1.5)
    with pytest.raises(ValueError):
        AnnotateConfig(weights={"verbose": -1.0})
    assert parse_weights(["false_denial=0", " model = 3"])["false_denial"] == 0.0
    assert parse_weights(["sft@0.7=2"])["sft@0.7"] == 2.0 and parse_weights([]) == DEFAULT_WEIGHTS
    for bad in ("verbose", "=1", "verbose=x", "verbose=-1", "verbose=nan", "nope=1"):
        with pytest.raises(ValueError, match="candidate weight"):
            parse_weights([bad])
    assert kendall_tau_b([0, 1, 2], [0, 1, 2]) == 1.0
    assert kendall_tau_b([0, 1, 2], [2, 1, 0]) == -1.0
    assert kendall_tau_b([0, 0], [0, 0]) is None
    assert fleiss_kappa([{5: 3}, {4: 3}]) == 1.0
    assert fleiss_kappa([{5: 2, 4: 1}, {4: 2, 5: 1}]) < 0.5
    assert padding("The circle is red.", "short") == 0
    assert padding("The circle is red. I hope this helps. I hope this helps.", "short") == 2


def test_cli_round_trip(world_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "bench.jsonl"
    args = ["world", "annotate", "--world", str(world_dir), "--split", "test", "--out", str(out)]
    res = runner.invoke(app, [*args, "--n-queries", "40", "--k", "4", "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "pairs" in res.output and "agreement" in res.output and "categories" in res.output
    # image paths were rewritten relative to the output folder, so media checks pass
    recs, rep = load_records(out, task="preference")
    assert rep.records_bad == 0 and 0 < len(recs) <= 40
    assert all(any(not p.is_tie for p in derive_pairs(r)) for r in recs)
    res = runner.invoke(app, ["data", "validate", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["data", "stats", str(out)])
    assert res.exit_code == 0 and "truth" in res.output

    out2 = tmp_path / "train.jsonl"
    args = ["world", "annotate", "--world", str(world_dir), "--out", str(out2)]
    res = runner.invoke(app, [*args, "--n-queries", "30", "--noise", "0.3", "--annotators", "4"])
    assert res.exit_code == 0, res.output
    recs, _ = load_records(out2, task="preference")
    assert all(len(r.meta["annotators"]) == 4 for r in recs)
    assert agreement_stats(recs)["pair_agreement"] < 1.0

    res = runner.invoke(app, [*args, "--split", "dev"])
    assert res.exit_code != 0

    # --weight: a source turned off never appears; a bad item is a clear usage error
    res = runner.invoke(app, [*args, "--n-queries", "60", "--weight", "false_denial=0"])
    assert res.exit_code == 0, res.output
    recs, _ = load_records(out2, task="preference")
    srcs = {x.source for r in recs for x in r.responses}
    assert "false_denial" not in srcs and "wrong_color" in srcs
    res = runner.invoke(app, [*args, "--n-queries", "60", "--weight", "false_denial=9"])
    assert res.exit_code == 0, res.output
    recs, _ = load_records(out2, task="preference")
    assert "false_denial" in {x.source for r in recs for x in r.responses}
    res = runner.invoke(app, [*args, "--weight", "wrong_colour=1"], env={"COLUMNS": "300"})
    assert res.exit_code != 0 and "unknown source 'wrong_colour'" in res.output

    # the critique options reach the annotator: claim-first, unquoted critiques
    res = runner.invoke(
        app, [*args, "--n-queries", "60", "--no-quote-question", "--critique-states-claim"]
    )
    assert res.exit_code == 0, res.output
    recs, _ = load_records(out2, task="preference")
    crits = [x.critique or "" for r in recs for x in r.responses]
    assert any(", which is right: " in c for c in crits)
    assert not any("correctly" in c for c in crits)
    assert not any(f'"{r.query}"' in (x.critique or "") for r in recs for x in r.responses)
    res = runner.invoke(
        app,
        [*args, "--n-queries", "60", "--critique-states-claim", "--critique-states-reference"],
    )
    assert res.exit_code == 0, res.output
    recs, _ = load_records(out2, task="preference")
    crits = [x.critique or "" for r in recs for x in r.responses]
    assert any(", the reference answers " in c for c in crits)
    assert not any(", which is right: " in c for c in crits)
    res = runner.invoke(app, [*args, "--critique-states-reference"], env={"COLUMNS": "300"})
    assert res.exit_code != 0 and "needs critique_states_claim" in res.output


def test_cli_help_documents_every_option() -> None:
    res = runner.invoke(app, ["world", "annotate", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for opt in (
        "--world",
        "--split",
        "--out",
        "--n-queries",
        "--k",
        "--noise",
        "--annotators",
        "--seed",
        "--weight",
        "--model",
        "--temperatures",
        "--samples-per-temperature",
        "--critique-states-claim",
        "--critique-states-reference",
    ):
        assert opt in res.output


def test_empty_model_answers_are_not_candidates(small_world: World) -> None:
    """Regression: a sampled end-of-sequence first gave an empty candidate, and the demo's own
    DPO file then failed validation ("responses[2].text: is empty")."""
    qs = [q for q in _queries(small_world) if q.meta.get("safety") != "harmful"][:20]
    fake = {q.id: [("sft@0.7", ""), ("sft@1", "  \n")] for q in qs}
    assert count_empty_answers(fake) == 2 * len(qs)  # what the demo and the CLI report
    cfg = AnnotateConfig(k=3, weights={"model": 1000.0, "verbose": 1.0})
    recs = annotate_records(qs, small_world, cfg, model_answers=fake)
    assert recs
    for rec in recs:
        assert all(r.text.strip() for r in rec.responses)
        assert not {"sft@0.7", "sft@1"} & {r.source for r in rec.responses}


def test_safety_share_of_training_queries(small_world: World) -> None:
    """The share is exact, the corpus's own safety records come first and new ones on other
    training scenes top them up, harmful and benign about evenly, ids unique; the test split
    and shares outside [0, 1] are refused."""
    from collections import Counter

    own = [r for r in small_world.sft if r.meta.get("family") == "safety"]
    q = annotation_queries(small_world, "train", 120, seed=2, safety_share=0.5)
    safety = [r for r in q if r.meta.get("family") == "safety"]
    assert len(q) == 120 and len(safety) == 60 and len({r.id for r in q}) == 120
    assert len(own) < 60 and {r.id for r in own} <= {r.id for r in safety}
    new = [r for r in safety if "-rmsafety-" in r.id]
    assert len(new) == 60 - len(own)
    assert all(small_world.scene(r).split == "train" for r in new)
    kinds = Counter(r.meta["safety"] for r in safety)
    assert abs(kinds["harmful"] - kinds["benign"]) <= max(4, len(own))
    assert annotation_queries(small_world, "train", 120, seed=2, safety_share=0.5) == q
    none = annotation_queries(small_world, "train", 50, seed=2, safety_share=0.0)
    assert len(none) == 50 and not any(r.meta.get("family") == "safety" for r in none)
    with pytest.raises(ValueError, match="train split only"):
        annotation_queries(small_world, "test", safety_share=0.3)
    with pytest.raises(ValueError, match=r"safety_share must be in \[0, 1\]"):
        annotation_queries(small_world, "train", safety_share=1.5)
    # the new records are ordinary questions: the annotator ranks refusal over compliance
    recs = annotate_records(new[:6], small_world, AnnotateConfig(noise=0.0))
    assert len(recs) == 6


def _same_labels(
    xs: list[Record], ys: list[Record]
) -> Iterator[tuple[Record, Record, Response, Response]]:
    """Each response pair of two annotations of the same queries, after checking that rankings,
    texts and scores agree (the critique options change critiques only)."""
    for a, b in zip(xs, ys, strict=True):
        assert a.ranking == b.ranking
        for ra, rb in zip(a.responses, b.responses, strict=True):
            assert ra.text == rb.text
            assert (ra.helpfulness, ra.faithfulness, ra.ethics) == (
                rb.helpfulness,
                rb.faithfulness,
                rb.ethics,
            )
            yield a, b, ra, rb


def test_critiques_without_the_question_keep_every_label(small_world: World) -> None:
    """critique_quotes_question=False changes the critiques' openers only: no critique restates
    its question, and scores, reasons and rankings are the same as with it."""
    qs = _queries(small_world)[:80]
    quoted = annotate_records(qs, small_world, AnnotateConfig(noise=0.0))
    plain = annotate_records(
        qs, small_world, AnnotateConfig(noise=0.0, critique_quotes_question=False)
    )
    assert len(quoted) == len(plain)
    n_quoted = 0
    for a, b, ra, rb in _same_labels(quoted, plain):
        n_quoted += f'"{a.query}"' in ra.critique
        assert f'"{b.query}"' not in rb.critique
        assert ra.critique.split(". ")[-1] == rb.critique.split(". ")[-1]  # same verdict
    assert n_quoted > 100
    assert any(
        r.critique.startswith("The response answers the question correctly")
        for p in plain
        for r in p.responses
    )


def test_critiques_that_state_the_claim_first_keep_every_label(small_world: World) -> None:
    """critique_states_claim=True opens every right short answer's critique with the value it
    states ("answers 2, which is right: ..."), as a wrong one's ("answers 4, which is wrong:
    ..."); texts, scores, rankings and the rest of each critique are the default ones."""
    qs = _queries(small_world)[:80]
    plain = annotate_records(
        qs, small_world, AnnotateConfig(noise=0.0, critique_quotes_question=False)
    )
    claim = annotate_records(
        qs,
        small_world,
        AnnotateConfig(noise=0.0, critique_quotes_question=False, critique_states_claim=True),
    )
    n_right = n_wrong = 0
    for _, b, ra, rb in _same_labels(plain, claim):
        opener = "The response answers the question correctly: "
        if ra.critique.startswith(opener):
            n_right += 1
            value = stated_value(b, rb.text, small_world.config)
            said = value if value not in (None, "none") else f'"{rb.text.split(".")[0]}"'
            rest = ra.critique.removeprefix(opener)
            assert rb.critique == f"The response answers {said}, which is right: {rest}"
        else:
            n_wrong += ", which is wrong: " in ra.critique
            assert rb.critique == ra.critique
    assert n_right > 20 and n_wrong > 5, (n_right, n_wrong)


def test_critiques_that_state_the_reference_put_the_true_value_beside_the_claim(
    small_world: World,
) -> None:
    """critique_states_reference=True rewrites exactly the claim-first openers: "answers X,
    which is V: ..." becomes "answers X, the reference answers R, so it is V: ...", R the value
    the true answer's own critique states; every other text and label stays the same."""
    import re

    qs = _queries(small_world)[:80]
    base = dict(noise=0.0, critique_quotes_question=False, critique_states_claim=True)
    claim = annotate_records(qs, small_world, AnnotateConfig(**base))
    ref = annotate_records(qs, small_world, AnnotateConfig(**base, critique_states_reference=True))
    opener = re.compile(r"The response answers (.+?), which is (right|wrong): ")
    n = 0
    for a, b in zip(claim, ref, strict=True):
        truth_value = [
            m.group(1)
            for r in a.responses
            if r.source == "truth" and (m := opener.match(r.critique))
        ]
        for ra, rb in zip(a.responses, b.responses, strict=True):
            assert (ra.text, ra.helpfulness, ra.faithfulness) == (
                rb.text,
                rb.helpfulness,
                rb.faithfulness,
            )
            m = opener.match(ra.critique)
            if not m:
                assert rb.critique == ra.critique
                continue
            n += 1
            want = (
                f"The response answers {m.group(1)}, the reference answers {truth_value[0]}, "
                f"so it is {m.group(2)}: " + ra.critique[m.end() :]
            )
            assert rb.critique == want
        assert a.ranking == b.ranking
    assert n > 50, n
    with pytest.raises(ValueError, match="needs critique_states_claim"):
        AnnotateConfig(critique_states_reference=True)


def test_the_reference_configs_critique_focus_is_the_claim_and_verdict(small_world: World) -> None:
    """configs/world/rm_critique_reference.yaml's rm.critique_focus picks, in every claim-first
    critique of a short answer, exactly the stated value and the verdict ("2, which is right",
    with --critique-states-reference "2, the reference answers 2, so it is right"), and nothing
    in the other critiques (descriptions, refusals, harmful requests)."""
    import re

    from mmrlhf.config import load_config
    from mmrlhf.models.reward import focus_spans
    from mmrlhf.training.reward import RewardConfig

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(
        RewardConfig,
        root / "configs/world/rm_critique_reference.yaml",
        ["model.path=m", "data.train=t"],
    )
    pattern = re.compile(cfg.rm.critique_focus)
    base = dict(noise=0.0, critique_quotes_question=False, critique_states_claim=True)
    recs = [
        *annotate_records(_queries(small_world)[:80], small_world, AnnotateConfig(**base)),
        *annotate_records(
            _queries(small_world)[:80],
            small_world,
            AnnotateConfig(**base, critique_states_reference=True),
        ),
    ]
    opener = r"The response answers (.+?(?:, which is|, the reference answers .+?, so it is) \w+):"
    n_claim = n_other = 0
    for rec in recs:
        for r in rec.responses:
            spans = focus_spans(pattern, r.critique)
            m = re.match(opener, r.critique)
            if m:
                n_claim += 1
                assert [r.critique[a:b] for a, b in spans] == [m.group(1)], r.critique
            else:
                n_other += 1
                assert spans == [], r.critique
    assert n_claim > 100 and n_other > 100, (n_claim, n_other)


def test_tokenizer_corpus_covers_the_annotators_words(world_dir):
    """With the annotation texts the critique vocabulary is whole words; without, the world's
    records alone leave 'request', 'declines', 'Overall' in pieces (what the tiny critique RM
    had to spell letter by letter)."""
    from mmrlhf.models.tiny import tokenizer_corpus, train_tokenizer

    words = ["request", "declines", "Overall", "response", "faithful", "correctly"]

    def pieces(annotations):
        tok = train_tokenizer(tokenizer_corpus(world=world_dir, annotations=annotations), 1024)
        return {w: len(tok(" " + w, add_special_tokens=False)["input_ids"]) for w in words}

    assert set(pieces(True).values()) == {1}
    assert sum(pieces(False).values()) > 2 * len(words)
