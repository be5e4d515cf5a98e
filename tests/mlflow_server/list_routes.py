"""Print, as JSON, every (path, method) of the app `mlflow server [--app-name NAME]` would serve.

Run as a script in a child process with the server's environment: building MLflow's apps mutates
module-level state (the Flask app, the auth store), which must not leak into the test process.
Routes come from the apps themselves (the Flask url_map and the FastAPI router tree), so a route
a new MLflow release adds is probed without anyone listing it.
"""

from __future__ import annotations

import importlib
import json
import sys


def fastapi_routes(routes, prefix: str = ""):
    """(path, method) of FastAPI's native routes; the Mount is the Flask app, listed separately."""
    from starlette.routing import Mount

    for route in routes:
        if isinstance(route, Mount):
            continue
        if hasattr(route, "original_router"):  # include_router() wraps the router it includes
            yield from fastapi_routes(route.original_router.routes, prefix + route.include_context.prefix)
        else:
            for method in sorted(getattr(route, "methods", None) or ()):
                yield prefix + route.path, method


def main(app_name: str | None) -> None:
    from mlflow.server import _find_app
    from mlflow.server import app as flask_app

    target = _find_app(app_name) if app_name else "mlflow.server.fastapi_app:app"
    module, attr = target.rsplit(":", 1)
    served = getattr(importlib.import_module(module), attr)
    if callable(served) and not hasattr(served, "routes"):
        served = served()  # an app factory such as mlflow.server.auth:create_app
    routes = {
        (rule.rule, method)
        for rule in flask_app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    routes |= set(fastapi_routes(getattr(served, "routes", [])))
    json.dump(sorted(routes), sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
