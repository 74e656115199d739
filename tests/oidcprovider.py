"""A real OpenID Connect provider for the tests: oidc-provider on Node (tests/sso/provider).

`start()` runs it on an ephemeral loopback port; `register(redirect_uri)` gives it the
dashboard's callback (known only once the dashboard runs) and waits until it serves.
`sign_in()` drives its login form the way a browser would and returns the callback URL
the provider sends the browser back to, for the test to call (or tamper with).
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

from conftest import RunningFleet
from nixfleet.demo.run import prepare

PROVIDER_DIR = Path(__file__).resolve().parent / "sso" / "provider"
PASSWORD = "provider-password"  # every test account's, in provider.mjs
CLIENT_ID = "nixfleet"
CLIENT_SECRET = "client-secret-for-the-sso-tests-0123456789"
ROLES = "fleet-admins=admin ops=operator staff=viewer"


@dataclass
class Provider:
    proc: subprocess.Popen[str]
    port: int
    log: Path

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def dashboard_env(self, **extra: str) -> dict[str, str]:
        """Return the dashboard settings that point it at this provider."""
        return {
            "NIXFLEET_OIDC_ISSUER": self.issuer,
            "NIXFLEET_OIDC_CLIENT_ID": CLIENT_ID,
            "NIXFLEET_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "NIXFLEET_OIDC_SCOPES": "openid profile groups",
            "NIXFLEET_OIDC_ROLES": ROLES,
            "NIXFLEET_OIDC_PROVIDER_NAME": "Test ID",
            **extra,
        }

    def register(self, redirect_uri: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(redirect_uri + "\n")
        self.proc.stdin.flush()
        assert _line(self.proc, 15) == "ready", f"the provider did not start: see {self.log}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def start(log: Path) -> Provider:
    """Return the provider, listening; fail (in CI) or skip when Node or it is missing."""
    node = shutil.which("node")
    if node is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        reason = "oidc-provider is not installed (scripts/bootstrap --test installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    proc = subprocess.Popen(
        [node, "provider.mjs"],
        cwd=PROVIDER_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
        text=True,
        env={**os.environ, "CLIENT_SECRET": CLIENT_SECRET},
    )
    first = _line(proc, 15)
    if not first.startswith("port "):
        proc.kill()
        raise RuntimeError(f"the provider did not start: see {log}")
    return Provider(proc, int(first.split()[1]), log)


def sign_in(client: httpx.Client, dashboard: str, login: str, password: str = PASSWORD) -> str:
    """Return the callback URL the provider sends the browser to after login signs in."""
    res = client.get(f"{dashboard}/login/oidc")
    assert res.status_code == 303, res.text
    url = res.headers["location"]
    for _ in range(10):  # provider: /auth → /interaction/… → form → /auth/… → callback
        if url.startswith(dashboard):
            return url
        res = client.get(url)
        if res.status_code == 200 and "<form" in res.text:
            action = res.text.split('action="')[1].split('"')[0]
            res = client.post(urljoin(url, action), data={"login": login, "password": password})
        assert res.status_code in (302, 303), f"{res.status_code}: {res.text[:300]}"
        url = urljoin(url, res.headers["location"])
    raise AssertionError("the provider never sent the browser back")


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """The provider for a test module (import this fixture into the module)."""
    started = start(tmp_path_factory.mktemp("provider") / "provider.log")
    yield started
    started.stop()


@pytest.fixture(scope="module")
def sso_fleet(
    provider: Provider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningFleet]:
    """A dashboard signing in with the provider (one host, no agent), for a test module."""
    root = tmp_path_factory.mktemp("sso")
    # Every test signs in a few times from one address: more than a person's login rate.
    env = provider.dashboard_env(NIXFLEET_RATE_LIMIT_LOGIN="600/minute")
    # On a worker thread: preparing calls asyncio.run(), refused inside Playwright's loop.
    with ThreadPoolExecutor(1) as pool:
        fleet = pool.submit(prepare, root, 1, extra_env=env).result()
    rf = RunningFleet(fleet, uuid.uuid4().hex, 1)
    rf.start_dashboard(log_level="info")
    provider.register(f"{rf.base}/login/oidc/callback")
    yield rf
    rf.stop()
    log = (rf.fleet.root / "dashboard.log").read_text(errors="replace")
    assert "Traceback" not in log and "unhandled error" not in log
