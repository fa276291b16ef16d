"""Which record format an online state was written in, kept beside it, so that a process
whose compiled repo lays records out differently refuses that state instead of misreading
it (a record is bytes whose meaning is the entity's RecordFormat, online/layout.py: a repo
that adds a `max` to an entity, say, changes every record of that entity).

    {p}:meta:format    JSON: {"format": <digest>, "entities": {name: its layout, readable}}

Writers (the loader, the stream) set it when absent and refuse a different one; readers (the
client, so the server and the Feast plugin) refuse a different one. A state with no marker
is new, or from before the marker existed: it is taken as it is.
"""

from __future__ import annotations

import hashlib
import json

from ffs.errors import TerminalError
from ffs.online import layout
from ffs.transformations.features import ENTITIES

LAYOUT_VERSION = 3  # bump when layout.py changes how records or keys are encoded


class StateFormatError(TerminalError):
    """The online state under this prefix was written in another record format."""


def format_key(prefix: str) -> str:
    return f"{prefix}:meta:format"


def describe() -> dict:
    """This process's record format: per entity, its keys and record layout."""
    entities = {}
    for e in ENTITIES:
        fmt = layout.record_format(e)
        entities[e.name] = {"keys": list(e.keys), "sums": list(fmt.cumulative),
                            "squares": list(fmt.squares), "own values": list(fmt.numbers),
                            "texts": list(fmt.texts), "fraud": fmt.fraud,
                            "retention_s": layout.retention_s(e)}
    body = json.dumps({"version": LAYOUT_VERSION, "entities": entities}, sort_keys=True)
    return {"format": hashlib.sha256(body.encode()).hexdigest()[:16], "entities": entities}


def check(redis_conn, prefix: str, writing: bool) -> None:
    """Raises StateFormatError when the state under prefix has another format; a writer
    records this one where none is recorded yet."""
    mine = describe()
    raw = redis_conn.get(format_key(prefix))
    if raw is None:
        if writing:
            redis_conn.set(format_key(prefix), json.dumps(mine, sort_keys=True), nx=True)
            raw = redis_conn.get(format_key(prefix))  # another writer may have won the race
        if raw is None:
            return
    try:
        stored = json.loads(raw)
        theirs = stored["format"]
    except (ValueError, KeyError, TypeError):
        raise StateFormatError(f"{format_key(prefix)} does not hold a record format: delete it "
                               f"only if you know the state's format") from None
    if theirs == mine["format"]:
        return
    changed = sorted(n for n in set(mine["entities"]) | set(stored.get("entities", {}))
                     if mine["entities"].get(n) != stored.get("entities", {}).get(n))
    raise StateFormatError(
        f"the online state under prefix {prefix!r} was written in record format {theirs}, "
        f"this process's repo lays records out as {mine['format']} (entities that differ: "
        f"{', '.join(changed) or 'none; the layout version changed'}): reading it would "
        f"misread its records. Load it again into an empty prefix (another redis.prefix, or "
        f"delete {prefix}:* first) with `ffs materialize`, or run the repo that wrote it")
