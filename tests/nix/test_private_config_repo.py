"""A private config repo works with the credential options: the dashboard started with its
unit's environment sees the target commit, and the agent's clone keeps fetching with it in a
clean environment (as its pulls do, in transient units). Without the credential, both fail.

The repo is served by git's "dumb" HTTP protocol behind HTTP basic authentication."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from secrets import token_urlsafe

import httpx
import pytest
from tests.conftest import Api
from tests.nix.moduleeval import environment, evaluate, load_credentials, needs_lib

from nixfleet.security.passwords import hash_password

pytestmark = needs_lib
TOKEN = "glpat-private-repo-token"
PASSWORD = "correct horse battery staple"
CLEAN_ENV = {"PATH": os.environ["PATH"], "GIT_TERMINAL_PROMPT": "0"}


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30,
        env={**CLEAN_ENV, "HOME": str(cwd or "/nonexistent"), **(env or {})},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def commit(work: Path, message: str) -> None:
    identity = ["-c", "user.name=t", "-c", "user.email=t@t"]
    git(*identity, "commit", "-q", "--allow-empty", "-m", message, cwd=work)


class _AuthHandler(SimpleHTTPRequestHandler):
    expected = "Basic " + base64.b64encode(f"git:{TOKEN}".encode()).decode()

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="config"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def private_repo(tmp_path):
    """Return (url, bare repo path, work tree) of a repo only the token can read."""
    work = tmp_path / "work"
    work.mkdir()
    git("init", "-q", "-b", "main", cwd=work)
    commit(work, "one")
    served = tmp_path / "served"
    served.mkdir()
    git("clone", "-q", "--bare", str(work), str(served / "config.git"), cwd=tmp_path)
    git("update-server-info", cwd=served / "config.git")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_AuthHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/config.git", served / "config.git", work
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dashboard_target(tmp_path: Path, url: str, credential: str) -> str | None:
    """Start `nixfleet serve` with the evaluated unit's environment; return its target."""
    tmp_path.mkdir()
    secrets = {
        "admin": hash_password(PASSWORD),
        "agent": token_urlsafe(32),
        "sessions": token_urlsafe(32),
    }
    for name, value in secrets.items():
        (tmp_path / name).write_text(value)
    (tmp_path / "repo-token").write_text(TOKEN + "\n")
    port = _free_port()
    config = f"""{{ services.nixfleet = {{ enable = true;
      adminPasswordHashFile = "{tmp_path}/admin"; agentTokenHashSecretFile = "{tmp_path}/agent";
      sessionSecretsFile = "{tmp_path}/sessions"; port = {port};
      configRepo = "{url}"; {credential}
      settings.secure_cookies = false; settings.target_cache_s = 0;
    }}; }}"""
    unit = evaluate("nixos-dashboard", config)["systemd"]["nixfleet"]
    env = environment(unit["environment"], load_credentials(unit, tmp_path / "creds"))
    # systemd's StateDirectory= and HOME under /var/lib are not ours to create here.
    env |= {"NIXFLEET_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nixfleet", "serve"], env={**CLEAN_ENV, **env}, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        api = Api(base, PASSWORD)
        try:
            return api.get("/api/hosts").json()["target"]
        finally:
            api.http.close()  # before the server stops: it waits for open connections
    finally:
        proc.terminate()
        proc.wait(10)


def test_the_dashboard_reads_a_private_repos_target_with_the_token_credential(
    tmp_path, private_repo
):
    url, bare, _ = private_repo
    head = git("rev-parse", "main", cwd=bare)
    with_token = f'configRepoCredential.tokenFile = "{tmp_path}/a/repo-token";'
    assert _dashboard_target(tmp_path / "a", url, with_token) == head


def test_without_the_credential_the_dashboard_has_no_target(tmp_path, private_repo):
    url, _, _ = private_repo
    assert _dashboard_target(tmp_path / "b", url, "") is None


def _agent_clone_script(tmp_path: Path, url: str, state: Path) -> Path:
    (tmp_path / "agent-repo-token").write_text(TOKEN + "\n")
    config = f"""{{ services.nixfleet-agent = {{ enable = true; url = "https://fleet";
      repoUrl = "{url}"; repoCredential.tokenFile = "{tmp_path}/agent-repo-token"; }}; }}"""
    unit = evaluate("nixos-agent", config)["systemd"]["nixfleet-agent"]
    [script] = unit["serviceConfig"]["ExecStartPre"]
    # The state directory is /var/lib/nixfleet-agent on a host; here it is a temporary one.
    relocated = tmp_path / "clone.sh"
    relocated.write_text(Path(script).read_text().replace("/var/lib/nixfleet-agent", str(state)))
    return relocated


def test_the_agents_clone_keeps_its_credential_for_later_pulls(tmp_path, private_repo):
    url, bare, work = private_repo
    state = tmp_path / "state"
    script = _agent_clone_script(tmp_path, url, state)
    assert TOKEN not in script.read_text()
    subprocess.run(["sh", str(script)], check=True, env=CLEAN_ENV, timeout=30)
    clone = state / "config"
    assert git("rev-parse", "HEAD", cwd=clone) == git("rev-parse", "main", cwd=bare)
    # A new commit, fetched the way a pull runs: a clean environment, only the clone's config.
    commit(work, "two")
    git("push", "-q", str(bare), "main", cwd=work)
    git("update-server-info", cwd=bare)
    git("fetch", "-q", "origin", "main", cwd=clone)
    assert git("rev-parse", "origin/main", cwd=clone) == git("rev-parse", "main", cwd=work)
    # The token itself is not in the clone's configuration, only the file that holds it.
    assert TOKEN not in (clone / ".git" / "config").read_text()
    # Run again on the existing clone: it only (re)writes the configuration.
    subprocess.run(["sh", str(script)], check=True, env=CLEAN_ENV, timeout=30)


def test_without_the_credential_the_repo_cannot_be_cloned(tmp_path, private_repo):
    url, _, _ = private_repo
    res = subprocess.run(
        ["git", "clone", "-q", url, str(tmp_path / "x")], capture_output=True, text=True,
        env={**CLEAN_ENV, "HOME": str(tmp_path)}, timeout=30,
    )  # fmt: skip
    assert res.returncode != 0
    assert not (tmp_path / "x" / ".git").exists()


# --- over SSH: no SSH server here, so `ssh` on PATH is a stand-in that checks the key it is
# given and runs git's remote command locally (as sshd would after authenticating).
FAKE_SSH = """#!{python}
import subprocess, sys
args = sys.argv[1:]
key = args[args.index("-i") + 1]
with open(key) as f:
    if f.read().strip() != {key!r}:
        sys.exit("ssh: Permission denied (publickey)")
with open({log!r}, "a") as log:
    log.write(" ".join(args) + "\\n")
sys.exit(subprocess.run(["sh", "-c", args[-1]]).returncode)
"""
DEPLOY_KEY = "-----BEGIN OPENSSH PRIVATE KEY----- deploy key -----END OPENSSH PRIVATE KEY-----"


@pytest.fixture
def ssh_path(tmp_path):
    """Return (PATH with the stand-in ssh first, its log file)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "ssh.log"
    ssh = bin_dir / "ssh"
    ssh.write_text(FAKE_SSH.format(python=sys.executable, key=DEPLOY_KEY, log=str(log)))
    ssh.chmod(0o755)
    (tmp_path / "deploy-key").write_text(DEPLOY_KEY + "\n")
    return f"{bin_dir}:{os.environ['PATH']}", log


def test_the_dashboards_ssh_key_credential_reaches_git(tmp_path, private_repo, ssh_path):
    _, bare, _ = private_repo
    path, log = ssh_path
    config = f"""{{ services.nixfleet = {{ enable = true;
      adminPasswordHashFile = "/run/a"; agentTokenHashSecretFile = "/run/b";
      sessionSecretsFile = "/run/c"; configRepo = "ssh://git@git.invalid{bare}";
      configRepoCredential.sshKeyFile = "{tmp_path}/deploy-key";
      configRepoCredential.knownHosts = "git.invalid ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE";
    }}; }}"""
    unit = evaluate("nixos-dashboard", config)["systemd"]["nixfleet"]
    unit["serviceConfig"]["LoadCredential"] = [
        c for c in unit["serviceConfig"]["LoadCredential"] if c.startswith("config-repo")
    ]
    env = environment(unit["environment"], load_credentials(unit, tmp_path / "creds"))
    git_env = {k: v for k, v in env.items() if k.startswith("GIT_")} | {"PATH": path}
    head = git("ls-remote", f"ssh://git@git.invalid{bare}", "refs/heads/main", env=git_env)
    assert head.split()[0] == git("rev-parse", "main", cwd=bare)
    used = log.read_text()
    assert f"-i {tmp_path}/creds/config-repo-ssh-key" in used
    assert "StrictHostKeyChecking=yes" in used and "UserKnownHostsFile=/nix/store/" in used
    # Without the credential's configuration, git's ssh gets no key and nothing is listed.
    res = subprocess.run(
        ["git", "ls-remote", f"ssh://git@git.invalid{bare}"], capture_output=True, text=True,
        env={**CLEAN_ENV, "PATH": path, "HOME": str(tmp_path)}, timeout=30,
    )  # fmt: skip
    assert res.returncode != 0


def test_the_agents_clone_uses_its_ssh_key_for_later_pulls(tmp_path, private_repo, ssh_path):
    _, bare, work = private_repo
    path, log = ssh_path
    url = f"ssh://git@git.invalid{bare}"
    config = f"""{{ services.nixfleet-agent = {{ enable = true; url = "https://fleet";
      repoUrl = "{url}"; repoCredential.sshKeyFile = "{tmp_path}/deploy-key"; }}; }}"""
    unit = evaluate("nixos-agent", config)["systemd"]["nixfleet-agent"]
    [script] = unit["serviceConfig"]["ExecStartPre"]
    state = tmp_path / "state"
    text = Path(script).read_text().replace("/var/lib/nixfleet-agent", str(state))
    subprocess.run(["sh", "-c", text], check=True, env={**CLEAN_ENV, "PATH": path}, timeout=30)
    commit(work, "three")
    git("push", "-q", str(bare), "main", cwd=work)
    clone = state / "config"
    git("fetch", "-q", "origin", "main", cwd=clone, env={"PATH": path})
    assert git("rev-parse", "origin/main", cwd=clone) == git("rev-parse", "main", cwd=work)
    assert log.read_text().count(f"-i {tmp_path}/deploy-key") == 2  # the clone and the fetch
