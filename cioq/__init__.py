"""The `cioq` command line: the one place that wires `service` and `workers` together."""
