"""``mmrlhf model ...``: build tiny models, inspect checkpoints."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Models.", no_args_is_help=True)


@app.command("build-tiny")
def build_tiny(
    out: Path = typer.Option(..., "--out", help="Folder to save the model and processor to."),
    arch: str = typer.Option("llava", "--arch", help="llava, llava_onevision or qwen2_vl."),
    world: Path = typer.Option(
        None,
        "--world",
        help="A generated world folder: its vocabulary and corpus train the tokenizer.",
    ),
    texts: list[Path] = typer.Option(
        None, "--texts", help="Extra text/JSONL files for the tokenizer."
    ),
    image_size: int = typer.Option(72, help="Input image side in pixels (llava)."),
    patch_size: int = typer.Option(24, help="Vision patch side in pixels (llava)."),
    vision_hidden: int = typer.Option(128, help="Vision tower width."),
    text_hidden: int = typer.Option(64, help="Language model width."),
    text_layers: int = typer.Option(2, help="Language model depth."),
    vision_layers: int = typer.Option(2, help="Vision tower depth."),
    seed: int = typer.Option(0, help="Initialisation seed."),
    init_std: float | None = typer.Option(
        None, help="Language-model init std (default 1/sqrt(text width); transformers uses 0.02)."
    ),
    question_first: bool = typer.Option(
        False, help="llava: the chat template puts the question before the image."
    ),
    vision_steps: int = typer.Option(
        1000,
        help="With --world and --arch llava: steps pretraining the vision tower to read the "
        "world's grid cells (the stand-in for a pretrained CLIP; ~70 s); 0 keeps it random.",
    ),
    language_steps: int = typer.Option(
        0,
        help="With --world and --arch llava, after the tower: steps pretraining the language "
        "model on symbolic scenes, then aligning the projector (the stand-in for a pretrained "
        "LLM; ~20 steps/s on one thread, 12000 measured best); 0 keeps the LM random.",
    ),
    relation_steps: int = typer.Option(
        0,
        help="With --language-steps: before them, this many steps on relation and 'Where is "
        "the ...?' questions ('Where' alone in a world with relation rationales), then as "
        "many on relation alone (the relation curriculum; use with --question-first; 3000 "
        "measured).",
    ),
    heads: int = typer.Option(4, help="Attention heads (both towers)."),
    annotation_vocabulary: bool = typer.Option(
        False,
        "--annotation-vocabulary/--world-vocabulary",
        help="With --world: train the tokenizer on the world annotator's critiques and reasons "
        "too (600 training queries, ~5 s), so a critique RM writes whole words instead of "
        "letters.",
    ),
    pretrained_lm: bool = typer.Option(
        False,
        "--pretrained-lm",
        help="The measured recipe for a tiny LLaVA whose SFT answers 85%+ of the core short "
        "questions: --question-first, --annotation-vocabulary, --relation-steps 3000, "
        "--language-steps 12000 (those not given otherwise); use a world made with "
        "--relation-rationale. 13-17 minutes.",
    ),
) -> None:
    """Build a tiny randomly initialised VLM of a real transformers architecture."""
    from mmrlhf.models.tiny import TinyVLMConfig, build_tiny_vlm, tokenizer_corpus
    from mmrlhf.world.language import RECIPE_LANGUAGE_STEPS, RECIPE_RELATION_STEPS

    if pretrained_lm:
        if world is None or arch != "llava":
            raise typer.BadParameter(
                "the recipe pretrains the tiny LLaVA on a world: give --world (and --arch llava)",
                param_hint="--pretrained-lm",
            )
        question_first = annotation_vocabulary = True
        language_steps = language_steps or RECIPE_LANGUAGE_STEPS
        relation_steps = relation_steps or RECIPE_RELATION_STEPS

    if language_steps > 0 and vision_steps <= 0:
        raise typer.BadParameter(
            "needs the vision tower pretrained (--vision-steps > 0): the projector is aligned "
            "to what the pretrained tower reads",
            param_hint="--language-steps",
        )

    corpus = tokenizer_corpus(world=world, files=texts or [], annotations=annotation_vocabulary)
    cfg = TinyVLMConfig(
        arch=arch,
        image_size=image_size,
        patch_size=patch_size,
        vision_hidden=vision_hidden,
        text_hidden=text_hidden,
        text_layers=text_layers,
        vision_layers=vision_layers,
        seed=seed,
        init_std=init_std,
        question_first=question_first,
        heads=heads,
    )
    path = build_tiny_vlm(out, corpus, cfg)
    typer.echo(f"saved {arch} tiny VLM to {path}")
    if vision_steps <= 0 and language_steps <= 0:
        return
    if world is None or arch != "llava":
        typer.echo("tower and LM left random: pretraining them needs --world and --arch llava")
        return
    from mmrlhf.world.generate import load_world
    from mmrlhf.world.language import LanguagePretrainConfig, pretrain_language_model
    from mmrlhf.world.vision import VisionPretrainConfig, pretrain_vision_tower

    world_config = load_world(world, records=False).config
    if relation_steps > 0 and not world_config.relation_rationale:
        typer.echo(
            "warning: the relation curriculum was learned reliably only on worlds with relation "
            "rationales (mmrlhf world generate --relation-rationale); this one has none",
            err=True,
        )
    if vision_steps > 0:
        try:
            report = pretrain_vision_tower(
                path, world_config, VisionPretrainConfig(steps=vision_steps, seed=seed)
            )
        except ValueError as e:
            typer.echo(f"error: {e} (or pass --vision-steps 0 to keep the random tower)", err=True)
            raise typer.Exit(2) from None
        probe = report["heldout_probe"]
        typer.echo(
            f"vision tower pretrained in {report['seconds']} s; held-out cell probe: "
            + ", ".join(f"{k} {v}" for k, v in probe.items())
        )
    if language_steps > 0:
        try:
            report = pretrain_language_model(
                path,
                world_config,
                LanguagePretrainConfig(
                    steps=language_steps, relation_steps=relation_steps, seed=seed
                ),
            )
        except ValueError as e:
            typer.echo(f"error: {e} (or pass --language-steps 0)", err=True)
            raise typer.Exit(2) from None
        typer.echo(
            f"language model pretrained in {report['lm_seconds']} s (loss "
            f"{report['lm_first_loss']} -> {report['lm_final_loss']}); projector aligned in "
            f"{report['align_seconds']} s, held-out cosine {report['align_heldout_cosine']}"
        )
        if "slot_probe" in report:
            typer.echo(
                "held-out answers with perfect slots: "
                + ", ".join(f"{k} {v}" for k, v in report["slot_probe"].items())
            )
