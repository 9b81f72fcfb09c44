"""The client's token rules, for servers that issue per-episode tokens (`token` in the answer of
`POST /episodes`): episode routes carry the episode's token, operator routes the operator's, and
a finish answer without the grade is completed from the operator's `GET /episodes/{id}`.
A stub server stands in for such a server and records which token each route received."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from emrgym_client import Client

GRADE = {"success": True, "progress": 1.0, "classes": [], "nodes": [{"path": "", "task": "t", "kind": "primitive", "verdict": "passed"}], "end": "finished", "steps": 1}


class Stub(BaseHTTPRequestHandler):
    seen: list = []

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def route(self, method):
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n)) if n else None
        auth = self.headers.get("Authorization")
        self.seen.append((method, self.path, auth))
        base = f"http://127.0.0.1:{self.server.server_port}"
        episode_route = self.path.startswith("/sandboxes/") or self.path.startswith("/episodes/ep1/")
        if episode_route and auth != "Bearer ep-secret":
            return self.answer(403, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "forbidden", "diagnostics": "wrong token"}]})
        if not episode_route and auth != "Bearer op-secret":
            return self.answer(401, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login", "diagnostics": "operator only"}]})
        if (method, self.path) == ("POST", "/episodes"):
            return self.answer(201, {"id": "ep1", "instance": body["instance"], "token": "ep-secret", "fhir_base": f"{base}/sandboxes/ep1/fhir",
                                     "tool_url": f"{base}/episodes/ep1/tools/{{name}}", "finish_url": f"{base}/episodes/ep1/finish", "tools": []})
        if self.path == "/episodes/ep1/tools/fhir_read" or self.path.startswith("/sandboxes/ep1/fhir/"):
            return self.answer(200, {"resourceType": "Patient", "id": "S1"})
        if self.path == "/episodes/ep1/finish":
            return self.answer(200, {"id": "ep1", "ended": True, "end": "finished"})  # no grade for the agent
        if (method, self.path) == ("GET", "/episodes/ep1"):
            return self.answer(200, {"id": "ep1", "status": "ended", "result": {"instance": "x-001", "trial": 0, "end": "finished", "success": True, "progress": 1.0, "grade": GRADE}})
        if (method, self.path) == ("DELETE", "/episodes/ep1"):
            return self.answer(200, {"id": "ep1", "end": "finished", "success": True, "progress": 1.0, "grade": GRADE})
        self.answer(404, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found", "diagnostics": self.path}]})

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_DELETE(self):
        self.route("DELETE")

    def log_message(self, *args):
        pass


def test_episode_routes_use_the_episode_token_and_the_grade_comes_from_the_operator():
    stub = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    Stub.seen = []
    try:
        with Client(f"http://127.0.0.1:{stub.server_port}", token="op-secret") as client, client.create_episode("x-001") as ep:
            assert ep.token == "ep-secret"
            assert ep.call_tool("fhir_read", {"resource_type": "Patient", "id": "S1"}).value["id"] == "S1"
            assert ep.fhir.get("Patient/S1").resource["id"] == "S1"
            result = ep.finish(None)
            assert result.end == "finished" and result.success is True and result.grade.nodes[0].passed
    finally:
        stub.shutdown()
    assert [(m, p, a) for m, p, a in Stub.seen] == [
        ("POST", "/episodes", "Bearer op-secret"),
        ("POST", "/episodes/ep1/tools/fhir_read", "Bearer ep-secret"),
        ("GET", "/sandboxes/ep1/fhir/Patient/S1", "Bearer ep-secret"),
        ("POST", "/episodes/ep1/finish", "Bearer ep-secret"),
        ("GET", "/episodes/ep1", "Bearer op-secret"),
        ("DELETE", "/episodes/ep1", "Bearer op-secret"),
    ]
