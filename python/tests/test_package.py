"""The Python package against the command line: each call's answer equals `tastebud`'s on the
same model and input."""

import json
import pathlib
import subprocess
import threading

import numpy as np
import pytest

import tastebud
from conftest import TRAIN_ARGS, batch_infer, cli_flags, cli_path, run_cli


def columns(dataset_dir):
    """Every column file of a dataset, by name (the bytes on disk)."""
    root = pathlib.Path(dataset_dir)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.col"))}


def test_import_from_paths_writes_the_command_lines_dataset(shop, dataset, tmp_path):
    report = tastebud.import_dataset(tmp_path / "data", interactions=shop / "interactions.csv",
                                     users=shop / "users.csv", items=shop / "items.csv")
    assert report["interactions"] == 9000 - report["duplicates"]
    assert report["users"] == 300
    assert columns(tmp_path / "data") == columns(dataset)


def test_import_from_dataframes_equals_import_from_the_csvs(shop, dataset, tmp_path):
    pd = pytest.importorskip("pandas")
    frames = {name: pd.read_csv(shop / f"{name}.csv", dtype=str, keep_default_na=False)
              for name in ("interactions", "users", "items")}
    tastebud.import_dataset(tmp_path / "data", **frames)
    assert columns(tmp_path / "data") == columns(dataset)


def test_import_reports_its_progress_in_bytes(shop, tmp_path):
    calls = []
    tastebud._core.import_dataset(str(tmp_path / "data"), str(shop / "interactions.csv"), "", "", "", "full", False, 0,
                                  lambda done, total: calls.append((done, total)))
    size = (shop / "interactions.csv").stat().st_size
    assert calls and calls[-1] == (size, size)
    assert all(0 < done <= total == size for done, total in calls)


def test_import_errors_carry_the_engines_message(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("USER_ID,ITEM_ID,TIMESTAMP\nu1,i1,not-a-time\n")
    with pytest.raises(tastebud.Error, match=r"bad.csv:2.*TIMESTAMP"):
        tastebud.import_dataset(tmp_path / "data", interactions=bad)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("kind", ["neumf", "gmf", "mlp"])
def test_train_gives_the_command_lines_model(dataset, trained, tmp_path, kind):
    epochs = []
    model = tastebud.train(dataset, tmp_path / kind, model=kind, progress=False, verbose=False,
                           on_epoch=epochs.append, **TRAIN_ARGS)
    assert model.kind == kind
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert [e["epoch"] for e in model.training["history"]] == [1, 2]
    # Same seed and settings: the bit-identical model, and the same per-epoch numbers.
    assert (tmp_path / kind / "model.bin").read_bytes() == (trained[kind] / "model.bin").read_bytes()
    cli_rows = [json.loads(line) for line in (trained[kind] / "metrics.jsonl").read_text().splitlines()]
    assert [e["loss"] for e in epochs] == [r["loss"] for r in cli_rows]
    assert [e["metrics"] for e in epochs] == [r["metrics"] for r in cli_rows]


def test_train_reports_progress_and_log_lines(dataset, tmp_path, capsys):
    calls = []
    tastebud._core.train(str(dataset), str(tmp_path / "m"), dict(TRAIN_ARGS), lambda *a: calls.append(a), None,
                         print)
    epochs_seen = {c[0] for c in calls}
    assert epochs_seen == {1, 2}
    assert all(c[1] == 2 and 0 < c[2] <= c[3] for c in calls)
    assert calls[-1][2] == calls[-1][3]  # the last call of an epoch says it is complete
    out = capsys.readouterr().out
    assert "epoch   1  loss" in out and "epoch   2  loss" in out


def test_an_exception_in_a_callback_stops_training_and_resume_finishes_it(dataset, trained, tmp_path):
    class Stop(Exception):
        pass

    def stop_in_the_second_epoch(epoch, epochs, done, total, loss):
        if epoch == 2:
            raise Stop()

    with pytest.raises(Stop):
        tastebud._core.train(str(dataset), str(tmp_path / "m"), dict(TRAIN_ARGS), stop_in_the_second_epoch, None, None)
    assert (tmp_path / "m" / "checkpoint.bin").exists()  # epoch 1 is kept
    model = tastebud.train(dataset, tmp_path / "m", resume=True, progress=False, verbose=False, **TRAIN_ARGS)
    assert [e["epoch"] for e in model.training["history"]] == [1, 2]
    assert (tmp_path / "m" / "model.bin").read_bytes() == (trained["neumf"] / "model.bin").read_bytes()


def test_train_errors_carry_the_engines_message(dataset, tmp_path):
    with pytest.raises(tastebud.Error, match="unknown --loss 'nope'"):
        tastebud.train(dataset, tmp_path / "a", loss="nope", progress=False, verbose=False)
    with pytest.raises(tastebud.Error, match="unknown option 'epoch'"):
        tastebud.train(dataset, tmp_path / "b", epoch=3, progress=False, verbose=False)
    with pytest.raises(tastebud.Error, match="wrong type"):
        tastebud.train(dataset, tmp_path / "c", epochs="many", progress=False, verbose=False)
    # Library messages name the parameter; the package says it as a keyword, not as a flag.
    with pytest.raises(tastebud.Error, match=r"^epochs= must be positive"):
        tastebud.train(dataset, tmp_path / "d", epochs=0, progress=False, verbose=False)
    with pytest.raises(tastebud.Error, match=r"unknown precision= 'fp16': expected fp32, tf32 or bf16"):
        tastebud.train(dataset, tmp_path / "e", precision="fp16", progress=False, verbose=False)
    with pytest.raises(tastebud.Error, match=r"unknown cuda_kernels= 'fast': expected separate or fused"):
        tastebud.train(dataset, tmp_path / "f", cuda_kernels="fast", progress=False, verbose=False)
    with pytest.raises(tastebud.Error, match=r"unknown rank_exchange= 'nccl': expected host or device"):
        tastebud.train(dataset, tmp_path / "g", rank_exchange="nccl", progress=False, verbose=False)


def test_training_releases_the_gil(dataset, tmp_path):
    """Between the first and the last progress call the training runs in C++; the main thread's
    loop only advances there if the GIL was let go."""
    spins, seen = [0], []
    options = dict(TRAIN_ARGS, epochs=6, batch_size=64)
    thread = threading.Thread(target=lambda: tastebud._core.train(
        str(dataset), str(tmp_path / "m"), options, lambda *progress: seen.append(spins[0]), None, None))
    thread.start()
    while thread.is_alive():
        spins[0] += 1
    thread.join()
    assert len(seen) >= 6  # at least the end of each epoch
    assert seen[-1] - seen[0] > 1000


def users_of(model_dir):
    return json.loads((pathlib.Path(model_dir) / "user_ids.json").read_text())


def items_of(model_dir):
    return json.loads((pathlib.Path(model_dir) / "item_ids.json").read_text())


def assert_answers_equal(ids, scores, cli_output):
    assert list(ids) == cli_output["recommendedItems"]
    expected = np.array([np.nan if s is None else s for s in cli_output["scores"]], dtype=np.float32)
    np.testing.assert_array_equal(scores, expected)


@pytest.mark.parametrize("kind", ["neumf", "gmf", "mlp"])
def test_recommend_equals_batch_infer(trained, tmp_path, kind):
    model = tastebud.Model.load(trained[kind])
    users = users_of(trained[kind])[:20] + ["someone-new"]
    cli = batch_infer(trained[kind], [{"userId": u, "numResults": 10} for u in users], tmp_path)
    ids, scores = model.recommend(users, n=10)
    assert ids.shape == (len(users), 10) and scores.dtype == np.float32
    for row, answer in enumerate(cli):
        assert_answers_equal(ids[row], scores[row], answer["output"])
    one_ids, one_scores = model.recommend(users[3], n=10)
    assert_answers_equal(one_ids, one_scores, cli[3]["output"])


def test_recommend_with_a_filter_equals_batch_infer(trained, tmp_path):
    expression = "EXCLUDE ItemID WHERE Items.PRICE > $MAX | EXCLUDE ItemID WHERE Interactions.EVENT_TYPE IN (\"purchase\")"
    model = tastebud.Model.load(trained["neumf"])
    users = users_of(trained["neumf"])[:15]
    cli = batch_infer(trained["neumf"], [{"userId": u, "numResults": 8, "filterValues": {"MAX": "30"}} for u in users],
                      tmp_path, "--filter", expression)
    ids, scores = model.recommend(users, n=8, filter=expression, filter_values={"MAX": 30})
    for row, answer in enumerate(cli):
        assert_answers_equal(ids[row][ids[row] != ""], scores[row][ids[row] != ""], answer["output"])


def test_recommend_keeping_seen_items_equals_keep_seen(trained, tmp_path):
    model = tastebud.Model.load(trained["gmf"])
    users = users_of(trained["gmf"])[:10]
    cli = batch_infer(trained["gmf"], [{"userId": u, "numResults": 12} for u in users], tmp_path, "--keep-seen")
    ids, scores = model.recommend(users, n=12, filter_already_liked_items=False)
    for row, answer in enumerate(cli):
        assert_answers_equal(ids[row], scores[row], answer["output"])


def test_rank_equals_batch_infer_item_lists(trained, tmp_path):
    model = tastebud.Model.load(trained["neumf"])
    items = items_of(trained["neumf"])
    rng = np.random.default_rng(3)
    queries = []
    for user in users_of(trained["neumf"])[:10]:
        chosen = [items[i] for i in rng.choice(len(items), 7, replace=False)] + ["not-an-item"]
        queries.append({"userId": user, "itemList": chosen})
    cli = batch_infer(trained["neumf"], queries, tmp_path)
    for query, answer in zip(queries, cli):
        ids, scores = model.rank(query["userId"], query["itemList"])
        assert_answers_equal(ids, scores, answer["output"])
        assert ids[-1] == "not-an-item" and np.isnan(scores[-1])


def test_similar_items_equals_batch_infer_item_queries(trained, tmp_path):
    model = tastebud.Model.load(trained["neumf"])
    items = items_of(trained["neumf"])[:12]
    cli = batch_infer(trained["neumf"], [{"itemId": i, "numResults": 6} for i in items], tmp_path)
    ids, scores = model.similar_items(items, n=6)
    for row, answer in enumerate(cli):
        assert_answers_equal(ids[row], scores[row], answer["output"])


def test_factors_are_read_only_views_of_the_model(trained):
    model = tastebud.Model.load(trained["neumf"])
    users, items = model.user_factors, model.item_factors
    config = model.config["model_config"]
    assert users.shape == (len(model.user_ids), config["factors"])
    assert items.shape == (len(model.item_ids), config["factors"])
    assert users.dtype == np.float32 and not users.flags.writeable and not users.flags.owndata
    assert np.shares_memory(users, model.user_factors)  # no copy: the same memory each time
    assert model.user_mlp_embeddings.shape == (len(model.user_ids), config["layers"][0] // 2)
    with pytest.raises(ValueError):
        users[0, 0] = 1.0


def test_gmf_scores_follow_from_the_factors(trained, tmp_path):
    """A GMF model's probability is sigmoid((u * i) . head + bias): the views hold the numbers
    the scorer uses (the head comes from the ONNX export's initializers)."""
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper
    model = tastebud.Model.load(trained["gmf"])
    model.export_onnx(tmp_path / "gmf.onnx")
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "gmf.onnx")).graph.initializer}
    np.testing.assert_array_equal(weights["user_gmf"], model.user_factors)
    user = model.user_ids[4]
    ids, scores = model.rank(user, list(model.item_ids[:20]))
    rows = [list(model.item_ids).index(i) for i in ids]
    logits = (model.user_factors[4] * model.item_factors[rows]) @ weights["head_weight"][:, 0] + weights["head_bias"][0]
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-logits)), atol=1e-6)


def test_model_errors_carry_the_engines_message(trained, tmp_path):
    with pytest.raises(tastebud.Error, match="not a directory"):
        tastebud.Model.load(tmp_path / "missing")
    model = tastebud.Model.load(trained["neumf"])
    with pytest.raises(tastebud.Error, match="numResults must be an integer from 1 to 500"):
        model.recommend("u1", n=501)
    with pytest.raises(tastebud.FilterError, match="position 22: the items have no field NOPE"):
        model.recommend("u1", filter='EXCLUDE ItemID WHERE Items.NOPE IN ("a")')


def test_transitions_trains_from_python_and_answers_like_batch_infer(dataset, tmp_path):
    model = tastebud.train(dataset, tmp_path / "next", model="transitions", transition_window=5, recent_items=3,
                           eval="none", threads=1, progress=False, verbose=False)
    recipe = json.loads((tmp_path / "next" / "config.json").read_text())["recipe"]
    assert (recipe["transition_window"], recipe["recent_items"], recipe["neighbors"]) == (5, 3, 1000)
    item = items_of(tmp_path / "next")[0]
    cli = batch_infer(tmp_path / "next", [{"userId": "u1", "numResults": 5}, {"itemId": item, "numResults": 5}],
                      tmp_path / "q")
    assert_answers_equal(*model.recommend("u1", n=5), cli[0]["output"])
    assert_answers_equal(*model.similar_items(item, n=5), cli[1]["output"])


def test_recipes_answer_like_batch_infer(dataset, tmp_path):
    run_cli("train", "--model", "popularity", "--data", dataset, "--out", tmp_path / "pop", "--eval", "none")
    model = tastebud.Model.load(tmp_path / "pop")
    cli = batch_infer(tmp_path / "pop", [{"userId": "u1", "numResults": 5}], tmp_path / "q")
    ids, scores = model.recommend("u1", n=5)
    assert_answers_equal(ids, scores, cli[0]["output"])
    with pytest.raises(tastebud.Error, match="recipe: it has no learned factors"):
        model.user_factors


def test_sasrec_trains_from_python_and_answers_like_batch_infer(dataset, tmp_path):
    model = tastebud.train(dataset, tmp_path / "seq", model="sasrec", hidden=16, blocks=1, heads=2, max_sequence=10,
                           dropout=0.1, epochs=2, eval="loo", validation_users=50, threads=1, progress=False,
                           verbose=False)
    config = json.loads((tmp_path / "seq" / "config.json").read_text())
    assert config["model"] == "sasrec"
    assert (config["sequence"]["hidden"], config["sequence"]["heads"], config["sequence"]["max_sequence"]) == (16, 2, 10)
    assert (config["training"]["negatives"], config["training"]["lr"]) == (1, pytest.approx(0.005))  # its defaults
    assert len(model.training["history"]) == 2 and "hr@10" in model.training["history"][0]["metrics"]
    item = items_of(tmp_path / "seq")[0]
    queries = [{"userId": "u1", "numResults": 5}, {"itemId": item, "numResults": 5},
               {"userId": "a-new-session", "recentItems": [item], "numResults": 5}]
    cli = batch_infer(tmp_path / "seq", queries, tmp_path / "q")
    assert_answers_equal(*model.recommend("u1", n=5), cli[0]["output"])
    assert_answers_equal(*model.similar_items(item, n=5), cli[1]["output"])
    assert cli[2]["output"]["reason"] == "user unknown to the model: scored from the recent items"
    with pytest.raises(tastebud.Error, match="sasrec has no per-user factors"):
        model.user_factors
    with pytest.raises(tastebud.Error, match="heads"):
        tastebud.train(dataset, tmp_path / "bad", model="sasrec", hidden=16, heads=3, progress=False, verbose=False)


ECOMMERCE = {"recommended-for-you", "customers-who-viewed-x-also-viewed", "frequently-bought-together", "best-sellers",
             "most-viewed"}


def test_recommenders_train_what_the_data_supports_and_answer_like_batch_infer(dataset, tmp_path):
    listing = tastebud.recommenders(dataset, tmp_path / "recs", "ecommerce", candidates=["popularity"], threads=1,
                                    verbose=False)
    status = {u["use_case"]: u["status"] for u in listing}
    assert set(status) == ECOMMERCE
    assert status["most-viewed"] == "trained" and status["customers-who-viewed-x-also-viewed"] == "trained"
    for u in listing:
        assert u["status"] == "trained" or "events" in u["reason"]
        assert (tmp_path / "recs" / u["use_case"]).is_dir() == (u["status"] == "trained")
    model = tastebud.Model.load(tmp_path / "recs" / "most-viewed")
    assert model.config["use_case"] == "most-viewed"
    cli = batch_infer(tmp_path / "recs" / "most-viewed", [{"userId": "u1", "numResults": 5}, {"itemId": "i1"}],
                      tmp_path / "q")
    assert_answers_equal(*model.recommend("u1", n=5), cli[0]["output"])
    assert "userId" in cli[1]["error"]
    # One use case from train(), the events named by the service's roles through event_map.
    one = tastebud.train(dataset, tmp_path / "viewed", use_case="most-viewed", event_map={"view": ["view", "cart"]},
                         progress=False, verbose=False)
    assert one.config["recipe"]["events"] == ["view", "cart"]
    with pytest.raises(tastebud.Error, match="use_case"):
        tastebud.train(dataset, tmp_path / "bad", use_case="most-watched", progress=False, verbose=False)
    # The command line's train --use-case gives the same model directory.
    run_cli("train", "--use-case", "most-viewed", "--event-map", "view=view,cart", "--data", dataset, "--out",
            tmp_path / "cli-viewed", "--no-progress")
    cli_config = json.loads((tmp_path / "cli-viewed" / "config.json").read_text())
    assert (cli_config["use_case"], cli_config["recipe"]["events"]) == ("most-viewed", ["view", "cart"])
    assert (tmp_path / "cli-viewed" / "recipe.bin").read_bytes() == (tmp_path / "viewed" / "recipe.bin").read_bytes()
    done = subprocess.run([cli_path(), "train", "--use-case", "most-viewed", "--model", "sims", "--data", str(dataset),
                           "--out", str(tmp_path / "refused")], capture_output=True, text=True)
    assert done.returncode != 0 and "fixes its model" in done.stderr


def test_normalized_scores_equal_batch_infers(dataset, tmp_path):
    run_cli("train", "--model", "popularity", "--data", dataset, "--out", tmp_path / "pop", "--eval", "none")
    model = tastebud.Model.load(tmp_path / "pop", normalize_scores=True)
    cli = batch_infer(tmp_path / "pop", [{"userId": "u1", "numResults": 5}], tmp_path / "q", "--normalize-scores")
    ids, scores = model.recommend("u1", n=5)
    assert_answers_equal(ids, scores, cli[0]["output"])
    assert 0 < scores.sum() < 1
