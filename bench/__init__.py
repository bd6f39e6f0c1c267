"""Benchmarks: each figure is a ratio to a baseline measured in the same run (`bench/run`).

Like every entry point, the benchmarks load the lane registry before anything builds a key
or reads a job's lane: key names and job kinds come from the lanes' registrations.
"""

import service.lanes.registry  # noqa: F401
