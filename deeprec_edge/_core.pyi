# Type stubs of the Cython module deeprec_edge._core (see docs/kernels-python.md).
from collections.abc import Sequence
from typing import Any, Literal, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F16 = npt.NDArray[np.float16]
I8 = npt.NDArray[np.int8]
Table = Union[F32, F16, I8, "PackedI8"]
I32 = npt.NDArray[np.int32]
Mask = npt.NDArray[np.uint8] | npt.NDArray[np.bool_]

C_API_VERSION: Tuple[int, int, int]

def active_path() -> str: ...
def supported_paths() -> list[str]: ...
def set_path(name: str) -> None: ...
def sgemm(
    A: F32,
    B: F32,
    trans_a: bool = ...,
    trans_b: bool = ...,
    alpha: float = ...,
    beta: float = ...,
    C: Optional[F32] = ...,
) -> F32: ...
def gru_forward(
    x: F32,
    W_ih: F32,
    W_hh: F32,
    b_ih: F32,
    b_hh: F32,
    h0: Optional[F32] = ...,
    lengths: Optional[I32] = ...,
    keep_cache: bool = ...,
) -> Tuple[F32, F32, Optional[F32]]: ...
def gru_backward(
    x: F32,
    W_ih: F32,
    W_hh: F32,
    y: F32,
    cache: F32,
    dy: Optional[F32] = ...,
    dh_n: Optional[F32] = ...,
    h0: Optional[F32] = ...,
    lengths: Optional[I32] = ...,
    dW_ih: Optional[F32] = ...,
    dW_hh: Optional[F32] = ...,
    db_ih: Optional[F32] = ...,
    db_hh: Optional[F32] = ...,
    need_dx: bool = ...,
) -> Tuple[Optional[F32], F32, F32, F32, F32, F32]: ...
def gru_step(
    x: F32,
    h: F32,
    W_ih: Table,
    W_hh: Table,
    b_ih: F32,
    b_hh: F32,
    out: Optional[F32] = ...,
    s_ih: Optional[F32] = ...,
    s_hh: Optional[F32] = ...,
) -> F32: ...

class GruStepper:
    @property
    def W_ih(self) -> F32: ...
    @property
    def W_hh(self) -> F32: ...
    @property
    def b_ih(self) -> F32: ...
    @property
    def b_hh(self) -> F32: ...
    @property
    def input_size(self) -> int: ...
    @property
    def hidden_size(self) -> int: ...
    @property
    def weight_dtype(self) -> np.dtype: ...
    @property
    def s_ih(self) -> Optional[F32]: ...
    @property
    def s_hh(self) -> Optional[F32]: ...
    def __init__(
        self,
        W_ih: Table,
        W_hh: Table,
        b_ih: F32,
        b_hh: F32,
        s_ih: Optional[F32] = ...,
        s_hh: Optional[F32] = ...,
    ) -> None: ...
    def step(self, x: F32, h: F32, out: Optional[F32] = ...) -> F32: ...

def head_forward(
    h: F32,
    W_p: F32,
    b_p: Optional[F32] = ...,
    activation: Literal["tanh", "identity"] = ...,
) -> F32: ...
def head_backward(
    h: F32,
    W_p: F32,
    u: F32,
    du: F32,
    activation: Literal["tanh", "identity"] = ...,
    dW_p: Optional[F32] = ...,
    db_p: Optional[F32] = ...,
    need_dh: bool = ...,
) -> Tuple[Optional[F32], F32, F32]: ...
def sampled_loss(
    U: F32,
    O_s: F32,
    target_col: I32,
    b_s: Optional[F32] = ...,
    col_ids: Optional[I32] = ...,
    logq: Optional[F32] = ...,
    loss: Literal["xe", "bpr-max"] = ...,
    bpreg: float = ...,
    need_grads: bool = ...,
    dO_s: Optional[F32] = ...,
    db_s: Optional[F32] = ...,
) -> Tuple[float, F32, Optional[F32], Optional[F32], Optional[F32]]: ...
def score(
    O: Table,
    u: F32,
    bias: Optional[F32] = ...,
    idx: Optional[I32] = ...,
    scale: Optional[F32] = ...,
) -> F32: ...
def score_topk(
    O: Table,
    u: F32,
    k: int,
    bias: Optional[F32] = ...,
    idx: Optional[I32] = ...,
    exclude: Optional[Mask] = ...,
    scale: Optional[F32] = ...,
) -> Tuple[I32, F32]: ...
def dequantize_rows(W: Table, idx: Optional[I32] = ..., scale: Optional[F32] = ...) -> F32: ...

class PackedI8:
    data: npt.NDArray[np.uint8]
    n_rows: int
    n_cols: int
    @property
    def shape(self) -> Tuple[int, int]: ...
    @property
    def nbytes(self) -> int: ...

def pack_rows_i8(q: npt.NDArray[np.int8]) -> PackedI8: ...
def adagrad_step(param: F32, grad: F32, accum: F32, lr: float, eps: float = ...) -> None: ...
def adam_step(
    param: F32,
    grad: F32,
    m: F32,
    v: F32,
    step: int,
    lr: float,
    beta1: float = ...,
    beta2: float = ...,
    eps: float = ...,
    weight_decay: float = ...,
) -> None: ...
def sgd_step(
    param: F32,
    grad: F32,
    lr: float,
    velocity: Optional[F32] = ...,
    momentum: float = ...,
    nesterov: bool = ...,
) -> None: ...
def global_norm(grads: Sequence[F32]) -> float: ...
def clip_by_global_norm(grads: Sequence[F32], max_norm: float) -> float: ...
def adagrad_rows(
    table: F32, accum: F32, rows: I32, grad_rows: F32, lr: float, eps: float = ...
) -> None: ...
def adam_rows(
    table: F32,
    m: F32,
    v: F32,
    rows: I32,
    grad_rows: F32,
    step: int,
    lr: float,
    beta1: float = ...,
    beta2: float = ...,
    eps: float = ...,
) -> None: ...
def sgd_rows(table: F32, rows: I32, grad_rows: F32, lr: float) -> None: ...

# Streaming state (deeprec_edge/_stream.pxi, included into _core.pyx).
class StreamCore:
    def __init__(
        self,
        E: Table,
        layers: Sequence[Tuple[Any, ...]],
        W_p: F32,
        b_p: F32,
        O: Table,
        b_out: F32,
        activation: Literal["tanh", "identity"] = ...,
        weight_dtype: Literal["float32", "float16"] = ...,
        E_scale: Optional[F32] = ...,
        O_scale: Optional[F32] = ...,
    ) -> None: ...
    @property
    def layer_dtypes(self) -> list[str]: ...
    @property
    def weight_dtype(self) -> str: ...
    @property
    def n_items(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def user_vector(self) -> F32: ...
    def click(self, item: int) -> None: ...
    def reset(self) -> None: ...
    def topk(
        self, k: int, idx: Optional[I32] = ..., exclude: Optional[Mask] = ...
    ) -> Tuple[I32, F32]: ...
    def topk_table(
        self,
        k: int,
        O_c: Table,
        b_c: Optional[F32] = ...,
        exclude: Optional[Mask] = ...,
        ids: Optional[npt.NDArray[np.int64]] = ...,
        scale: Optional[F32] = ...,
    ) -> Tuple[npt.NDArray[Any], F32]: ...
    def set_candidates(
        self,
        O_c: Optional[Table],
        b_c: Optional[F32] = ...,
        ids: Optional[npt.NDArray[np.int64]] = ...,
        scale: Optional[F32] = ...,
    ) -> None: ...
    def topk_candidates(
        self, k: int, exclude: Optional[Mask] = ..., b_c: Optional[F32] = ...
    ) -> Tuple[npt.NDArray[Any], F32]: ...
    def get_state(self) -> F32: ...
    def set_state(self, state: F32) -> None: ...
