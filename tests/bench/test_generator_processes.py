"""Simulated agents spread over generator processes (bench/generators.py), as a smoke run.

A real dashboard on SQLite, six agents from three generator processes: they connect,
a command POSTed to one of them is seen arriving and finishing in the bench process,
and closing the swarm leaves no generator process behind. Nothing about speed.
"""

from __future__ import annotations

import asyncio

import pytest
from bench.generators import SpreadSwarm
from bench.target import Target, host_ids, login

pytestmark = pytest.mark.timeout(180)


async def test_agents_in_three_generator_processes_answer_a_command(tmp_path, monkeypatch):
    monkeypatch.setattr("bench.generators.PER_PROCESS", 2)
    target = await asyncio.to_thread(Target.create, tmp_path / "dash", 6)
    target.start()
    swarm = SpreadSwarm("", target.tokens)
    try:
        await target.wait_healthy()
        client = await login(target.base, target.password)
        ids = host_ids(6)
        await swarm.connect_spread([(h, target.ws_url) for h in ids], 120, lifetime_s=150)
        assert swarm.size() == 6
        assert len(swarm.processes) == 3
        res = await client.post(f"/api/hosts/{ids[4]}/command", json={"command": "test"})
        command_id = res.json()["command_id"]
        await swarm.wait_command(command_id, 60)
        assert swarm.command_hosts[command_id] == ids[4]
        for _ in range(300):  # its `finished` is reported a moment later
            if command_id in swarm.finished_sent:
                break
            await asyncio.sleep(0.1)
        assert command_id in swarm.finished_sent
        await client.aclose()
    finally:
        await swarm.close()
        target.stop()
    assert not [p for p in swarm.processes if p.is_alive()]
    assert swarm.failures == [] or all("closed by dashboard" in f for f in swarm.failures)
