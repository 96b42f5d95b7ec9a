"""Built-in arrival traces for the simulator, as seeded JSON specs (see `traces.py`)."""
