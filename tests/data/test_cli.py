"""`mmrlhf data ...` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_helpers import BENCHMARKS
from typer.testing import CliRunner

from mmrlhf.cli.main import app
from mmrlhf.data.io import load_records, save_records

runner = CliRunner()


@pytest.fixture
def data_file(records, media_root: Path) -> Path:
    path = media_root / "data.jsonl"  # the default media root is the file's folder
    save_records(records, path)
    return path


def test_validate_ok_and_failing(data_file: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["data", "validate", str(data_file)])
    assert res.exit_code == 0, res.output
    assert "OK: 4 records: 4 ok, 0 bad" in res.output
    bad = tmp_path / "bad.jsonl"
    lines = data_file.read_text().splitlines()
    bad.write_text("\n".join([lines[0], "{oops", lines[0]]) + "\n")
    out_json = tmp_path / "v.json"
    res = runner.invoke(
        app,
        [
            "data",
            "validate",
            str(bad),
            "--media-root",
            str(data_file.parent),
            "--json",
            str(out_json),
        ],
    )
    assert res.exit_code == 1
    assert f"{bad}:2: -: is not valid JSON" in res.output
    assert f"{bad}:3: id: duplicate id 'q1' (first seen on line 1)" in res.output
    assert "FAILED: 3 records: 1 ok, 2 bad" in res.output
    assert json.loads(out_json.read_text())["counts"] == {"bad_json": 1, "duplicate_id": 1}


def test_validate_options(data_file: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved.jsonl"
    moved.write_text(data_file.read_text())  # images are not next to it any more
    res = runner.invoke(app, ["data", "validate", str(moved)])
    assert res.exit_code == 1 and "missing_media" in res.output
    res = runner.invoke(app, ["data", "validate", str(moved), "--no-media-check"])
    assert res.exit_code == 0
    res = runner.invoke(app, ["data", "validate", str(moved), "--no-media-check", "--task", "x"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["data", "validate", str(moved), "--format", "nope"])
    assert res.exit_code == 1 and "unknown format 'nope'" in res.output


def test_convert_round_trip_and_report(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    res = runner.invoke(app, ["data", "convert", str(data_file), str(out), "--embed-images"])
    assert res.exit_code == 0, res.output
    assert "wrote 4 rows" in res.output
    recs, rep = load_records(out, media_root=data_file.parent)
    assert rep.ok and recs[0].images[0].data is not None
    lf = tmp_path / "lf" / "train.json"
    res = runner.invoke(
        app,
        [
            "data",
            "convert",
            str(data_file),
            str(lf),
            "--to",
            "llamafactory",
            "--strategy",
            "best_vs_rest",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "train" in json.loads((lf.parent / "dataset_info.json").read_text())
    # skip mode + report
    bad = tmp_path / "bad.jsonl"
    bad.write_text(data_file.read_text() + "{oops\n")
    report = tmp_path / "report.json"
    res = runner.invoke(
        app,
        [
            "data",
            "convert",
            str(bad),
            str(tmp_path / "o.jsonl"),
            "--mode",
            "skip",
            "--report",
            str(report),
            "--media-root",
            str(data_file.parent),
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(report.read_text())["counts"] == {"bad_json": 1}
    res = runner.invoke(
        app,
        [
            "data",
            "convert",
            str(bad),
            str(tmp_path / "o2.jsonl"),
            "--media-root",
            str(data_file.parent),
        ],
    )
    assert res.exit_code == 1 and "is not valid JSON" in res.output
    assert not (tmp_path / "o2.jsonl").exists()


def test_pairs_command_reads_back(data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    res = runner.invoke(
        app,
        [
            "data",
            "pairs",
            str(data_file),
            str(out),
            "--strategy",
            "adjacent",
            "--ties",
            "keep",
            "--margin",
            "rank",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "4 records -> 9 pairs" in res.output  # q1: 4 + 1 tie, q2: 1, q3: 2, q4: 1
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert {"id", "prompt", "chosen", "rejected", "chosen_reason", "rejected_reason",
            "chosen_index", "rejected_index"} <= set(rows[0])  # fmt: skip
    assert rows[0]["margin"] == 1.0 and rows[4]["is_tie"] is True
    recs, rep = load_records(out, media_root=data_file.parent)
    assert rep.ok and [r.id for r in recs] == ["q1", "q2", "q3", "q4"]
    assert len(recs[0].preferences) == 5


def test_stats_command(data_file: Path, tmp_path: Path) -> None:
    js = tmp_path / "s.json"
    res = runner.invoke(app, ["data", "stats", str(data_file), "--json", str(js)])
    assert res.exit_code == 0, res.output
    assert "response length (words)" in res.output
    s = json.loads(js.read_text())
    assert s["records"] == 4 and s["load"]["records_bad"] == 0


def test_help_documents_every_option() -> None:
    for cmd, opts in {
        "validate": ["--format", "--media-root", "--task", "--no-media-check"],
        "convert": ["--from", "--to", "--media-root", "--embed-images", "--mode", "--report"],
        "pairs": ["--strategy", "--ties", "--margin"],
        "stats": ["--json"],
    }.items():
        res = runner.invoke(app, ["data", cmd, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0
        for opt in opts:
            assert opt in res.output, (cmd, opt)


def test_real_benchmark_through_cli() -> None:
    path = BENCHMARKS / "mm_rlhf_reward_bench.jsonl"
    if not path.is_file():
        pytest.skip("benchmarks not available")
    res = runner.invoke(app, ["data", "validate", str(path)])
    assert res.exit_code == 1 and f"{path}:1: images[0]: image file not found" in res.output
    res = runner.invoke(app, ["data", "validate", str(path), "--no-media-check"])
    assert res.exit_code == 0 and "46 records: 46 ok" in res.output
