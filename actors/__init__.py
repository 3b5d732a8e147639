"""What runs inside Ray workers: one file per role, plus the plumbing that places, starts, calls, syncs and
recreates groups of them. Never imports `launch`."""
