"""Request-time features: the repo's on-demand view functions, one code online and offline.

A Feast `OnDemandFeatureView` in python mode is a plain function of a dict of columns (the
request source's fields and the features it reads) returning a dict of output columns. The
compiler keeps its source (Feast's `udf_string`, decorators removed), so every engine runs
the very same function without importing Feast or the repo: the batch engine over the
training points, the online client over each request batch, Feast itself when it serves.

Inputs are lists: request fields as sent (None where a row lacks one), `event_timestamp` as
UTC datetimes of the row's request time, features as computed (None for a null). A function
may import what it needs inside its body; it gets no module globals of the repo.
"""

from __future__ import annotations

import ast
import builtins
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

TIME_FIELD = "event_timestamp"


class RequestFunctionError(RuntimeError):
    """A request function that failed or returned something other than its schema."""


@dataclass(frozen=True)
class RequestFunction:
    view: str  # the on-demand view's name
    function: str  # the Python function's name in `source`
    source: str  # the function's source, without decorators
    request_inputs: tuple[str, ...]  # the request source's fields
    feature_inputs: tuple[str, ...]  # features of other views it reads
    outputs: tuple[tuple[str, str], ...]  # (name, dtype) in schema order
    _cache: dict = field(default_factory=dict, compare=False, repr=False)  # fn, outputs

    @classmethod
    def from_source(cls, view: str, udf_string: str, **kw: Any) -> RequestFunction:
        tree = ast.parse(textwrap.dedent(udf_string))
        fns = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        if len(fns) != 1:
            raise RequestFunctionError(f"on-demand view {view}: expected one function in its "
                                       f"source, found {len(fns)}")
        fns[0].decorator_list = []
        return cls(view, fns[0].name, ast.unparse(fns[0]), **kw)

    def callable(self) -> Callable[[dict], dict]:
        if "fn" not in self._cache:
            scope: dict[str, Any] = {"__builtins__": builtins}
            exec(compile(self.source, f"<request function {self.view}>", "exec"), scope)
            self._cache["fn"] = scope[self.function]
        return self._cache["fn"]

    def apply(self, t: Sequence[int], request: dict[str, list],
              features: dict[str, list]) -> dict[str, list]:
        """Output columns for len(t) rows. request: the rows' request fields (missing ones
        may be absent); features: the input features' values."""
        n = len(t)
        inputs: dict[str, list] = {}
        for name in self.feature_inputs:
            inputs[name] = _nulls(features[name])
        for name in self.request_inputs:
            if name == TIME_FIELD:
                utc = timezone.utc
                inputs[name] = [datetime.fromtimestamp(s, utc) for s in t]
            else:
                inputs[name] = _nulls(request.get(name, [None] * n))
        try:
            out = self.callable()(inputs)
        except Exception as exc:
            raise RequestFunctionError(f"request function {self.view}.{self.function} failed: "
                                       f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(out, dict):
            raise RequestFunctionError(f"request function {self.view}.{self.function} returned "
                                       f"{type(out).__name__}, not a dict of columns")
        for name, _dtype in self.outputs:
            col = out.get(name)
            if col is None or len(col) != n:
                raise RequestFunctionError(
                    f"request function {self.view}.{self.function}: output {name!r} is "
                    f"{'missing' if col is None else f'{len(col)} values for {n} rows'}")
        return {name: list(out[name]) for name, _ in self.outputs}

    def feature_outputs(self) -> list[str]:
        """Outputs made from the features it reads: those that change when the features go
        from null to numbers, on a row with every request field (found by trying). They are
        UNAVAILABLE when their features are; an output that is 1 for a null feature ("first
        time at this terminal") is one of them, not a value to serve in an outage."""
        if "feature_outputs" not in self._cache:
            fields = {f: [1.0] for f in self.request_inputs}
            blank = self.apply([0], fields, {f: [None] for f in self.feature_inputs})
            full = self.apply([0], fields, {f: [1.0] for f in self.feature_inputs})
            self._cache["feature_outputs"] = [
                name for name, _ in self.outputs if blank[name][0] != full[name][0]]
        return self._cache["feature_outputs"]

    def to_dict(self) -> dict:
        return {"view": self.view, "function": self.function, "source": self.source,
                "request_inputs": list(self.request_inputs),
                "feature_inputs": list(self.feature_inputs),
                "outputs": [list(o) for o in self.outputs]}

    @classmethod
    def from_dict(cls, d: dict) -> RequestFunction:
        return cls(d["view"], d["function"], d["source"], tuple(d["request_inputs"]),
                   tuple(d["feature_inputs"]), tuple((a, b) for a, b in d["outputs"]))


def _nulls(values: list) -> list:
    """NaN -> None (a null feature or field); only NaN differs from itself."""
    return [None if v != v else v for v in values]
