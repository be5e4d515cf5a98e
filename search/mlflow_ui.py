"""The MLflow UI opening on model-training runs: `mlflow ui --app-name gantune` (and `gantune
server` without --auth) serve MLflow's own app with one line added to its page.

Why an app and not an experiment tag: MLflow 3.17's UI picks "GenAI" or "Model training" mode
from the URL (`?workflowType=machine_learning`) or else from the browser's localStorage key
`mlflow.workflowType_v1`, which defaults to GenAI. The experiment tag `mlflow.experimentKind`
is read only when the mode switcher is off, and 3.17 ships it hard-wired on (the JS bundle's
feature flag is `()=>!0`), so the tag alone changes nothing on a fresh browser profile. The script
below sets that localStorage default to model training when the person has never chosen a mode;
the switch in the sidebar still works and is remembered as before."""

from __future__ import annotations

from pathlib import Path

APP_NAME = "gantune"
"""The `mlflow.app` entry point name (pyproject.toml): `mlflow ui --app-name gantune`."""
WORKFLOW_KEY = "mlflow.workflowType_v1"
"""The UI's localStorage key for the mode (`${key}_v${version}` with key mlflow.workflowType, version 1)."""
VIEW_KEY = "gantune"
"""The experiment's shared runs view (tag `mlflow.sharedViewState.gantune`, search/tracking.py
set_runs_view): the columns a person compares trials by."""
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
# 1. The mode default (above). 2. A runs page opened without a view of its own gets the
# experiment's gantune view once per browser tab (sessionStorage), if the experiment has one: the
# UI's default columns are Source / Models / Dataset only, no metric. MLflow's own redirect from
# #/experiments/<id> to its runs tab drops unknown parameters, so this waits for the runs URL
# (polled: the hash router navigates with pushState, which fires no hashchange), and replaces
# the search parameters the UI has added by then: the UI ignores a view next to any of them.
DEFAULT_MODE_SCRIPT = r"""<script>(function(){
var W=%(workflow)r,T=%(tag)r,K=%(key)r;
try{if(!localStorage.getItem(W))localStorage.setItem(W,JSON.stringify('machine_learning'))}catch(e){}
function view(){var m=location.hash.match(/^#\/experiments\/(\d+)\/runs(\?.*)?$/);
if(!m||(m[2]||'').indexOf('viewStateShareKey=')>=0)return;
var done='gantune.view.'+m[1];try{if(sessionStorage.getItem(done))return;sessionStorage.setItem(done,'1')}catch(e){return}
fetch('ajax-api/2.0/mlflow/experiments/get?experiment_id='+m[1],{credentials:'same-origin'}).then(function(r){return r.json()})
.then(function(j){var tags=(j.experiment&&j.experiment.tags)||[];
if(!tags.some(function(t){return t.key===T}))return;
location.replace(location.href.split('#')[0]+'#/experiments/'+m[1]+'/runs?workflowType=machine_learning&viewStateShareKey='+K)}).catch(function(){})}
setInterval(view,500);view()})()</script>""" % {
    "workflow": WORKFLOW_KEY,
    "tag": VIEW_TAG,
    "key": VIEW_KEY,
}


def with_default_mode(html: str) -> str:
    """index.html with the default-mode script first in <head> (before MLflow's own scripts read it)."""
    head = html.find("<head>")
    if head < 0:
        return DEFAULT_MODE_SCRIPT + html
    at = head + len("<head>")
    return html[:at] + DEFAULT_MODE_SCRIPT + html[at:]


def __getattr__(name: str):
    """`app`, the ASGI app uvicorn serves (`gantune.search.mlflow_ui:app`): MLflow's, with its page
    route replaced. Built on first access, so the search driver can import the constants above
    without loading MLflow's server."""
    if name != "app":
        raise AttributeError(name)
    from flask import Response
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import app

    mlflow_serve = flask_app.view_functions["serve"]

    def serve():
        index = Path(flask_app.static_folder or "", "index.html")
        if not index.is_file():
            return mlflow_serve()  # MLflow's own "UI not built" message
        return Response(with_default_mode(index.read_text(encoding="utf-8")), mimetype="text/html")

    # Flask looks view functions up per request, so the mounted Flask app (fastapi_app wraps it)
    # serves the new page from now on.
    flask_app.view_functions["serve"] = serve
    globals()["app"] = app
    return app
