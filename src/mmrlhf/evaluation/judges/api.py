"""A judge behind any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, SGLang, ...).

Why it is built the way it is:

- **No lost answers.** A benchmark run is hundreds of requests; one that keeps failing must not
  throw away the others. Every item comes back: after the retries are exhausted it is a
  ``Rating(rating=0, parsed=False, error=...)`` / ``Verdict(winner=None, parsed=False,
  error=...)``, which the metrics count and report (METHODS.md section 8's rule for unparsable
  ratings).
- **Retries that match how such endpoints fail.** Timeouts, connection errors, 408, 429 and 5xx
  are transient: retried with exponential backoff and jitter, honouring ``Retry-After``
  (capped at ``max_backoff_s``). A 200 whose body is not valid JSON or has no
  ``choices[0].message.content`` is also treated as a failed attempt. Other 4xx (bad request,
  bad key, unknown model) will not get better by asking again: they fail at once, and 401, 403
  and 404, which would fail identically for every item, stop the rest of the batch from being
  sent (each remaining item gets the same clear error).
- **The key stays secret.** It is read from an environment variable at call time (so rotating
  it needs no new judge), sent only as ``Authorization: Bearer``, never stored on the object,
  never part of a cache key, and redacted from every error and log message (a server may echo
  it in an error body).
- **Bounded concurrency** (``max_concurrency`` threads) to respect rate limits, and a
  persistent :class:`~mmrlhf.evaluation.judges.cache.JudgeCache` so re-running an evaluation
  costs zero requests. Identical requests inside one batch are sent once.

Only the standard library is used for HTTP (``urllib``), so the judge adds no dependency.
Requests to loopback hosts bypass any ``*_proxy`` environment settings, since a local server is
never behind a proxy; other hosts use the environment's proxies like any HTTP client.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mmrlhf.evaluation.judges.base import CompareItem, RateItem, Rating, Verdict
from mmrlhf.evaluation.judges.cache import JudgeCache, cache_key
from mmrlhf.evaluation.judges.prompts import (
    Messages,
    mmhal_messages,
    rating_from_reply,
    refomb_messages,
    verdict_from_reply,
)

logger = logging.getLogger(__name__)

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: Statuses that a later attempt may get past.
_RETRY_STATUS = {408, 429}
#: Statuses that would fail identically for every request of the batch.
_FATAL_STATUS = {401, 403, 404}


class _AttemptError(Exception):
    """One failed attempt; ``retryable`` says whether asking again can help."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        fatal: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.fatal = fatal


class _Batch:
    """State shared by the requests of one ``rate``/``compare`` call: the abort reason."""

    def __init__(self) -> None:
        self.abort: str | None = None
        self.lock = threading.Lock()


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ApiJudge:
    """MMHal ratings and RefoMB verdicts from an OpenAI-compatible chat-completions API.

    ``base_url`` is the API root that ``/chat/completions`` is appended to, e.g.
    ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1`` for a local vLLM server.
    ``api_key_env`` names the environment variable that holds the key (None: send no key, for
    local servers). ``max_retries`` counts retries after the first attempt. Counters are in
    :attr:`stats`.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        temperature: float = 0.0,
        max_tokens: int = 1024,
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        max_concurrency: int = 8,
        cache_path: str | Path | None = None,
        name: str | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_concurrency = max_concurrency
        self.name = name or f"api:{model}"
        self.cache = JudgeCache(cache_path) if cache_path is not None else None
        handlers = [urllib.request.ProxyHandler({})] if parsed.hostname in _LOOPBACK else []
        self._opener = urllib.request.build_opener(*handlers)
        self._stats_lock = threading.Lock()
        self._stats = dict.fromkeys(
            ("requests", "cache_hits", "retries", "failures", "unparsed", "completions"), 0
        )
        self._warned_no_key = False

    # ----------------------------------------------------------------------------- public API

    @property
    def stats(self) -> dict[str, int]:
        """Counters since creation: HTTP requests sent (every attempt), cache hits, retries,
        failures (items without a reply after retries), unparsed replies, completions (replies
        obtained, from the API or the cache)."""
        with self._stats_lock:
            return dict(self._stats)

    @property
    def sampling_params(self) -> dict[str, Any]:
        """What goes into the request besides model and messages (and into the cache key)."""
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}

    def rate(self, items: Sequence[RateItem]) -> list[Rating]:
        """One MMHal :class:`Rating` per item, in order; failures are ratings, not exceptions."""
        messages = [
            mmhal_messages(it.question, it.image_content, it.gt_answer, it.answer) for it in items
        ]
        out = []
        for it, (text, error, cached) in zip(items, self.complete_many(messages), strict=True):
            r = rating_from_reply(it.id, text, error, cached=cached)
            if text is not None and not r.parsed:
                self._bump("unparsed")
            out.append(r)
        return out

    def compare(self, items: Sequence[CompareItem]) -> list[Verdict]:
        """One RefoMB :class:`Verdict` per item, in order."""
        messages = [
            refomb_messages(it.question, it.description, it.answer_a, it.answer_b) for it in items
        ]
        out = []
        for it, (text, error, cached) in zip(items, self.complete_many(messages), strict=True):
            v = verdict_from_reply(it.id, text, error, cached=cached)
            if text is not None and not v.parsed:
                self._bump("unparsed")
            out.append(v)
        return out

    def complete_many(
        self, messages_list: Sequence[Messages]
    ) -> list[tuple[str | None, str | None, bool]]:
        """``(text, error, cached)`` per message list, in order; never raises for one item.

        Identical requests are sent once; the cache is consulted first; the rest go out over at
        most ``max_concurrency`` threads.
        """
        keys = [cache_key(self.model, m, self.sampling_params) for m in messages_list]
        unique: dict[str, Messages] = {}
        for k, m in zip(keys, messages_list, strict=True):
            unique.setdefault(k, m)
        batch = _Batch()
        results: dict[str, tuple[str | None, str | None, bool]] = {}
        todo = list(unique.items())
        if todo:
            workers = min(self.max_concurrency, len(todo))
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="api-judge") as pool:
                done = pool.map(lambda kv: self._complete_one(kv[0], kv[1], batch), todo)
                for (k, _), res in zip(todo, done, strict=True):
                    results[k] = res
        return [results[k] for k in keys]

    def close(self) -> None:
        """Close the cache's database connection."""
        if self.cache is not None:
            self.cache.close()

    def __repr__(self) -> str:
        # The key is never stored on the object, so it cannot leak through repr.
        return (
            f"ApiJudge(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r})"
        )

    # ------------------------------------------------------------------------------ internals

    def _bump(self, counter: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[counter] += n

    def _api_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env) or None
        if key is None and not self._warned_no_key:
            self._warned_no_key = True
            logger.warning(
                "judge %s: environment variable %s is not set; sending requests without an "
                "Authorization header",
                self.name,
                self.api_key_env,
            )
        return key

    def _complete_one(
        self, key: str, messages: Messages, batch: _Batch
    ) -> tuple[str | None, str | None, bool]:
        """One request with retries; any unexpected error becomes this item's error."""
        secret = self._api_key()
        try:
            if self.cache is not None:
                hit = self.cache.get(key)
                if hit is not None:
                    self._bump("cache_hits")
                    self._bump("completions")
                    return hit, None, True
            text = self._with_retries(messages, secret, batch)
        except _AttemptError as e:
            self._bump("failures")
            msg = _redact(e.message, secret)
            logger.warning("judge %s: request failed: %s", self.name, msg)
            return None, msg, False
        except Exception as e:  # noqa: BLE001  an unforeseen failure must not lose the batch
            self._bump("failures")
            msg = _redact(f"unexpected {type(e).__name__}: {e}", secret)
            logger.warning("judge %s: request failed: %s", self.name, msg)
            return None, msg, False
        self._bump("completions")
        if self.cache is not None:
            self.cache.put(key, self.model, text)
        return text, None, False

    def _with_retries(self, messages: Messages, secret: str | None, batch: _Batch) -> str:
        attempts = self.max_retries + 1
        last: _AttemptError | None = None
        for attempt in range(attempts):
            if batch.abort is not None:
                raise _AttemptError(
                    f"not sent: an earlier request of this batch failed with {batch.abort}",
                    retryable=False,
                )
            try:
                return self._post(messages, secret)
            except _AttemptError as e:
                e.message = _redact(e.message, secret)
                if not e.retryable:
                    if e.fatal:
                        with batch.lock:
                            batch.abort = batch.abort or e.message
                    raise
                last = e
            if attempt + 1 < attempts:
                delay = self._delay(attempt, last.retry_after)
                self._bump("retries")
                logger.info(
                    "judge %s: attempt %d/%d failed (%s); retrying in %.2fs",
                    self.name,
                    attempt + 1,
                    attempts,
                    last.message,
                    delay,
                )
                time.sleep(delay)
        assert last is not None
        raise _AttemptError(f"gave up after {attempts} attempt(s): {last.message}", retryable=False)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, or the server's ``Retry-After``; both capped."""
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s)
        base = min(self.backoff_s * (2**attempt), self.max_backoff_s)
        # "Equal jitter": at least half the backoff, so concurrent clients spread out without
        # any of them hammering the server straight away.
        return base * (0.5 + 0.5 * random.random())

    def _post(self, messages: Messages, secret: str | None) -> str:
        """One HTTP attempt; returns the completion text or raises :class:`_AttemptError`."""
        body = json.dumps({"model": self.model, "messages": messages, **self.sampling_params})
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        req = urllib.request.Request(
            self.url, data=body.encode("utf-8"), headers=headers, method="POST"
        )
        self._bump("requests")
        try:
            with self._opener.open(req, timeout=self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise _http_error(e) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, TimeoutError):
                raise _timeout(self.timeout_s) from None
            raise _AttemptError(f"connection error: {e.reason}", retryable=True) from None
        except TimeoutError:  # socket.timeout is an alias
            raise _timeout(self.timeout_s) from None
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            raise _AttemptError(
                f"connection error: {type(e).__name__}: {e}", retryable=True
            ) from None
        return _content(raw)


def _timeout(timeout_s: float) -> _AttemptError:
    return _AttemptError(f"timeout: no reply within {timeout_s:g}s", retryable=True)


def _http_error(e: urllib.error.HTTPError) -> _AttemptError:
    try:
        snippet = e.read(500).decode("utf-8", "replace").strip()
    except Exception:  # noqa: BLE001  the body is only decoration for the message
        snippet = ""
    status = e.code
    msg = f"HTTP {status} {e.reason}" + (f": {snippet}" if snippet else "")
    if status in _RETRY_STATUS or status >= 500:
        retry_after = _parse_retry_after(e.headers.get("Retry-After") if e.headers else None)
        return _AttemptError(msg, retryable=True, retry_after=retry_after)
    return _AttemptError(msg, retryable=False, fatal=status in _FATAL_STATUS)


def _content(raw: bytes) -> str:
    """``choices[0].message.content`` of a chat-completions body; malformed -> retryable."""
    try:
        data = json.loads(raw)
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        snippet = raw[:200].decode("utf-8", "replace")
        raise _AttemptError(
            f"malformed response (no choices[0].message.content): {snippet!r}", retryable=True
        ) from None
    if not isinstance(content, str):
        raise _AttemptError(
            f"malformed response: choices[0].message.content is {type(content).__name__}",
            retryable=True,
        )
    return content


def _redact(text: str, secret: str | None) -> str:
    """``text`` with the key replaced, in case a server echoed it back in an error body."""
    return text.replace(secret, "***") if secret else text
