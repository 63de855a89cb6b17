"""`saga doctor`: check that the configured Kafka and Redis answer, and say plainly what is wrong.

Each check returns rows `(component, ok, explanation)`; `run_doctor` never raises. The common
failures get a sentence a person can act on: a host name that does not resolve, nothing listening
(connection refused), no answer in time, a password or SASL mechanism required.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from infra import kafka as kafka_factory
from infra import redis as redis_factory
from orchestrator.engine.topics import doctor_rows as command_topics_rows
from orchestrator.ops.doctor_cluster import cluster_mode, cluster_row, masters_config_row
from schemas.config import Settings

if TYPE_CHECKING:
    from redis import Redis

Row = tuple[str, bool, str]

START_HINT = "is it running? `scripts/stack up` starts the local one"


def run_doctor(settings: Settings) -> list[Row]:
    """Return (component, ok, explanation) rows for Kafka, its topics, Redis and its config
    (and, with SAGA_REDIS_CLUSTER, the cluster's masters and slot coverage)."""
    rows: list[Row] = []
    for name, check in (("kafka", check_kafka), ("redis", check_redis)):
        try:
            rows.extend(check(settings))
        except Exception as exc:  # the doctor reports; it never raises
            rows.append((name, False, f"unexpected error: {type(exc).__name__}: {exc}"))
    return rows


# --- addresses ------------------------------------------------------------------------------


def parse_bootstrap(servers: str) -> list[tuple[str, int]]:
    """`host:port,host2:port2` (an optional `PLAINTEXT://` and `[v6]` allowed) -> [(host, port)]."""
    out: list[tuple[str, int]] = []
    for item in servers.split(","):
        item = item.strip()
        if not item:
            continue
        if "://" in item:
            item = item.split("://", 1)[1]
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port_text = rest.lstrip(":") or "9092"
        else:
            host, sep, port_text = item.rpartition(":")
            if not sep:
                host, port_text = item, "9092"
        if not host or not port_text.isdigit():
            raise ValueError(f"{item!r} is not host:port")
        out.append((host, int(port_text)))
    if not out:
        raise ValueError("no servers given")
    return out


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, safe to print."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def probe_tcp(host: str, port: int, timeout_s: float) -> str | None:
    """None when a TCP connection opens; else a plain-words reason (DNS, refused, timeout)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return explain_dns(host, exc)
    last = ""
    for family, kind, proto, _, addr in infos:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout_s)
                sock.connect(addr)
                return None
        except ConnectionRefusedError:
            last = f"connection refused at {host}:{port}: nothing listens on that port"
        except TimeoutError:
            last = (
                f"no answer from {host}:{port} within {timeout_s:g} s "
                "(a firewall drops the packets, the host is down, or the address is wrong)"
            )
        except OSError as exc:
            last = f"cannot connect to {host}:{port}: {exc.strerror or exc}"
            if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                last += " (no route to that host)"
    return last or f"cannot connect to {host}:{port}"


def explain_dns(host: str, exc: BaseException | None = None) -> str:
    detail = f" ({exc.args[1]})" if exc is not None and len(exc.args) > 1 else ""
    return f"cannot resolve host name {host!r}{detail}: the address is wrong or DNS is unreachable"


# --- Kafka ----------------------------------------------------------------------------------


def explain_kafka_error(
    text: str, bootstrap: str, timeout_s: float, settings: Settings | None = None
) -> str:
    """Turn a librdkafka error or log text into a plain sentence (never with a secret in it)."""
    low = text.lower()
    protocol = settings.kafka_security_protocol if settings else "PLAINTEXT"
    mechanism = settings.kafka_sasl_mechanism if settings else "PLAIN"
    user = settings.kafka_sasl_username if settings else None
    if "mechanism" in low and ("not supported" in low or "unsupported" in low):
        return (
            f"{bootstrap} does not offer SASL mechanism {mechanism} "
            f"(SAGA_KAFKA_SASL_MECHANISM); librdkafka said: {text}"
        )
    if "invalid credentials" in low or "authentication failed" in low:
        return (
            f"{bootstrap} rejected the SASL login of user {user!r} ({mechanism}): wrong "
            "username or password (SAGA_KAFKA_SASL_USERNAME, SAGA_KAFKA_SASL_PASSWORD)"
        )
    if "certificate verify failed" in low or "certificate_verify_failed" in low:
        what = (
            "its name does not match the certificate"
            if "hostname" in low
            else ("its certificate is not signed by a CA we trust (SAGA_KAFKA_SSL_CAFILE)")
        )
        return f"TLS verification of {bootstrap} failed: {what}; librdkafka said: {text}"
    if ("wrong version number" in low or "packet length too long" in low) and protocol in (
        "SSL",
        "SASL_SSL",
    ):
        return (
            f"{bootstrap} does not speak TLS, but SAGA_KAFKA_SECURITY_PROTOCOL is {protocol}: "
            "use PLAINTEXT or SASL_PLAINTEXT for this port, or the broker's TLS port"
        )
    if "apiversion" in low and "disconnect" in low:
        return (
            f"{bootstrap} closed the connection during the Kafka handshake: it expects TLS or "
            f"SASL, but SAGA_KAFKA_SECURITY_PROTOCOL is {protocol} (a security protocol "
            "mismatch), or it is not Kafka"
        )
    if "sasl" in low or "authenticat" in low:
        return (
            f"authentication failed at {bootstrap}: the broker requires SASL credentials "
            f"(or rejected them); librdkafka said: {text}"
        )
    if "ssl" in low or "handshake" in low:
        return f"TLS problem talking to {bootstrap}: {text}"
    if "resolve" in low:
        return f"cannot resolve a broker address of {bootstrap}: {text}"
    if "refused" in low:
        return f"connection refused at {bootstrap}: nothing listens there ({START_HINT})"
    if any(w in low for w in ("timed out", "timeout", "transport failure", "brokers down")):
        return (
            f"{bootstrap} accepted a connection but gave no Kafka metadata within "
            f"{timeout_s:g} s: is it really Kafka, and not still starting?"
        )
    return f"Kafka at {bootstrap} did not answer: {text}"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def check_kafka(settings: Settings) -> list[Row]:
    from confluent_kafka import KafkaError, KafkaException

    bootstrap = settings.kafka_bootstrap_servers
    timeout_s = settings.connect_timeout_s
    try:
        servers = parse_bootstrap(bootstrap)
    except ValueError as exc:
        return [("kafka", False, f"KAFKA_BOOTSTRAP_SERVERS={bootstrap!r} is not valid: {exc}")]
    reasons = [probe_tcp(host, port, timeout_s) for host, port in servers]
    if all(r is not None for r in reasons):
        text = "; ".join(r for r in reasons if r)
        if any("refused" in (r or "") for r in reasons):
            text += f" ({START_HINT})"
        return [("kafka", False, text)]

    collected = _Collect()
    logger = logging.getLogger(f"saga.doctor.kafka.{id(collected)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)  # librdkafka reports a refused handshake below WARNING
    logger.addHandler(collected)
    errors: list[str] = []

    def on_error(err: KafkaError) -> None:
        errors.append(err.str())

    conf: dict[str, Any] = {
        "socket.timeout.ms": max(1000, int(timeout_s * 1000)),
        "socket.connection.setup.timeout.ms": max(1000, int(timeout_s * 1000)),
        "error_cb": on_error,
        "logger": logger,  # librdkafka's log lines go here, not to stderr
    }
    admin = kafka_factory.admin(settings, **conf)
    try:
        meta = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        admin.poll(0)  # serve queued error and log callbacks
        err = exc.args[0] if exc.args else None
        text = err.str() if isinstance(err, KafkaError) else str(exc)
        detail = next(
            (
                line
                for line in [*errors, *collected.lines]
                if any(
                    w in line.lower()
                    for w in ("sasl", "authentic", "apiversion", "ssl", "certificate", "mechanism")
                )
            ),
            text,
        )
        return [("kafka", False, explain_kafka_error(detail, bootstrap, timeout_s, settings))]
    finally:
        logger.removeHandler(collected)

    brokers = ", ".join(f"{b.host}:{b.port}" for b in sorted(meta.brokers.values(), key=str))
    rows: list[Row] = [
        (
            "kafka",
            True,
            f"{bootstrap} answers: {len(meta.brokers)} broker(s) ({brokers}), "
            f"cluster id {meta.cluster_id}",
        )
    ]
    rows.append(_topics_row(settings, {n: len(t.partitions) for n, t in meta.topics.items()}))
    rows.extend(command_topics_rows(settings, meta.topics))  # per-participant command topics
    return rows


def _topics_row(settings: Settings, have: dict[str, int]) -> Row:
    wanted = [settings.commands_topic, settings.events_topic, settings.dlq_topic]
    missing = [t for t in wanted if t not in have]
    present = ", ".join(f"{t} ({have[t]} partitions)" for t in wanted if t in have)
    if missing:
        hint = "`scripts/stack up` creates them on the local Kafka"
        found = f"; present: {present}" if present else ""
        return ("kafka topics", False, f"missing: {', '.join(missing)}{found} ({hint})")
    return ("kafka topics", True, present)


# --- Redis ----------------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def explain_redis_error(exc: BaseException, where: str, timeout_s: float) -> str:
    import redis.exceptions as rex

    text = str(exc)
    low = text.lower()
    if isinstance(exc, rex.AuthenticationError) or "noauth" in low or "wrongpass" in low:
        if "wrongpass" in low or "invalid" in low:
            return (
                f"Redis at {where} rejected the user name or password (WRONGPASS): fix "
                "SAGA_REDIS_USERNAME / SAGA_REDIS_PASSWORD (or the password in REDIS_URL)"
            )
        return (
            f"Redis at {where} requires a login (NOAUTH): set SAGA_REDIS_USERNAME and "
            "SAGA_REDIS_PASSWORD (or put them in REDIS_URL)"
        )
    if isinstance(exc, rex.NoPermissionError) or "noperm" in low:
        return (
            f"Redis at {where}: this user may not run the command or touch the key (NOPERM); "
            f"check its ACL (deploy/redis-acl.conf): {text}"
        )
    for link in _chain(exc):
        if isinstance(link, ssl.SSLCertVerificationError):
            what = (
                "its name does not match the certificate"
                if "hostname" in str(link).lower()
                else "its certificate is not signed by a CA we trust (SAGA_REDIS_SSL_CAFILE)"
            )
            return f"TLS verification of Redis at {where} failed: {what}"
        if isinstance(link, ssl.SSLError):
            return (
                f"TLS handshake with Redis at {where} failed ({link.reason or link}): is the "
                "port TLS? rediss:// needs a TLS port, redis:// a plain one"
            )
    if "connection closed by server" in low or "connection reset" in low:
        return (
            f"Redis at {where} closed the connection: a plain redis:// client on a TLS port? "
            "Use rediss:// with SAGA_REDIS_SSL_CAFILE"
        )
    for link in _chain(exc):
        if isinstance(link, socket.gaierror):
            return explain_dns(where.rsplit(":", 1)[0], link)
        if isinstance(link, ConnectionRefusedError):
            return f"connection refused at {where}: nothing listens on that port ({START_HINT})"
    if "name or service not known" in low or "temporary failure in name resolution" in low:
        return explain_dns(where.rsplit(":", 1)[0])
    if "connection refused" in low or "error 111" in low:
        return f"connection refused at {where}: nothing listens on that port ({START_HINT})"
    if isinstance(exc, rex.TimeoutError) or "timeout" in low or "timed out" in low:
        return (
            f"no answer from {where} within {timeout_s:g} s: a firewall, a wrong port, "
            "or something that is not Redis"
        )
    return f"Redis at {where} did not answer PING: {type(exc).__name__}: {text}"


def check_redis(settings: Settings) -> list[Row]:
    import redis.exceptions as rex

    url = settings.redis_url
    shown = redact_url(url)
    timeout_s = settings.connect_timeout_s
    try:
        parts = urlsplit(url)
        where = f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"
        client = redis_factory.sync_client(settings, timeout_s=timeout_s)
    except ValueError as exc:
        return [("redis", False, f"REDIS_URL {shown!r} is not a valid redis:// URL: {exc}")]
    try:
        try:
            client.ping()
            info = _server_info(client)
        except (rex.RedisError, OSError) as exc:
            return [("redis", False, explain_redis_error(exc, where, timeout_s))]
        version = (
            f"Redis {info['redis_version']}" if "redis_version" in info else "INFO not allowed"
        )
        rows: list[Row] = [("redis", True, f"{shown} answers PING ({version})")]
        mode = cluster_mode(client, settings.redis_cluster, where)
        if isinstance(mode, tuple):  # the setting and the server disagree
            return [*rows, mode]
        if mode is None:
            return [*rows, _redis_config_row(client)]
        return [*rows, cluster_row(mode), masters_config_row(client, mode, _redis_config_row)]
    finally:
        client.close()


def _server_info(client: Redis) -> dict[str, Any]:
    """INFO server, or nothing when this user may not run INFO (a least-privilege ACL user)."""
    import redis.exceptions as rex

    try:
        info = client.info("server")
    except rex.NoPermissionError:
        return {}
    return info if isinstance(info, dict) else {}


def _redis_config_row(client: Redis) -> Row:
    import redis.exceptions as rex

    try:
        aof = client.config_get("appendonly").get("appendonly")
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
        save = client.config_get("save").get("save") or ""
    except rex.ResponseError as exc:
        return (
            "redis config",
            True,
            f"CONFIG GET is not allowed here ({exc}); check yourself that appendonly is yes "
            "and maxmemory-policy is noeviction",
        )
    text = f"appendonly {aof}, maxmemory-policy {policy}"
    problems = []
    if aof != "yes":
        problems.append("without AOF, state written since the last snapshot is lost on a crash")
    if policy != "noeviction":
        problems.append("an evicting policy can silently drop saga state under memory pressure")
    if problems:
        return ("redis config", False, f"{text}: {'; '.join(problems)}")
    if save.strip():
        # Not wrong, only costly: with AOF on a restart never reads the snapshots, and each one
        # forks and writes the whole dataset (measured: 8-18 s of a core at a million sagas).
        return (
            "redis config",
            True,
            f"{text}; note: RDB snapshots are on beside the AOF (save {save}), which a restart "
            'never reads and which fork and write all of Redis each time: consider save ""',
        )
    return ("redis config", True, text)
