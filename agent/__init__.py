# The on-box agent. Runs unchanged on MicroPython (ESP32 or unix port) and CPython.
# Keep this file empty of imports: it is loaded on every boot.
VERSION = "0.1.0"
