"""tastebud from Python: import a dataset, train NeuMF / GMF / MLP, recommend, export to ONNX.

The work is done by the same C++ libraries as the ``tastebud`` command line (``tastebud._core``);
answers equal ``tastebud batch-infer``'s for the same queries.

    import tastebud
    tastebud.import_dataset("data", interactions="interactions.csv", items="items.csv")
    model = tastebud.train("data", "model", epochs=10, batch_size=1024)
    items, scores = model.recommend("u1", n=10)
    tastebud.Client("http://127.0.0.1:8080").recommend(user_id="u1")   # a running `tastebud serve`
"""

from ._api import Error, FilterError, Model, import_dataset, recommenders, train
from .client import Client

__all__ = ["Client", "Error", "FilterError", "Model", "import_dataset", "recommenders", "train"]
__version__ = "0.1.0"
