# A stand-in cold module for tests/onbox/test_cold.py: the package stays in RAM
# and counts how many times its submodule `probe` was loaded.
LOADS = [0]
