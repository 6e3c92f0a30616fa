"""deeprec-edge: an on-device sequential recommender.

A global GRU next-item model, trained in the cloud on consented logs, is
fine-tuned on the device on the user's private clicks (last GRU layer and
dense head only); the personal model's user embedding ranks candidate items
by inner product.  The hot paths are a C99 core with scalar, AVX2/FMA,
AVX-512 and NEON paths chosen at run time (`deeprec_edge.kernels`).

The runtime depends on numpy alone and makes no network calls.
"""

__version__ = "0.1.0"
