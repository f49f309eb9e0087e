"""Config differences between runs (pure)."""

from __future__ import annotations

import json
from typing import Any

from .overview import flatten

_MISSING = object()


def config_diff(configs: list[dict[str, Any]], *, all_keys: bool = False) -> list[dict[str, Any]]:
    """Flattened config keys whose values differ between runs (all keys with `all_keys`).

    Each row: `key`, `values` (one per run, None where the run lacks the key) and `differs`.

    >>> config_diff([{"lr": 1e-3, "model": {"layers": 2}}, {"lr": 3e-4, "model": {"layers": 2}}])
    [{'key': 'lr', 'values': [0.001, 0.0003], 'missing': [False, False], 'differs': True}]
    """
    flat = [flatten(c) for c in configs]
    keys = sorted({k for f in flat for k in f})
    rows = []
    for key in keys:
        values = [f.get(key, _MISSING) for f in flat]
        canon = {json.dumps(v, sort_keys=True, default=str) for v in values if v is not _MISSING}
        differs = len(canon) > 1 or any(v is _MISSING for v in values)
        if differs or all_keys:
            rows.append(
                {
                    "key": key,
                    "values": [None if v is _MISSING else v for v in values],
                    "missing": [v is _MISSING for v in values],
                    "differs": differs,
                }
            )
    return rows
