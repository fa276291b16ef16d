"""Query Pinot's broker over HTTP and get a pandas DataFrame, with Pinot's errors made loud.

Plain `POST /query/sql` rather than pinotdb's DB-API: pinotdb folds the broker's error list
into one formatted string, and this module needs the error codes (a timeout is worth a
retry, a parse error is not). pinotdb stays the way BI tools connect (see infra/pinot).

Two Pinot behaviours this client undoes:
- errors come back with HTTP 200 in `exceptions[]`: they raise `PinotQueryError` (code and
  message; `PinotQueryTimeout`, a TransientError, for codes worth retrying). What the pinned
  Pinot (0.11) answers, recorded in tests/fixtures/pinot: 150 parse, 180 access denied (a
  missing or wrong token: HTTP 200, not 401), 190 missing table, 710 unknown column, and for
  a query out of time 400 (broker timeout) or 427 (servers did not answer in time); 250
  (server execution timeout) when a server notices first;
- a query without LIMIT silently returns 10 rows: an explicit LIMIT is appended.

Null handling at query time (`enableNullHandling=true`) is not sent unless asked: Pinot 0.11
fails aggregations with it (MAX: "Method 'getDoubleResult' not supported", some GROUP BYs:
HTTP 500), and its selections return the column defaults (0, Long.MIN_VALUE) for nulls either
way. Filters `IS NULL` / `IS NOT NULL` work without it (the table keeps null vectors), and
the analyst queries are written not to depend on it (analytics/query_kit.py).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Any

import pandas as pd

from ffs.config import PinotConfig
from ffs.errors import ConfigError, FFSError, TerminalError, TransientError

DEFAULT_LIMIT = 100_000
# QueryException codes that describe a busy or moving cluster rather than a wrong query:
# server shutting down / out of capacity (210, 211), table or segment not on a server yet
# (230, 235, 305), timeouts (170 combine, 240 scheduling, 250 execution, 400 broker, 427
# servers not responding), broker resources missing or unreachable (410, 420, 425), too many
# requests (429).
TRANSIENT_CODES = frozenset({170, 210, 211, 230, 235, 240, 250, 305, 400, 410, 420, 425, 427,
                             429, 503})
_HINTS = {
    150: "SQL parsing error: check the syntax (Pinot's single-stage engine has no joins)",
    180: "access denied: set pinot.token / FFS_PINOT_TOKEN to credentials the broker accepts",
    190: "table does not exist: create it with `ffs pinot apply`",
    250: "query timed out: narrow the time range or raise pinot.timeout_ms",
    400: "query timed out in the broker: narrow the time range or raise pinot.timeout_ms",
    427: "servers did not answer in time: retry, or raise pinot.timeout_ms",
    710: "unknown column: `ffs features` lists the feature columns",
}
_INT_TYPES = {"INT", "LONG"}
_FLOAT_TYPES = {"FLOAT", "DOUBLE"}


class PinotQueryError(FFSError):
    """The broker refused or failed the query (an entry of its `exceptions[]`)."""

    def __init__(self, code: int, message: str, sql: str):
        self.code, self.message, self.sql = code, message, sql
        hint = _HINTS.get(code, "see the message")
        first = message.strip().splitlines()[0] if message.strip() else "(no message)"
        detail = " ".join(message.split())[:500]
        super().__init__(f"Pinot error {code} ({hint}): {first}\n  detail: {detail}\n"
                         f"  sql: {' '.join(sql.split())[:300]}")


class PinotQueryRejected(PinotQueryError, TerminalError):
    """The query itself must change (parse error, unknown table or column...)."""


class PinotQueryTimeout(PinotQueryError, TransientError):
    """Timed out or a server was unavailable: the same query may succeed later."""


def query_error(code: int, message: str, sql: str) -> PinotQueryError:
    cls = PinotQueryTimeout if code in TRANSIENT_CODES else PinotQueryRejected
    return cls(code, message, sql)


def request_json(method: str, url: str, body: Any = None, token: Any = None,
                 timeout_s: float = 10.0, what: str = "Pinot") -> tuple[int, Any]:
    """(HTTP status, parsed JSON or text). Unreachable or silent -> TransientError naming
    the URL. `token` is sent as the Authorization header and never appears in a message."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = token.reveal() if hasattr(token, "reveal") else str(token)
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:  # 4xx/5xx: the body says why
        status, raw = exc.code, exc.read()
    except urllib.error.URLError as exc:
        raise TransientError(f"{what} at {url} is unreachable: {exc.reason}") from None
    except (TimeoutError, ConnectionError, OSError) as exc:
        raise TransientError(f"{what} at {url} did not answer within {timeout_s:g} s "
                             f"({type(exc).__name__}: {exc})") from None
    text = raw.decode("utf-8", "replace")
    try:
        return status, json.loads(text) if text.strip() else None
    except ValueError:
        return status, text


_LIMIT_AT_END = re.compile(r"\bLIMIT\s+\d+(\s*,\s*\d+|\s+OFFSET\s+\d+)?$", re.IGNORECASE)
_STRINGS_AND_COMMENTS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/",
                                   re.DOTALL)


def with_limit(sql: str, limit: int) -> tuple[str, bool]:
    """(sql, appended?): appends LIMIT when the outermost query has none. Strings and
    comments are blanked before looking, so `'... limit 5'` or a trailing comment does not
    count; the LIMIT goes on its own line so a trailing `--` comment cannot swallow it."""
    body = sql.strip().rstrip(";").rstrip()
    bare = _STRINGS_AND_COMMENTS.sub(lambda m: " " if m.group(0)[0] in "-/" else "''", body)
    if _LIMIT_AT_END.search(bare.strip().rstrip(";").rstrip()):
        return body, False
    return f"{body}\nLIMIT {int(limit)}", True


def to_frame(result_table: dict | None) -> pd.DataFrame:
    """A broker `resultTable` as a DataFrame; integer columns keep nulls (Int64)."""
    if not result_table:
        return pd.DataFrame()
    schema = result_table.get("dataSchema") or {}
    names = list(schema.get("columnNames") or [])
    types = list(schema.get("columnDataTypes") or [])
    df = pd.DataFrame(result_table.get("rows") or [], columns=names)
    types += ["STRING"] * (len(names) - len(types))  # never seen; keep the column as is
    for name, typ in zip(names, types, strict=False):
        col = df[name]
        if typ in _INT_TYPES:
            df[name] = pd.array(col.tolist(), dtype="Int64")
        elif typ in _FLOAT_TYPES:
            df[name] = pd.to_numeric(col, errors="coerce").astype("float64")
        elif typ == "BOOLEAN":
            df[name] = pd.array(col.tolist(), dtype="boolean")
        elif typ == "TIMESTAMP":  # Pinot sends "2024-01-01 00:00:00.0" (UTC)
            df[name] = pd.to_datetime(col, utc=True)
    df.attrs["pinot_types"] = dict(zip(names, types, strict=False))
    return df


class PinotClient:
    """Runs SQL on the broker in `PinotConfig.broker_url` (Authorization: pinot.token)."""

    def __init__(self, cfg: PinotConfig, broker_url: str | None = None,
                 default_limit: int = DEFAULT_LIMIT):
        self.url = (broker_url or cfg.broker_url).rstrip("/")
        if not self.url:
            raise ConfigError("pinot.broker_url is empty: set FFS_PINOT_BROKER_URL "
                              "(e.g. http://pinot-broker:8099)")
        self.cfg = cfg
        self.default_limit = default_limit

    def query(self, sql: str, limit: int | None = None, null_handling: bool = False,
              options: dict[str, Any] | None = None) -> pd.DataFrame:
        """Rows of `sql` as a DataFrame.

        When the outermost query has no LIMIT, `LIMIT <limit or default_limit>` is
        appended (default 100,000): Pinot would otherwise return 10 rows without saying
        so. Sent with queryOptions timeoutMs=pinot.timeout_ms, and enableNullHandling=true
        only with null_handling=True (see the module docstring: Pinot 0.11 breaks
        aggregations with it). `options` adds or overrides query options.
        The response's statistics are in `df.attrs["pinot"]`, the SQL sent in
        `df.attrs["sql"]`.
        """
        sent, appended = with_limit(sql, limit or self.default_limit)
        opts: dict[str, Any] = {"timeoutMs": self.cfg.timeout_ms}
        if null_handling:
            opts["enableNullHandling"] = "true"
        opts.update(options or {})
        body = {"sql": sent, "queryOptions": ";".join(f"{k}={v}" for k, v in opts.items())}
        # The broker enforces timeoutMs; the socket waits a little longer so the broker's
        # own timeout error (code 400 or 427, with its message) arrives instead of a bare
        # socket one.
        wait_s = float(opts["timeoutMs"]) / 1000 + 2
        status, payload = request_json("POST", f"{self.url}/query/sql", body, self.cfg.token,
                                       wait_s, what="Pinot broker")
        return self._parse(status, payload, sent, appended)

    def _parse(self, status: int, payload: Any, sql: str, appended: bool) -> pd.DataFrame:
        if status != 200:
            message = payload.get("error") if isinstance(payload, dict) else payload
            text = f"Pinot broker {self.url} answered HTTP {status}: {str(message)[:500]}"
            if status in (401, 403):
                raise TerminalError(f"{text} (set pinot.token / FFS_PINOT_TOKEN)")
            raise TransientError(text) if status >= 500 else TerminalError(text)
        if not isinstance(payload, dict):
            raise TransientError(f"Pinot broker {self.url} answered 200 without JSON: "
                                 f"{str(payload)[:200]}")
        errors = payload.get("exceptions") or []
        if errors:
            first = errors[0]
            # 0.11 sends "message": null with some codes (180, access denied)
            raise query_error(int(first.get("errorCode", -1)), str(first.get("message") or ""),
                              sql)
        queried, responded = payload.get("numServersQueried"), payload.get("numServersResponded")
        if isinstance(queried, int) and isinstance(responded, int) and responded < queried:
            raise TransientError(f"Pinot answered from {responded} of {queried} servers: "
                                 f"the result would be partial")
        df = to_frame(payload.get("resultTable"))
        df.attrs["sql"] = sql
        df.attrs["limit_appended"] = appended
        df.attrs["pinot"] = {k: v for k, v in payload.items()
                             if k not in ("resultTable", "exceptions")}
        return df
