"""Pure feature logic: data model, window semantics and the vectorised engine.

No pyspark, redis or feast import here; engines at the edges (jobs/, online/) call in.
"""
