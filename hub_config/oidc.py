"""Federated login: oauthenticator's GenericOAuthenticator, keyed on the provider's `sub`.

The hub user is `model.identity.hub_name(sub)`; its groups are the entitlement URNs under the
configured prefix, managed by the hub (re-read at every login and refresh); a person must be in
one of the allowed groups, at login and at every refresh, or log in again (and be refused).
auth_state (the tokens) is encrypted with the hub's key.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

from jupyterhub.crypto import CryptKeeper
from oauthenticator.generic import GenericOAuthenticator
from tornado.httpclient import HTTPClientError
from traitlets import Any, Bool, Dict, List, Unicode

from aifa_workbench.hub_config.site_accounts.registry import accounts_from_claims
from aifa_workbench.model.course import join_refusal
from aifa_workbench.model.identity import groups_from_entitlements, hub_name, normal_sub, sub_accepted

REFUSED = "-refused-"  # a placeholder name: check_allowed refuses it before any user is made
COURSE_GROUPS = "aifa_course_groups"  # auth_state key: the hub groups the person's courses give
INVITED = "aifa_invited_to"  # auth model key, this login only: the course whose invite link led here
_INVITE_PATH = re.compile(r"/hub/courses/join/([A-Za-z0-9-]{1,40})$")


def invite_code(next_url) -> str:
    """The code of a course invite link the login will go on to, or ""."""
    match = _INVITE_PATH.search(urlsplit(next_url).path) if isinstance(next_url, str) else None
    return match.group(1) if match else ""


class WorkbenchOAuthenticator(GenericOAuthenticator):
    people = Dict(
        value_trait=Unicode(),
        help="Hub names the admins gave to identities: {sub (lower case): name}. Others get u-<16 hex>.",
    ).tag(config=True)
    sub_pattern = Unicode(
        r".+",
        help="A regular expression every `sub` must match, e.g. ^[0-9a-f]{1,64}@myaccessid\\.org$.",
    ).tag(config=True)
    refused_subs = List(
        Unicode(),
        help="Identifiers never let in (a provider's monitoring account: test@myaccessid.org).",
    ).tag(config=True)
    entitlement_prefix = Unicode(
        "",
        help="Entitlement URNs under this prefix (urn:…:group:<namespace>:) become the user's hub groups.",
    ).tag(config=True)
    entitlements_claim = Unicode("eduperson_entitlement", help="The claim that lists entitlements.").tag(config=True)
    entitlement_authorities = List(
        Unicode(),
        help="The authorities (after '#') whose entitlements count; none: any.",
    ).tag(config=True)
    site_systems = Dict(
        value_trait=Unicode(),
        help="Systems named in the site accounts claim, lower case, and the catalogue site each is: {jupiter: jupiter}.",
    ).tag(config=True)
    site_accounts_claim = Unicode(
        "hpc_infos_attribute",
        help="The claim listing the person's site accounts (JSC's form).",
    ).tag(config=True)
    workbench = Any(
        None,
        allow_none=True,
        help="The hub's runtime (hub_config.runtime.Workbench): its site-accounts registry and courses.",
    ).tag(config=True)
    fold_case = Bool(
        False,
        help="Compare identifiers without regard to case (MyAccessID's are case-insensitive).",
    ).tag(config=True)

    @property
    def site_accounts(self):
        """The hub's registry of site accounts (hub_config.site_accounts.registry), or None."""
        return self.workbench.site_accounts if self.workbench is not None else None

    @property
    def course_book(self):
        """The hub's course book (hub_config.courses.book.CourseBook), or None where courses are off."""
        courses = self.workbench.courses if self.workbench is not None else None
        return courses.book if courses is not None else None

    def user_info_to_username(self, user_info):
        sub = user_info.get("sub")
        if not sub_accepted(sub, self.sub_pattern, tuple(self.refused_subs), self.fold_case):
            self.log.warning("Refused a login whose identifier does not have the provider's form or is refused")
            return REFUSED
        return hub_name(sub, self.people, self.fold_case)

    def get_user_groups(self, auth_state: dict) -> set[str]:
        """The provider's groups, and the hub's course groups of the person (noted by update_auth_model)."""
        claims = (auth_state or {}).get(self.user_auth_state_key) or {}
        provider = groups_from_entitlements(
            claims.get(self.entitlements_claim), self.entitlement_prefix, tuple(self.entitlement_authorities)
        )
        # course-* names are the hub's own: an entitlement cannot make someone a course's instructor
        return {g for g in provider if not g.startswith("course-")} | set((auth_state or {}).get(COURSE_GROUPS, ()))

    async def update_auth_model(self, auth_model):
        """Site accounts the provider names (JSC's hpc_infos_attribute) go into the hub's registry,
        at every login and refresh."""
        book = self.course_book
        if book is not None and isinstance(auth_model.get("auth_state"), dict):
            auth_model["auth_state"][COURSE_GROUPS] = sorted(book.groups_of(auth_model.get("name", "")))
        admitted = self.get_user_groups(auth_model.get("auth_state") or {}) & (self.allowed_groups | self.admin_groups)
        if self.site_accounts is not None and self.site_systems and auth_model.get("name") != REFUSED and admitted:
            claims = (auth_model.get("auth_state") or {}).get(self.user_auth_state_key) or {}
            self.site_accounts.set_claimed(
                auth_model["name"], accounts_from_claims(claims.get(self.site_accounts_claim), self.site_systems)
            )
        return auth_model

    async def authenticate(self, handler, data=None, **kwargs):
        """A person who came by a course's invite link may sign in to join it (workshop participants
        are rarely in the antenna's groups): noted for check_allowed, for this login only."""
        model = await super().authenticate(handler, data, **kwargs)
        book = self.course_book
        if model and book is not None:
            code = invite_code(handler.get_next_url() if hasattr(handler, "get_next_url") else "")
            course = book.by_code(code) if code else None
            if course is not None and join_refusal(course, model.get("name", ""), time.time()) is None:
                model[INVITED] = course.id
        return model

    def admits(self, username: str, auth_model: dict) -> bool:
        """Only the provider's groups let a person in, admins included: a name in the settings
        alone is not enough once the provider no longer vouches for its holder. Participants of a
        course not ended are in too, and whoever came by a course's invite link, to join it."""
        if username == REFUSED:
            return False
        groups = set(auth_model.get("groups") or ())
        book = self.course_book
        courses = book.groups_of(username) if book is not None else set()
        return bool(groups & (self.allowed_groups | self.admin_groups) or groups & courses or auth_model.get(INVITED))

    async def check_allowed(self, username, auth_model):
        if auth_model is None:  # JupyterHub asks this of existing users at start
            return True
        return self.admits(username, auth_model)

    async def refresh_user(self, user, handler=None, **kwargs):
        """The provider's current word: a person who left every allowed group, or whose tokens
        the provider no longer honours, logs in again (and is then refused with a page saying why)."""
        try:
            model = await super().refresh_user(user, handler, **kwargs)
        except (HTTPClientError, OSError) as e:
            # the provider is down or failing (5xx, no answer): keep the session a while rather than
            # log everyone out and break their servers' token checks; refused tokens (4xx) still end it
            self.log.warning(
                "Provider unreachable while refreshing %s (%s); keeping the current login",
                user.name,
                getattr(e, "code", e),
            )
            return True
        if isinstance(model, dict):
            if model.get("name") != user.name:
                self.log.warning("Refresh of %s answered another identity; a new login is needed", user.name)
                return False
            if not self.admits(user.name, model):
                self.log.info("%s is no longer in an allowed group; a new login is needed", user.name)
                return False
        return model


def use_auth_state_key(hex_key: str) -> None:
    """auth_state (the user's tokens) is encrypted with this key in the hub's database.
    Set on the hub's own CryptKeeper: never in an environment variable a child process inherits."""
    CryptKeeper.instance().keys = [bytes.fromhex(hex_key)]


def configure(c, oidc: dict, callback: str, client_secret: str, auth_state_key: str, support: str) -> None:
    """The hub's login through the provider the settings name (production: MyAccessID)."""
    use_auth_state_key(auth_state_key)
    c.JupyterHub.authenticator_class = WorkbenchOAuthenticator
    a = c.WorkbenchOAuthenticator
    a.client_id = oidc["client_id"]
    a.client_secret = client_secret
    a.oauth_callback_url = callback
    a.authorize_url, a.token_url, a.userdata_url = oidc["authorize_url"], oidc["token_url"], oidc["userdata_url"]
    a.scope = list(oidc["scopes"])
    # providers drop offline_access without prompt=consent; "login consent" asks for the password
    # each time (the demo: people taking turns at one browser must not inherit the last session)
    a.extra_authorize_params = {"prompt": oidc["prompt"]}
    a.enable_pkce = True
    a.basic_auth = True
    a.login_service = oidc["login_service"]
    a.enable_auth_state = True
    a.manage_groups = True
    a.allowed_groups = set(oidc["allowed_groups"])
    a.admin_groups = set(oidc["admin_groups"])
    a.auth_refresh_age = oidc["refresh_seconds"]
    fold = oidc["fold_case"]
    a.fold_case = fold
    a.people = {normal_sub(sub, fold): name for sub, name in oidc["people"].items()}
    a.sub_pattern = oidc["sub_pattern"]
    a.refused_subs = [normal_sub(s, fold) for s in oidc["refused_subs"]]
    a.entitlement_prefix = oidc["entitlement_prefix"]
    a.entitlement_authorities = list(oidc["entitlement_authorities"])
    # a person the provider no longer vouches for loses API tokens too, not only the browser session
    a.auth_refresh_strict = True
    a.site_systems = dict(oidc["site_systems"])
    a.site_accounts_claim = oidc["site_accounts_claim"]
    a.custom_403_message = (
        "Your sign-in worked, but your account is not in a group that may use AIFA Workbench. "
        f"Ask {support} to add you, and tell them the email address you signed in with."
    )
    if oidc.get("end_session_url"):
        a.logout_redirect_url = oidc["end_session_url"]
