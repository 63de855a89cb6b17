"""Bearer tokens for the HTTP API: the tokens file, the roles and the constant-time check.

The tokens file (`SAGA_HTTP_TOKENS_FILE`) holds one token a line, `<name> <role> <token>`:

    # name       role     token
    prometheus   read     6f1c0d2e9b...
    alice        operate  Zm9vYmFyYmF6...

Blank lines and lines whose first field starts with `#` are skipped; anything else is a
`ConfigError` naming the file and the line number, never the line's text (a field out of place
may be a token). Names are unique (the name is what the saga history records as the operator),
and so are tokens. Roles: `read` (GET and HEAD) and `operate` (everything else; it implies
`read`).

Only a SHA-256 digest of each token stays in memory. A presented token is hashed and compared
with `hmac.compare_digest` against every digest, all of them every time, so neither which token
matched nor how much of it did shows in the time an answer takes; comparing digests of equal
length also hides the tokens' lengths.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from orchestrator.errors import ConfigError

Role = Literal["read", "operate"]
ROLES: tuple[Role, ...] = get_args(Role)  # in rising order: a role implies those before it
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 1024
LOOPBACK_NAMES = ("localhost",)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_SECRET = re.compile(rf"[!-~]{{{MIN_TOKEN_CHARS},{MAX_TOKEN_CHARS}}}")  # visible ASCII
_PRESENTED = re.compile(rf"[!-~]{{1,{MAX_TOKEN_CHARS}}}")


class Unauthenticated(Exception):
    """A request without a valid bearer token; the message is safe to answer (no token)."""


@dataclass(frozen=True)
class Caller:
    """Who a valid token says is calling."""

    name: str
    role: Role

    def may(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class _Entry:
    caller: Caller
    digest: bytes = field(repr=False)


def role_for(method: str) -> Role:
    """The role a request needs unless its route declares one: `read` for GET and HEAD."""
    return "read" if method.upper() in ("GET", "HEAD") else "operate"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


class Tokens:
    """The tokens of one file; empty (falsy) when none are configured."""

    def __init__(self, entries: Iterable[_Entry] = ()) -> None:
        self._entries = tuple(entries)

    def __len__(self) -> int:
        return len(self._entries)

    def identify(self, authorization: str | None) -> Caller:
        """The caller an `Authorization` header value names, or `Unauthenticated`."""
        if authorization is None:
            raise Unauthenticated("authentication required: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not _PRESENTED.fullmatch(token):
            raise Unauthenticated("malformed Authorization header: expected 'Bearer <token>'")
        digest = _digest(token)
        # a list, not any()/next(): every comparison runs whatever matched before it
        found = [e.caller for e in self._entries if hmac.compare_digest(e.digest, digest)]
        if not found:
            raise Unauthenticated("unknown token")
        return found[0]


def parse(text: str, source: str) -> Tokens:
    """The tokens in a tokens file's text; `source` names the file in errors."""
    entries: list[_Entry] = []
    names: dict[str, int] = {}
    digests: dict[bytes, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{source} line {n}"
        if len(fields) != 3:
            raise ConfigError(
                f"{where}: expected '<name> <role> <token>' (found {len(fields)} fields)"
            )
        name, role, secret = fields
        if not _NAME.fullmatch(name):
            raise ConfigError(f"{where}: a name is 1-64 letters, digits, '_', '.', '@' or '-'")
        if role not in ROLES:
            raise ConfigError(f"{where}: the role must be one of {', '.join(ROLES)}")
        if not _SECRET.fullmatch(secret):
            raise ConfigError(
                f"{where}: a token is {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} visible ASCII "
                "characters (e.g. `openssl rand -hex 32`)"
            )
        digest = _digest(secret)
        if name in names:
            raise ConfigError(f"{where}: the name is already used on line {names[name]}")
        if digest in digests:
            raise ConfigError(f"{where}: the same token as line {digests[digest]}")
        names[name], digests[digest] = n, n
        entries.append(_Entry(Caller(name, role), digest))
    return Tokens(entries)


def load(path: str) -> Tokens:
    """The tokens of the file at `path`; a file that cannot be read or parsed is a
    `ConfigError` of one line."""
    source = f"tokens file {path}"
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read it ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{source} line {line}: not UTF-8 text") from None
    return parse(text, source)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def for_api(tokens_file: str | None, host: str) -> Tokens:
    """The tokens an API bound to `host` checks (none: no authentication). Without tokens the
    API may listen on loopback only; asking for another address is a `ConfigError`."""
    tokens = load(tokens_file) if tokens_file else Tokens()
    if not tokens and not is_loopback(host):
        raise ConfigError(
            f"SAGA_HTTP_HOST={host!r} needs tokens (SAGA_HTTP_TOKENS_FILE with at least one): "
            "without them the HTTP API listens on loopback only (127.0.0.1, ::1, localhost)"
        )
    return tokens
