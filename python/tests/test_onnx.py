"""ONNX export: the file passes onnx.checker, and onnxruntime's scores equal tastebud's."""

import json

import numpy as np
import pytest

import tastebud
from conftest import TRAIN_ARGS, cli_flags, run_cli

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def onnx_scores(path, users, items):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (scores,) = session.run(["score"], {"user": np.asarray(users, dtype=np.int64), "item": np.asarray(items, dtype=np.int64)})
    return scores


def check_against_tastebud(model_dir, out, pairs=200, seed=0):
    model = tastebud.Model.load(model_dir)
    ids = json.loads((out.parent / (out.name + ".ids.json")).read_text())
    assert list(ids["users"]) == list(model.user_ids) and list(ids["users"].values()) == list(range(len(model.user_ids)))
    assert list(ids["items"]) == list(model.item_ids)
    rng = np.random.default_rng(seed)
    users = rng.integers(0, len(model.user_ids), pairs)
    items = rng.integers(0, len(model.item_ids), pairs)
    got = onnx_scores(out, users, items)
    assert got.shape == (pairs,) and got.dtype == np.float32
    expected = np.empty(pairs, dtype=np.float32)
    for k, (u, i) in enumerate(zip(users, items)):
        item = model.item_ids[i]
        ranked, scores = model.rank(model.user_ids[u], [item])
        assert ranked[0] == item
        expected[k] = scores[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["neumf", "gmf", "mlp"])
def test_export_checks_and_scores_like_tastebud(trained, tmp_path, kind):
    out = tmp_path / f"{kind}.onnx"
    printed = run_cli("export", "--model", trained[kind], "--format", "onnx", "--out", out)
    assert "exported" in printed
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["user", "item"]
    assert [o.name for o in proto.graph.output] == ["score"]
    ops = {n.op_type for n in proto.graph.node}
    assert {"Gather", "Sigmoid"} <= ops
    if kind != "gmf":
        assert {"Gemm", "Relu"} <= ops
    assert {p.key: p.value for p in proto.metadata_props}["tastebud.model"] == kind
    check_against_tastebud(trained[kind], out)


def test_python_export_writes_the_command_lines_file(trained, tmp_path):
    run_cli("export", "--model", trained["neumf"], "--format", "onnx", "--out", tmp_path / "cli" / "m.onnx")
    report = tastebud.Model.load(trained["neumf"]).export_onnx(tmp_path / "py" / "m.onnx")
    assert report["users"] == 300
    for name in ("m.onnx", "m.onnx.ids.json"):
        assert (tmp_path / "py" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()


def test_a_metadata_model_exports_its_folded_twin(dataset, tmp_path):
    options = dict(TRAIN_ARGS, metadata="items")
    run_cli("train", "--data", dataset, "--out", tmp_path / "meta", "--no-progress", *cli_flags(options))
    run_cli("export", "--model", tmp_path / "meta", "--format", "onnx", "--out", tmp_path / "meta.onnx")
    onnx.checker.check_model(onnx.load(str(tmp_path / "meta.onnx")), full_check=True)
    check_against_tastebud(tmp_path / "meta", tmp_path / "meta.onnx", seed=1)


def test_export_refuses_what_the_graph_cannot_hold(dataset, tmp_path):
    run_cli("train", "--model", "popularity", "--data", dataset, "--out", tmp_path / "pop", "--eval", "none")
    with pytest.raises(tastebud.Error, match="popularity recipe"):
        tastebud.Model.load(tmp_path / "pop").export_onnx(tmp_path / "pop.onnx")
    options = dict(TRAIN_ARGS, context="DEVICE_TYPE", epochs=1)
    run_cli("train", "--data", dataset, "--out", tmp_path / "ctx", "--no-progress", *cli_flags(options))
    with pytest.raises(tastebud.Error, match="--context"):
        tastebud.Model.load(tmp_path / "ctx").export_onnx(tmp_path / "ctx.onnx")
    assert not (tmp_path / "ctx.onnx").exists()


def test_the_sequence_model_exports_standard_ops_that_answer_like_tastebud(dataset, tmp_path):
    """sasrec's graph reads a session's items and scores every item; the probabilities batch-infer
    gives that session's top items are the graph's, to float rounding."""
    model_dir, out = tmp_path / "sasrec", tmp_path / "sasrec.onnx"
    run_cli("train", "--model", "sasrec", "--data", dataset, "--out", model_dir, "--no-progress", "--epochs", "1",
            "--hidden", "16", "--heads", "2", "--max-sequence", "8", "--threads", "1")
    run_cli("export", "--model", model_dir, "--format", "onnx", "--out", out)
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["items"]
    assert {"MatMul", "Softmax", "LayerNormalization"} <= {n.op_type for n in proto.graph.node}
    ids = json.loads((tmp_path / "sasrec.onnx.ids.json").read_text())
    items = list(ids["items"])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for recent in ([items[5], items[17], items[3]], items[:12]):  # within and beyond the window of 8
        queries = tmp_path / "q.jsonl"
        queries.write_text(json.dumps({"userId": "fresh-session", "recentItems": recent, "numResults": 10}) + "\n")
        run_cli("batch-infer", "--model", model_dir, "--input", queries, "--output", tmp_path / "a.jsonl")
        answer = json.loads((tmp_path / "a.jsonl").read_text())["output"]
        (score,) = session.run(["score"], {"items": np.array([ids["items"][i] for i in recent[-8:]], dtype=np.int64)})
        assert score.shape == (len(items),)
        got = [score[ids["items"][i]] for i in answer["recommendedItems"]]
        np.testing.assert_allclose(got, answer["scores"], rtol=0, atol=1e-5)
