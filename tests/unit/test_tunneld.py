"""Forward reach: the tunnel daemon's database and protocol (the forwards themselves are proven
against the simulated JUPITER and Lucia in the integration tests)."""
import asyncio
import json

import pytest

from aifa_workbench.sites import tunneld
from aifa_workbench.sites.tunnel_client import TunnelDaemonError, ask


def daemon(tmp_path) -> tunneld.TunnelDaemon:
    return tunneld.TunnelDaemon({}, tunneld.ForwardStore(tmp_path / "t.sqlite"), 8081, {"jupiter": "jpbl-login01"})


def test_the_wanted_forwards_outlive_the_daemon(tmp_path):
    store = tunneld.ForwardStore(tmp_path / "t.sqlite")
    store.put(tunneld.Forward("alice/", "jupiter", "alice", "jpbo-001-01", 35001, 41234))
    store.put_hub_api("jupiter", "alice", 40001)
    again = tunneld.ForwardStore(tmp_path / "t.sqlite")
    assert again.forwards() == [tunneld.Forward("alice/", "jupiter", "alice", "jpbo-001-01", 35001, 41234)]
    assert again.hub_api_ports() == {("jupiter", "alice"): 40001}
    again.delete("alice/")
    assert tunneld.ForwardStore(tmp_path / "t.sqlite").forwards() == []


@pytest.mark.parametrize("bad", [
    {"id": "alice", "site": "jupiter", "user": "alice", "host": "n1", "port": 1},           # no server part
    {"id": "alice/", "site": "jupiter", "user": "alice", "host": "-oProxyCommand=x", "port": 1},
    {"id": "alice/", "site": "jupiter", "user": "alice", "host": "n1", "port": 0},
    {"id": "alice/", "site": "jupiter", "user": "alice", "host": "n1", "port": "22"},
    {"id": "../x/", "site": "jupiter", "user": "alice", "host": "n1", "port": 22},
])
def test_a_forward_request_out_of_shape_is_refused(bad):
    with pytest.raises(ValueError):
        tunneld.checked_forward(bad)


async def test_the_protocol_answers_each_line_and_says_what_it_refused(tmp_path):
    d = daemon(tmp_path)
    path = str(tmp_path / "s.sock")
    server = await asyncio.start_unix_server(d.serve_client, path)
    async with server:
        assert (await ask(path, {"op": "health"})) == {"ok": True}
        assert (await ask(path, {"op": "list"}))["forwards"] == []
        with pytest.raises(TunnelDaemonError, match="unknown op"):
            await ask(path, {"op": "shell"})
        with pytest.raises(TunnelDaemonError, match="no forward-reach site"):
            await ask(path, {"op": "open", "id": "alice/", "site": "lumi", "user": "alice", "host": "n1", "port": 9})
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"not json\n" + json.dumps({"op": "health"}).encode() + b"\n")
        await writer.drain()
        assert json.loads(await reader.readline()) == {"ok": False, "error": "not JSON"}
        assert json.loads(await reader.readline()) == {"ok": True}
        writer.close()


async def test_a_daemon_that_is_not_there_is_said_so(tmp_path):
    with pytest.raises(TunnelDaemonError, match="not reached"):
        await ask(str(tmp_path / "none.sock"), {"op": "health"})
