"""Validating query parameters: every malformed value becomes a 4xx with a message, never a 500."""

from __future__ import annotations

from starlette.datastructures import QueryParams

MAX_POINTS = 10_000  # buckets one request may ask for (a 4K screen is under 4,000 pixels wide)
MAX_RUNS_COMPARED = 50
MAX_STEP = 2**62  # steps are stored as int64


class BadRequest(Exception):
    """A request the client must fix; `status` is the HTTP code, the message says what to fix."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def integer(
    params: QueryParams, name: str, default: int | None, lo: int, hi: int, *, required: bool = False
) -> int | None:
    """The integer parameter `name` within [lo, hi], `default` when absent.

    >>> integer(QueryParams("points=500"), "points", 1000, 1, 10_000)
    500
    """
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise BadRequest(f"query parameter {name!r} is required (an integer in [{lo}, {hi}])")
        return default
    if len(params.getlist(name)) > 1:
        raise BadRequest(f"query parameter {name!r} was given more than once; give it once")
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        raise BadRequest(
            f"query parameter {name!r} must be an integer in [{lo}, {hi}]; got {raw[:40]!r}"
        ) from None
    if not lo <= value <= hi:
        raise BadRequest(f"query parameter {name!r} must be in [{lo}, {hi}]; got {value}")
    return value


def text(
    params: QueryParams, name: str, *, required: bool = True, max_len: int = 500
) -> str | None:
    """The string parameter `name` (stripped of nothing: metric keys are exact)."""
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise BadRequest(f"query parameter {name!r} is required")
        return None
    if len(params.getlist(name)) > 1:
        raise BadRequest(f"query parameter {name!r} was given more than once; give it once")
    if len(raw) > max_len:
        raise BadRequest(f"query parameter {name!r} is longer than {max_len} characters")
    return raw


def step_range(params: QueryParams) -> tuple[int | None, int | None]:
    """`start`/`end` steps (inclusive), validated to be ordered."""
    start = integer(params, "start", None, 0, MAX_STEP)
    end = integer(params, "end", None, 0, MAX_STEP)
    if start is not None and end is not None and end < start:
        raise BadRequest(f"'end' ({end}) must not be lower than 'start' ({start})")
    return start, end


def run_list(params: QueryParams) -> list[str]:
    """`runs=a,b,c`: run names or ids, at least one, at most `MAX_RUNS_COMPARED`, no repeats."""
    raw = text(params, "runs", max_len=20_000) or ""
    refs = [r.strip() for r in raw.split(",")]
    refs = list(dict.fromkeys(r for r in refs if r))
    if not refs:
        raise BadRequest("query parameter 'runs' must list run names or ids separated by commas")
    if len(refs) > MAX_RUNS_COMPARED:
        raise BadRequest(f"compare at most {MAX_RUNS_COMPARED} runs at once; got {len(refs)}")
    return refs
