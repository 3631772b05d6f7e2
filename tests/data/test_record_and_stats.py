"""Record JSON round trip, and dataset statistics."""

from __future__ import annotations

import io
import json

from data_helpers import png_bytes, ranked_record
from rich.console import Console

from mmrlhf.data.record import ImageRef, Record
from mmrlhf.data.stats import compute_stats, print_stats


def test_record_round_trip(records) -> None:
    for rec in records:
        d = rec.to_dict()
        assert Record.from_dict(json.loads(json.dumps(d))) == rec
    rec = ranked_record()
    rec.images.append(ImageRef(path="x.png", data=png_bytes()))
    back = Record.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert back.images[1].data == png_bytes() and back == rec


def test_stats(records) -> None:
    s = compute_stats(records)
    json.dumps(s)  # JSON-able
    assert s["records"] == 4 and s["responses"] == 11
    assert s["responses_per_record"] == {"2": 2, "3": 1, "4": 1}
    assert s["categories"] == {"long": 1, "safety": 1, "(none)": 1, "video": 1}
    assert s["ranking"] == {
        "records_with_ranking": 2,
        "records_with_ties": 1,
        "tie_share": 0.5,
        "records_with_preferences": 2,
    }
    assert s["pairs"]["total"] == 5 + 1 + 3 + 1 and s["pairs"]["tie_pairs"] == 1
    assert s["pairs"]["per_record"] == {"1": 2, "3": 1, "5": 1}
    assert s["scores"]["helpfulness"] == {
        "count": 4,
        "mean": 3.5,
        "distribution": {"1": 1, "4": 2, "5": 1},
    }
    assert "ethics" in s["scores"] and s["scores"]["ethics"]["count"] == 3
    assert s["query_words"]["histogram"]["0-9"] == 4
    assert sum(s["response_words"]["histogram"].values()) == 11
    assert s["media"] == {"records_with_images": 3, "images": 4, "records_with_video": 1}
    buf = io.StringIO()
    print_stats(s, Console(file=buf, width=100))
    out = buf.getvalue()
    assert "response length (words)" in out and "helpfulness" in out and "█" in out
