"""Finding the services to run from a ``module:object`` reference."""

from __future__ import annotations

import importlib

from services.app import Ballast
from services.errors import ConfigurationError
from services.specs import AgentSpec, ServiceSpec, ToolSpec


def load_services(target: str) -> tuple[str, list[ServiceSpec]]:
    """Resolve ``module:object`` to a name and its services.

    ``object`` may be a `Ballast` app (all of its services), or one agent or
    tool declared with ``@app.agent`` / ``@app.tool`` (just that service).
    """
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(
            f"{target!r} is not MODULE:OBJECT, e.g. services.examples.support:app"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    obj = getattr(module, attr, None)
    if isinstance(obj, Ballast):
        return obj.name, obj.specs
    if isinstance(obj, AgentSpec | ToolSpec):
        return obj.service, [obj]
    raise ConfigurationError(
        f"{target} is {type(obj).__name__ if obj is not None else 'missing'}; expected a "
        "Ballast app or an agent or tool declared with @app.agent / @app.tool"
    )
