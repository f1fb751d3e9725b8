"""Developer tools that check the code base (run as `python -m tests.tools.NAME`)."""
