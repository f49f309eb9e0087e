"""The monitor's state as JSON, so a resumed run continues diagnosing where it stopped.

A small tagged codec over the diagnosis package's own plain classes (windows, tracks,
detectors, findings): every object is written as its slots/attributes, floats keep NaN and
infinities, and only classes registered here can be read back — nothing is imported or
executed by name.

>>> from tunescope.diagnose.stats import Window
>>> w = Window(3); w.add(1, 2.0)
>>> load(dump(w)).values()
[2.0]
"""

from __future__ import annotations

import math
from collections import deque
from enum import Enum
from typing import Any

_REGISTRY: dict[str, Any] = {}  # class name -> class


def register(*classes: Any) -> None:
    """Allow these classes to be written and read."""
    for cls in classes:
        _REGISTRY[cls.__qualname__] = cls


def _attrs(obj: Any) -> dict[str, Any]:
    names: list[str] = []
    for klass in type(obj).__mro__:
        names += [n for n in getattr(klass, "__slots__", ()) if n not in names]
    found = {n: getattr(obj, n) for n in names if hasattr(obj, n)}
    found.update(getattr(obj, "__dict__", {}))
    return found


def dump(obj: Any) -> Any:
    """A JSON-able, tagged copy of `obj` (registered classes, containers, numbers, strings)."""
    if obj is None or (isinstance(obj, bool | int | str) and not isinstance(obj, Enum)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__f": repr(obj)}
    if isinstance(obj, Enum):
        return {"__e": type(obj).__qualname__, "v": obj.value}
    if isinstance(obj, list):
        return [dump(v) for v in obj]
    if isinstance(obj, tuple):
        return {"__t": [dump(v) for v in obj]}
    if isinstance(obj, deque):
        return {"__q": [dump(v) for v in obj], "maxlen": obj.maxlen}
    if isinstance(obj, set | frozenset):
        return {"__s": [dump(v) for v in obj]}
    if isinstance(obj, dict):
        return {"__d": [[dump(k), dump(v)] for k, v in obj.items()]}
    name = type(obj).__qualname__
    if _REGISTRY.get(name) is not type(obj):
        raise TypeError(f"cannot save a {name} in the monitor state; register it in persist.py")
    return {"__o": name, "a": {k: dump(v) for k, v in _attrs(obj).items()}}


def load(data: Any) -> Any:
    """Inverse of `dump`."""
    if isinstance(data, list):
        return [load(v) for v in data]
    if not isinstance(data, dict):
        return data
    if "__f" in data:
        return float(data["__f"])
    if "__e" in data:
        return _REGISTRY[data["__e"]](data["v"])
    if "__t" in data:
        return tuple(load(v) for v in data["__t"])
    if "__q" in data:
        return deque((load(v) for v in data["__q"]), data["maxlen"])
    if "__s" in data:
        return {load(v) for v in data["__s"]}
    if "__d" in data:
        return {_key(load(k)): load(v) for k, v in data["__d"]}
    if "__o" in data:
        cls = _REGISTRY.get(data["__o"])
        if cls is None:
            raise ValueError(f"unknown class {data['__o']!r} in a saved monitor state")
        obj = cls.__new__(cls)
        for k, v in data["a"].items():
            object.__setattr__(obj, k, load(v))
        return obj
    raise ValueError(f"not a saved monitor state: {sorted(data)[:5]}")


def _key(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k
