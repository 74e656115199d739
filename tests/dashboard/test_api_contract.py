"""The published contract: /api/openapi.json is true of the running dashboard.

schemathesis reads the schema the dashboard serves and sends what it declares (and what it
does not: wrong types, missing fields, unknown methods) to a real `nixfleet serve` on a
loopback port with a real database and a few hosts, as an API token with the admin role
would. Every answer must be declared: its
status, its content type, its body's shape; no answer may be a 5xx.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig

from conftest import RunningFleet, run_cli
from nixfleet.config import Settings
from nixfleet.dashboard.app import create_app
from nixfleet.demo.run import prepare

# The checks the contract promises; the others judge API design, not its description.
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "unsupported_method",  # a method a path does not take is a 405 with Allow
    "allow_header_conformance",
)
# Bounded for CI: a fixed seed, derandomised, a few examples per operation (the coverage
# phase adds its own boundary cases on top of these).
MAX_EXAMPLES = 8
SEED = 20261202


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    """Return a running dashboard with three hosts and no agents."""
    env = {
        # The limits answer 429 (declared); here they would only cut the run short.
        "NIXFLEET_RATE_LIMIT_API": "off",
        "NIXFLEET_RATE_LIMIT_LOGIN": "off",
        "NIXFLEET_RATE_LIMIT_TOKEN": "off",
        "NIXFLEET_LOGIN_FREE_FAILURES": "1000000",
    }
    fleet = prepare(tmp_path_factory.mktemp("contract"), 3, extra_env=env)
    rf = RunningFleet(fleet, uuid.uuid4().hex, 1.0)
    rf.start_dashboard()
    yield rf
    rf.stop()
    log = (fleet.root / "dashboard.log").read_text(errors="replace")
    assert "unhandled error" not in log, "the dashboard answered 500 (see its log)"


def _admin_token(rf: RunningFleet) -> dict[str, str]:
    """Return the headers of a service token with the admin role (no cookie, no CSRF)."""
    res = run_cli(["admin", "token", "create", "contract", "--service", "--role", "admin"],
                  rf.fleet.env)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return {"Authorization": f"Bearer {res.stdout.strip()}"}


def _schema_of_the_app() -> dict[str, Any]:
    # Made in this process, at import: schemathesis makes one test per operation while
    # pytest collects, before any dashboard runs. The first test checks the running
    # dashboard serves exactly this schema.
    return create_app(Settings(demo=True, data_dir=Path("/nonexistent"))).openapi()


SCHEMA = _schema_of_the_app()
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "request-timeout": 10,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True},
        "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        "phases": {"stateful": {"enabled": False}},
        "warnings": False,
    }
)
# /api/events is a Server-Sent Events stream: it answers 200 and then never ends, so no
# request to it finishes for a check to read. The agents' WebSocket is not an OpenAPI
# operation at all.
schema = schemathesis.openapi.from_dict(SCHEMA, config=CONFIG).exclude(path="/api/events")


@pytest.fixture(scope="module")
def admin(dashboard: RunningFleet) -> dict[str, str]:
    return _admin_token(dashboard)


def test_the_dashboard_serves_the_schema_the_run_checks(
    dashboard: RunningFleet, admin: dict[str, str]
) -> None:
    served = httpx.get(f"{dashboard.base}/api/openapi.json", headers=admin, timeout=10)
    assert served.status_code == 200
    assert served.json() == SCHEMA


@schema.parametrize()
def test_every_answer_of_the_running_dashboard_is_declared_in_its_schema(
    case: Any, dashboard: RunningFleet, admin: dict[str, str]
) -> None:
    # A redirect is an answer of its own (a page's 303 to /login): not followed.
    response = case.call(base_url=dashboard.base, headers=admin, allow_redirects=False)
    case.validate_response(response)


EVERYDAY = (
    ("POST", "/api/hosts", {"host_id": "contract-01", "location": "rack B"}),
    ("PUT", "/api/hosts/contract-01/labels", {"labels": {"role": "web"}}),
    ("POST", "/api/hosts/contract-01/agent-token", None),
    ("POST", "/api/hosts/contract-01/enroll-code", None),
    ("PUT", "/api/hosts/contract-01/client-cert", {"sha256": "ab" * 32}),
    ("DELETE", "/api/hosts/contract-01/client-cert", None),
    ("DELETE", "/api/hosts/contract-01/agent-token", None),
    ("GET", "/api/hosts", None),
    ("GET", "/api/hosts/contract-01/samples", None),
    ("GET", "/api/hosts/contract-01/commands", None),
    ("POST", "/api/hosts/contract-01/command", {"command": "switch"}),
    ("POST", "/api/commands/bulk", {"command": "plan", "host_ids": ["contract-01", "nope"]}),
    ("POST", "/api/rollouts", {"command": "plan", "host_ids": ["contract-01"], "dry_run": True}),
    ("POST", "/api/rollouts", {"command": "plan", "host_ids": ["contract-01"]}),
    ("GET", "/api/rollouts", None),
    ("POST", "/api/users", {"username": "cara", "password": "a long enough password",
                            "role": "viewer", "totp": True}),
    ("PATCH", "/api/users/cara", {"role": "operator"}),
    ("GET", "/api/users", None),
    ("GET", "/api/security/summary", None),
    ("GET", "/api/audit?limit=5", None),
    ("POST", "/api/agent/enroll", {"host_id": "contract-01", "code": "nfe_wrong"}),
    ("DELETE", "/api/hosts/contract-01", None),
    ("GET", "/health", None),
)  # fmt: skip


def test_the_answers_of_an_everyday_session_have_their_declared_shape(
    dashboard: RunningFleet, admin: dict[str, str]
) -> None:
    """Success bodies too: a fuzzer seldom guesses a host's name, this session uses one."""
    operations = schemathesis.openapi.from_dict(SCHEMA, config=CONFIG)
    with httpx.Client(base_url=dashboard.base, timeout=10, headers=admin) as http:
        for method, url, body in EVERYDAY:
            res = http.request(method, url, json=body)
            path = url.split("?")[0].replace("contract-01", "{host_id}")
            path = path.replace("/cara", "/{username}")
            declared = operations[path][method]
            assert str(res.status_code) in declared.definition.raw["responses"], (url, res.text)
            declared.validate_response(res)


def test_every_json_success_answer_declares_its_model() -> None:
    bare = [
        f"{method.upper()} {path} {status}"
        for path, operations in SCHEMA["paths"].items()
        for method, operation in operations.items()
        for status, answer in operation["responses"].items()
        if status.startswith("2") and path != "/api/openapi.json"
        for media, content in answer.get("content", {}).items()
        if media == "application/json" and "$ref" not in content.get("schema", {})
    ]
    assert bare == [], "declare the answer's model: responses=contract.reply(Model)"


def test_the_schema_is_refused_without_a_session(dashboard: RunningFleet) -> None:
    res = httpx.get(f"{dashboard.base}/api/openapi.json", timeout=10)
    assert res.status_code == 401
    assert res.json()["error"] == "unauthorized"
    assert "paths" not in res.text
    for docs in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert httpx.get(f"{dashboard.base}{docs}", timeout=10).status_code == 404


def test_a_method_a_path_does_not_take_is_a_405_naming_the_methods_it_does(
    dashboard: RunningFleet,
) -> None:
    for path, allowed in (("/api/hosts", {"GET", "POST"}), ("/api/commands/bulk", {"POST"})):
        # /api/commands/bulk is also the command "bulk" of GET /api/commands/{command_id};
        # Allow names the methods of the resource itself.
        res = httpx.put(f"{dashboard.base}{path}", timeout=10)
        assert res.status_code == 405
        assert {m.strip() for m in res.headers["allow"].split(",")} == allowed
        assert res.json()["error"] == "method_not_allowed"


def test_a_body_that_is_not_json_is_a_415_and_changes_nothing(
    dashboard: RunningFleet, admin: dict[str, str]
) -> None:
    with httpx.Client(base_url=dashboard.base, timeout=10, headers=admin) as http:
        res = http.post("/api/hosts", data={"host_id": "formed"})
        assert res.status_code == 415
        assert res.json() == {
            "error": "unsupported_media_type",
            "detail": "Send the request body as application/json.",
        }
        assert all(h["id"] != "formed" for h in http.get("/api/hosts").json()["hosts"])
