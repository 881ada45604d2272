# Real-data check of answering from recentItems (fold-in for neural models, history for sims/transitions):
# ml-latest-small without each user's latest rating, which is held out.
#   python3 bench/bench_sessions.py mf gmf transitions sims     (from the repository root, after a build)
# For 400 users: HR@10 over the whole catalog of (a) an anonymous session whose recentItems are the
# user's last 5 training items, (b) the same session before this change (popular items), (c) the known user.
import csv, json, random, subprocess, sys, collections
import os
T = os.environ.get("TASTEBUD", "build/host/tastebud"); W = os.environ.get("WORK_DIR", "/tmp/tastebud-sessions")
os.makedirs(W, exist_ok=True)
rows = collections.defaultdict(list)
for r in csv.DictReader(open("/work/shared/data/ml-latest-small/interactions.csv")):
    rows[r["USER_ID"]].append((int(r["TIMESTAMP"]), r["ITEM_ID"]))
def run(*a): subprocess.run([T, *a], check=True, capture_output=True)
# The data without each user's latest rating (what every model learns from; recipes count all
# they are given, so the held-out rows must not be there at all).
src = list(csv.DictReader(open("/work/shared/data/ml-latest-small/interactions.csv")))
latest = {u: max(rows[u]) for u in rows}
with open(f"{W}/train.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(src[0].keys())); w.writeheader()
    dropped = set()
    for r in src:
        key = (r["USER_ID"], int(r["TIMESTAMP"]), r["ITEM_ID"])
        if (int(r["TIMESTAMP"]), r["ITEM_ID"]) == latest[r["USER_ID"]] and r["USER_ID"] not in dropped:
            dropped.add(r["USER_ID"]); continue
        w.writerow(r)
subprocess.run(["rm", "-rf", f"{W}/data"])
run("import", "--interactions", f"{W}/train.csv", "--out", f"{W}/data", "--quiet")
users = sorted(u for u in rows if len(rows[u]) >= 10); random.Random(7).shuffle(users); users = users[:400]
for model in sys.argv[1:]:
    subprocess.run(["rm", "-rf", f"{W}/{model}"])
    run("train", "--data", f"{W}/data", "--out", f"{W}/{model}", "--model", model, "--eval", "none", "--metadata", "none", "--epochs", "10", "--no-progress")
    lines = []
    for u in users:
        seq = sorted(rows[u]); held = seq[-1][1]
        recent = []
        for _, i in reversed(seq[:-1]):
            if i != held and i not in recent: recent.append(i)
            if len(recent) == 5: break
        recent.reverse()
        lines += [{"userId": "anon-" + u, "recentItems": recent, "numResults": 10},
                  {"userId": "anon-" + u, "numResults": 10}, {"userId": u, "numResults": 10}]
    open(f"{W}/q.jsonl", "w").write("".join(json.dumps(l) + "\n" for l in lines))
    run("batch-infer", "--model", f"{W}/{model}", "--input", f"{W}/q.jsonl", "--output", f"{W}/o.jsonl", "--device", "cpu")
    out = [json.loads(l)["output"]["recommendedItems"] for l in open(f"{W}/o.jsonl")]
    hits = [0, 0, 0]
    for k, u in enumerate(users):
        held = sorted(rows[u])[-1][1]
        for j in range(3): hits[j] += held in out[3 * k + j]
    n = len(users)
    print(f"{model}: HR@10 session from 5 recent items {hits[0]/n:.3f}, popular list {hits[1]/n:.3f}, known user {hits[2]/n:.3f} ({n} users)", flush=True)
