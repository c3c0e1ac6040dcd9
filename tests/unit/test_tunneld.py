"""Forward reach: the tunnel daemon's database and protocol (the forwards themselves are proven
against the simulated JUPITER and Lucia in the integration tests)."""

import asyncio
import json
import os

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


@pytest.mark.parametrize(
    "bad",
    [
        {"id": "alice", "site": "jupiter", "user": "alice", "host": "n1", "port": 1},  # no server part
        {"id": "alice/", "site": "jupiter", "user": "alice", "host": "-oProxyCommand=x", "port": 1},
        {"id": "alice/", "site": "jupiter", "user": "alice", "host": "n1", "port": 0},
        {"id": "alice/", "site": "jupiter", "user": "alice", "host": "n1", "port": "22"},
        {"id": "../x/", "site": "jupiter", "user": "alice", "host": "n1", "port": 22},
    ],
)
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


class FakeConnection:
    def __init__(self):
        self.closed = False

    def is_closed(self):
        return self.closed

    async def forward_local_port(self, listen_host, listen_port, host, port):
        return FakeListener(self, listen_port)

    async def forward_remote_port_to_path(self, listen_host, listen_port, path):
        return FakeListener(self, listen_port or 40123)


class FakeListener:
    def __init__(self, conn, port):
        self._conn, self.port = conn, port

    def get_port(self):
        return self.port

    def close(self):
        pass


class FakeRunner:
    """bob's login hangs (a site that does not answer him); alice's connection is there."""

    def __init__(self):
        self.hang = asyncio.Event()

    def connection_for(self, user):
        runner = self

        class Holder:
            async def connection(self):
                if user == "bob":
                    await runner.hang.wait()
                return FakeConnection()

        return Holder()


async def test_a_login_that_hangs_for_one_user_holds_up_no_other_user(tmp_path):
    d = tunneld.TunnelDaemon(
        {"jupiter": FakeRunner()}, tunneld.ForwardStore(tmp_path / "t.sqlite"), 8081, {"jupiter": "jpbl-login01"}
    )
    bob = asyncio.create_task(d.open(tunneld.Forward("bob/.1", "jupiter", "bob", "n1", 35000)))
    await asyncio.sleep(0.05)
    alice_port = await asyncio.wait_for(d.open(tunneld.Forward("alice/.2", "jupiter", "alice", "n1", 35001)), 2)
    assert tunneld.LOCAL_PORTS[0] <= alice_port <= tunneld.LOCAL_PORTS[1]
    assert await asyncio.wait_for(d.close("alice/.2"), 2)
    assert not bob.done()
    bob.cancel()


def test_a_forward_id_belongs_to_the_user_it_names():
    with pytest.raises(ValueError):
        tunneld.checked_forward({"id": "bob/.7", "site": "jupiter", "user": "alice", "host": "n1", "port": 9})


def test_forwards_no_server_owns_and_grants_past_their_certificate_are_found(tmp_path):
    import os

    from aifa_workbench.spawners.tunnel_reconcile import expired_grants, stale_forward_ids

    listing = [
        {"id": "alice/.12", "site": "lumi"},
        {"id": "bob/.13", "site": "lumi"},
        {"id": "carol/.14", "site": "lumi"},
        {"id": 7},
        "junk",
    ]
    assert stale_forward_ids(listing, {("lumi", "alice/.12")}, busy_users={"carol"}) == ["bob/.13"]
    # each grant's file time is when its certificate expires (gateway.mark_expiry): in the future
    # when it was marked, so a time to come stands for one that has passed by now
    import time

    now = time.time()
    for port, expires in ((42001, now + 3600), (42002, now + 5000)):
        (tmp_path / str(port)).write_text("aifa-...\n")
        os.utime(tmp_path / str(port), (expires, expires))
    (tmp_path / "42003").write_text("aifa-... made before grants were marked\n")
    (tmp_path / "README").write_text("not a grant")
    os.utime(tmp_path / "README", (0, 0))
    assert [p.name for p in expired_grants(str(tmp_path), 600, now=now + 4300)] == ["42001"]
    assert [p.name for p in expired_grants(str(tmp_path), 600, now=now + 8 * 24 * 3600 + 700)] == [
        "42001",
        "42002",
        "42003",
    ]


def test_a_forward_to_one_sites_job_is_stale_while_a_job_of_the_same_id_runs_on_another_site():
    """Job ids are per site: alice's job 12 on the local cluster does not own her forward to LUMI's job 12."""
    from types import SimpleNamespace

    from aifa_workbench.spawners.tunnel_reconcile import owned_forward_ids, stale_forward_ids

    spawner = SimpleNamespace(pending=None, job_id="12", job_site="local", forward_id="alice/.12")
    app = SimpleNamespace(users={"alice": SimpleNamespace(name="alice", spawners={"": spawner})})
    listing = [{"id": "alice/.12", "site": "lumi"}]
    owned, busy, _ = owned_forward_ids(app)
    assert stale_forward_ids(listing, owned, busy) == ["alice/.12"]
    spawner.job_site = "lumi"
    owned, busy, _ = owned_forward_ids(app)
    assert stale_forward_ids(listing, owned, busy) == []


async def test_a_hub_api_forward_is_given_back_only_when_no_forward_of_that_user_and_site_is_there(tmp_path):
    d = tunneld.TunnelDaemon(
        {"jupiter": FakeRunner()}, tunneld.ForwardStore(tmp_path / "t.sqlite"), 8081, {"jupiter": "jpbl-login01"}, "CA"
    )
    assert await d.hub_api("jupiter", "alice") == ("jpbl-login01", 40123)
    await d.open(tunneld.Forward("alice/.5", "jupiter", "alice", "n1", 35000))
    release = {"op": "release_hub_api", "site": "jupiter", "user": "alice", "asked": 1}
    assert (await d.answer(release))["released"] is False  # a forward of hers is there
    await d.close("alice/.5")
    listed = await d.answer({"op": "list"})
    assert listed["hub_api"] == [{"site": "jupiter", "user": "alice", "port": 40123, "asked": 1}]
    await d.hub_api("jupiter", "alice")  # a spawn asked for it after the listing
    assert (await d.answer(release))["released"] is False
    assert (await d.answer({**release, "asked": 2}))["released"] is True
    assert (await d.answer({"op": "list"}))["hub_api"] == [] and d.api_listeners == {}


def test_the_reconciler_gives_back_hub_api_forwards_no_job_calls_through():
    from aifa_workbench.spawners.tunnel_reconcile import unused_hub_api

    entries = [
        {"site": "jupiter", "user": "alice", "port": 1},
        {"site": "lucia", "user": "alice", "port": 2},
        {"site": "jupiter", "user": "bob", "port": 3},
        {"site": "jupiter", "user": "carol", "port": 4},
        {"site": 7, "user": "x"},
        "junk",
    ]
    calling = {("jupiter", "alice")}
    assert unused_hub_api(entries, calling, busy_users={"carol"}) == [("jupiter", "bob"), ("lucia", "alice")]


class TakenPortConnection(FakeConnection):
    """Someone else's socket holds `taken` on this host (the bind fails there)."""

    def __init__(self, taken: int):
        super().__init__()
        self.taken = taken

    async def forward_local_port(self, listen_host, listen_port, host, port):
        if listen_port == self.taken:
            raise OSError(98, "Address already in use")
        return FakeListener(self, listen_port)


async def test_a_forward_whose_old_port_another_account_holds_moves_to_a_fresh_one(tmp_path, monkeypatch):
    store = tunneld.ForwardStore(tmp_path / "t.sqlite")
    old = tunneld.Forward("alice/.5", "jupiter", "alice", "n1", 35000, 43007)
    store.put(old)
    runner = FakeRunner()
    runner.connection_for = lambda user: type("H", (), {"connection": lambda self: _conn()})()

    async def _conn():
        return TakenPortConnection(43007)

    d = tunneld.TunnelDaemon({"jupiter": runner}, store, 8081, {"jupiter": "jpbl-login01"})
    holders = {43007: {os.geteuid() + 1}}
    monkeypatch.setattr(tunneld.socket_owner, "owners", lambda ip, port: holders.get(port, set()))
    await d.restore()
    [moved] = store.forwards()
    assert moved.id == old.id and moved.local_port != 43007
    assert tunneld.LOCAL_PORTS[0] <= moved.local_port <= tunneld.LOCAL_PORTS[1]
    assert d.listing()[0]["local_port"] == moved.local_port


async def test_a_forward_whose_old_port_nobody_else_holds_keeps_it_and_is_tried_again(tmp_path, monkeypatch):
    store = tunneld.ForwardStore(tmp_path / "t.sqlite")
    store.put(tunneld.Forward("alice/.5", "jupiter", "alice", "n1", 35000, 43007))

    async def _conn():
        return TakenPortConnection(43007)

    runner = FakeRunner()
    runner.connection_for = lambda user: type("H", (), {"connection": lambda self: _conn()})()
    d = tunneld.TunnelDaemon({"jupiter": runner}, store, 8081, {"jupiter": "jpbl-login01"})
    monkeypatch.setattr(tunneld.socket_owner, "owners", lambda ip, port: {os.geteuid()})  # our old socket
    await d.restore()
    assert store.forwards()[0].local_port == 43007 and d.listeners == {}


def test_the_hub_re_routes_only_forwards_that_are_up_on_another_port():
    from aifa_workbench.spawners.tunnel_reconcile import moved_forwards

    listing = [
        {"id": "alice/.1", "up": True, "local_port": 43010},
        {"id": "bob/.2", "up": True, "local_port": 43002},
        {"id": "carol/.3", "up": False, "local_port": 43099},
        {"id": "dave/.4", "up": True, "local_port": 43004},
        {"id": "erin/.5", "up": True, "local_port": "43005"},
        "junk",
    ]
    routed = {"alice/.1": 43001, "bob/.2": 43002, "carol/.3": 43003, "erin/.5": 43000}
    assert moved_forwards(listing, routed) == {"alice/.1": 43010}
