"""tastebud.Client against a running `tastebud serve`: the same answers as batch-infer, events
that change the next answer, the server's 400 message raised as tastebud.Error."""

import re
import subprocess

import pytest

import tastebud
from conftest import batch_infer, cli_path


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    events = tmp_path_factory.mktemp("events")
    process = subprocess.Popen([cli_path(), "serve", "--model", str(trained["gmf"]), "--listen", "127.0.0.1:0",
                                "--events", str(events), "--threads", "2"], stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    port = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert port, line
    yield tastebud.Client(f"http://127.0.0.1:{port.group(1)}"), events
    process.terminate()
    assert process.wait(timeout=30) == 0


def test_recommendations_are_batch_infers(server, trained, tmp_path):
    client, _ = server
    items = client.recommend(user_id="u5", num_results=5)
    batch = batch_infer(trained["gmf"], [{"userId": "u5", "numResults": 5}], tmp_path)[0]["output"]
    assert [i["itemId"] for i in items] == batch["recommendedItems"]
    assert [i["score"] for i in items] == pytest.approx(batch["scores"])
    ranking = client.rank("u5", ["i1", "nope", "i2"])
    assert ranking[-1] == {"itemId": "nope"}
    assert client.health()["status"] == "ok"


def test_events_are_acknowledged_and_change_the_next_answer(server):
    client, events = server
    top = client.recommend(user_id="u6", num_results=3)[0]["itemId"]
    client.put_events(session_id="s6", user_id="u6", event_list=[{"eventType": "purchase", "itemId": top, "sentAt": 1900000000}])
    assert top not in [i["itemId"] for i in client.recommend(user_id="u6", num_results=10)]
    logged = "".join(p.read_text() for p in events.glob("events-*.csv"))
    assert f"u6,{top},1900000000,purchase," in logged
    assert "tastebud_events_written_total 1" in client.metrics()


def test_users_and_items_are_written_in_the_datasets_columns(server):
    client, events = server
    client.put_users([{"userId": "new-user", "properties": '{"age": 41, "MEMBERSHIP": "gold"}'}])
    client.put_items([{"itemId": "new-item", "properties": {"PRICE": 12.5}}])
    users = "".join(p.read_text() for p in (events / "users").glob("users-*.csv"))
    assert users.splitlines()[0] == "USER_ID,AGE,GENDER,MEMBERSHIP"
    assert "new-user,41,,gold" in users
    with pytest.raises(tastebud.Error, match=r"properties.COLOUR: not a field"):
        client.put_items([{"itemId": "x", "properties": {"COLOUR": "red"}}])


def test_a_bad_request_raises_with_the_servers_message(server):
    client, _ = server
    with pytest.raises(tastebud.Error, match=r"400: inputList: 501 items"):
        client.rank("u1", [f"i{k}" for k in range(501)])
    with pytest.raises(tastebud.Error, match="sessionId: required"):
        client.put_events(event_list=[{"eventType": "view", "itemId": "i1", "sentAt": 1}])


def test_a_recommenders_server_answers_the_use_case_each_call_names(dataset, tmp_path):
    listing = tastebud.recommenders(dataset, tmp_path / "recs", "ecommerce", candidates=["popularity"], threads=1,
                                    verbose=False)
    assert {"most-viewed", "customers-who-viewed-x-also-viewed"} <= {u["use_case"] for u in listing
                                                                     if u["status"] == "trained"}
    process = subprocess.Popen([cli_path(), "serve", "--recommenders", str(tmp_path / "recs"), "--listen",
                                "127.0.0.1:0", "--events", str(tmp_path / "events"), "--threads", "2"],
                               stdout=subprocess.PIPE, text=True)
    try:
        port = re.search(r"http://127\.0\.0\.1:(\d+)", process.stdout.readline())
        client = tastebud.Client(f"http://127.0.0.1:{port.group(1)}")
        viewed = client.recommend(user_id="u5", num_results=5, recommender="most-viewed")
        batch = batch_infer(tmp_path / "recs" / "most-viewed", [{"userId": "u5", "numResults": 5}], tmp_path)
        assert [i["itemId"] for i in viewed] == batch[0]["output"]["recommendedItems"]
        also = client.recommend(user_id="u5", item_id="i3", num_results=5,
                                recommender="arn:aws:personalize:::recommender/customers-who-viewed-x-also-viewed")
        assert len(also) == 5
        with pytest.raises(tastebud.Error, match="recommenderArn"):
            client.recommend(user_id="u5")
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0
