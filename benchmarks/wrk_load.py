"""HTTP load from wrk, a compiled generator, in the same shape as `http_load.load`.

    wrk_load(host, port, path, bodies, concurrency, seconds, warmup_s, bad_marker) -> dict

Why a second generator: `http_load.load` is Python (http.client, one thread per
connection) and shares this machine's two cores with the server it loads, so its own CPU
could be what caps the requests/s it reports. wrk (Debian's `wrk`, one epoll thread)
spends a few microseconds per request. Measured side by side (benchmarks.online,
2026-12-02, BENCHMARKS.md), one server worker, 1-row requests at 4 connections: wrk
reported 1.22x and 1.44x the Python generator's rate in two runs, and the same rate (1,070
and 1,071 req/s) in a third, so at times the Python generator's CPU is what it measures.
With several workers the figures also depend on how the connections spread over the
workers: wrk opens its 4 at once, and Feast's two gunicorn workers then served at one
worker's rate (173 req/s, against 352 from the Python threads). Latencies are wrk's own,
from the request's write to the response's last byte.

The bodies are cycled, each connection from its own offset; a non-200 answer counts as an
error, a 200 holding `bad_marker` as degraded (the Lua script below checks each). When wrk
is not installed, `available()` is False and benchmarks.online measures with the Python
generator alone, and says so; `make bench` installs it first (infra/install_bench_tools.sh).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.http_load import LOOPBACK

__all__ = ["available", "wrk_load"]

_SCRIPT = r"""
local bodies, threads, counter = {}, {}, 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1], "rb"))
  for line in f:lines() do if #line > 0 then bodies[#bodies + 1] = line end end
  f:close()
  marker = args[2] or ""
  errors, degraded, at = 0, 0, id * 7919
  path = args[3]
  headers = {["Content-Type"] = "application/json"}
end

function request()
  at = at + 1
  return wrk.format("POST", path, headers, bodies[at % #bodies + 1])
end

function response(status, hdrs, body)
  if status ~= 200 then
    errors = errors + 1
  elseif marker ~= "" and string.find(body, marker, 1, true) then
    degraded = degraded + 1
  end
end

function done(summary, latency, requests)
  local errs, deg = 0, 0
  for _, t in ipairs(threads) do errs = errs + t:get("errors"); deg = deg + t:get("degraded") end
  local e = summary.errors
  io.write(string.format(
    "FFS_JSON {\"n\": %d, \"us\": %d, \"p50\": %d, \"p90\": %d, \"p99\": %d, \"max\": %d, " ..
    "\"mean\": %.1f, \"errors\": %d, \"degraded\": %d, \"socket_errors\": %d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, errs, deg,
    e.connect + e.read + e.write + e.timeout))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def _run(url: str, script: Path, bodies: Path, marker: str, path: str, connections: int,
         seconds: float) -> dict:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout",
            "30s", "-s", str(script), url, "--", str(bodies), marker, path]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 90)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[:300]}")
    for line in done.stdout.splitlines():
        if line.startswith("FFS_JSON "):
            return json.loads(line[len("FFS_JSON "):])
    raise RuntimeError(f"wrk printed no result: {done.stdout.strip()[:300]}")


def wrk_load(host: str, port: int, path: str, bodies: list[bytes], concurrency: int,
             seconds: float, warmup_s: float = 1.0, bad_marker: bytes | None = None) -> dict:
    """POST `bodies` (one JSON document each, no newline inside) over `concurrency`
    keep-alive connections for `seconds`, after `warmup_s` untimed; loopback only."""
    if host not in LOOPBACK:
        raise ValueError(f"the load generator only loads loopback servers, not {host!r}")
    if not bodies or any(b"\n" in b for b in bodies):
        raise ValueError("bodies must be non-empty single-line JSON documents")
    url = f"http://{host}:{port}"
    marker = "" if bad_marker is None else bad_marker.decode()
    with tempfile.TemporaryDirectory(prefix="ffs-wrk-") as tmp:
        script, data = Path(tmp) / "post.lua", Path(tmp) / "bodies.jsonl"
        script.write_text(_SCRIPT)
        data.write_bytes(b"\n".join(bodies) + b"\n")
        if warmup_s > 0:
            _run(url, script, data, marker, path, concurrency, warmup_s)
        res = _run(url, script, data, marker, path, concurrency, seconds)
    wall = res["us"] / 1e6
    n = res["n"]
    rate = round(n / wall, 1) if wall > 0 else 0.0
    return {"n": n, "concurrency": concurrency, "generator": "wrk",
            "p50_ms": res["p50"] / 1e3, "p90_ms": res["p90"] / 1e3,
            "p99_ms": res["p99"] / 1e3, "max_ms": res["max"] / 1e3,
            "mean_ms": round(res["mean"] / 1e3, 3), "requests_per_s": rate, "per_s": rate,
            "seconds": round(wall, 2), "errors": res["errors"] + res["socket_errors"],
            "degraded": res["degraded"], "truncated_by_time": True}
