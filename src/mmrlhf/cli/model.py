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
    text_hidden: int = typer.Option(128, help="Language model width."),
    text_layers: int = typer.Option(4, help="Language model depth."),
    vision_layers: int = typer.Option(2, help="Vision tower depth."),
    seed: int = typer.Option(0, help="Initialisation seed."),
    init_std: float | None = typer.Option(
        None, help="Language-model init std (default 1/sqrt(text width); transformers uses 0.02)."
    ),
    question_first: bool = typer.Option(
        False, help="llava: the chat template puts the question before the image."
    ),
) -> None:
    """Build a tiny randomly initialised VLM of a real transformers architecture."""
    from mmrlhf.models.tiny import TinyVLMConfig, build_tiny_vlm, tokenizer_corpus

    corpus = tokenizer_corpus(world=world, files=texts or [])
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
    )
    path = build_tiny_vlm(out, corpus, cfg)
    typer.echo(f"saved {arch} tiny VLM to {path}")
