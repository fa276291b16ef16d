"""The two baselines, from scikit-learn (the optional extra `evaluate`, imported here only).

- `lr`: logistic regression on standardized features; a missing value (a mean over an empty
  window) becomes the training median plus a 0/1 "was missing" column, so the model can
  tell "no history" from "typical history".
- `trees`: histogram gradient boosting, which handles missing values natively and needs
  no scaling: the tree ensemble of the handbook's comparisons, fast on two cores.

Both are seeded (`random_state`), so one seed gives the same scores on every run.
"""

from __future__ import annotations

from ffs.errors import MissingDependency, TerminalError

MODELS = {"lr": "logistic regression", "trees": "gradient-boosted trees"}
EXTRA = "evaluate"


class MissingExtra(MissingDependency):
    """An optional extra of the project is not installed: names the install command."""

    def __init__(self, package: str, purpose: str, extra: str):
        TerminalError.__init__(
            self, f"{purpose} needs the Python package '{package}', which the project's "
                  f"optional extra '{extra}' installs: pip install -e '.[{extra}]' (from the "
                  f"repository; `make setup` installs it too)")


def require() -> None:
    """Fail early, before any feature is computed, when scikit-learn is missing."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise MissingExtra("scikit-learn", "ffs evaluate", EXTRA) from None


def parse(text: str) -> list[str]:
    from ffs.errors import InputError

    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if not names or unknown:
        raise InputError(f"--models: expected a comma-separated list of {sorted(MODELS)}, "
                         f"found {text!r}")
    return list(dict.fromkeys(names))


def make(name: str, seed: int):
    """An unfitted scikit-learn classifier for `name`."""
    require()
    if name == "lr":
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(SimpleImputer(strategy="median", add_indicator=True,
                                           keep_empty_features=True),
                             StandardScaler(),
                             LogisticRegression(max_iter=2000, random_state=seed))
    if name == "trees":
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(random_state=seed)
    raise ValueError(f"unknown model {name!r}")


def fit_scores(name: str, seed: int, x_train, y_train, x_test):
    """Fraud scores (probability of the fraud class) of the test rows, after fitting on the
    training rows."""
    model = make(name, seed)
    model.fit(x_train, y_train)
    return model.predict_proba(x_test)[:, 1]
