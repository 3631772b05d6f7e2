"""Generating a shapes world on disk, and reading it back.

``generate(out, n, seed, config)`` writes::

    out/images/train/<scene_id>.png   rendered training scenes
    out/images/test/<scene_id>.png    rendered held-out scenes
    out/scenes.jsonl                  every scene's full ground truth (with its split)
    out/sft_train.jsonl               SFT records (one response each, noisy descriptions)
    out/eval_test.jsonl               held-out questions with clean answers, all families
    out/pope_test.jsonl               POPE probes on the held-out scenes (random/popular/adversarial)
    out/safety_test.jsonl             harmful requests and benign look-alikes on held-out scenes
    out/world.json                    config, seed, counts, vocabulary

Records are ordinary :class:`mmrlhf.data.record.Record` s whose image paths are relative to
``out`` (the media root), so every other mmrlhf tool reads a world like any dataset.

Determinism: every random stream is a ``random.Random`` seeded with a string derived from the
world seed and the scene index (``"{seed}:scene:{i}"``), so a scene does not change when another
option (noise rate, questions per scene) does, and the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrlhf.data.record import Facts, ImageRef, Record, Response
from mmrlhf.world.config import FAMILIES, MMHAL_TYPE, SIZES, WorldConfig
from mmrlhf.world.corpus import training_description
from mmrlhf.world.questions import QA, ask, template_words
from mmrlhf.world.scene import (
    SCENE_PHRASES,
    Scene,
    article,
    plural,
    position_names,
    render_scene,
    sample_scene,
)

FORMAT_VERSION = 1
SOURCE = "shapes-world"

# same split as truth.tokens, but case-preserving: tokenizers are trained on the raw text
_VOCAB_TOKEN = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")


def vocabulary(cfg: WorldConfig | None = None) -> list[str]:
    """Every token (word, number or punctuation mark, case kept) that the world's questions,
    answers and captions can contain, sorted. For training a tokenizer on a closed vocabulary."""
    from mmrlhf.world import probes  # probes builds on make_record below

    cfg = cfg or WorldConfig()
    parts: list[str] = [*SCENE_PHRASES, *template_words(cfg.relation_rationale)]
    parts += probes.template_words()
    parts += list(cfg.shapes) + [plural(s) for s in cfg.shapes]
    parts += list(cfg.colors) + list(cfg.backgrounds) + list(SIZES)
    parts += [article(b) for b in cfg.backgrounds]
    parts += [f"{c} objects" for c in cfg.colors]
    parts += list(position_names(cfg.grid).values())
    parts += [str(i) for i in range(10)] + [str(i) for i in range(cfg.max_objects + 1)]
    words: set[str] = set()
    for p in parts:
        # case is kept as written: templates put capitals only where sentences start, and
        # placeholders are never sentence-initial, so no capitalised variants are needed
        words.update(_VOCAB_TOKEN.findall(p))
    return sorted(words)


# ----------------------------------------------------------------------------------------------
# the world as read back


@dataclass
class World:
    """A generated world: its config, scenes by id and records, rooted at ``root``.

    ``pope`` and ``safety`` are the held-out POPE probes and safety slice
    (:mod:`mmrlhf.world.probes`); empty for worlds generated before they existed.
    """

    root: Path
    config: WorldConfig
    seed: int
    scenes: dict[str, Scene]
    sft: list[Record] = field(default_factory=list)
    eval: list[Record] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    pope: list[Record] = field(default_factory=list)
    safety: list[Record] = field(default_factory=list)

    def image_path(self, item: str | Scene | Record) -> Path:
        """Absolute path of the image of a scene id, scene or record."""
        scene = self.scene(item)
        return self.root / "images" / (scene.split or "train") / f"{scene.id}.png"

    def scene(self, item: str | Scene | Record) -> Scene:
        """The scene of a scene id, a scene, or a record (through ``meta["scene_id"]``)."""
        if isinstance(item, Scene):
            return item
        if isinstance(item, Record):
            return self.scenes[item.meta["scene_id"]]
        return self.scenes[item]

    def split(self, name: str) -> list[Scene]:
        """Scenes of one split (``"train"`` / ``"test"``) in id order."""
        return [s for s in self.scenes.values() if s.split == name]

    def vocabulary(self) -> list[str]:
        return vocabulary(self.config)


# ----------------------------------------------------------------------------------------------
# records


def make_record(
    qa: QA,
    scene: Scene,
    split: str,
    index: int,
    answer: str | None = None,
    hallucinated: list[str] | None = None,
    noise_kind: str | None = None,
    record_id: str | None = None,
) -> Record:
    """The record for one question: one response (``answer``, default the clean one), the
    clean caption and object list as facts, provenance in meta.

    The id is ``<scene_id>-q<index>`` unless ``record_id`` is given (the POPE and safety sets
    use their own ids so that they never collide with the question records). ``mmhal_type`` is
    only set for the nine question families.
    """
    meta: dict[str, Any] = {"scene_id": scene.id, "split": split, "family": qa.family}
    if qa.family in MMHAL_TYPE:
        meta["mmhal_type"] = MMHAL_TYPE[qa.family]
    meta |= {"asks": qa.asks, "noisy": bool(hallucinated)}
    if scene.grid != 3:
        meta["grid"] = scene.grid
    meta.update(qa.extra)
    if hallucinated:
        meta["hallucinated"] = hallucinated
        meta["noise"] = noise_kind
    return Record.single(
        id=record_id or f"{scene.id}-q{index}",
        query=qa.question,
        responses=[Response(text=answer if answer is not None else qa.answer, source=SOURCE)],
        images=[ImageRef(path=f"images/{split}/{scene.id}.png")],
        facts=Facts(
            captions=[scene.caption()], short_answer=qa.short, objects=scene.object_labels()
        ),
        category=qa.family,
        tags=["world", split],
        meta=meta,
    )


def scene_records(scene: Scene, cfg: WorldConfig, seed: int, index: int) -> list[Record]:
    """Question records for one scene: SFT (noisy descriptions) for train, clean for test."""
    split = scene.split or "train"
    weights = cfg.sft_family_weights if split == "train" else cfg.eval_family_weights
    qrng = random.Random(f"{seed}:questions:{index}")
    out = []
    for k, qa in enumerate(ask(scene, cfg, qrng, cfg.questions_per_scene, dict(weights))):
        if split == "train" and qa.family == "holistic":
            nrng = random.Random(f"{seed}:noise:{index}:{k}")
            d = training_description(scene, cfg, nrng)
            out.append(make_record(qa, scene, split, k, d.text, d.hallucinated, d.kind))
        else:
            out.append(make_record(qa, scene, split, k))
    return out


# ----------------------------------------------------------------------------------------------
# writing


def _atomic_write(path: Path, lines: Iterable[str]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for line in lines:
                f.write(line)
                f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _dumps(d: Any) -> str:
    return json.dumps(d, ensure_ascii=False, separators=(", ", ": "))


def _save_records(records: list[Record], path: Path) -> None:
    # The shared writer when it exists, so worlds follow whatever conventions data/io sets.
    try:
        from mmrlhf.data.io import save_records  # type: ignore[import-not-found]
    except ImportError:
        save_records = None
    if save_records is not None:
        save_records(records, path, format="jsonl")
    else:
        _atomic_write(path, (_dumps(r.to_dict()) for r in records))


def _split_ids(n: int, seed: int, test_fraction: float) -> set[int]:
    """Indices of the test scenes: a seeded shuffle, at least one each side when possible."""
    n_test = int(n * test_fraction + 0.5)
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    idx = list(range(n))
    random.Random(f"{seed}:split").shuffle(idx)
    return set(idx[:n_test])


def generate(
    out: str | os.PathLike[str],
    n: int = 2000,
    seed: int = 0,
    config: WorldConfig | None = None,
) -> World:
    """Generate a world of ``n`` scenes into directory ``out`` and return it (as loaded).

    A previous world in ``out`` (a directory with ``world.json``) has its ``images/`` replaced,
    so no stale scenes survive; other files there are left alone.
    """
    from mmrlhf.world import probes

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    cfg = config or WorldConfig()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    if (root / "world.json").exists() and (root / "images").is_dir():
        shutil.rmtree(root / "images")
    for split in ("train", "test"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)

    test_ids = _split_ids(n, seed, cfg.test_fraction)
    width = max(5, len(str(n - 1)))
    scenes: list[Scene] = []
    sft: list[Record] = []
    evals: list[Record] = []
    for i in range(n):
        split = "test" if i in test_ids else "train"
        scene = sample_scene(random.Random(f"{seed}:scene:{i}"), cfg, f"s{i:0{width}d}", split)
        render_scene(scene, cfg).save(root / "images" / split / f"{scene.id}.png", format="PNG")
        scenes.append(scene)
        (sft if split == "train" else evals).extend(scene_records(scene, cfg, seed, i))
        if split == "train":  # own random stream: the question records above are unchanged
            sft.extend(probes.sft_safety_records(scene, cfg, seed))
    pope = probes.pope_records(scenes, cfg, seed)
    safety = probes.safety_records(scenes, cfg, seed)

    _atomic_write(root / "scenes.jsonl", (_dumps(s.to_dict()) for s in scenes))
    _save_records(sft, root / "sft_train.jsonl")
    _save_records(evals, root / "eval_test.jsonl")
    _save_records(pope, root / "pope_test.jsonl")
    _save_records(safety, root / "safety_test.jsonl")
    info = {
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "n": n,
        "config": cfg.to_dict(),
        "counts": _counts(scenes, sft, evals, pope, safety),
        "files": {
            "scenes": "scenes.jsonl",
            "sft": "sft_train.jsonl",
            "eval": "eval_test.jsonl",
            "pope": "pope_test.jsonl",
            "safety": "safety_test.jsonl",
            "images": "images/{split}/{scene_id}.png",
        },
        "vocabulary": vocabulary(cfg),
    }
    _atomic_write(root / "world.json", [json.dumps(info, indent=1)])
    return World(
        root=root,
        config=cfg,
        seed=seed,
        scenes={s.id: s for s in scenes},
        sft=sft,
        eval=evals,
        info=info,
        pope=pope,
        safety=safety,
    )


def _counts(
    scenes: list[Scene],
    sft: list[Record],
    evals: list[Record],
    pope: list[Record],
    safety: list[Record],
) -> dict[str, Any]:
    holistic = [r for r in sft if r.category == "holistic"]
    fams = (*FAMILIES, "safety")
    return {
        "scenes": {
            "train": sum(s.split == "train" for s in scenes),
            "test": sum(s.split == "test" for s in scenes),
        },
        "sft_records": len(sft),
        "eval_records": len(evals),
        "sft_families": {f: c for f in fams if (c := Counter(r.category for r in sft)[f])},
        "eval_families": {f: c for f in fams if (c := Counter(r.category for r in evals)[f])},
        "sft_descriptions": len(holistic),
        "sft_noisy_descriptions": sum(bool(r.meta.get("noisy")) for r in holistic),
        "pope_records": len(pope),
        "pope_splits": dict(Counter(r.meta["pope_split"] for r in pope)),
        "safety_records": len(safety),
        "safety_kinds": dict(Counter(r.meta["safety"] for r in safety)),
    }


# ----------------------------------------------------------------------------------------------
# reading


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
    return out


def load_world(path: str | os.PathLike[str], *, records: bool = True) -> World:
    """Read a generated world back: config, scenes by id and (unless ``records=False``) the
    SFT, evaluation, POPE and safety records (the last two empty when their files are absent,
    as in worlds generated before they existed)."""
    root = Path(path)
    info_path = root / "world.json"
    if not info_path.exists():
        raise FileNotFoundError(f"{root} is not a shapes world (no world.json)")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    # worlds generated before companions existed had none (the field's default is on)
    cfg = WorldConfig.from_dict({"env_companions": {}, **info["config"]})
    scenes = {d["id"]: Scene.from_dict(d) for d in _read_jsonl(root / "scenes.jsonl")}
    world = World(root=root, config=cfg, seed=info["seed"], scenes=scenes, info=info)
    if records:
        world.sft = [Record.from_dict(d) for d in _read_jsonl(root / "sft_train.jsonl")]
        world.eval = [Record.from_dict(d) for d in _read_jsonl(root / "eval_test.jsonl")]
        for attr, name in (("pope", "pope_test.jsonl"), ("safety", "safety_test.jsonl")):
            if (root / name).exists():
                setattr(world, attr, [Record.from_dict(d) for d in _read_jsonl(root / name)])
    return world
