"""The pure core of the RLHF system: config, algorithm math, data, models, generation. Never imports Ray."""
