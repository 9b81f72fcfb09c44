"""A small typed client for the episode API of `emrgym serve` (docs/external-agents.md).

    from emrgym_client import Client

    client = Client("http://127.0.0.1:8080")            # token="..." when the server has --token
    with client.create_episode("mab-k-001") as ep:      # DELETEs the episode on exit
        bundle = ep.call_tool("fhir_search", {"resource_type": "Patient"}).value
        patient = ep.fhir.get("Patient/S2823623").resource
        result = ep.finish(None)                        # an EpisodeResult, with the grade
    print(result.success, result.progress, result.grade.classes)

Two roles (as the server has them): the *operator* token (`Client(token=...)`, or nothing for a
loopback server without `--token`) creates, lists and ends episodes and reads full grades; an
*episode* token (the `token` field of `POST /episodes`, when the server issues one) is all the
agent side holds: its episode's tools, FHIR base, guidance and finish. The client uses the
episode token for episode routes when the server gave one, the operator token otherwise.

Every HTTP error raises `EmrgymError`, which carries the OperationOutcome: status, issue code,
diagnostics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence
from urllib.parse import urlencode

import requests

from ._server import LocalServer

__all__ = [
    "Client",
    "Episode",
    "EpisodeResult",
    "EmrgymError",
    "FhirClient",
    "FhirResponse",
    "Grade",
    "Guidance",
    "Instance",
    "LocalServer",
    "NodeVerdict",
    "ToolResult",
]
__version__ = "0.1.0"

JSON = Any


class EmrgymError(Exception):
    """An HTTP error from EMRGym, with the OperationOutcome it answered (when it did)."""

    def __init__(self, method: str, url: str, status: int, body: str):
        self.method, self.url, self.status, self.body = method, url, status, body
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        self.outcome: dict | None = (
            parsed if isinstance(parsed, dict) and parsed.get("resourceType") == "OperationOutcome" else None
        )
        issues = (self.outcome or {}).get("issue") or []
        self.issues: list[dict] = [i for i in issues if isinstance(i, dict)]
        self.code: str | None = self.issues[0].get("code") if self.issues else None
        self.diagnostics: str = "; ".join(str(i.get("diagnostics", "")) for i in self.issues if i.get("diagnostics")) or body.strip()[:500]
        super().__init__(f"{method} {url}: {status} {self.code or 'error'}: {self.diagnostics}")


@dataclass(frozen=True)
class Instance:
    """One scenario instance of `GET /scenarios`."""

    id: str
    family: str
    cohort: str
    now: str
    tools: list[str]
    max_steps: int
    raw: dict = field(repr=False, compare=False)
    goal: bool = False
    """Whether the instance's family has a goal, so that it runs in goal mode."""

    @classmethod
    def from_json(cls, d: dict) -> "Instance":
        return cls(d["id"], d["family"], d.get("cohort", ""), d.get("now", ""), list(d.get("tools", [])), int(d.get("max_steps", 0)), d, bool(d.get("goal", False)))


@dataclass(frozen=True)
class NodeVerdict:
    """The verdict on one node (subtask) of the instance's task network."""

    path: str
    task: str
    kind: str
    verdict: str
    failure_class: str | None
    reasons: list[str]
    raw: dict = field(repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    @classmethod
    def from_json(cls, d: dict) -> "NodeVerdict":
        return cls(d.get("path", ""), d.get("task", ""), d.get("kind", ""), d.get("verdict", ""), d.get("class"), list(d.get("reasons", [])), d)


@dataclass(frozen=True)
class Grade:
    """EMRGym's grade of an ended episode (docs/grading.md)."""

    success: bool
    progress: float
    primary: str | None
    classes: list[str]
    nodes: list[NodeVerdict]
    end: str
    steps: int
    raw: dict = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict) -> "Grade":
        nodes = [NodeVerdict.from_json(n) for n in d.get("nodes", [])]
        return cls(bool(d.get("success")), float(d.get("progress", 0.0)), d.get("primary"), list(d.get("classes", [])), nodes, d.get("end", ""), int(d.get("steps", 0)), d)


@dataclass(frozen=True)
class EpisodeResult:
    """How an episode ended. `success`, `progress` and `grade` are None where the caller may not
    know them (an agent-side answer of a server that keeps grades for the operator)."""

    id: str
    end: str
    instance: str | None
    trial: int | None
    success: bool | None
    progress: float | None
    grade: Grade | None
    run_dir: str | None
    raw: dict = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict, id: str | None = None) -> "EpisodeResult":
        grade = Grade.from_json(d["grade"]) if isinstance(d.get("grade"), dict) else None
        return cls(
            d.get("id") or id or "",
            d.get("end", ""),
            d.get("instance"),
            d.get("trial"),
            d.get("success", grade.success if grade else None),
            d.get("progress", grade.progress if grade else None),
            grade,
            d.get("run_dir"),
            d,
        )


@dataclass(frozen=True)
class ToolResult:
    """A tool's answer. `value` is the tool's JSON, `text` the body as the server sent it (what
    `emrgym run` shows a model); `ended` carries how the episode ended when the call was a
    successful `finish`."""

    name: str
    status: int
    value: JSON
    text: str = field(repr=False)
    ended: EpisodeResult | None = None


@dataclass(frozen=True)
class Guidance:
    """Guided mode: the steps the planner releases now."""

    next: list[str]
    waiting_for_data: bool
    complete: bool
    ended: bool


@dataclass(frozen=True)
class FhirResponse:
    status: int
    resource: JSON
    location: str | None


class _Http:
    def __init__(self, base_url: str, token: str | None, timeout: float, session: requests.Session | None):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = session or requests.Session()

    def auth(self, token: str | None) -> dict:
        return {"Authorization": f"Bearer {token}"} if token else {}

    def request(self, method: str, url: str, token: str | None, body: Any = None, *, has_body: bool = False) -> requests.Response:
        if not url.startswith(("http://", "https://")):
            url = self.base_url + "/" + url.lstrip("/")
        headers = self.auth(token)
        data = None
        if has_body:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body)
        r = self.session.request(method, url, data=data, headers=headers, timeout=self.timeout)
        if r.status_code >= 400:
            raise EmrgymError(method, url, r.status_code, r.text)
        return r


class FhirClient:
    """FHIR R4 REST on one episode's FHIR base. Every request is a step of the episode."""

    def __init__(self, episode: "Episode"):
        self._ep = episode

    @property
    def base(self) -> str:
        return self._ep.fhir_base

    def url(self, path: str, params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None) -> str:
        url = path if path.startswith(("http://", "https://")) else f"{self.base}/{path.lstrip('/')}"
        if params:
            items = params.items() if isinstance(params, Mapping) else params
            pairs = [(k, x) for k, v in items for x in (v if isinstance(v, (list, tuple)) else [v])]
            url += ("&" if "?" in url else "?") + urlencode(pairs)
        return url

    def request(self, method: str, path: str, resource: Any = None, params: Any = None) -> FhirResponse:
        r = self._ep._http.request(method, self.url(path, params), self._ep._agent_token, resource, has_body=resource is not None)
        body = r.json() if r.content else None
        return FhirResponse(r.status_code, body, r.headers.get("Location"))

    def get(self, path: str, params: Mapping[str, Any] | Sequence[tuple[str, Any]] | None = None) -> FhirResponse:
        """Read or search: `get("Patient/S1")`, `get("Observation", {"patient": "S1", "code": "K"})`."""
        return self.request("GET", path, params=params)

    def post(self, path: str, resource: Any) -> FhirResponse:
        return self.request("POST", path, resource)

    def put(self, path: str, resource: Any) -> FhirResponse:
        return self.request("PUT", path, resource)

    def delete(self, path: str) -> FhirResponse:
        return self.request("DELETE", path)


class Episode:
    """One episode: a copy-on-write sandbox of one instance, its tools and its FHIR base."""

    def __init__(self, client: "Client", data: dict):
        self._client = client
        self._http = client._http
        self.raw = data
        self.id: str = data["id"]
        self.instance: str = data["instance"]
        self.family: str = data.get("family", "")
        self.trial: int = data.get("trial", 0)
        self.mode: str = data.get("mode", "flat")
        self.instruction: str = data.get("instruction", "")
        self.context: str = data.get("context", "")
        self.prompt: str = data.get("prompt", "")
        self.now: str = data.get("now", "")
        self.fhir_base: str = data["fhir_base"]
        self.tool_url: str = data["tool_url"]
        self.finish_url: str = data["finish_url"]
        self.guidance_url: str | None = data.get("guidance_url")
        self.max_steps: int = data.get("max_steps", 0)
        self.tools: list[dict] = data.get("tools", [])  # OpenAI function-calling specs
        self.token: str | None = data.get("token")  # the episode's capability, when the server issues one
        self.fhir = FhirClient(self)
        self.result: EpisodeResult | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"Episode(id={self.id!r}, instance={self.instance!r}, trial={self.trial}, mode={self.mode!r})"

    @property
    def _agent_token(self) -> str | None:
        return self.token or self._client.token

    @property
    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools]

    def call_tool(self, name: str, args: Mapping[str, Any] | None = None) -> ToolResult:
        """Run a tool of the instance's catalogue in the episode's sandbox (a step). A failed call
        (bad arguments, unknown tool, out of steps) raises EmrgymError; it is still a step."""
        r = self._http.request("POST", self.tool_url.replace("{name}", name), self._agent_token, dict(args or {}), has_body=True)
        value = r.json()
        ended = None
        if isinstance(value, dict) and isinstance(value.get("episode"), dict):
            ended = self._ended(value["episode"])
        return ToolResult(name, r.status_code, value, r.text, ended)

    def guidance(self) -> Guidance:
        """Guided mode: the steps released now (EmrgymError 409 in flat mode)."""
        url = self.guidance_url or f"{self._http.base_url}/episodes/{self.id}/guidance"
        d = self._http.request("GET", url, self._agent_token).json()
        return Guidance(list(d.get("next", [])), bool(d.get("waiting_for_data")), bool(d.get("complete")), bool(d.get("ended")))

    def status(self) -> str:
        """`active` or `ended`."""
        return self._http.request("GET", f"episodes/{self.id}", self._agent_token).json()["status"]

    def finish(self, answer: Any, outcome: str | None = None, reason: str | None = None) -> EpisodeResult:
        """Call `finish`: the episode is graded and recorded. Returns the result, with the grade
        read as the operator when the finish answer does not carry it."""
        body: dict = {"answer": answer}
        if outcome is not None:
            body["outcome"] = outcome
        if reason is not None:
            body["reason"] = reason
        d = self._http.request("POST", self.finish_url, self._agent_token, body, has_body=True).json()
        return self._ended(d)

    def _ended(self, d: dict) -> EpisodeResult:
        result = EpisodeResult.from_json(d, self.id)
        if result.grade is None:
            try:
                result = self._client.result(self.id) or result
            except EmrgymError as e:
                if e.status not in (401, 403):
                    raise
        self.result = result
        return result

    def close(self) -> EpisodeResult | None:
        """End the episode (`DELETE`, operator route): graded `stopped` if it never finished,
        recorded, sandbox freed. Returns the result; idempotent."""
        if self._closed:
            return self.result
        d = self._http.request("DELETE", f"episodes/{self.id}", self._client.token).json()
        self._closed = True
        ended = EpisodeResult.from_json(d, self.id)  # the operator's whole result, with run_dir
        if ended.grade is not None or self.result is None:
            self.result = ended
        return self.result

    def __enter__(self) -> "Episode":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Client:
    """The episode API of one `emrgym serve`. `token` is the operator's (`serve --token`)."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0, session: requests.Session | None = None):
        self._http = _Http(base_url, token, timeout, session)

    @property
    def base_url(self) -> str:
        return self._http.base_url

    @property
    def token(self) -> str | None:
        return self._http.token

    def scenarios(self) -> list[Instance]:
        d = self._http.request("GET", "scenarios", self.token).json()
        return [Instance.from_json(i) for i in d["instances"]]

    def create_episode(self, instance: str, mode: str = "flat", seed: int | None = None) -> Episode:
        body: dict = {"instance": instance, "mode": mode}
        if seed is not None:
            body["seed"] = seed
        return Episode(self, self._http.request("POST", "episodes", self.token, body, has_body=True).json())

    def episodes(self) -> list[dict]:
        """All episodes of the server (operator): id, instance, trial, mode, steps, status."""
        return self._http.request("GET", "episodes", self.token).json()["episodes"]

    def episode(self, id: str) -> dict:
        """The episode object as the operator sees it (with `result` once ended)."""
        return self._http.request("GET", f"episodes/{id}", self.token).json()

    def result(self, id: str) -> EpisodeResult | None:
        """The full result of an ended episode (operator), None while it is active."""
        d = self.episode(id)
        return EpisodeResult.from_json({"id": id, **d["result"]}, id) if d.get("result") else None

    def close(self) -> None:
        self._http.session.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
