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
ASSISTANT_KEY = "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1"
"""The UI opens its assistant panel over a third of the page once per profile, on a local server,
unless this localStorage key says it already did; the sidebar button still opens it."""
VIEW_KEY = "gantune"
"""The experiment's shared runs view (tag `mlflow.sharedViewState.gantune`, search/tracking.py
set_runs_view): the columns a person compares trials by."""
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
STATE_KEY = ('MLflowLocalStorage-1.1-ExperimentPage-["', '"]-ReactComponentState')
"""Prefix and suffix of the localStorage key that holds a person's runs table of one experiment
(columns, sort, expanded rows), around the experiment id."""
# 1. The mode default (above), and the assistant's first opening marked done (above): open, it
# narrows the runs table so far that its last columns scroll out of view. 2. A person's runs
# table of an experiment starts as the experiment's gantune view, when they have none of their own
# yet: the UI's default columns are Source / Models / Dataset only, no metric. The UI reads that
# state from localStorage when it opens the experiment, however it got there (a click, a typed or
# bookmarked URL), so the script answers that read: a missing state is fetched from the
# experiment's tag (synchronously: the UI needs the answer now) and stored, and from then on it
# is the person's own, changed and kept by the UI as usual.
DEFAULT_MODE_SCRIPT = r"""<script>(function(){
var W=%(workflow)r,A=%(assistant)r,T=%(tag)r,P=%(prefix)r,S=%(suffix)r,none={};
try{if(!localStorage.getItem(W))localStorage.setItem(W,JSON.stringify('machine_learning'));
if(!localStorage.getItem(A))localStorage.setItem(A,'true')}catch(e){}
function view(id){if(none[id])return null;try{var x=new XMLHttpRequest();
x.open('GET','ajax-api/2.0/mlflow/experiments/get?experiment_id='+id,false);x.send();
var tags=(JSON.parse(x.responseText).experiment||{}).tags||[];
for(var i=0;i<tags.length;i++)if(tags[i].key===T)return tags[i].value}catch(e){}none[id]=1;return null}
var get=Storage.prototype.getItem;
Storage.prototype.getItem=function(k){var v=get.call(this,k);
if(v!==null||this!==window.localStorage||typeof k!=='string'||k.indexOf(P)||k.slice(-S.length)!==S)return v;
var id=k.slice(P.length,-S.length);if(!/^\d+$/.test(id))return v;
var seed=view(id);if(seed===null)return v;try{this.setItem(k,seed)}catch(e){}return seed}})()</script>""" % {
    "workflow": WORKFLOW_KEY,
    "assistant": ASSISTANT_KEY,
    "tag": VIEW_TAG,
    "prefix": STATE_KEY[0],
    "suffix": STATE_KEY[1],
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
