"""Who listens on a port of this host, as /proc/net says (sites.socket_owner): the hub's proof,
before it sends a server's token, that the address is the gateway's, the tunnel daemon's or the
job user's, and no squatter's."""

import ipaddress
import os
import socket


from aifa_workbench.sites import socket_owner


MAPPED = str(ipaddress.ip_address("::ffff:127.0.0.1"))  # as the parser writes it
TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:A410 00000000:0000 0A 00000000:00000000 00:00000000 00000000   998        0 1 1 0 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 2 1 0 100 0 0 10 0
   2: 0100007F:A410 0100007F:D431 01 00000000:00000000 00:00000000 00000000   998        0 3 1 0 20 4 30 10 -1
   3: garbage line
"""
TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:A410 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1002        0 4 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1003        0 5 1 0 100 0 0 10 0
"""


def test_listening_sockets_are_read_with_their_owner_and_other_states_skipped():
    assert socket_owner.parse_listeners(TCP, socket.AF_INET) == [
        socket_owner.Listener("127.0.0.1", 42000, 998),
        socket_owner.Listener("0.0.0.0", 8080, 1001),
    ]
    assert socket_owner.parse_listeners(TCP6, socket.AF_INET6) == [
        socket_owner.Listener("::1", 42000, 1002),
        socket_owner.Listener(MAPPED, 8081, 1003),
    ]


def test_a_connection_to_an_address_may_land_on_it_its_mapped_form_or_a_wildcard():
    found = [
        socket_owner.Listener("127.0.0.1", 1, 10),
        socket_owner.Listener("::1", 1, 11),
        socket_owner.Listener("0.0.0.0", 1, 12),
        socket_owner.Listener("::", 1, 13),
        socket_owner.Listener(MAPPED, 1, 14),
        socket_owner.Listener("10.0.0.1", 1, 15),
    ]
    assert {x.uid for x in socket_owner.reaching("127.0.0.1", found)} == {10, 12, 13, 14}
    assert {x.uid for x in socket_owner.reaching("::1", found)} == {11, 12, 13}


def test_this_processs_own_listener_is_seen_as_its_uid_and_a_closed_one_as_nobodys():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    assert socket_owner.owners("127.0.0.1", port) == {os.geteuid()}
    assert socket_owner.owners("127.0.0.2", port) == set()  # another address, no wildcard
    server.close()
    assert socket_owner.owners("127.0.0.1", port) == set()


def test_only_this_hosts_addresses_are_checked_here():
    assert socket_owner.is_local_address("127.0.0.1") and socket_owner.is_local_address("::1")
    assert not socket_owner.is_local_address("192.0.2.7")  # TEST-NET: nobody's
    assert not socket_owner.is_local_address("lumi-node-1")
