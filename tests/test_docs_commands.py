"""The README and the guides stay true: every relative link resolves to a file in the
repository, every `homebox ...` command line shown in a code block parses with the
real argument parser, and the README keeps its two-command promise.

Guides owned by other work (docs/technician.md, docs/performance.md) are checked as
soon as they exist; docs/contract/ is the contract's own (tests/test_contract_docs.py).
"""
from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from homebox.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md"] + list((ROOT / "docs").glob("*.md"))
              + list((ROOT / "docs" / "decisions").glob("*.md")))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def links(text: str) -> list[str]:
    # links inside code blocks are code, not links
    out, in_code = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            out += LINK.findall(line)
    return out


def code_blocks(text: str) -> list[list[str]]:
    """The fenced code blocks, as lists of lines with backslash continuations joined."""
    blocks, cur, buf = [], None, ""
    for line in text.splitlines():
        if FENCE.match(line):
            if cur is None:
                cur = []
            else:
                blocks.append(cur)
                cur, buf = None, ""
            continue
        if cur is None:
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        cur.append(buf + line)
        buf = ""
    return blocks


def homebox_commands(text: str) -> list[list[str]]:
    """argv lists of every `homebox ...` command in the code blocks. In a block with
    `$ ` prompts only the prompted lines are commands (the rest is output); VAR=value
    prefixes are dropped; `;`, `&`, `&&`, `||` and `|` separate commands."""
    cmds = []
    for block in code_blocks(text):
        prompted = any(ln.lstrip().startswith("$ ") for ln in block)
        for line in block:
            s = line.strip()
            if prompted:
                if not s.startswith("$ "):
                    continue
                s = s[2:]
            if "homebox " not in s:
                continue
            try:
                toks = shlex.split(s, comments=True)
            except ValueError:
                continue                  # not shell: an odd quote in some output
            cur: list[str] = []
            for t in toks + [";"]:
                if t in (";", "&", "&&", "||", "|"):
                    while cur and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", cur[0]):
                        cur.pop(0)
                    if cur and cur[0] == "homebox":
                        cmds.append(cur[1:])
                    cur = []
                else:
                    cur.append(t)
    return cmds


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_relative_links_resolve(doc):
    bad = []
    for target in links(doc.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue                      # http:, https:, mailto:, in-page anchors
        path = target.split("#", 1)[0]
        if not (doc.parent / path).exists():
            bad.append(target)
    assert not bad, f"{rel(doc)}: links to missing files: {bad}"


@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_homebox_commands_parse(doc):
    parser = build_parser()
    bad = []
    for argv in homebox_commands(doc.read_text()):
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                parser.parse_args(argv)
        except SystemExit as e:
            if e.code:                    # --help exits 0
                bad.append(f"homebox {shlex.join(argv)}: {err.getvalue().strip().splitlines()[-1]}")
    assert not bad, f"{rel(doc)}:\n" + "\n".join(bad)


def test_the_commands_are_found():
    # the extraction itself: prompts, comments, `;`, continuations, env prefixes
    text = "\n".join(["```sh", "homebox ops status --json ; homebox ops report --out r/",
                      "X=1 homebox ops validate parental a.json   # comment",
                      "homebox ops ingest --broker mqtt://h:1 \\", "    --db sqlite:///f.db",
                      "report/index.html", "```", "homebox not in a block",
                      "```console", "$ homebox ops status", "   homebox fleet", "$ homebox box run --box-id b &", "```"])
    assert homebox_commands(text) == [["ops", "status", "--json"], ["ops", "report", "--out", "r/"],
                                      ["ops", "validate", "parental", "a.json"],
                                      ["ops", "ingest", "--broker", "mqtt://h:1", "--db", "sqlite:///f.db"],
                                      ["ops", "status"], ["box", "run", "--box-id", "b"]]
    assert links("[a](x.md) ![b](img/y.png)\n```\n[c](z.md)\n```") == ["x.md", "img/y.png"]


def test_readme_keeps_the_two_command_promise():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make demo" in quick and "make test" in quick
    targets = re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.M)
    assert {"demo", "test"} <= set(targets)
    # every guide in docs/ is reachable from the README
    linked = {Path(t.split("#")[0]).name for t in links(readme)}
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if p.name not in linked]
    assert not missing, f"README.md does not link these guides: {missing}"
