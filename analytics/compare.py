"""Do two stores answer an analyst query with the same rows? Used by the live Pinot tests and
the demo: row order is free (ties in ORDER BY may come in any order), numbers are compared
to 1e-9 (Pinot and DuckDB sum doubles in different orders), text exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd


def sortable(df: pd.DataFrame) -> pd.DataFrame:
    """Numbers as float64, everything else as text, rows in one canonical order."""
    out = pd.DataFrame(index=range(len(df)))
    for col in df.columns:
        s = df[col].reset_index(drop=True)
        if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            out[col] = pd.to_numeric(s, errors="coerce").astype("float64")
        else:
            out[col] = s.astype(str)
    keys = [out[c].round(9) if out[c].dtype == "float64" else out[c] for c in out.columns]
    order = pd.DataFrame(dict(enumerate(keys))).sort_values(list(range(len(keys)))).index
    return out.loc[order].reset_index(drop=True)


def differences(a: pd.DataFrame, b: pd.DataFrame, rtol: float = 1e-9) -> list[str]:
    """What differs between two answers (empty: the same rows)."""
    if list(a.columns) != list(b.columns):
        return [f"columns {list(a.columns)} vs {list(b.columns)}"]
    if len(a) != len(b):
        return [f"{len(a)} rows vs {len(b)}"]
    x, y = sortable(a), sortable(b)
    out = []
    for col in x.columns:
        if x[col].dtype == "float64":
            same = np.isclose(x[col].to_numpy(), y[col].to_numpy(), rtol=rtol, atol=rtol,
                              equal_nan=True)
        else:
            same = (x[col] == y[col]).to_numpy()
        if not same.all():
            i = int(np.argmin(same))
            out.append(f"column {col}: {int((~same).sum())} row(s) differ, first "
                       f"{x[col].iloc[i]!r} vs {y[col].iloc[i]!r}")
    return out
