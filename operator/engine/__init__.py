"""The `engine` runtime: one Docker engine, one container per project (`runtime.py`), its pure
planner (`planner.py`) over what Docker shows (`state.py`), and its Docker driver (`docker/`)."""
