"""One file per task: a frozen dataclass config and one run()."""
