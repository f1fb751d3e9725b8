# The hardware abstraction layer. A HAL is an object with:
#   name                      "sim" or "esp32"
#   now()                     epoch seconds, or None while the clock is unknown
#   async sleep(seconds)      sleep in the HAL's time (the sim clock may run fast)
#   mac()                     the box's base MAC, "aa:bb:cc:dd:ee:ff"
#   health()                  dict of cheap hardware facts for the health report
#   enforce(section, doc)     take an applied desired document into effect
# Later modules add their own methods (coverage, meters); each is optional and
# the agent reports "unsupported" where a HAL lacks one.


def load(name, config):
    if name == "sim":
        from agent.hal import sim
        return sim.SimHal(config)
    if name == "esp32":
        from agent.hal import esp32
        return esp32.Esp32Hal(config)
    raise ValueError("unknown HAL: %s" % name)
