"""deeprec-edge: an on-device sequential recommender.

A global GRU next-item model, trained in the cloud on consented logs, is
fine-tuned on the device on the user's private clicks (last GRU layer and
dense head only); the personal model's user embedding ranks candidate items
by inner product.  The hot paths are a C99 core with scalar, AVX2/FMA,
AVX-512 and NEON paths chosen at run time (:mod:`deeprec_edge.kernels`).

The runtime depends on numpy alone and makes no network calls.

Main entry points::

    model = load_model("weights.npz")              # validated, no pickle
    hist = read_history("history.csv", model=model)
    result = finetune(model, hist)                 # personal model + summary
    save_model(result.model, "personal.npz")       # atomic
    ids, scores = recommend(result.model, hist, k=20)
    s = Session(result.model); s.click(item_id); s.recommend(20)
"""


def _no_core(err: ImportError) -> ImportError:
    """Say what to do when the compiled core cannot be imported (the usual
    case: the source tree, which has none, shadows the installed package)."""
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.exists(os.path.join(here, "_core.pyx")):
        return ImportError(
            f"deeprec_edge was imported from its source tree ({here}), which has no compiled "
            f"C core (deeprec_edge._core: {err}). Install the package with `pip install .` "
            f"(in {os.path.dirname(here)}) and use the installed copy: run `pytest`, not "
            f"`python -m pytest`, and `deeprec-edge`, not `python -m deeprec_edge`, from the "
            f"repository root (`python -m` puts the current folder first on sys.path).")
    return ImportError(f"deeprec_edge's compiled C core cannot be loaded from {here} ({err}); "
                       f"reinstall: pip install --force-reinstall --no-deps deeprec-edge")


try:  # the compiled C core: everything below needs it
    __import__(f"{__name__}._core")
except ImportError as _err:
    raise _no_core(_err) from None

from ._core import C_API_VERSION as _C_API_VERSION  # noqa: E402

#: The C library's version (DRE_VERSION_* in csrc/include/deeprec_edge.h, the
#: one place it is written; setup.py gives it to the distribution too).
__version__ = "%d.%d.%d" % _C_API_VERSION

from .model import Model, ModelFormatError, load_model, save_model  # noqa: E402
from .history import History, HistoryError, read_history  # noqa: E402
from .api import finetune, recommend, user_embedding  # noqa: E402
from ._finetune import FinetuneResult  # noqa: E402
from .session import Session  # noqa: E402

__all__ = [
    "__version__",
    "Model",
    "ModelFormatError",
    "load_model",
    "save_model",
    "History",
    "HistoryError",
    "read_history",
    "finetune",
    "recommend",
    "user_embedding",
    "FinetuneResult",
    "Session",
]
