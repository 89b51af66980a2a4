"""Training scripts behind `scope-trl scope` and `scope-trl dgpo` (also runnable as `examples/scope.py`, `examples/dgpo.py`)."""
