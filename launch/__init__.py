"""The `rlhf` command and the drivers: each stage reads as its algorithm's story."""
