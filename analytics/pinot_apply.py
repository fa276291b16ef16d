"""`ffs pinot apply`: send the generated schemas and table configs to Pinot's controller.

Idempotent: each schema / table is read first; when what Pinot holds already contains
everything the file says (Pinot adds its own defaults, so "contains", not "equals"), nothing
is sent. Otherwise it is created (POST) or updated (PUT). Schemas go first: a table needs
its schema.

A 200 answer that lists `unrecognizedProperties` is an error too: Pinot dropped settings it
does not know (a config written for another Pinot version), e.g. 0.11 ignores the list form
`upsertConfig.comparisonColumns` and silently compares on the time column instead.

Placeholders in the files (`${KAFKA_SASL_PASSWORD}`, `${KAFKA_BOOTSTRAP_SERVERS}`) are filled
from the config, else from the environment variable of that name, in the request only; the
password is revealed nowhere else and is scrubbed from any error text.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffs.analytics.pinot_client import request_json
from ffs.analytics.pinot_config import AGG, ENRICHED, PASSWORD_PLACEHOLDER, SERVERS_PLACEHOLDER
from ffs.config import Config
from ffs.errors import ConfigError, InputError, TerminalError, TransientError

NAMES = (ENRICHED, AGG)


class PinotControllerError(TerminalError):
    """The controller refused a schema or table config (HTTP 4xx, or 5xx with a reason)."""

    def __init__(self, action: str, url: str, status: int, message: str):
        self.status, self.pinot_message = status, message
        super().__init__(f"{action}: Pinot controller {url} answered HTTP {status}: {message}")


@dataclass
class ApplyResult:
    actions: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, what)

    def add(self, kind: str, name: str, what: str) -> None:
        self.actions.append((kind, name, what))

    def changed(self) -> bool:
        return any(what != "unchanged" for _, _, what in self.actions)

    def __str__(self) -> str:
        return ", ".join(f"{kind} {name}: {what}" for kind, name, what in self.actions)


def contains(have: Any, want: Any) -> bool:
    """True when `have` holds every key and value of `want` (lists item by item)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and contains(have[k], v)
                                              for k, v in want.items())
    if isinstance(want, list):
        return (isinstance(have, list) and len(have) == len(want)
                and all(contains(h, w) for h, w in zip(have, want, strict=True)))
    return have == want or (not isinstance(have, (dict, list)) and str(have) == str(want))


def _secrets(cfg: Config) -> dict[str, str | None]:
    password = cfg.kafka.sasl_password.reveal() if cfg.kafka.sasl_password else None
    servers = cfg.pinot.stream_bootstrap_servers or cfg.kafka.bootstrap_servers or None
    return {PASSWORD_PLACEHOLDER: password or os.environ.get("KAFKA_SASL_PASSWORD"),
            SERVERS_PLACEHOLDER: servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")}


def fill(obj: Any, values: dict[str, str | None], where: str) -> Any:
    """A copy of `obj` with placeholders in its strings replaced (JSON-escaped later by
    json.dumps, so a password with quotes cannot break the request)."""
    if isinstance(obj, dict):
        return {k: fill(v, values, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [fill(v, values, where) for v in obj]
    if isinstance(obj, str):
        for placeholder, value in values.items():
            if placeholder in obj:
                if not value:
                    name = placeholder[2:-1]
                    raise ConfigError(f"{where} contains {placeholder} and nothing sets it: "
                                      f"set FFS_{_CONFIG_KEY[name]} (config) or {name}")
                obj = obj.replace(placeholder, value)
    return obj


_CONFIG_KEY = {"KAFKA_SASL_PASSWORD": "KAFKA_SASL_PASSWORD",
               "KAFKA_BOOTSTRAP_SERVERS": "PINOT_STREAM_BOOTSTRAP_SERVERS"}


def _load(path: Path) -> dict:
    if not path.exists():
        raise InputError(f"{path} not found: generate it with `ffs pinot generate`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON ({exc}): regenerate it with "
                         f"`ffs pinot generate`") from None


class _Controller:
    def __init__(self, url: str, cfg: Config, secret: str | None):
        self.url, self.cfg, self.secret = url, cfg, secret

    def call(self, method: str, path: str, body: Any = None,
             ok: tuple[int, ...] = (200,)) -> tuple[int, Any]:
        # At least 30 s: creating a REALTIME table assigns its first consuming segments
        # before answering, slower than a query.
        timeout_s = max(self.cfg.pinot.timeout_ms / 1000, 30.0)
        status, payload = request_json(method, self.url + path, body, self.cfg.pinot.token,
                                       timeout_s, "Pinot controller")
        if status in ok:
            if method in ("POST", "PUT") and status == 200:
                self._all_recognized(method, path, payload)
            return status, payload
        message = payload.get("error", payload) if isinstance(payload, dict) else payload
        message = str(message)
        if self.secret:  # the controller may echo the config it refused
            message = message.replace(self.secret, "***")
        message = message[:1000]
        action = f"{method} {path.split('?')[0]}"
        if status in (502, 503, 504):
            raise TransientError(f"{action}: Pinot controller {self.url} answered HTTP "
                                 f"{status}: {message}")
        raise PinotControllerError(action, self.url, status, message)

    def _all_recognized(self, method: str, path: str, payload: Any) -> None:
        unknown = payload.get("unrecognizedProperties") if isinstance(payload, dict) else None
        if not unknown:
            return
        text = json.dumps(unknown, sort_keys=True)
        if self.secret:
            text = text.replace(self.secret, "***")
        raise PinotControllerError(
            f"{method} {path.split('?')[0]}", self.url, 200,
            f"Pinot accepted the config but ignored what it does not know: {text[:1000]}. "
            f"The file was written for another Pinot version: regenerate it with `ffs pinot "
            f"generate` (infra/pinot targets the Pinot pinned in infra/jvm/pinot)")


def _apply_schema(c: _Controller, schema: dict, result: ApplyResult) -> None:
    name = schema["schemaName"]
    status, have = c.call("GET", f"/schemas/{name}", ok=(200, 404))
    if status == 404:
        c.call("POST", "/schemas", schema)
        result.add("schema", name, "created")
    elif contains(have, schema):
        result.add("schema", name, "unchanged")
    else:
        # force: adding feature columns is backward compatible, but Pinot asks for force
        # when the table exists; reload so existing segments get the new columns.
        c.call("PUT", f"/schemas/{name}?reload=true&force=true", schema)
        result.add("schema", name, "updated")


def _apply_table(c: _Controller, table: dict, result: ApplyResult) -> None:
    name, typ = table["tableName"], table["tableType"]
    status, have = c.call("GET", f"/tables/{name}", ok=(200, 404))
    # GET answers {} (or 404) when absent, else {"REALTIME": {...}} with tableName
    # "<name>_REALTIME" and Pinot's defaults filled in.
    existing = have.get(typ) if status == 200 and isinstance(have, dict) else None
    want = {k: v for k, v in table.items() if k != "tableName"}
    if existing is None:
        status, _ = c.call("POST", "/tables", table, ok=(200, 409))
        if status == 200:
            result.add("table", name, "created")
            return
        # 409: created meanwhile (another apply): fall through to update it
    elif contains(existing, want):
        result.add("table", name, "unchanged")
        return
    c.call("PUT", f"/tables/{name}", table)
    result.add("table", name, "updated")


def apply(cfg: Config, artifacts_dir: str | Path,
          log: Callable[[str], None] = lambda _: None) -> ApplyResult:
    url = (cfg.pinot.controller_url or "").rstrip("/")
    if not url:
        raise ConfigError("pinot.controller_url is empty: set FFS_PINOT_CONTROLLER_URL or "
                          "pass --controller (e.g. http://pinot-controller:9000)")
    values = _secrets(cfg)
    c = _Controller(url, cfg, values[PASSWORD_PLACEHOLDER])
    d = Path(artifacts_dir)
    result = ApplyResult()
    for name in NAMES:
        _apply_schema(c, _load(d / f"{name}.schema.json"), result)
        log(f"  schema {name}: {result.actions[-1][2]}")
    for name in NAMES:
        path = d / f"{name}.table.json"
        _apply_table(c, fill(_load(path), values, str(path)), result)
        log(f"  table {name}: {result.actions[-1][2]}")
    return result
