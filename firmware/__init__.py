"""Firmware images for homebox boxes: the agent compiled to .mpy on a littlefs v2
image sized to the MicroPython vfs partition, per-box overlay files, a manifest,
and (given the pinned MicroPython base .bin) a merged full-flash image.

Public API: firmware.build.build(), firmware.build.check_fs_image(),
firmware.partitions (flash facts and the binary partition table format).
"""
