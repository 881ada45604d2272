#!/usr/bin/env python3
"""The house rules of issue 25, held by a test so they stay true:

1. no function in host/, engine/ or datasets/ is longer than 120 lines (universal-ctags finds them);
2. library code (engine/, datasets/, kernels/, base/) names parameters, never command-line flags,
   in its strings: `batch_size`, not --batch-size (host/parameter_words.h says them per front end);
3. no model kind is compared as a string outside its parsers (host/model_type.cpp,
   engine/src/model.cpp): everything after compares host::ModelType or ModelKind.

Usage: house_rules.py REPOSITORY_ROOT. Exits non-zero with every breach listed.
"""
import pathlib
import re
import shutil
import subprocess
import sys

MAX_LINES = 120
SOURCES = (".cpp", ".h", ".cu", ".cuh")
STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")
KINDS = "neumf|gmf|mlp|mf|popularity|trending|sims|transitions"
# A model kind held in something named for it (kind, model, type): `job.model == "sims"`; a
# sampler's "popularity" is not a model kind.
HOLDER = r"[\w.>-]*(?:kind|model|type)[\w.>()-]*"
KIND_COMPARISON = re.compile(rf'{HOLDER}\s*[!=]=\s*"({KINDS})"|"({KINDS})"\s*[!=]=\s*{HOLDER}', re.IGNORECASE)
PARSERS = {"host/model_type.cpp", "engine/src/model.cpp"}


def sources(root: pathlib.Path, folders):
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            if path.suffix in SOURCES and path.is_file():
                yield path


def long_functions(root: pathlib.Path) -> list[str]:
    ctags = shutil.which("ctags")
    if ctags is None:
        return ["universal-ctags is not installed (scripts/setup.sh installs it)"]
    files = [str(p) for p in sources(root, ["host", "engine", "datasets"]) if p.suffix == ".cpp"]
    out = subprocess.run([ctags, "--c++-kinds=f", "--fields=+ne", "--extras=-q", "-o", "-", *files],
                         capture_output=True, text=True, check=True).stdout
    breaches = []
    for line in out.splitlines():
        fields = line.split("\t")
        start = end = 0
        for f in fields[3:]:
            if f.startswith("line:"):
                start = int(f[5:])
            elif f.startswith("end:"):
                end = int(f[4:])
        if end and end - start + 1 > MAX_LINES:
            name = fields[0] if not fields[0].startswith("__anon") else "(a lambda)"
            where = pathlib.Path(fields[1]).relative_to(root)
            breaches.append(f"{where}:{start}: {name} is {end - start + 1} lines (at most {MAX_LINES})")
    return breaches


def code_of(line: str) -> str:
    """The line without a trailing // comment (outside strings, closely enough for these files)."""
    in_string = False
    for k, c in enumerate(line):
        if c == '"' and (k == 0 or line[k - 1] != "\\"):
            in_string = not in_string
        elif not in_string and line.startswith("//", k):
            return line[:k]
    return line


def flags_in_library(root: pathlib.Path) -> list[str]:
    breaches = []
    for path in sources(root, ["engine", "datasets", "kernels", "base"]):
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for literal in STRING.findall(code_of(line)):
                for flag in FLAG.findall(literal):
                    breaches.append(f"{path.relative_to(root)}:{n}: names the flag {flag} (name the parameter in backticks)")
    return breaches


def kind_strings(root: pathlib.Path) -> list[str]:
    breaches = []
    for path in sources(root, ["host", "engine", "datasets", "python/module"]):
        rel = str(path.relative_to(root))
        if rel in PARSERS:
            continue
        for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if KIND_COMPARISON.search(code_of(line)):
                breaches.append(f"{rel}:{n}: compares a model kind as a string (parse it into ModelType once)")
    return breaches


def main() -> int:
    root = pathlib.Path(sys.argv[1]).resolve()
    breaches = long_functions(root) + flags_in_library(root) + kind_strings(root)
    for b in breaches:
        print(b)
    print(f"house rules: {len(breaches)} breaches")
    return 1 if breaches else 0


if __name__ == "__main__":
    sys.exit(main())
