# Driver of benchmarks/cold.py, run by CPython or the MicroPython unix port (not
# pytest, not the benchmarks package):
#     python|micropython cold_box.py CONFIG.json DOC_DIR MODE
# Boots a Box from CONFIG (agent/boot.py), then hands it the desired documents
# DOC_DIR/1.json, 2.json, ... (each {"section": s, "doc": {...}}) as the MQTT
# reader would (Box.on_message). One JSON line per document:
#   MODE loads (CPython): how many times each agent module was imported (loaded
#     afresh, not found in sys.modules) while the box handled the document;
#   MODE heap (MicroPython): the bytes it allocated, with the collector off
#     (gc.mem_alloc() before and after), and the live heap after it;
#   MODE need K FREE (MicroPython): document K gets only FREE bytes of free heap
#     (a ballast takes the rest); prints its outcome (the caller bisects FREE).
import gc
import json
import sys

counts = {}
hold = []          # the ballast


class _Count:
    # A meta path finder that only counts: Python asks it each time a module is
    # not in sys.modules, i.e. each time one is loaded.
    def find_spec(self, name, path=None, target=None):
        if name.startswith("agent."):
            counts[name] = counts.get(name, 0) + 1
        return None


def main(argv):
    cfg_path, doc_dir, mode = argv[1], argv[2], argv[3]
    upto = int(argv[4]) if mode == "need" else 0
    free = int(argv[5]) if mode == "need" else 0
    if mode == "loads":
        sys.meta_path.insert(0, _Count())
    from agent import boot
    box = boot.build(cfg_path)
    del boot
    from agent.compat import forget
    forget("agent.boot")
    gc.collect()
    print(json.dumps({"boot": dict(counts), "live": gc.mem_alloc() if mode == "heap" else None}))
    n = 1
    while True:
        try:
            with open("%s/%d.json" % (doc_dir, n)) as f:
                item = json.load(f)
        except OSError:
            break
        topic = box.t_desired + item["section"]
        payload = json.dumps(item["doc"]).encode()
        del item
        counts.clear()
        out = {"n": n}
        if mode == "heap":
            # Everything the document allocates, with the collector off.
            gc.collect()
            base = gc.mem_alloc()
            gc.disable()
            box.on_message(topic, payload)
            out["alloc"] = gc.mem_alloc() - base
            gc.enable()
            gc.collect()
            out["live_after"] = gc.mem_alloc()
        elif mode == "need":
            # Documents before `upto` go through as usual; document `upto` gets only
            # `free` bytes of free heap (a ballast takes the rest).
            if n == upto:
                gc.collect()
                hold.append(bytearray(gc.mem_free() - free))
                gc.collect()
                out["free"] = gc.mem_free()
            box.on_message(topic, payload)
            hold.clear()
        else:
            box.on_message(topic, payload)
            out["loads"] = dict(counts)
        sec = topic[len(box.t_desired):]
        out["section"] = sec
        out["status"] = box.twin.reported[sec].get("status")
        print(json.dumps(out))
        if n == upto:
            break
        n += 1


if __name__ == "__main__":
    main(sys.argv)
