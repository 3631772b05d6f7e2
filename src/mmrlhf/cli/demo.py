"""``mmrlhf demo``: the whole pipeline on the embedded shapes world."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(
        Path("mmrlhf_out/demo"), "--out", help="Output folder (stages are cached here)."
    ),
    n: int = typer.Option(10000, "--n", help="Number of world scenes (train + test)."),
    test_scenes: int = typer.Option(
        200, "--test-scenes", help="Of those, held out for evaluation and the reward bench."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the world, the models and training."),
    companion_rate: float = typer.Option(
        0.8,
        "--companion-rate",
        min=0.0,
        max=1.0,
        help="How often a training description adds its environment's typical object when the "
        "scene lacks it (the learned hallucination MM-DPO removes); 0: i.i.d. noise only.",
    ),
    sft_config: Path = typer.Option(
        None, "--sft-config", help="SFT config (default: configs/world/sft.yaml)."
    ),
    rm_config: Path = typer.Option(
        None, "--rm-config", help="Reward model config (default: configs/world/rm_critique.yaml)."
    ),
    dpo_config: Path = typer.Option(
        None, "--dpo-config", help="MM-DPO config (default: configs/world/dpo.yaml)."
    ),
    rm_override: list[str] = typer.Option(
        None,
        "--rm-override",
        help="Reward model config override (repeatable), e.g. train.max_steps=100.",
    ),
    dpo_override: list[str] = typer.Option(
        None, "--dpo-override", help="MM-DPO config override (repeatable), e.g. loss.w=0."
    ),
    rm_queries: int = typer.Option(
        1200, "--rm-queries", help="Annotated queries for the reward model."
    ),
    dpo_queries: int = typer.Option(600, "--dpo-queries", help="Scored queries for MM-DPO."),
    rm_steps: int = typer.Option(150, "--rm-steps", help="Reward-model training steps."),
    sample_weight: float = typer.Option(
        4.0,
        "--sample-weight",
        help="Draw weight of the SFT model's own samples among each DPO query's candidates "
        "(RLAIF-V's on-policy samples; 0: none, no sampling).",
    ),
    samples_per_query: int = typer.Option(
        3,
        "--samples-per-query",
        help="On-policy samples per DPO query when --sample-weight > 0 (each with its own seed).",
    ),
    sample_temperature: float = typer.Option(
        0.7, "--sample-temperature", help="Temperature of the on-policy samples."
    ),
    candidate_weight: list[str] = typer.Option(
        None,
        "--candidate-weight",
        help="SOURCE=W: draw weight of one candidate source in the annotation (repeatable; 0 "
        "turns it off), e.g. --candidate-weight false_denial=0; see mmrlhf world annotate.",
    ),
    bench_queries: int = typer.Option(
        200, "--bench-queries", help="Held-out reward-bench queries."
    ),
    critique_order: str = typer.Option(
        "reason_first",
        "--critique-order",
        help="Annotation critiques: reason_first (MM-RLHF) or verdict_first.",
    ),
    quote_question: bool = typer.Option(
        False,
        "--quote-question/--no-quote-question",
        help="Whether the annotators' critiques restate the question (MM-RLHF's style; off: "
        "the tiny critique RM cannot copy it).",
    ),
    rm_safety_share: float = typer.Option(
        1 / 3,
        "--rm-safety-share",
        min=-1.0,
        max=1.0,
        help="Share of the reward model's training queries that are safety queries, like the "
        "reward bench's third; -1 keeps the SFT corpus's mix (~3%).",
    ),
    vision_steps: int = typer.Option(
        1000,
        "--vision-steps",
        help="Steps pretraining the tiny model's vision tower on the world's cells before SFT "
        "(the stand-in for a pretrained CLIP); 0 keeps the random tower.",
    ),
    language_steps: int = typer.Option(
        0,
        "--language-steps",
        help="Steps pretraining the tiny model's language model on symbolic scenes and "
        "aligning its projector (the stand-in for a pretrained LLM; ~20 steps/s); SFT then "
        "uses lr 5e-4. 0 keeps the LM random.",
    ),
    relation_steps: int = typer.Option(
        0,
        "--relation-steps",
        help="With --language-steps: the relation curriculum before them (this many steps on "
        "relation and 'Where is the ...?' questions - 'Where' alone with --relation-rationale - "
        "then as many on relation alone); use with --question-first.",
    ),
    relation_rationale: bool = typer.Option(
        False,
        "--relation-rationale",
        help="The world's relation answers place both objects before comparing them ('The X "
        "is at the top left and the Y is on the right, so the X is left of the Y.').",
    ),
    question_first: bool = typer.Option(
        False,
        "--question-first/--image-first",
        help="The tiny model's chat template puts the question before the image, so image "
        "tokens can see it under causal attention (LLaVA's order is image first).",
    ),
    annotation_vocabulary: bool = typer.Option(
        False,
        "--annotation-vocabulary/--world-vocabulary",
        help="Train the tiny tokenizer on the annotator's critiques and reasons too, so the "
        "critique RM writes whole words instead of letters.",
    ),
    pretrained_lm: bool = typer.Option(
        False,
        "--pretrained-lm",
        help="The measured recipe for an SFT model that answers 85%+ of the core short "
        "questions: --relation-rationale --question-first --annotation-vocabulary "
        "--relation-steps 3000 --language-steps 12000 (those not given otherwise); adds 13-17 "
        "minutes.",
    ),
    overrides: list[str] = typer.Argument(
        None, help="SFT config overrides, e.g. train.max_steps=100."
    ),
) -> None:
    """Run the main job: world -> SFT -> candidates -> simulated annotation -> critique reward
    model -> margins -> MM-DPO -> evaluation of SFT vs aligned -> report."""
    from mmrlhf.demo import DemoSettings, DemoSettingsChanged, run_demo

    if rm_safety_share < 0 and rm_safety_share != -1:
        raise typer.BadParameter("a share in [0, 1], or -1", param_hint="--rm-safety-share")
    if pretrained_lm:
        from mmrlhf.world.language import RECIPE_LANGUAGE_STEPS, RECIPE_RELATION_STEPS

        relation_rationale = question_first = annotation_vocabulary = True
        language_steps = language_steps or RECIPE_LANGUAGE_STEPS
        relation_steps = relation_steps or RECIPE_RELATION_STEPS

    try:
        settings = DemoSettings(
            out=out,
            n_scenes=n,
            test_scenes=test_scenes,
            companion_rate=companion_rate,
            seed=seed,
            sft_config=sft_config,
            overrides=tuple(overrides or ()),
            rm_config=rm_config,
            rm_overrides=tuple(rm_override or ()),
            dpo_config=dpo_config,
            dpo_overrides=tuple(dpo_override or ()),
            rm_queries=rm_queries,
            dpo_queries=dpo_queries,
            bench_queries=bench_queries,
            rm_steps=rm_steps,
            sample_weight=sample_weight,
            samples_per_query=samples_per_query,
            sample_temperature=sample_temperature,
            critique_order=critique_order,
            critique_quotes_question=quote_question,
            rm_safety_share=None if rm_safety_share < 0 else rm_safety_share,
            candidate_weights=tuple(candidate_weight or ()),
            vision_steps=vision_steps,
            language_steps=language_steps,
            question_first=question_first,
            annotation_vocabulary=annotation_vocabulary,
            relation_steps=relation_steps,
            relation_rationale=relation_rationale,
        )
    except ValueError as e:  # the settings DemoSettings checks
        msg = str(e)
        hints = {
            "vision_steps": "--vision-steps",
            "relation_steps": "--relation-steps",
            "language_steps": "--language-steps",
            "samples_per_query": "--samples-per-query",
            "sample_temperature": "--sample-temperature",
            "candidate weight": "--candidate-weight",
        }
        hint = next((h for key, h in hints.items() if key in msg), "--critique-order")
        raise typer.BadParameter(msg, param_hint=hint) from None
    try:
        run_demo(settings)
    except DemoSettingsChanged as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
