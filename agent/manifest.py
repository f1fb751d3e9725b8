# A MicroPython manifest (micropython-lib style) that freezes the agent into a
# custom firmware: its bytecode and its qstrs then live in flash, not in the
# heap (docs/hardware.md, "Freezing the agent"). Build with, for example:
#   make -C ports/esp32 BOARD=ESP32_GENERIC FROZEN_MANIFEST=/path/to/agent/manifest.py
# The port's own frozen modules (asyncio, ntptime, ...) stay in. Not part of the
# agent: firmware/build.py leaves this file out of the box's filesystem.
include("$(PORT_DIR)/boards/manifest.py")  # noqa: F821
package("agent", base_path="..", opt=3)  # noqa: F821
