"""Carol's own server serves a page that tries to act on the hub for whoever opens it. Alice, an
admin, opens carol's link in chromium: the page runs on carol's origin (carol.localhost), so it
cannot read the hub's pages for their XSRF token, nor create a token of alice's, by any route
a page has. The same script run on the hub's own origin does create one: what one shared origin
allowed before."""

import json
from urllib.parse import quote, urlsplit

import pytest
import requests

from .hubs import wait_ready
from .test_browser_login import browser, logged_in_page  # noqa: F401  (fixture)
from .untrusted_helpers import own_jupyter_config

pytestmark = [pytest.mark.browser, pytest.mark.slurm]

# Every way a page has to act on another origin with the visitor's cookies.
ATTACK = r"""async ([hub, victim]) => {
  const out = {};
  const body = JSON.stringify({note: "takeover", scopes: ["admin:users", "admin:servers", "tokens"]});
  const tokens = hub + "hub/api/users/" + victim + "/tokens";
  let xsrf = "";
  try {
    const page = await (await fetch(hub + "hub/home", {credentials: "include"})).text();
    xsrf = (page.match(/name="_xsrf" value="([^"]+)"/) || page.match(/xsrf_token: "([^"]+)"/) || [, ""])[1];
    out.read_home = xsrf ? "read the XSRF token" : "read, no token";
  } catch (e) { out.read_home = "blocked"; }
  try {
    const r = await fetch(tokens, {method: "POST", credentials: "include",
      headers: {"X-XSRFToken": xsrf, "Content-Type": "application/json"}, body});
    out.post_json = "status " + r.status;
  } catch (e) { out.post_json = "blocked"; }
  document.cookie = "_xsrf=" + (xsrf || "tossed") + "; domain=localhost; path=/";   // cookie tossing
  try {
    await fetch(tokens + "?_xsrf=" + encodeURIComponent(xsrf || "tossed"), {method: "POST", mode: "no-cors",
      credentials: "include", headers: {"Content-Type": "text/plain"}, body});
    out.post_no_cors = "sent";
  } catch (e) { out.post_no_cors = "blocked"; }
  const frame = document.createElement("iframe");
  frame.name = "sink"; document.body.appendChild(frame);
  const form = document.createElement("form");
  form.method = "POST"; form.target = "sink"; form.enctype = "text/plain";
  form.action = tokens + "?_xsrf=" + encodeURIComponent(xsrf || "tossed");
  const field = document.createElement("input");
  field.name = body.slice(0, -1) + ', "x": "'; field.value = '"}';
  form.appendChild(field); document.body.appendChild(form); form.submit();
  await new Promise(r => setTimeout(r, 1500));
  try { out.read_frame = frame.contentDocument ? frame.contentDocument.body.innerText.slice(0, 80) : "blocked"; }
  catch (e) { out.read_frame = "blocked"; }
  return out;
}"""

CONFIG = 'c.ServerApp.extra_static_paths = ["/home/carol/attack"]\n'  # carol serves any file she likes


def takeover_tokens(hub, username):
    listed = hub.api("GET", f"users/{username}/tokens").json()["api_tokens"]
    return [t for t in listed if t.get("note") == "takeover"]


def test_a_page_on_a_users_server_cannot_act_on_the_hub_for_its_visitor(start_hub, browser):  # noqa: F811
    hub = start_hub("origins")
    token = hub.user_token("carol")
    with own_jupyter_config("carol", CONFIG, {"attack/attack.html": "<!doctype html><title>carol's notes</title>"}):
        hub.api("POST", "users/carol/server", token=token, json={"partition": "cpu"})
        wait_ready(hub, "carol")
        # a login on carol's host would put alice's hub cookie where carol's pages can use it
        carol_host = hub.user_origin("carol") + urlsplit(hub.url).path
        page = browser.new_context().new_page()
        page.goto(carol_host + "hub/login?next=" + quote(urlsplit(hub.server_url("carol")).path + "static/attack.html"))
        assert page.url.startswith(hub.url + "hub/login"), page.url  # sent to the hub's own host
        assert (
            requests.post(
                carol_host + "hub/login", data={"username": "alice", "password": "x"}, allow_redirects=False, timeout=30
            ).status_code
            == 403
        )

        page = logged_in_page(browser, hub, "alice")
        page.wait_for_url("**/hub/**", timeout=30_000)

        attack_url = hub.server_url("carol") + "static/attack.html"
        assert attack_url.startswith("http://carol.localhost:")
        page.goto(attack_url)
        assert page.title() == "carol's notes"  # served by carol's own server, to alice
        outcome = page.evaluate(ATTACK, [hub.url, "alice"])
        print("on carol's origin:", json.dumps(outcome))
        assert outcome["read_home"] == "blocked" and outcome["post_json"] == "blocked"
        assert outcome["read_frame"] == "blocked"
        assert takeover_tokens(hub, "alice") == []

        page.goto(hub.url + "hub/home")  # the same script on the hub's origin
        outcome = page.evaluate(ATTACK, [hub.url, "alice"])
        print("on the hub's origin:", json.dumps(outcome))
        assert outcome["read_home"] == "read the XSRF token" and outcome["post_json"] == "status 201"
        assert takeover_tokens(hub, "alice")
