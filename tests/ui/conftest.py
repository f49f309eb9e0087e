from __future__ import annotations

from pathlib import Path

import pytest
import ui_stores as stores
from starlette.testclient import TestClient

from tunescope.ui import create_app


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ui-store")
    stores.spiky(path)
    stores.annotated(path)
    stores.diverged(path)
    return path


@pytest.fixture(scope="session")
def ids(store: Path) -> dict[str, str]:
    from tunescope.store import Store

    return {r.name: r.id for r in Store(store, create_if_missing=False).reader().runs()}


@pytest.fixture()
def client(store: Path) -> TestClient:
    # Loopback Host header: without a token the dashboard answers only requests sent to it.
    return TestClient(create_app(store), base_url="http://127.0.0.1")
