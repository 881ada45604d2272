"""The Python face of tastebud._core: paths or DataFrames in, NumPy arrays out."""

import contextlib
import json
import os
import tempfile

import numpy as np

from . import _core

Error = _core.Error
FilterError = _core.FilterError


def _frame_to_csv(frame, path):
    """Writes a DataFrame in the Personalize CSV layout: lists become `|`-joined values and
    datetime columns Unix seconds."""
    frame = frame.copy()
    for column in frame.columns:
        values = frame[column]
        if str(values.dtype).startswith("datetime64"):
            frame[column] = values.astype("int64") // 10**9 if values.dt.tz is None else values.map(
                lambda t: int(t.timestamp()))
        elif values.dtype == object and values.map(lambda v: isinstance(v, (list, tuple))).any():
            frame[column] = values.map(
                lambda v: "|".join(str(x) for x in v) if isinstance(v, (list, tuple)) else v)
    frame.to_csv(path, index=False)


def _csv_path(source, name, scratch):
    if source is None:
        return ""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if hasattr(source, "to_csv") and hasattr(source, "columns"):
        path = os.path.join(scratch(), f"{name}.csv")
        _frame_to_csv(source, path)
        return path
    raise TypeError(f"{name} must be a CSV path or a pandas DataFrame, not {type(source).__name__}")


def import_dataset(out, interactions=None, users=None, items=None, *, schema_dir=None, mode="full",
                   overwrite=False, max_bad_rows=0, progress=True, memory_limit=0):
    """Imports the interactions (and optional users and items), each a CSV path or a pandas
    DataFrame with the Personalize columns (USER_ID, ITEM_ID, TIMESTAMP, ...), into the dataset
    directory `out`. Returns the import report as a dict. Same as `tastebud import`.
    progress: a tqdm bar over the interactions' bytes (when tqdm is installed).
    memory_limit: bytes the import may hold for its rows (0: a quarter of physical memory); beyond
    it the sort spills to disk, and the dataset is the same."""
    bar = _ProgressBar(progress, unit="B", desc="import")
    with contextlib.ExitStack() as stack:
        scratch_dir = []

        def scratch():
            if not scratch_dir:
                scratch_dir.append(stack.enter_context(tempfile.TemporaryDirectory(prefix="tastebud-")))
            return scratch_dir[0]

        stack.callback(bar.close)
        return _core.import_dataset(
            os.fspath(out), _csv_path(interactions, "interactions", scratch), _csv_path(users, "users", scratch),
            _csv_path(items, "items", scratch), os.fspath(schema_dir) if schema_dir else "", mode, overwrite,
            max_bad_rows, bar.bytes if bar.active else None, int(memory_limit))


class _ProgressBar:
    """One tqdm bar, when tqdm is installed: over every epoch's samples (train) or over the
    interactions' bytes (import)."""

    def __init__(self, enabled, unit="samples", desc="train"):
        self._bar = None
        self._tqdm = None
        self._unit, self._desc = unit, desc
        if enabled:
            try:
                from tqdm.auto import tqdm
                self._tqdm = tqdm
            except ImportError:
                pass

    def update(self, epoch, epochs, done, total, loss):
        if self._tqdm is None:
            return
        if self._bar is None:
            self._bar = self._tqdm(total=epochs * total, unit=self._unit, unit_scale=True, desc=self._desc)
        self._bar.n = (epoch - 1) * total + done
        self._bar.set_postfix(epoch=f"{epoch}/{epochs}", loss=f"{loss:.4f}", refresh=False)
        self._bar.refresh()

    @property
    def active(self):
        return self._tqdm is not None

    def bytes(self, done, total):
        if self._bar is None:
            self._bar = self._tqdm(total=total, unit=self._unit, unit_scale=True, desc=self._desc)
        self._bar.n = done
        self._bar.refresh()

    def write(self, line):
        if self._bar is not None:
            self._bar.write(line)
        else:
            print(line)

    def close(self):
        if self._bar is not None:
            self._bar.close()


def train(data, out, *, progress=True, verbose=True, on_epoch=None, **options):
    """Trains on the dataset directory `data` into the model directory `out` and returns the
    Model. Options are `tastebud train`'s long flags with `_` for `-` (epochs=10,
    batch_size=1024, model="gmf", layers=[64, 32, 16, 8], event=..., ...): see train --help.
    use_case="best-sellers" (with event_map={"purchase": "buy"} where the export names its events
    otherwise) trains one of the service's domain recommenders, as `train --use-case` does.
    progress: a tqdm bar (when tqdm is installed); verbose: the log lines (one per epoch);
    on_epoch(record): called after each epoch with its loss and metrics."""
    if "event" in options:
        events = options.pop("event")
        options["events"] = [events] if isinstance(events, str) else list(events)
    if "event_map" in options:
        options["event_map"] = _event_map_list(options["event_map"])
    bar = _ProgressBar(progress)
    log = bar.write if verbose else None
    try:
        summary = _core.train(os.fspath(data), os.fspath(out), options, bar.update if progress else None, on_epoch,
                              log)
    finally:
        bar.close()
    model = Model.load(out, device="cpu", threads=options.get("threads", 0))
    model.training = summary
    return model


def _event_map_list(event_map):
    """{"purchase": ["transaction", "buy"]} as ["purchase=transaction,buy"]; a list as it is."""
    if isinstance(event_map, dict):
        return [f"{role}={','.join([types] if isinstance(types, str) else types)}" for role, types in event_map.items()]
    return list(event_map or [])


def recommenders(data, out, domain, *, event_map=None, candidates=None, threads=0, seed=1, verbose=True):
    """Trains every use case of `domain` ("ecommerce" or "video-on-demand") that the dataset
    supports into out/<use-case>/ (each a model directory Model.load reads), as `tastebud
    recommenders` does. event_map: {"purchase": ["transaction", "buy"], ...} or ["purchase=buy"];
    candidates: the models recommended-for-you and top-picks-for-you try. Returns the listing of
    out/recommenders.json: each use case's status ("trained" or "skipped"), reason, model and metrics."""
    log = print if verbose else None
    event_map = _event_map_list(event_map)
    listing = _core.recommenders(os.fspath(data), os.fspath(out), domain, list(event_map or []),
                                 list(candidates or []), threads, seed, log)
    return json.loads(listing)


def _pack(ids, scores, single):
    if single:
        return np.array(ids[0], dtype=str), scores[0, :len(ids[0])].copy()
    width = scores.shape[1]
    return np.array([row + [""] * (width - len(row)) for row in ids], dtype=str).reshape(len(ids), width), scores


class Model:
    """A trained model directory. Answers equal `tastebud batch-infer`'s for the same queries:
    scores are probabilities (neumf, gmf, mlp), related items' the cosine of the item embeddings;
    an unknown user gets the most popular items, as in batch jobs."""

    def __init__(self, core):
        self._core = core
        self.training = None  # train()'s summary: backend, history, best_epoch, popularity

    @classmethod
    def load(cls, path, device="cpu", threads=0, normalize_scores=False):
        """Opens a model directory written by `tastebud train` (or tastebud.train). device: cpu,
        cuda or auto (the GPU answers plain recommendations when there is one). normalize_scores:
        recommend()'s scores as the service gives them, each item's share of the allowed catalog
        (they sum to 1), as batch-infer's --normalize-scores."""
        return cls(_core.Model(os.fspath(path), device, threads, normalize_scores))

    def __repr__(self):
        return f"tastebud.Model({self.kind!r}, {os.fspath(self.path)!r}, {len(self.user_ids)} users, " \
               f"{len(self.item_ids)} items)"

    @property
    def kind(self):
        return self._core.kind

    @property
    def path(self):
        return self._core.dir

    @property
    def config(self):
        return json.loads(self._core.config_json)

    @property
    def user_ids(self):
        return np.array(self._core.user_ids, dtype=str)

    @property
    def item_ids(self):
        return np.array(self._core.item_ids, dtype=str)

    @property
    def user_factors(self):
        """[users x factors] GMF user factors (MLP embeddings for an mlp model): a read-only view
        of the model's memory, no copy."""
        return self._core.user_factors

    @property
    def item_factors(self):
        return self._core.item_factors

    @property
    def user_mlp_embeddings(self):
        return self._core.user_mlp_embeddings

    @property
    def item_mlp_embeddings(self):
        return self._core.item_mlp_embeddings

    def recommend(self, user_ids, n=25, filter=None, filter_values=None, filter_already_liked_items=True):
        """Top-n items for one user id (1-D arrays) or a list of them (2-D arrays, rows padded
        with "" and NaN). filter: an expression in the service's syntax (`EXCLUDE ItemID WHERE
        Items.PRICE > $MAX`); filter_values: its parameters ({"MAX": "50"}). Returns (item ids,
        scores)."""
        single = isinstance(user_ids, str)
        users = [user_ids] if single else [str(u) for u in user_ids]
        ids, scores, _ = self._core.recommend(users, n, filter or "", filter_values, not filter_already_liked_items)
        return _pack(ids, scores, single)

    def similar_items(self, item_ids, n=25, filter=None, filter_values=None):
        """The n items nearest one item id (or each of a list of them): (item ids, scores)."""
        single = isinstance(item_ids, str)
        items = [item_ids] if single else [str(i) for i in item_ids]
        ids, scores, _ = self._core.similar_items(items, n, filter or "", filter_values)
        return _pack(ids, scores, single)

    def rank(self, user_id, items, filter=None, filter_values=None):
        """The items reordered for the user, best first; ids the model never saw go last with a
        NaN score. Returns (item ids, scores)."""
        ids, scores, _ = self._core.rank(str(user_id), [str(i) for i in items], filter or "", filter_values)
        return _pack(ids, scores, True)

    def export_onnx(self, out):
        """Writes the model as ONNX to `out` (inputs user and item, int64 rows; output score) and
        the id-to-row maps to `out`.ids.json. Same as `tastebud export --format onnx`."""
        return _core.export_onnx(os.fspath(self.path), os.fspath(out))

    def report(self, out=None, svg_dir=None):
        """Writes the HTML report (default MODEL_DIR/report.html), and with svg_dir each chart as
        its own SVG file there; returns the page's path. Same as `tastebud report`."""
        return _core.write_report(os.fspath(self.path), os.fspath(out) if out else "",
                                  os.fspath(svg_dir) if svg_dir else "")
