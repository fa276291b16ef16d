"""`ffs evaluate`: how well a feature set detects fraud, measured as the fraud handbook does.

Train on one period, skip a label delay, test on the next (`split.py`); the features of each
transaction at its own timestamp from the training-set engine; two baselines (`models.py`,
scikit-learn: the optional extra `evaluate`); AUC ROC, average precision and card
precision@k (`metrics.py`); one run per feature set (`feature_sets.py`) side by side, as a
JSON report and an HTML chart (`report.py`); `run.py` ties them together.

Nothing here names a feature: feature sets come from the loaded repo's services and
features, whatever they are.
"""
