#!/usr/bin/env python3
"""Holds each command's --help and its synopsis in README.md to each other.

For every command with a synopsis in the README (a line of a ```sh block starting `tastebud CMD`,
with its continuation lines), the long flags of `tastebud CMD --help` and of the synopsis must be
the same set, and each choice the synopsis lists for a flag (`--eval loo|holdout|...`) must be
named in that flag's help line. Exits non-zero with every difference listed.

Usage: help_matches_readme.py TASTEBUD README.md
"""
import re
import subprocess
import sys

COMMANDS = ["import", "train", "recommenders", "retrain", "delete-users", "serve"]
IGNORED = {"--help"}  # every command has it; the README does not repeat it
FLAG = re.compile(r"--[a-z0-9][a-z0-9-]*")


def synopses(readme: str) -> dict[str, str]:
    """The synopsis of each command: its lines in sh blocks (comment-free lines starting
    `tastebud CMD`) with their continuation lines, joined."""
    found: dict[str, str] = {}
    lines = readme.splitlines()
    in_block = False
    for i, line in enumerate(lines):
        if line.startswith("```"):
            in_block = not in_block and line.strip() == "```sh"
            continue
        if not in_block:
            continue
        m = re.match(r"tastebud ([a-z-]+) ", line)
        if not m or "#" in line:
            continue
        text = [line.rstrip("\\")]
        j = i + 1
        while j < len(lines) and (lines[j].startswith("  ") and not lines[j].startswith("```")):
            text.append(lines[j].rstrip("\\"))
            j += 1
        found[m.group(1)] = (found.get(m.group(1), "") + " " + " ".join(text)).strip()
    return found


def help_lines(tastebud: str, command: str) -> dict[str, str]:
    """Each long flag of `tastebud COMMAND --help` and the rest of its line (the description)."""
    out = subprocess.run([tastebud, command, "--help"], capture_output=True, text=True, check=True).stdout
    flags: dict[str, str] = {}
    last = None
    for line in out.splitlines():
        m = re.match(r"\s+(?:-[A-Za-z],)?(--[a-z0-9-]+)(.*)$", line)
        if m:
            last = m.group(1)
            flags[last] = m.group(2)
        elif last and re.match(r"\s{8,}\S", line):  # a description CLI11 put on the next line
            flags[last] += " " + line.strip()
        else:
            last = None
    return flags


def choices(synopsis: str) -> dict[str, list[str]]:
    """`--flag a|b|c` in a synopsis: the flag's listed choices (lower-case words only)."""
    out: dict[str, list[str]] = {}
    for m in re.finditer(r"(--[a-z0-9-]+) ([a-z0-9-]+(?:\|[a-z0-9-]+)+)(?=[\] ])", synopsis):
        out[m.group(1)] = m.group(2).split("|")
    return out


def main() -> int:
    tastebud, readme_path = sys.argv[1], sys.argv[2]
    with open(readme_path, encoding="utf-8") as f:
        found = synopses(f.read())
    problems = []
    for command in COMMANDS:
        if command not in found:
            problems.append(f"{command}: README.md has no synopsis (a sh block line `tastebud {command} ...`)")
            continue
        synopsis = found[command]
        documented = set(FLAG.findall(synopsis)) - IGNORED
        helped = help_lines(tastebud, command)
        offered = set(helped) - IGNORED
        for flag in sorted(offered - documented):
            problems.append(f"{command}: {flag} is in --help but not in README.md's synopsis")
        for flag in sorted(documented - offered):
            problems.append(f"{command}: {flag} is in README.md's synopsis but not in --help")
        for flag, values in choices(synopsis).items():
            for value in values:
                if flag in helped and not re.search(rf"(?<![a-z-]){re.escape(value)}(?![a-z-])", helped[flag]):
                    problems.append(f"{command} {flag}: README.md lists '{value}', --help does not")
    for p in problems:
        print(p)
    print(f"{len(COMMANDS)} commands checked, {len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
