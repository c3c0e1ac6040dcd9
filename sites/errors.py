"""Why a site could not do what was asked, typed, each with the sentence a user reads.

Callers decide by type: a site that does not answer keeps every server (its jobs may well run);
a refused credential sends the user to their keys page; Slurm refusing a request shows Slurm's
reason. Never "you have no project" because accounting did not answer.
"""

from __future__ import annotations


class SiteError(RuntimeError):
    """`sentence` is for the user (names the site and what to do); `detail` is for the log."""

    def __init__(self, site_title: str, detail: str = "", advice: str = "", action: str = "the request"):
        self.site_title, self.detail, self.advice, self.action = site_title, detail, advice, action
        super().__init__(self.sentence)

    @property
    def sentence(self) -> str:
        return self.what() + (f" {self.advice}" if self.advice else "")

    def what(self) -> str:
        return f"{self.site_title} could not do what was asked."


class SiteUnreachable(SiteError):
    """The site's login node cannot be reached (network, sshd down, timeout)."""

    def what(self) -> str:
        return (
            f"{self.site_title} cannot be reached right now: its login node does not answer. "
            "Servers already running there keep running; try again in a few minutes."
        )


class CredentialRefused(SiteError):
    """The login node refused the key, or its host key is not the one the catalogue pins."""

    def what(self) -> str:
        return f"{self.site_title} refused the workbench's login for your account."


class HostKeyMismatch(CredentialRefused):
    def what(self) -> str:
        return (
            f"{self.site_title}'s login node presented a host key that is not the one the workbench "
            "knows, so the workbench did not log in (it may be an impostor, or the site changed its "
            "key). Tell your workbench administrator; nothing was sent."
        )


class SlurmRefused(SiteError):
    """Slurm answered and said no (bad account, over a limit, invalid option)."""

    def what(self) -> str:
        return f"Slurm on {self.site_title} refused {self.action}: {self.detail}."


class SlurmNotAnswering(SiteError):
    """The login node answers but Slurm does not (controller down, timeout)."""

    def what(self) -> str:
        return (
            f"The Slurm scheduler of {self.site_title} is not answering, so nothing was changed there. "
            "Try again in a few minutes; if it keeps happening, tell your workbench administrator."
        )
