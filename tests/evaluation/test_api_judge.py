"""The API judge against a scripted fake OpenAI server: prompts, parsers, every failure mode,
the cache, the concurrency bound and the secrecy of the API key. Tiny timeouts keep it fast."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from fake_openai_server import Malformed, Reply, Status, serve

from mmrlhf.evaluation.judges.api import ApiJudge
from mmrlhf.evaluation.judges.base import CompareItem, RateItem
from mmrlhf.evaluation.judges.cache import JudgeCache, cache_key
from mmrlhf.evaluation.judges.prompts import (
    MMHAL_SECTIONS,
    REFOMB_SECTIONS,
    mmhal_messages,
    parse_rating,
    parse_winner,
    refomb_messages,
)

BENCHMARKS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks"
SECRET = "sk-test-DO-NOT-LEAK-0123456789"


# ------------------------------------------------------------------------- a scripted judge


def section(prompt: str, header: str) -> str:
    """The text under ``header`` up to the next ``### `` header."""
    rest = prompt.split(header + "\n", 1)[1]
    return rest.split("\n\n### ", 1)[0].strip()


def rule_judge(messages: list[dict]) -> str:
    """Rates the answer by a rule the test controls: ``quality=N`` in the answer is rating N;
    for comparisons the response with fewer ``WRONG`` marks wins. No marker: no verdict."""
    prompt = messages[-1]["content"]
    if MMHAL_SECTIONS[-1] in prompt:
        answer = section(prompt, MMHAL_SECTIONS[-1])
        if "quality=" not in answer:
            return "I am not sure how to rate this."
        n = answer.split("quality=", 1)[1][0]
        return f"The response is judged by its marker.\nRating: {n}"
    a = section(prompt, REFOMB_SECTIONS[2]).count("WRONG")
    b = section(prompt, REFOMB_SECTIONS[3]).count("WRONG")
    winner = "Tie" if a == b else ("A" if a < b else "B")
    return f"A has {a} hallucinations, B has {b}.\nWinner: {winner}"


def rate_items(n: int) -> list[RateItem]:
    return [
        RateItem(
            id=f"q{i}",
            question=f"What is shown in picture {i}?",
            question_type="attribute",
            image_content=["Cat", "Sofa"],
            gt_answer="A cat on a sofa.",
            answer=f"A cat sits on a sofa. quality={i % 7}",
        )
        for i in range(n)
    ]


def judge_for(server, **kw) -> ApiJudge:
    defaults = dict(
        api_key_env="MMRLHF_TEST_JUDGE_KEY",
        timeout_s=2.0,
        max_retries=3,
        backoff_s=0.01,
        max_backoff_s=0.05,
        max_concurrency=4,
    )
    defaults.update(kw)
    return ApiJudge(server.base_url, "fake-judge", **defaults)


@pytest.fixture
def server():
    with serve(rule_judge) as s:
        yield s


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMRLHF_TEST_JUDGE_KEY", SECRET)


# ------------------------------------------------------------------------------- parsers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is good.\nRating: 4", 4),
        ("rating:6", 6),
        ("RATING: 0", 0),
        ("**Rating:** 5", 5),
        ("Rating: **3**", 3),
        ("Rating: 4 ... rating: 5", None),
        ("Rating: 4\nTo repeat, Rating: 4", 4),
        ("Rating: 7", None),
        ("Rating: 4.5", None),
        ("Rating: 17", None),
        ("I would give it a four.", None),
        ("", None),
        ("Rating: 6, very informative\nRating: 5, very informative", None),
    ],
)
def test_parse_rating(text: str, expected: int | None) -> None:
    assert parse_rating(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A is better.\nWinner: A", "a"),
        ("winner:b", "b"),
        ("Winner: Tie", "tie"),
        ("**Winner:** Response B", "b"),
        ("Winner: [[A]]", "a"),
        ("Winner: A\nOn reflection, Winner: B", None),
        ("Winner: Both", None),
        ("Winner: Alpha", None),
        ("A wins.", None),
    ],
)
def test_parse_winner(text: str, expected: str | None) -> None:
    assert parse_winner(text) == expected


def test_prompts_carry_every_part() -> None:
    [msg] = mmhal_messages("How many cats?", ["Cat", "Lynx"], "Two cats.", "One cat.")
    assert msg["role"] == "user"
    text = msg["content"]
    for header in MMHAL_SECTIONS:
        assert header in text
    assert section(text, MMHAL_SECTIONS[0]) == "Cat, Lynx"
    assert section(text, MMHAL_SECTIONS[-1]) == "One cat."
    for n in range(7):
        assert f"- Rating: {n}, " in text
    assert "very informative with good analysis or reasoning, no hallucination" in text
    [msg] = refomb_messages("What is it?", "A long description.", "Answer one.", "Answer two.")
    text = msg["content"]
    assert section(text, REFOMB_SECTIONS[2]) == "Answer one."
    assert section(text, REFOMB_SECTIONS[3]) == "Answer two."
    assert "Winner: Tie" in text and "Trustworthiness" in text


def test_prompts_on_real_benchmark_records() -> None:
    mmhal, refomb = BENCHMARKS / "mmhal_bench.json", BENCHMARKS / "refomb_dev.jsonl"
    if not (mmhal.exists() and refomb.exists()):
        pytest.skip("shared benchmark files absent")
    rec = json.loads(mmhal.read_text())[0]
    [msg] = mmhal_messages(rec["question"], rec["image_content"], rec["gt_answer"], "Yellow.")
    assert section(msg["content"], MMHAL_SECTIONS[0]) == ", ".join(rec["image_content"])
    assert section(msg["content"], MMHAL_SECTIONS[2]) == rec["gt_answer"]
    r = json.loads(refomb.read_text().splitlines()[0])
    [msg] = refomb_messages(r["question"], r["description"], "x", "y")
    assert r["description"].strip() in msg["content"]


# ------------------------------------------------------------------------------ happy path


def test_rate_and_compare_agree_with_the_scripted_judge(server) -> None:
    judge = judge_for(server)
    assert judge.name == "api:fake-judge"
    items = rate_items(7)
    ratings = judge.rate(items)
    assert [r.id for r in ratings] == [it.id for it in items]
    assert [r.rating for r in ratings] == [i % 7 for i in range(7)]
    assert all(r.parsed and r.error is None and "Rating:" in r.explanation for r in ratings)
    body = server.requests[0].body
    assert body["model"] == "fake-judge" and body["temperature"] == 0.0
    assert body["messages"][0]["role"] == "user"

    pairs = [
        CompareItem("c0", "Q?", "desc", "fine", "WRONG WRONG"),
        CompareItem("c1", "Q?", "desc", "WRONG", "fine"),
        CompareItem("c2", "Q?", "desc", "fine", "also fine"),
    ]
    assert [v.winner for v in judge.compare(pairs)] == ["a", "b", "tie"]
    assert judge.stats["requests"] == 10 and judge.stats["failures"] == 0


def test_reply_without_rating_is_unparsed_not_an_error(server) -> None:
    judge = judge_for(server)
    items = rate_items(3)
    items[1].answer = "No marker in this one."
    ratings = judge.rate(items)
    bad = next(r for r in ratings if r.id == "q1")
    assert (bad.rating, bad.parsed, bad.error) == (0, False, None)
    assert bad.explanation == "I am not sure how to rate this."
    assert [r.parsed for r in ratings].count(True) == 2
    assert judge.stats["unparsed"] == 1 and judge.stats["failures"] == 0


# ---------------------------------------------------------------------------- failure modes


def test_server_errors_then_recovery_loses_nothing(server) -> None:
    server.fail_first(2, Status(500))
    judge = judge_for(server)
    ratings = judge.rate(rate_items(5))
    assert all(r.parsed for r in ratings)
    assert [r.rating for r in ratings] == [0, 1, 2, 3, 4]
    assert judge.stats["retries"] == 2 and judge.stats["requests"] == 7
    assert judge.stats["failures"] == 0


def test_429_honours_retry_after(server) -> None:
    server.fail_first(3, Status(429, retry_after="0"))
    # A huge backoff that would blow the test's time if Retry-After: 0 were ignored.
    judge = judge_for(server, backoff_s=30.0, max_backoff_s=30.0)
    t0 = time.monotonic()
    ratings = judge.rate(rate_items(4))
    assert time.monotonic() - t0 < 3.0
    assert all(r.parsed for r in ratings)
    assert judge.stats["retries"] == 3


def test_always_timing_out_gives_errors_quickly(server) -> None:
    server.default = Reply(delay=3.0)
    judge = judge_for(server, timeout_s=0.2, max_retries=1)
    t0 = time.monotonic()
    ratings = judge.rate(rate_items(3))
    assert time.monotonic() - t0 < 2.0
    for r in ratings:
        assert (r.rating, r.parsed) == (0, False)
        assert "timeout" in r.error and "2 attempt" in r.error
    assert judge.stats["failures"] == 3 and judge.stats["retries"] == 3
    verdicts = judge.compare([CompareItem("c", "Q?", "d", "x", "y")])
    assert verdicts[0].winner is None and "timeout" in verdicts[0].error


def test_one_timeout_is_retried(server) -> None:
    server.push(Reply(delay=3.0))
    judge = judge_for(server, timeout_s=0.3, max_concurrency=1)
    ratings = judge.rate(rate_items(3))
    assert all(r.parsed for r in ratings)
    assert judge.stats["retries"] == 1


def test_malformed_replies_are_retried(server) -> None:
    server.push(Malformed(), Malformed('{"choices": []}'), Malformed('{"choices": [{}]}'))
    judge = judge_for(server, max_concurrency=1)
    ratings = judge.rate(rate_items(2))
    assert all(r.parsed for r in ratings)
    assert judge.stats["retries"] == 3


def test_always_malformed_fails_each_item(server) -> None:
    server.default = Malformed('{"choices": [{"message": {"content": null}}]}')
    judge = judge_for(server, max_retries=2)
    ratings = judge.rate(rate_items(3))
    assert all(not r.parsed and "malformed" in r.error for r in ratings)
    assert judge.stats["requests"] == 9


def test_client_errors_are_not_retried(server) -> None:
    server.default = Status(400, body='{"error": {"message": "bad request"}}')
    judge = judge_for(server)
    ratings = judge.rate(rate_items(3))
    assert all("HTTP 400" in r.error and "bad request" in r.error for r in ratings)
    assert judge.stats["requests"] == 3 and judge.stats["retries"] == 0


def test_auth_error_stops_the_batch(server) -> None:
    server.default = Status(401)
    judge = judge_for(server, max_concurrency=1)
    ratings = judge.rate(rate_items(4))
    assert len(server.requests) == 1
    assert all("HTTP 401" in r.error for r in ratings)
    assert "not sent" in ratings[-1].error
    assert judge.stats["failures"] == 4


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = ApiJudge(
        f"http://127.0.0.1:{port}/v1", "m", api_key_env=None, max_retries=1, backoff_s=0.01
    )
    ratings = judge.rate(rate_items(2))
    assert all("connection error" in r.error for r in ratings)


# -------------------------------------------------------------------------------- the cache


def test_cache_makes_a_rerun_free(server, tmp_path: Path) -> None:
    cache = tmp_path / "judge.sqlite"
    first = judge_for(server, cache_path=cache).rate(rate_items(5))
    assert len(server.requests) == 5
    again = judge_for(server, cache_path=cache)
    second = again.rate(rate_items(5))
    assert len(server.requests) == 5  # zero new requests
    assert again.stats["cache_hits"] == 5 and again.stats["requests"] == 0
    assert [r.rating for r in second] == [r.rating for r in first]
    assert all(r.details["cached"] for r in second)
    # Another cache file, or another prompt, asks again.
    judge_for(server, cache_path=tmp_path / "other.sqlite").rate(rate_items(5))
    assert len(server.requests) == 10
    changed = rate_items(5)
    changed[0].answer += " (edited)"
    judge_for(server, cache_path=cache).rate(changed)
    assert len(server.requests) == 11


def test_errors_are_never_cached(server, tmp_path: Path) -> None:
    cache = tmp_path / "judge.sqlite"
    server.default = Status(503)
    failed = judge_for(server, cache_path=cache, max_retries=0).rate(rate_items(2))
    assert all(r.error for r in failed)
    assert len(JudgeCache(cache)) == 0
    server.default = Reply()
    ok = judge_for(server, cache_path=cache).rate(rate_items(2))
    assert all(r.parsed for r in ok)
    assert len(server.requests) == 4


def test_identical_requests_are_sent_once(server) -> None:
    items = rate_items(1) * 4
    ratings = judge_for(server).rate(items)
    assert len(ratings) == 4 and len(server.requests) == 1


def test_cache_key_is_canonical_and_covers_params() -> None:
    m1 = [{"role": "user", "content": "hi"}]
    m2 = [{"content": "hi", "role": "user"}]
    p = {"temperature": 0.0, "max_tokens": 10}
    assert cache_key("m", m1, p) == cache_key("m", m2, dict(reversed(p.items())))
    assert cache_key("m", m1, p) != cache_key("m", m1, {**p, "temperature": 1.0})
    assert cache_key("m", m1, p) != cache_key("other", m1, p)


def test_cache_is_thread_safe_and_in_wal_mode(tmp_path: Path) -> None:
    cache = JudgeCache(tmp_path / "c.sqlite")

    def work(t: int) -> None:
        for i in range(30):
            cache.put(f"{t}-{i}", "m", f"text {t} {i}")
            assert cache.get(f"{t}-{i}") == f"text {t} {i}"

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(cache) == 180
    cache.close()
    with sqlite3.connect(tmp_path / "c.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# ----------------------------------------------------------------- concurrency and secrets


def test_concurrency_bound_is_respected(server) -> None:
    server.default = Reply(delay=0.1)
    judge = judge_for(server, max_concurrency=3)
    ratings = judge.rate(rate_items(12))
    assert all(r.parsed for r in ratings)
    assert 2 <= server.max_in_flight <= 3


def test_api_key_is_sent_but_never_leaked(
    server, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    cache = tmp_path / "judge.sqlite"
    judge = judge_for(server, cache_path=cache, max_concurrency=1)
    # A retried 500, then a 401 whose body echoes the key back, as real servers do.
    server.push(Status(500), Status(401, echo_auth=True))
    failed = judge.rate(rate_items(2))
    ok = judge.rate(rate_items(3)[2:])
    assert server.requests[0].authorization == f"Bearer {SECRET}"
    assert all(r.authorization == f"Bearer {SECRET}" for r in server.requests)
    assert "HTTP 401" in failed[0].error and "***" in failed[0].error
    assert ok[0].parsed
    assert "HTTP 500" in caplog.text and "HTTP 401" in caplog.text  # the logs did see errors
    leaks = [caplog.text, repr(judge), str(vars(judge)), *(r.error or "" for r in failed)]
    assert all(SECRET not in text for text in leaks)
    assert SECRET.encode() not in cache.read_bytes()
    # The key is read at call time: a rotated key is used without a new judge.
    monkeypatch.setenv("MMRLHF_TEST_JUDGE_KEY", "sk-rotated")
    judge.rate(rate_items(4)[3:])
    assert server.requests[-1].authorization == "Bearer sk-rotated"


def test_missing_key_sends_no_authorization(
    server, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MMRLHF_TEST_JUDGE_KEY")
    with caplog.at_level(logging.WARNING):
        ratings = judge_for(server).rate(rate_items(2))
    assert all(r.parsed for r in ratings)
    assert all(r.authorization is None for r in server.requests)
    assert "MMRLHF_TEST_JUDGE_KEY is not set" in caplog.text
