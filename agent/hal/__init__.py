# The hardware abstraction layer. A HAL is an object with:
#   name                      "sim" or "esp32"
#   now()                     epoch seconds, or None while the clock is unknown
#   async sleep(seconds)      sleep in the HAL's time (the sim clock may run fast)
#   mac()                     the box's base MAC, "aa:bb:cc:dd:ee:ff"
#   health()                  dict of cheap hardware facts for the health report
#   enforce(section, doc)     take an applied desired document into effect
# Optional methods; the agent reports "unsupported" (or leaves the section out)
# where a HAL lacks one:
#   stations()                [(mac, rssi dBm or None, seconds associated)]  coverage
#   scan()                    [(ssid, bssid, channel, rssi, ...)]            coverage
#   channel()                 our AP's channel                               coverage
#   line_idle()               True/False: little traffic in the last minute  speedtest
#   data_bytes()              (rx, tx) byte counters                         consumption
#   tic_read(buf)             bytes from the Linky TIC UART, no blocking     consumption
#   tic_set_mode(mode)        switch the UART to "historic"/"standard" baud  consumption
#   water_edges()             (now ms, [pulse edge ms, ...]) since the last call
#   ap_info()                 the tenant access point: {"ssid": str, "up": bool,
#                             "security": "wpa2" | "open"}             bench self-test
#   leases()                  {ip: mac} of the home's devices, or None where the HAL
#                             cannot tell (the ESP32)                    DNS forwarder
#   nvs_get(key)              an int kept outside the filesystem (ESP32 NVS), or None
#   nvs_set(key, value)       store and commit it; the boot counter's second copy
#                             (agent/runtime_cold.py next_boot), which survives a
#                             filesystem re-flash. The sim HAL has none.
#   nvs_get_blob(key)         bytes kept in NVS, or None; nvs_set_blob(key, b)
#                             stores and commits them: the box's secrets
#                             (agent/secretstore.py). The sim HAL has none.
# The sim HAL has them when its scenario and config enable the part
# (agent/hal/sim_homes.py).


def load(name, config):
    if name == "sim":
        from agent.hal import sim
        return sim.SimHal(config)
    if name == "esp32":
        from agent.hal import esp32
        return esp32.Esp32Hal(config)
    raise ValueError("unknown HAL: %s" % name)
