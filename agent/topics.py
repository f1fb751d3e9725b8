# The MQTT topic layout (docs/contract/asyncapi.yaml). Shared by box and backend.
ROOT = "homebox/v1"
SCHEMA_VERSION = 1


def base(box_id):
    return "%s/%s" % (ROOT, box_id)


def status(box_id):
    return base(box_id) + "/status"


def telemetry(box_id, kind):
    return "%s/telemetry/%s" % (base(box_id), kind)


def desired(box_id, section):
    return "%s/desired/%s" % (base(box_id), section)


def reported(box_id, section):
    return "%s/reported/%s" % (base(box_id), section)


def event(box_id):
    return base(box_id) + "/event"


def parse(topic):
    """'homebox/v1/BOX/telemetry/health' -> ('BOX', 'telemetry', 'health'); None if foreign."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != "homebox" or parts[1] != "v1":
        return None
    return (parts[2], parts[3], "/".join(parts[4:]) if len(parts) > 4 else None)
