"""Shared fixtures: a small synthetic shop, imported and trained once per session by the
command line, so that every test can hold the Python package against `tastebud` itself."""

import json
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def cli_path():
    path = os.environ.get("TASTEBUD_CLI") or str(REPO / "build" / "host" / "tastebud")
    if not os.path.exists(path):
        pytest.skip(f"the tastebud command line is not built at {path} (set TASTEBUD_CLI)")
    return path


def run_cli(*args):
    """Runs `tastebud ARGS...`; returns stdout; fails the test with stderr when it fails."""
    done = subprocess.run([cli_path(), *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, f"tastebud {' '.join(map(str, args))} failed:\n{done.stderr}"
    return done.stdout


def batch_infer(model_dir, queries, tmp, *extra):
    """The command line's answers to query dicts, in order."""
    tmp = pathlib.Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    run_cli("batch-infer", "--model", model_dir, "--input", tmp / "queries.jsonl", "--output",
            tmp / "results.jsonl", "--device", "cpu", *extra)
    return [json.loads(line) for line in (tmp / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("shop")
    run_cli("generate", "--users", 300, "--items", 150, "--interactions", 9000, "--seed", 5, "--threads", 1,
            "--out", root / "csv")
    return root / "csv"


@pytest.fixture(scope="session")
def dataset(shop, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "data"
    run_cli("import", "--interactions", shop / "interactions.csv", "--users", shop / "users.csv", "--items",
            shop / "items.csv", "--out", out, "--quiet")
    return out


TRAIN_ARGS = {"epochs": 2, "batch_size": 512, "seed": 7, "threads": 1, "lr": 0.005}


def cli_flags(options):
    flags = []
    for key, value in options.items():
        flags += [f"--{key.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, list) else value]
    return flags


@pytest.fixture(scope="session")
def trained(dataset, tmp_path_factory):
    """kind -> a model directory trained by the command line (neumf, gmf, mlp)."""
    root = tmp_path_factory.mktemp("models")
    models = {}
    for kind in ("neumf", "gmf", "mlp"):
        out = root / kind
        run_cli("train", "--data", dataset, "--out", out, "--model", kind, "--no-progress",
                *cli_flags(TRAIN_ARGS))
        models[kind] = out
    return models
