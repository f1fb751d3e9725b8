# The section rules, one package: the validators (sections, channels, options,
# parental), the TV lineup, the parental schedule and its time zones, the
# signature of desired documents, and the effects of the applied documents.
# Loaded for a document check or an effects pass, then released as a whole
# (release): updates are rare, and RAM is the box's scarcest resource
# (docs/decisions/0010-code-seams.md). This file stays tiny: it is what a
# quiet box may load to learn the section names.

# The desired-document sections, the one list: the twin's validators, the
# effects, the operator tools and the backend all take it from here.
SECTIONS = ("parental", "channels", "options")


def release():
    """Forget every module of the package, and the package itself."""
    import sys

    from agent.compat import forget
    for m in [m for m in sys.modules if m.startswith("agent.rules.")]:
        forget(m)
    forget("agent.rules")
