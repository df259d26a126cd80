"""A Flask app that sends work to Celeriac and reports on it by id.

CELERIAC_ADDRESS=tcp://127.0.0.1:8786 gunicorn --preload --workers 3 flask_app:app

curl -X POST localhost:8000/users/42/welcome    # {"task_id": "..."}
curl localhost:8000/status/<task_id>            # {"status": "SUCCESS", "result": ...}
"""

from __future__ import annotations

from flask import Flask, jsonify
from tasks import app as celeriac_app
from tasks import make_report, send_welcome

from celeriac import AsyncResult, SchedulerUnavailable

app = Flask(__name__)


@app.post("/users/<int:user_id>/welcome")
def welcome(user_id: int):
    result = send_welcome.delay(user_id)  # returns once the scheduler has accepted it
    return jsonify(task_id=result.id), 202


@app.post("/reports/<int:n>")
def report(n: int):
    return jsonify(task_id=make_report.delay(n).id), 202


@app.get("/status/<task_id>")
def status(task_id: str):
    result = AsyncResult(task_id, app=celeriac_app)
    state = result.status
    if state == "UNKNOWN":  # never sent, or kept past its result_ttl
        return jsonify(task_id=task_id, status=state), 404
    body = {"task_id": task_id, "status": state}
    if state == "SUCCESS":
        body["result"] = result.get(timeout=5)
    elif state == "FAILURE":
        body["error"] = repr(result.result)
    return jsonify(body)


@app.errorhandler(SchedulerUnavailable)
def scheduler_down(exc: SchedulerUnavailable):
    return jsonify(error=str(exc)), 503
