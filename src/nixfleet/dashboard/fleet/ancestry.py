"""Whether a host's deployed commit is an ancestor of the fleet's target: behind or diverged.

The dashboard keeps a bare mirror of the config repo's branch (DATA_DIR/config-mirror.git),
fetched when the target moves, and asks `git merge-base --is-ancestor`. Answers are cached
per (commit, target); a commit the repository does not have is not an ancestor (diverged).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("nixfleet.fleet.ancestry")

_MAX_KNOWN = 10_000
_MAX_PER_ROUND = 64  # distinct commits asked about in one round; the rest wait for the next


class Ancestry:
    def __init__(self, repo: str, branch: str, mirror: Path) -> None:
        self.repo = repo
        self.branch = branch
        self.mirror = mirror
        self._known: dict[tuple[str, str], bool] = {}
        self._fetched: str | None = None
        self._lock = asyncio.Lock()

    def get(self, commit: str, target: str) -> bool | None:
        """Return True (ancestor), False (not), or None when not known yet."""
        return self._known.get((commit, target))

    async def prepare(self, commits: Iterable[str], target: str | None) -> None:
        """Learn the answers for commits against target that are not known yet."""
        if not target or not self.repo:
            return
        missing = sorted({c for c in commits if c and c != target} - self._answered(target))
        if not missing:
            return
        async with self._lock:
            if self._fetched != target and not await self._fetch(target):
                return
            if len(self._known) > _MAX_KNOWN:
                self._known.clear()
            for commit in missing[:_MAX_PER_ROUND]:
                self._known[(commit, target)] = await self._is_ancestor(commit, target)

    def _answered(self, target: str) -> set[str]:
        return {c for (c, t) in self._known if t == target}

    async def _git(self, *args: str) -> int:
        proc = await asyncio.create_subprocess_exec(
            "git",
            f"--git-dir={self.mirror}",
            *args,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            return await asyncio.wait_for(proc.wait(), 120)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return -1

    async def _fetch(self, target: str) -> bool:
        if not (self.mirror / "HEAD").exists():
            self.mirror.mkdir(parents=True, exist_ok=True)
            await self._git("init", "--quiet", "--bare")
        ref = f"+refs/heads/{self.branch}:refs/heads/{self.branch}"
        code = await self._git("fetch", "--quiet", "--no-tags", "--", self.repo, ref)
        if code != 0:
            log.warning("fleet: cannot fetch the config repo into %s (exit %s)", self.mirror, code)
            return False
        self._fetched = target
        return True

    async def _is_ancestor(self, commit: str, target: str) -> bool:
        return await self._git("merge-base", "--is-ancestor", commit, target) == 0
