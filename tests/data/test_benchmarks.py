"""The real benchmark files in ../shared/data/benchmarks load as published (text only)."""

from __future__ import annotations

from collections import Counter

import pytest
from data_helpers import BENCHMARKS

from mmrlhf.data.io import load_records
from mmrlhf.data.pairs import derive_pairs
from mmrlhf.data.problems import DataError
from mmrlhf.data.validate import validate

MMRLHF = BENCHMARKS / "mm_rlhf_reward_bench.jsonl"
VLRB = BENCHMARKS / "vl_reward_bench.jsonl"


def _need(path):
    if not path.is_file():
        pytest.skip(f"{path} is not available")


def test_mm_rlhf_reward_bench_groups_into_46_queries() -> None:
    _need(MMRLHF)
    recs, report = load_records(MMRLHF, check_media=False)
    assert report.ok and report.format == "mmrlhf_pairs"
    assert len(recs) == 46 and len({r.id for r in recs}) == 46
    assert {r.category for r in recs} == {"mcq", "long", "short", "safety", "video"}
    assert sum(len(r.preferences) for r in recs) == 170
    # pairs per category, counted in the raw file: mcq 42, long 37, short 34, safety 32, video 25
    per_cat = Counter()
    for r in recs:
        per_cat[r.category] += len(r.preferences)
    assert per_cat == {"mcq": 42, "long": 37, "short": 34, "safety": 32, "video": 25}
    for r in recs:
        assert 2 <= len(r.preferences) <= 6
        texts = [x.text for x in r.responses]
        assert len(texts) == len(set(texts))  # identical texts merged
        assert all(x.meta.get("reason") for x in r.responses)
        assert len(derive_pairs(r)) == len(r.preferences)
    video = [r for r in recs if r.category == "video"]
    assert video and all(r.video is not None and not r.images for r in video)


def test_mm_rlhf_reward_bench_missing_media_is_reported() -> None:
    _need(MMRLHF)
    with pytest.raises(DataError) as e:
        load_records(MMRLHF)
    assert e.value.kind == "missing_media"
    assert str(e.value).startswith(f"{MMRLHF}:1: images[0]: image file not found")
    recs, report = load_records(MMRLHF, mode="skip")
    assert recs == [] and report.counts == {"missing_media": 46}
    assert any(": video: video file not found" in m for m in report.messages())


def test_mm_rlhf_reward_bench_validates_text_only() -> None:
    _need(MMRLHF)
    assert validate(MMRLHF, check_media=False).ok


def test_vl_reward_bench_loads() -> None:
    _need(VLRB)
    recs, report = load_records(VLRB, check_media=False)
    assert report.ok
    assert sum(len(r.preferences) for r in recs) == 1250
    # 25 ids are reused for a different image: kept apart as <id>#2, each reported
    assert len(recs) == 1250 and len(report.notices) == 25
    assert all(n.kind == "id_reused" for n in report.notices)
    assert all(r.category == "vl_reward" for r in recs)
