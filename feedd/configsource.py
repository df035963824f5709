"""Where feedd's configuration comes from: which config file, and an API token kept outside it
(``$FEEDD_API_TOKEN`` or the systemd credential ``api_token``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import attrs

from feedd.errors import ConfigError

CONFIG_ENV = "FEEDD_CONFIG"
TOKEN_ENV = "FEEDD_API_TOKEN"
#: the credential name in ``LoadCredential=api_token:/etc/feedd/api_token``
TOKEN_CREDENTIAL = "api_token"
#: tried in this order when neither ``--config`` nor ``$FEEDD_CONFIG`` names a file
DEFAULT_PATHS = (Path("config.json"), Path("/etc/feedd/config.json"))


@attrs.frozen
class Found:
    path: Path
    #: how it was chosen, for the log line that says which file runs
    how: str


@attrs.frozen(repr=False)
class Secret:
    value: str
    #: where it came from; None: the config file
    source: str | None

    def __repr__(self) -> str:
        # A traceback or a debug print must not show the token.
        return f"Secret(source={self.source!r})"


def find_config(given: str | None, environ: Mapping[str, str] | None = None) -> Found:
    """``--config PATH``, else ``$FEEDD_CONFIG``, else ./config.json, else
    /etc/feedd/config.json. A file named explicitly is used even if missing (load says so)."""
    environ = os.environ if environ is None else environ
    if given:
        return Found(Path(given), "--config")
    if environ.get(CONFIG_ENV):
        return Found(Path(environ[CONFIG_ENV]), f"${CONFIG_ENV}")
    for path in DEFAULT_PATHS:
        if path.exists():
            return Found(path, "default")
    tried = " and ".join(str(path) for path in DEFAULT_PATHS)
    raise ConfigError(
        "", f"no config file: tried {tried} (give --config PATH or set ${CONFIG_ENV})"
    )


def external_token(environ: Mapping[str, str] | None = None) -> Secret | None:
    """The API token from the systemd credential or ``$FEEDD_API_TOKEN``, if one is given.

    Both at once is an error: one of them would be silently ignored."""
    environ = os.environ if environ is None else environ
    found = [s for s in (_credential(environ), _variable(environ)) if s is not None]
    if len(found) > 1:
        raise ConfigError(
            "api_token", f"given both by {found[0].source} and {found[1].source}: keep one"
        )
    return found[0] if found else None


def _credential(environ: Mapping[str, str]) -> Secret | None:
    folder = environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        return None
    path = Path(folder) / TOKEN_CREDENTIAL
    source = f"the systemd credential {TOKEN_CREDENTIAL}"
    try:
        # Credentials are small files in a ramfs that systemd set up for this process.
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None  # the unit passes other credentials, not this one
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError("api_token", f"cannot read {source} ({path}): {reason}") from None
    if not value:
        raise ConfigError("api_token", f"{source} ({path}) is empty")
    return Secret(value, source)


def _variable(environ: Mapping[str, str]) -> Secret | None:
    value = environ.get(TOKEN_ENV, "").strip()
    return Secret(value, f"${TOKEN_ENV}") if value else None
