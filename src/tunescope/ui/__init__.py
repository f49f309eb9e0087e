"""The live dashboard: `tunescope ui`, or `create_app(store)` under any ASGI server."""

from .app import create_app

__all__ = ["create_app"]
