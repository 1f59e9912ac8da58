"""Numerical core of the Appendix A checks (imported by ``analyses/appendix_a.py``).

Every formula of Appendix A that the notebook checks is implemented here once, in
float64, in the form in which the appendix prints it; the notebook only draws data,
compares, records and plots. The functions are grouped by the part of the appendix
they serve:

* vec/Kronecker identities (eq. vec) and the varying-coefficient model (Prop. 1(A));
* weighted ridge regression in primal, dual and kernel form (eqs. primal, dual,
  ridge-prediction, unified-krr) with a numerically stable SVD reference;
* the linear-attention layer of eqs. qkv, scores and attention-readout (Prop. 1(B1)),
  with the three normalisations of the scores that the analysis compares;
* Prop. 1(A) as a linear map of the responses (hat matrices, in float64 or float32);
* the (B1) formula as typeset, the features by plain loops and in matrix form, support
  features with and without self-attention, and the Gram block left after removal;
* layers whose values carry labels: one layer, a stack of them (the series of KRR) and
  the leakage of an example's own label through self-attention;
* the derivatives of the normalised scores, as the source prints them and corrected;
* tangent features, the empirical NTK and the linearised (NTK) prediction of gradient
  descent on a weighted squared loss (Prop. 1(B2)), and the width experiment;
* spectral filters of weighted least squares: ridge, gradient flow, gradient descent.

Checks take the implementation under test as an argument where a unit test needs to
show that a deliberately wrong implementation is caught.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import jacfwd, jacrev, vmap

Array = np.ndarray
Tensor = torch.Tensor
Params = dict[str, Tensor]

# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def rel_err(a: Array | Tensor | float, b: Array | Tensor | float) -> float:
    """Largest absolute difference divided by the largest magnitude of the reference ``b``.

    A max-norm relative error is scale free, so one tolerance serves predictions,
    features and gradients alike; the tiny floor only avoids 0/0 for an all-zero ``b``.
    """
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a, dtype=float)
    b = b.detach().cpu().numpy() if isinstance(b, torch.Tensor) else np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-300))


def loglog_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log(y) against log(x): the exponent of a power law y ~ x^slope."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def make_weights(
    rng: np.random.Generator,
    n: int,
    dist: str = "uniform",
    zero_fraction: float = 0.2,
    low: float = 0.2,
    high: float = 3.0,
) -> Array:
    """Non-negative example weights, a fraction of them exactly zero.

    ``dist`` is ``"uniform"`` (U(low, high)), ``"lognormal"`` (exp of a standard normal)
    or ``"equal"`` (all one, which cannot expose weighting bugs; only for comparison).
    """
    if dist == "uniform":
        w = rng.uniform(low, high, n)
    elif dist == "lognormal":
        w = np.exp(rng.standard_normal(n))
    elif dist == "equal":
        w = np.ones(n)
    else:
        raise ValueError(f"unknown weight distribution {dist!r}: use uniform, lognormal or equal")
    n_zero = int(round(zero_fraction * n))
    if n_zero >= n:
        raise ValueError("zero_fraction leaves no example with positive weight")
    w[rng.choice(n, size=n_zero, replace=False)] = 0.0
    return w


# --------------------------------------------------------------------------------------
# vec / Kronecker identities (eq. vec) and joint features (eq. joint-features)
# --------------------------------------------------------------------------------------


def vec_col(M: Array) -> Array:
    """Column-stacking vec, the convention under which vec(ABC) = (C^T kron A) vec(B)."""
    return np.asarray(M).reshape(-1, order="F")


def vec_row(M: Array) -> Array:
    """Row-stacking vec (numpy's default reshape)."""
    return np.asarray(M).reshape(-1, order="C")


def vec_abc_error(A: Array, B: Array, C: Array, vec: Callable[[Array], Array] = vec_col) -> float:
    """Relative error of the first identity of eq. vec, vec(ABC) = (C^T kron A) vec(B)."""
    return rel_err(vec(A @ B @ C), np.kron(C.T, A) @ vec(B))


def bilinear_error(B: Array, x: Array, z: Array, vec: Callable[[Array], Array] = vec_col, order: str = "xz") -> float:
    """Relative error of <vec(B), x kron z> = x^T B z (order "xz", as printed) or of z kron x ("zx")."""
    factor = np.kron(x, z) if order == "xz" else np.kron(z, x)
    return rel_err(vec(B) @ factor, x @ B @ z)


def joint_features(X: Array, Phi: Array) -> Array:
    """Rows psi_a = x_a kron phi(c_a) of eq. joint-features (x first, as the appendix writes it)."""
    return np.einsum("ni,nj->nij", X, Phi).reshape(len(X), -1)


def product_kernel(X1: Array, P1: Array, X2: Array, P2: Array) -> Array:
    """<x, x'> <phi(c), phi(c')> of eq. product-kernel, for all pairs of rows."""
    return (X1 @ X2.T) * (P1 @ P2.T)


# --------------------------------------------------------------------------------------
# Weighted ridge regression: primal, dual, kernel form, SVD reference
# --------------------------------------------------------------------------------------


def ridge_primal(X: Array, y: Array, w: Array, lam: float) -> Array:
    """beta = (X^T W X + lam I)^{-1} X^T W y, eq. primal (a p x p system)."""
    p = X.shape[1]
    return np.linalg.solve(X.T @ (w[:, None] * X) + lam * np.eye(p), X.T @ (w * y))


def ridge_dual(X: Array, y: Array, w: Array, lam: float) -> Array:
    """beta = X^T W^{1/2} (W^{1/2} X X^T W^{1/2} + lam I)^{-1} W^{1/2} y, eq. dual (an N x N system)."""
    wh = np.sqrt(w)
    gram = wh[:, None] * (X @ X.T) * wh[None, :]
    return X.T @ (wh * np.linalg.solve(gram + lam * np.eye(len(y)), wh * y))


def ridge_gradient(X: Array, y: Array, w: Array, lam: float, beta: Array) -> Array:
    """Gradient of the objective of eq. ridge-objective at ``beta`` (zero at the minimiser)."""
    return -2.0 * X.T @ (w * (y - X @ beta)) + 2.0 * lam * beta


def krr_predict(K: Array, k_query: Array, y: Array, w: Array, lam: float) -> Array:
    """Weighted KRR, eq. ridge-prediction / unified-krr, from the *unweighted* kernel.

    ``K`` is the N x N Gram matrix k(x_a, x_b) and ``k_query`` holds the rows k(x_q, x_a)
    (n_q x N). The weights enter on both sides of the Gram matrix, on the query vector
    and on the responses: k_W^T (W^{1/2} K W^{1/2} + lam I)^{-1} W^{1/2} y.
    """
    wh = np.sqrt(w)
    gram = wh[:, None] * K * wh[None, :]
    return (k_query * wh[None, :]) @ np.linalg.solve(gram + lam * np.eye(len(y)), wh * y)


def krr_uniform(gram: Array, k_query: Array, mu: Array, lam: float) -> Array:
    """Unweighted KRR k^T (gram + lam I)^{-1} mu, into which the Corollary substitutes the weights."""
    return k_query @ np.linalg.solve(gram + lam * np.eye(len(mu)), mu)


def ridge_svd_predict(X: Array, y: Array, w: Array, lam: float, X_query: Array) -> Array:
    """The same weighted ridge prediction from the SVD of A = W^{1/2} X.

    beta = V diag(s / (s^2 + lam)) U^T W^{1/2} y never forms X^T W X or the Gram
    matrix, so its error does not grow with their condition number: it is the
    reference against which the primal and dual forms are judged as lam -> 0.
    """
    wh = np.sqrt(w)
    U, s, Vt = np.linalg.svd(wh[:, None] * X, full_matrices=False)
    beta = Vt.T @ ((s / (s**2 + lam)) * (U.T @ (wh * y)))
    return X_query @ beta


# --------------------------------------------------------------------------------------
# Proposition 1(A): the varying-coefficient model fitted directly
# --------------------------------------------------------------------------------------


def fit_varying_coefficients(X: Array, Phi: Array, y: Array, w: Array, lam: float) -> Array:
    """B minimising sum_a w_a (y_a - x_a^T B phi(c_a))^2 + lam ||B||_F^2, solved for B itself.

    The normal equations sum_a w_a x_a x_a^T B phi_a phi_a^T + lam B = sum_a w_a y_a x_a phi_a^T
    are vectorised with the (correct) first identity of eq. vec, vec(ABC) = (C^T kron A) vec(B),
    so this fit does not rely on the bilinear identity under test.
    """
    d_x, d_c = X.shape[1], Phi.shape[1]
    lhs = lam * np.eye(d_x * d_c)
    for a in range(len(y)):
        lhs += w[a] * np.kron(np.outer(Phi[a], Phi[a]), np.outer(X[a], X[a]))
    rhs = vec_col((w[:, None] * y[:, None] * X).T @ Phi)
    return np.linalg.solve(lhs, rhs).reshape(d_x, d_c, order="F")


def vc_predict(B: Array, X: Array, Phi: Array) -> Array:
    """x^T B phi(c) for every row."""
    return np.einsum("ni,ij,nj->n", X, B, Phi)


# --------------------------------------------------------------------------------------
# Proposition 1(A) as a linear map of the responses, in any floating-point type
# --------------------------------------------------------------------------------------


def _as(dtype: type, *arrays: Array) -> list[Array]:
    return [np.asarray(a, dtype=dtype) for a in arrays]


def vc_hat_matrix(X: Array, Phi: Array, w: Array, lam: float, Xq: Array, Pq: Array, dtype: type = np.float64) -> Array:
    """The varying-coefficient fit as a matrix H acting on the responses: predictions = H y for every y.

    Column a is the prediction at the queries when y is the a-th unit vector. As in
    ``fit_varying_coefficients``, B is solved for from its own normal equations, vectorised
    with the first identity of eq. vec (x^T B phi = <vec(B), phi kron x> for column-stacking
    vec), not through the joint features of the appendix; everything runs in ``dtype``.
    """
    X, Phi, w, Xq, Pq = _as(dtype, X, Phi, w, Xq, Pq)
    S = np.einsum("nj,ni->nji", Phi, X).reshape(len(X), -1)  # rows phi_a kron x_a
    Sq = np.einsum("nj,ni->nji", Pq, Xq).reshape(len(Xq), -1)
    lhs = S.T @ (w[:, None] * S) + np.dtype(dtype).type(lam) * np.eye(S.shape[1], dtype=dtype)
    return Sq @ np.linalg.solve(lhs, S.T * w[None, :])


def krr_hat_matrix(K: Array, k_query: Array, w: Array, lam: float, dtype: type = np.float64) -> Array:
    """Weighted KRR as a matrix acting on the responses, k_W^T (K_W + lam I)^{-1} W^{1/2}, in ``dtype``."""
    K, k_query, w = _as(dtype, K, k_query, w)
    wh = np.sqrt(w)
    gram = wh[:, None] * K * wh[None, :] + np.dtype(dtype).type(lam) * np.eye(len(w), dtype=dtype)
    return (k_query * wh[None, :]) @ np.linalg.solve(gram, np.diag(wh))


# --------------------------------------------------------------------------------------
# Linear attention over the support set (eqs. qkv, scores, attention-readout)
# --------------------------------------------------------------------------------------

NORMALISATIONS = ("sum", "weights", "count")


@dataclass(frozen=True)
class AttentionSpec:
    """How scores are normalised and scaled.

    ``norm``: ``"sum"`` is eq. scores as printed, alpha_a = s_a / sum_b s_b;
    ``"weights"`` divides by the fixed positive constant sum_b w_b; ``"count"`` by the
    number N of support examples. The scales implement the NTK parameterisation
    (all one reproduces the formulas exactly as printed):
    q = c_in Q psi, k_a = c_in K psi_a, v_a = c_in V psi_a, s_a = w_a c_s <q, k_a>,
    y_hat = c_out sum_h u_h^T z_h.
    """

    norm: str = "sum"
    input_scale: float = 1.0
    score_scale: float = 1.0
    output_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.norm not in NORMALISATIONS:
            raise ValueError(f"norm must be one of {NORMALISATIONS}, not {self.norm!r}")


PRINTED = AttentionSpec("sum")


def ntk_spec(norm: str, d_psi: int, d_qk: int, d_v: int, heads: int) -> AttentionSpec:
    """NTK parameterisation: unit-variance weights, 1/sqrt(fan-in) multipliers everywhere."""
    return AttentionSpec(norm, 1.0 / math.sqrt(d_psi), 1.0 / math.sqrt(d_qk), 1.0 / math.sqrt(heads * d_v))


def init_attention(
    rng: np.random.Generator,
    heads: int,
    d_qk: int,
    d_v: int,
    d_psi: int,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> Params:
    """Standard-normal Q, K (heads x d_qk x d_psi), V (heads x d_v x d_psi) and u (heads x d_v).

    Drawn with numpy so that the same seed gives the same initialisation on every device.
    """
    shapes = {"Q": (heads, d_qk, d_psi), "K": (heads, d_qk, d_psi), "V": (heads, d_v, d_psi), "u": (heads, d_v)}
    return {k: torch.as_tensor(rng.standard_normal(s), dtype=dtype, device=device) for k, s in shapes.items()}


def normalise_scores(s: Tensor, w: Tensor, norm: str) -> Tensor:
    """alpha from scores s (last axis: support examples) under one of NORMALISATIONS."""
    if norm == "sum":
        return s / s.sum(-1, keepdim=True)
    if norm == "weights":
        return s / w.sum()
    return s / s.shape[-1]


def attention_scores(params: Params, psi_q: Tensor, support: Tensor, w: Tensor, spec: AttentionSpec) -> Tensor:
    """s_a(x, c) = w_a c_s <c_in Q psi, c_in K psi_a> for one query (heads x N) or a batch (heads x n_q x N)."""
    c = spec.input_scale
    keys = c * torch.einsum("hkd,nd->hnk", params["K"], support)
    if psi_q.dim() == 1:
        q = c * torch.einsum("hkd,d->hk", params["Q"], psi_q)
        return w * spec.score_scale * torch.einsum("hk,hnk->hn", q, keys)
    q = c * torch.einsum("hkd,qd->hqk", params["Q"], psi_q)
    return w * spec.score_scale * torch.einsum("hqk,hnk->hqn", q, keys)


def attention_features(params: Params, psi_q: Tensor, support: Tensor, w: Tensor, spec: AttentionSpec) -> Tensor:
    """z(x, c) = sum_a alpha_a v_a, eq. induced-features: heads x d_v (one query) or heads x n_q x d_v."""
    alpha = normalise_scores(attention_scores(params, psi_q, support, w, spec), w, spec.norm)
    values = spec.input_scale * torch.einsum("hvd,nd->hnv", params["V"], support)
    if psi_q.dim() == 1:
        return torch.einsum("hn,hnv->hv", alpha, values)
    return torch.einsum("hqn,hnv->hqv", alpha, values)


def attention_output(params: Params, psi_q: Tensor, support: Tensor, w: Tensor, spec: AttentionSpec) -> Tensor:
    """y_hat(x, c) = c_out sum_h u_h^T z_h(x, c), eq. attention-readout: a scalar, or n_q values."""
    z = attention_features(params, psi_q, support, w, spec)
    if psi_q.dim() == 1:
        return spec.output_scale * (params["u"] * z).sum()
    return spec.output_scale * torch.einsum("hv,hqv->q", params["u"], z)


def attention_output_fast(params: Params, psi_q: Tensor, support: Tensor, w: Tensor, spec: AttentionSpec) -> Tensor:
    """The same output as ``attention_output``, regrouped so that no query-by-example array is formed.

    Because the scores are bilinear, sum_a s_a v_a = q^T C with C = c_s sum_a w_a k_a v_a^T and
    sum_a s_a = q^T c with c = c_s sum_a w_a k_a, so every normalisation costs
    O(heads * N * d_qk * d_v) once plus O(d_qk * d_v) per query. Gradient descent and the
    tangent features use this form; the notebook checks it against the literal one.
    """
    c = spec.input_scale
    keys = c * torch.einsum("hkd,nd->hnk", params["K"], support)
    values = c * torch.einsum("hvd,nd->hnv", params["V"], support)
    C = spec.score_scale * torch.einsum("hnk,n,hnv->hkv", keys, w, values)
    batched = psi_q.dim() == 2
    q = c * (
        torch.einsum("hkd,qd->hqk", params["Q"], psi_q)
        if batched
        else torch.einsum("hkd,d->hk", params["Q"], psi_q)[:, None, :]
    )
    numerator = torch.einsum("hqk,hkv->hqv", q, C)
    if spec.norm == "sum":
        denominator = torch.einsum("hqk,hk->hq", q, spec.score_scale * torch.einsum("hnk,n->hk", keys, w))[..., None]
    elif spec.norm == "weights":
        denominator = w.sum()
    else:
        denominator = torch.as_tensor(float(support.shape[0]), dtype=q.dtype, device=q.device)
    out = spec.output_scale * torch.einsum("hv,hqv->q", params["u"], numerator / denominator)
    return out if batched else out[0]


def score_sums(params: Params, psi_q: Tensor, support: Tensor, w: Tensor, spec: AttentionSpec) -> Tensor:
    """sum_b s_b(x, c) for every head and query (heads x n_q): the denominator of eq. scores."""
    c = spec.input_scale
    keys = c * torch.einsum("hkd,nd->hnk", params["K"], support)
    q = c * torch.einsum("hkd,qd->hqk", params["Q"], psi_q)
    return spec.score_scale * torch.einsum("hqk,hk->hq", q, torch.einsum("hnk,n->hk", keys, w))


def b1_features(params: Params, psi_q: Tensor, support: Tensor, w: Tensor, spec: AttentionSpec = PRINTED) -> Array:
    """Induced features phi(x, c) of eq. induced-features for a batch of queries, heads concatenated."""
    z = attention_features(params, psi_q, support, w, spec)
    return z.permute(1, 0, 2).reshape(psi_q.shape[0], -1).detach().cpu().numpy()


def score_denominator_direction(params: Params, support: Tensor, w: Tensor) -> Tensor:
    """g with sum_b s_b(x, c) = <g, psi(x, c)> for the single-head layer as printed.

    The denominator of eq. scores is linear in the query features, so it vanishes on
    the hyperplane g^T psi = 0 and changes sign across it.
    """
    Q, K = params["Q"][0], params["K"][0]
    return Q.T @ (K @ (w @ support))


def b1_printed_prediction(
    F: Array, z_query: Array, y: Array, w: Array, lam: float, columns: bool = True, transpose: bool = False
) -> Array:
    """The (B1) prediction exactly as the source typesets it, (W^{1/2} F z)(W^{1/2} F F^T W^{1/2} + lam I)^{-1} W^{1/2} y.

    ``F`` stacks the induced features of the support set (N x d_v), ``z_query`` is z(x, c)
    for one query. With ``columns`` every vector is an explicit column (an n x 1 array), as
    in matrix notation; the N x 1 query vector times the N x N inverse then raises
    ``ValueError`` for N > 1, since the transpose is missing. Without it the vectors are
    1-D numpy arrays, which ``@`` silently treats as rows, so the missing transpose goes unnoticed.
    ``transpose`` adds the transpose to the query vector (with ``columns``): the corrected formula.
    """
    wh = np.sqrt(w)
    system = wh[:, None] * (F @ F.T) * wh[None, :] + lam * np.eye(len(y))
    if columns:
        k, mu = wh[:, None] * (F @ z_query.reshape(-1, 1)), (wh * y).reshape(-1, 1)
        if transpose:
            k = k.T
    else:
        k, mu = wh * (F @ z_query), wh * y
    return k @ np.linalg.inv(system) @ mu


def b1_features_loops(Q: Array, K: Array, V: Array, psi_q: Array, support: Array, w: Array, norm: str = "sum") -> Array:
    """Induced features z(x, c) by explicit loops in plain numpy, independently of ``attention_features``.

    For each query: s_a = w_a <Q psi, K psi_a> one support example at a time, then
    alpha_a = s_a / sum_b s_b (``"sum"``, as printed) or s_a / sum_b w_b (``"weights"``),
    and z = sum_a alpha_a V psi_a.
    """
    out = np.zeros((len(psi_q), V.shape[0]))
    for i, psi in enumerate(psi_q):
        q = Q @ psi
        scores = [w[a] * float(q @ (K @ support[a])) for a in range(len(support))]
        denominator = sum(scores) if norm == "sum" else float(np.sum(w))
        for a, s in enumerate(scores):
            out[i] += (s / denominator) * (V @ support[a])
    return out


def b1_matrix_form(Q: Array, K: Array, V: Array, support: Array, w: Array) -> tuple[Array, Array]:
    """M_z = V (sum_a w_a psi_a psi_a^T) K^T Q and g = Q^T K sum_a w_a psi_a.

    Since s_a = w_a psi^T Q^T K psi_a, sum_a s_a v_a = M_z psi and sum_a s_a = g^T psi, so the
    induced features are z = M_z psi / g^T psi (as printed) or z = M_z psi / sum_b w_b.
    """
    second_moment = support.T @ (w[:, None] * support)
    return V @ second_moment @ K.T @ Q, Q.T @ (K @ (w @ support))


def support_features(
    params: Params, support: Tensor, w: Tensor, spec: AttentionSpec, self_attention: bool = True
) -> Array:
    """Induced features of the support examples themselves (N x heads*d_v): the rows the readout of (B1) is fitted on.

    Each support example is a query over the support set, itself included. With
    ``self_attention=False`` example b attends over the others only: its own score is dropped
    and the fixed normalisations count the others only (sum_{a != b} w_a, or N - 1), i.e.
    z(x_b, c_b) is computed on the support set without b.
    """
    n = support.shape[0]
    s = attention_scores(params, support, support, w, spec)  # heads x N (as queries) x N (as keys)
    others = torch.ones(n, n, dtype=s.dtype, device=s.device)
    if not self_attention:
        others = others - torch.eye(n, dtype=s.dtype, device=s.device)
    s = s * others
    if spec.norm == "sum":
        denominator = s.sum(-1, keepdim=True)
    elif spec.norm == "weights":
        denominator = (others * w[None, :]).sum(-1)[None, :, None]
    else:
        denominator = others.sum(-1)[None, :, None]
    values = spec.input_scale * torch.einsum("hvd,nd->hnv", params["V"], support)
    z = torch.einsum("hqn,hnv->hqv", s / denominator, values)
    return z.permute(1, 0, 2).reshape(n, -1).detach().cpu().numpy()


def gram_block_shift(G_full: Array, G_reduced: Array, keep: Array) -> float:
    """||G_reduced - G_full[keep, keep]||_F / ||G_full[keep, keep]||_F.

    How much the Gram entries among the examples that stay move when the others leave the
    support set: zero when each entry depends on its two examples only, as in (A).
    """
    block = G_full[np.ix_(keep, keep)]
    return float(np.linalg.norm(G_reduced - block) / np.linalg.norm(block))


# --------------------------------------------------------------------------------------
# Values that carry labels: one layer, a stack of layers, and leakage through self-attention
# --------------------------------------------------------------------------------------


def label_tokens(psi: Tensor, y: Tensor | None = None) -> Tensor:
    """Tokens (psi, y): joint features with the label appended (0 for a query, whose label is unknown)."""
    label = torch.zeros(psi.shape[0], dtype=psi.dtype, device=psi.device) if y is None else y
    return torch.cat([psi, label[:, None]], dim=1)


def label_reading_layer(d_psi: int, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> Params:
    """A single-head linear-attention layer on ``label_tokens`` whose value is the label.

    Queries and keys read the joint features (Q = K = [I 0], so <q, k_a> = psi^T psi_a), the
    value reads the label slot (V = [0 ... 0 1]) and the readout is u = 1. With the
    normalisation 1/sum_b w_b its output is sum_a w_a psi^T psi_a y_a / sum_b w_b.
    """
    select = torch.eye(d_psi, d_psi + 1, dtype=dtype, device=device)[None]
    V = torch.zeros(1, 1, d_psi + 1, dtype=dtype, device=device)
    V[0, 0, -1] = 1.0
    return {"Q": select, "K": select.clone(), "V": V, "u": torch.ones(1, 1, dtype=dtype, device=device)}


def label_attention_stack(
    K_ss: Array,
    K_qs: Array,
    y: Array,
    w: Array,
    lam: float,
    eta: float,
    layers: Sequence[int],
    self_attention: bool = True,
) -> dict[int, Array]:
    """Predictions of a stack of linear-attention layers whose values carry labels, after each count in ``layers``.

    ``K_ss`` and ``K_qs`` are the unweighted kernels k(x_b, x_a) among the support examples and
    from the queries to them. Support token b holds a label r_b (initially y_b); the query's label
    slot starts at 0. Each layer (i) adds eta sum_a w_a k(x, x_a) r_a to the query's slot and
    (ii) updates every support label by attending over the support set,
    r_b <- (1 - eta lam) r_b - eta sum_a w_a k(x_b, x_a) r_a, the term a = b included unless
    ``self_attention`` is False. One layer gives eta k^T W y. With self-attention, L layers give
    the first L terms of the series that ``krr_series_prediction`` sums.
    """
    scores_ss = K_ss * w[None, :]
    if not self_attention:
        scores_ss = scores_ss - np.diag(np.diag(scores_ss))
    scores_qs = K_qs * w[None, :]
    r = np.array(y, dtype=float)
    f = np.zeros(K_qs.shape[0])
    out = {}
    with np.errstate(over="ignore", invalid="ignore"):  # without self-attention the stack may diverge
        for layer in range(1, max(layers) + 1):
            f = f + eta * (scores_qs @ r)
            r = (1.0 - eta * lam) * r - eta * (scores_ss @ r)
            if layer in layers:
                out[layer] = f.copy()
    return out


def krr_series_prediction(K: Array, k_query: Array, y: Array, w: Array, lam: float, eta: float, terms: int) -> Array:
    """k_W^T eta sum_{l < terms} (I - eta (K_W + lam I))^l W^{1/2} y, the partial sums of weighted KRR.

    For 0 < eta < 2 / lambda_max(K_W + lam I) the series converges to (K_W + lam I)^{-1}, i.e. to
    ``krr_predict``; the sum is evaluated in closed form on the eigenvectors of K_W, one
    geometric series per eigenvalue l: eta sum_{j < terms} rho^j = (1 - rho^terms) / (l + lam).
    """
    wh = np.sqrt(w)
    evals, U = np.linalg.eigh(wh[:, None] * K * wh[None, :])
    rho = 1.0 - eta * (evals + lam)
    g = (1.0 - rho**terms) / (evals + lam)
    return (k_query * wh[None, :]) @ (U @ (g * (U.T @ (wh * y))))


def label_smoother_features(
    K_ss: Array, K_qs: Array, y: Array, w: Array, self_attention: bool = True
) -> tuple[Array, Array]:
    """One labelled-value layer, z(x) = sum_a w_a k(x, x_a) y_a / sum_a w_a, at the support examples and the queries.

    A support example attends over the support set including itself, so its own label
    enters its own feature; with ``self_attention=False`` it is left out (own term dropped,
    the normalisation counting the others only). Queries carry no label.
    """
    others = np.ones_like(K_ss) - (0.0 if self_attention else np.eye(len(w)))
    scores = K_ss * w[None, :] * others
    z_support = scores @ y / (others * w[None, :]).sum(1)
    z_query = (K_qs * w[None, :]) @ y / w.sum()
    return z_support, z_query


def own_label_share(K_ss: Array, w: Array) -> Array:
    """|w_b k(x_b, x_b)| / sum_a |w_a k(x_b, x_a)| for each positive-weight support example b.

    The share of the attention (in absolute value) that a support example pays to itself,
    i.e. to its own label once values carry labels.
    """
    scores = np.abs(K_ss * w[None, :])
    pos = w > 0
    return (np.diag(scores) / scores.sum(1))[pos]


def label_leakage_r2(
    K_ss: Array, K_qs: Array, w: Array, lam: float, rng: np.random.Generator, draws: int
) -> dict[str, float]:
    """Mean R^2 of a (B1) readout on one labelled-value layer, when the labels are pure noise.

    For each draw, independent standard-normal labels for the support examples and for the
    queries; the scalar readout u is fitted by weighted ridge on the support features
    (with and without self-attention). Labels carry no signal, so any R^2 above zero on the
    support set is fitted noise; with self-attention the own label sits in the feature.
    Returns the mean weighted R^2 on the support set and the mean R^2 at the queries.
    """
    sums = {"train_self": 0.0, "train_masked": 0.0, "test_self": 0.0, "test_masked": 0.0}
    for _ in range(draws):
        y = rng.standard_normal(len(w))
        y_query = rng.standard_normal(K_qs.shape[0])
        for name, self_attention in (("self", True), ("masked", False)):
            z, z_query = label_smoother_features(K_ss, K_qs, y, w, self_attention)
            u = float(np.sum(w * z * y) / (np.sum(w * z * z) + lam))
            sums[f"train_{name}"] += 1.0 - np.sum(w * (y - u * z) ** 2) / np.sum(w * y**2)
            sums[f"test_{name}"] += 1.0 - np.sum((y_query - u * z_query) ** 2) / np.sum(y_query**2)
    return {k: float(v / draws) for k, v in sums.items()}


# --------------------------------------------------------------------------------------
# Derivatives of Prop. 1(B2): printed formulas and the ones derived here
# --------------------------------------------------------------------------------------


def printed_grad_u(params: Params, psi_q: Tensor, support: Tensor, w: Tensor) -> Tensor:
    """d y_hat / d u = sum_a alpha_a V psi_a (single head, printed scales)."""
    return attention_features(params, psi_q, support, w, PRINTED)


def printed_grad_V(params: Params, psi_q: Tensor, support: Tensor, w: Tensor) -> Tensor:
    """d y_hat / d V = sum_a alpha_a u psi_a^T."""
    alpha = normalise_scores(attention_scores(params, psi_q, support, w, PRINTED), w, "sum")
    return torch.einsum("hv,hn,nd->hvd", params["u"], alpha, support)


def printed_score_grads(params: Params, psi_q: Tensor, support: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """eq. score-gradients: d s_b/dQ = w_b K psi_b psi^T and d s_b/dK = w_b Q psi psi_b^T (b first)."""
    Q, K = params["Q"][0], params["K"][0]
    dQ = torch.einsum("b,bk,d->bkd", w, support @ K.T, psi_q)
    dK = torch.einsum("b,k,bd->bkd", w, Q @ psi_q, support)
    return dQ, dK


def dalpha_ds(alpha: Tensor, s_sum: Tensor) -> Tensor:
    """Quotient rule for alpha_a = s_a / sum_b s_b: d alpha_a / d s_b = (delta_ab - alpha_a) / sum_b s_b."""
    n = alpha.shape[-1]
    return (torch.eye(n, dtype=alpha.dtype, device=alpha.device) - alpha[:, None]) / s_sum


def derived_grad_QK(params: Params, psi_q: Tensor, support: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """d y_hat/dQ and d y_hat/dK for the printed single-head layer, by the chain rule.

    With S = sum_b s_b, psi_bar = sum_a alpha_a psi_a and g_b = u^T V (psi_b - psi_bar) / S,
    d y_hat/dQ = sum_b g_b w_b K psi_b psi^T and d y_hat/dK = sum_b g_b w_b Q psi psi_b^T.
    The query features enter through psi^T and through 1/S: the result is invariant to
    rescaling psi, not linear in it.
    """
    Q, K, V, u = params["Q"][0], params["K"][0], params["V"][0], params["u"][0]
    s = attention_scores(params, psi_q, support, w, PRINTED)[0]
    alpha = s / s.sum()
    psi_bar = alpha @ support
    g = (support - psi_bar) @ (V.T @ u) / s.sum()
    dQ = torch.einsum("b,bk,d->kd", g * w, support @ K.T, psi_q)
    dK = torch.einsum("b,k,bd->kd", g * w, Q @ psi_q, support)
    return dQ[None], dK[None]


def source_dalpha_dQ(params: Params, psi_q: Tensor, support: Tensor, w: Tensor) -> Tensor:
    """The source preprint's d alpha_a/dQ up to a factor: sum_b [delta_ab - alpha_b] w_a w_b K psi_a psi^T."""
    K = params["K"][0]
    s = attention_scores(params, psi_q, support, w, PRINTED)[0]
    alpha = s / s.sum()
    coef = w * (w - (alpha * w).sum())  # sum_b [delta_ab - alpha_b] w_a w_b
    return torch.einsum("a,ak,d->akd", coef, support @ K.T, psi_q)


def source_dalpha_dK(params: Params, psi_q: Tensor, support: Tensor, w: Tensor, exchange_roles: bool = False) -> Tensor:
    """The source preprint's d alpha_a/dK up to a factor, sum_b [delta_ab - alpha_b] w_a w_b psi psi_a^T Q^T.

    As typeset the result is N x d_psi x d_q: the transpose of the shape of K (d_k x d_psi),
    and transposed it is Q psi_a psi^T, with the query feature and the support feature in
    each other's places. ``exchange_roles`` returns the printed coefficients with the roles put
    back, Q psi psi_a^T (N x d_k x d_psi).
    """
    Q = params["Q"][0]
    s = attention_scores(params, psi_q, support, w, PRINTED)[0]
    alpha = s / s.sum()
    coef = w * (w - (alpha * w).sum())  # sum_b [delta_ab - alpha_b] w_a w_b
    if exchange_roles:
        return torch.einsum("a,k,ad->akd", coef, Q @ psi_q, support)
    return torch.einsum("a,d,ak->adk", coef, psi_q, support @ Q.T)


def derived_dalpha(params: Params, psi_q: Tensor, support: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """d alpha_a/dQ and d alpha_a/dK (each N x d_k x d_psi) for the single-head layer as printed.

    With S = sum_b s_b and d_a = w_a psi_a - alpha_a sum_b w_b psi_b, the quotient rule and
    eq. score-gradients give d alpha_a/dQ = S^{-1} K d_a psi^T and d alpha_a/dK = S^{-1} Q psi d_a^T,
    i.e. S^{-1} sum_b (delta_ab - alpha_a) w_b times K psi_b psi^T, resp. Q psi psi_b^T.
    """
    Q, K = params["Q"][0], params["K"][0]
    s = attention_scores(params, psi_q, support, w, PRINTED)[0]
    S = s.sum()
    alpha = s / S
    d = w[:, None] * support - alpha[:, None] * (w @ support)[None, :]
    dQ = torch.einsum("ak,d->akd", d @ K.T, psi_q) / S
    dK = torch.einsum("k,ad->akd", Q @ psi_q, d) / S
    return dQ, dK


def proportional_residual(true: Tensor, proposed: Tensor) -> float:
    """Relative residual of the best fit true_a ~ c_a proposed_a with one free scalar per index a.

    This is the most lenient reading of a formula stated only up to proportionality.
    """
    t = true.reshape(true.shape[0], -1)
    p = proposed.reshape(proposed.shape[0], -1)
    c = (t * p).sum(1) / (p * p).sum(1).clamp_min(1e-300)
    return float(((t - c[:, None] * p).norm() / t.norm()).item())


# --------------------------------------------------------------------------------------
# Tangent features and the empirical NTK
# --------------------------------------------------------------------------------------


def flat(grads: Params, keys: Iterable[str]) -> Tensor:
    """Concatenate per-parameter gradients (leading batch axis kept) in a fixed key order."""
    parts = [grads[k].reshape(grads[k].shape[0], -1) for k in keys]
    return torch.cat(parts, dim=1)


def tangent_features(
    params: Params,
    psi_q: Tensor,
    support: Tensor,
    w: Tensor,
    spec: AttentionSpec,
    keys: Sequence[str] = ("Q", "K", "V", "u"),
) -> Tensor:
    """phi_NTK(x, c) = grad_theta y_hat(x, c) for each query row (n_q x P), by vmap over jacrev."""
    fixed = {k: v for k, v in params.items() if k not in keys}

    def f(trained: Params, psi: Tensor) -> Tensor:
        return attention_output_fast({**fixed, **trained}, psi, support, w, spec)

    trained = {k: params[k] for k in keys}
    jac = vmap(jacrev(f), in_dims=(None, 0))(trained, psi_q)
    return flat(jac, keys)


def full_jacobian(
    params: Params, psi_q: Tensor, support: Tensor, w: Tensor, spec: AttentionSpec, mode: str = "rev"
) -> Tensor:
    """Jacobian of one query's output by jacrev or jacfwd (for cross-checking the two)."""
    jac_fn = jacrev if mode == "rev" else jacfwd
    grads = jac_fn(lambda p: attention_output(p, psi_q, support, w, spec))(params)
    return torch.cat([grads[k].reshape(-1) for k in ("Q", "K", "V", "u")])


def linearised_gd_prediction(
    K_train: Tensor,
    K_query: Tensor,
    f0_train: Tensor,
    f0_query: Tensor,
    y: Tensor,
    w: Tensor,
    eta: float,
    steps: int | None,
) -> Tensor:
    """Output of the linearised model after ``steps`` of full-batch GD on 1/2 sum_a w_a (f_a - y_a)^2.

    For f_lin(theta) = f_0 + J (theta - theta_0), GD moves the training residual as
    r_{t+1} = (I - eta K W) r_t with K = J J^T, and a query as
    f_t(x) = f_0(x) - eta k(x, X) W sum_{s<t} r_s. Writing W (I - eta K W)^s = W^{1/2} (I - eta K_W)^s W^{1/2}
    with K_W = W^{1/2} K W^{1/2} = U diag(l) U^T gives the symmetric, always-defined form

        f_t(x) = f_0(x) + k(x, X) W^{1/2} U diag(g(l)) U^T W^{1/2} (y - f_0(X)),
        g(l) = (1 - (1 - eta l)^t) / l      (g(0) = eta t; steps=None: gradient-flow limit g = 1/l, 0 at l = 0).

    Unlike f_0 + k K^{-1}(I - e^{-eta K W t})(y - f_0), it needs neither K nor W to be invertible.
    """
    wh = w.sqrt()
    gram = wh[:, None] * K_train * wh[None, :]
    lam, U = torch.linalg.eigh(gram)
    scale = lam.abs().max()
    if steps is None:
        g = torch.where(
            lam > 1e-12 * scale,
            1.0 / torch.where(lam > 1e-12 * scale, lam, torch.ones_like(lam)),
            torch.zeros_like(lam),
        )
    else:
        small = (eta * lam).abs() < 1e-12
        safe = torch.where(small, torch.ones_like(lam), lam)
        g = torch.where(
            small, eta * steps * torch.ones_like(lam), -torch.expm1(steps * torch.log1p(-eta * safe)) / safe
        )
    return f0_query + (K_query * wh[None, :]) @ (U @ (g * (U.T @ (wh * (y - f0_train)))))


def flow_prediction_inverse_form(
    K_train: Tensor, K_query: Tensor, f0_train: Tensor, f0_query: Tensor, y: Tensor, w: Tensor, time: float
) -> Tensor:
    """f_0(x) + k(x, X) K^{-1} (I - exp(-K W time)) (y - f_0(X)): gradient flow, needs an invertible K."""
    A = K_train * w[None, :]
    return f0_query + K_query @ torch.linalg.solve(
        K_train,
        (torch.eye(len(y), dtype=y.dtype, device=y.device) - torch.linalg.matrix_exp(-time * A)) @ (y - f0_train),
    )


def flow_prediction_symmetric(
    K_train: Tensor, K_query: Tensor, f0_train: Tensor, f0_query: Tensor, y: Tensor, w: Tensor, time: float
) -> Tensor:
    """The same gradient flow in the symmetric form, g(l) = (1 - e^{-l time}) / l."""
    wh = w.sqrt()
    lam, U = torch.linalg.eigh(wh[:, None] * K_train * wh[None, :])
    small = (lam * time).abs() < 1e-12
    safe = torch.where(small, torch.ones_like(lam), lam)
    g = torch.where(small, time * torch.ones_like(lam), -torch.expm1(-time * safe) / safe)
    return f0_query + (K_query * wh[None, :]) @ (U @ (g * (U.T @ (wh * (y - f0_train)))))


# --------------------------------------------------------------------------------------
# Early stopping against ridge: spectral filters of weighted least squares
# --------------------------------------------------------------------------------------


def spectral_fit(X: Array, y: Array, w: Array, filt: Callable[[Array], Array]) -> Array:
    """beta = V diag(s_i g(s_i^2)) U^T W^{1/2} y, from the SVD W^{1/2} X = U diag(s) V^T.

    Ridge, gradient flow and gradient descent on sum_a w_a (y_a - x_a^T beta)^2 / 2 from
    beta = 0 differ only in the filter g applied to the eigenvalues l = s^2 of X^T W X:
    ``ridge_filter``, ``flow_filter``, ``gd_filter``.
    """
    wh = np.sqrt(w)
    U, s, Vt = np.linalg.svd(wh[:, None] * X, full_matrices=False)
    return Vt.T @ (s * filt(s**2) * (U.T @ (wh * y)))


def ridge_filter(lam: float) -> Callable[[Array], Array]:
    """g(l) = 1 / (l + lam): ridge with penalty lam ||beta||^2 (on the loss sum_a w_a r_a^2, or lam/2 on half of it)."""
    return lambda ev: 1.0 / (ev + lam)


def flow_filter(time: float) -> Callable[[Array], Array]:
    """g(l) = (1 - e^{-l t}) / l: gradient flow on sum_a w_a r_a^2 / 2 run for time t (t at l = 0)."""
    return lambda ev: np.where(ev * time > 1e-12, -np.expm1(-ev * time) / np.where(ev > 0, ev, 1.0), time)


def gd_filter(eta: float, steps: int) -> Callable[[Array], Array]:
    """g(l) = (1 - (1 - eta l)^k) / l: k steps of gradient descent with step eta (eta k at l = 0)."""
    return lambda ev: np.where(
        eta * ev > 1e-12, -np.expm1(steps * np.log1p(-eta * ev)) / np.where(ev > 0, ev, 1.0), eta * steps
    )


def gd_weighted_least_squares(X: Array, y: Array, w: Array, eta: float, steps: Sequence[int]) -> dict[int, Array]:
    """beta after each step count in ``steps`` of gradient descent on sum_a w_a (y_a - x_a^T beta)^2 / 2 from 0.

    The literal iteration beta <- beta - eta X^T W (X beta - y), one step at a time.
    """
    beta = np.zeros(X.shape[1])
    wanted, out = set(steps), {}
    for k in range(1, max(steps) + 1):
        beta = beta - eta * (X.T @ (w * (X @ beta - y)))
        if k in wanted:
            out[k] = beta.copy()
    return out


def early_stopping_filter_gap(points: int = 200001) -> tuple[float, float]:
    """Largest difference between the shares of a spectral component fitted by flow and by ridge with lam = 1/t.

    With u = l t, gradient flow fits the share 1 - e^{-u} of the component along an eigenvector
    with eigenvalue l, ridge with lam = 1/t the share u / (1 + u). Returns the largest
    difference over u (on a fine log grid) and the u where it is attained.
    """
    u = np.logspace(-4, 4, points)
    gap = -np.expm1(-u) - u / (1.0 + u)
    i = int(np.argmax(gap))
    return float(gap[i]), float(u[i])


# --------------------------------------------------------------------------------------
# Prop. 1(B2) empirically: gradient descent on the full model against its linearisation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LazyData:
    """Support/training set (also the attention's support set) and held-out queries."""

    psi_train: Tensor
    y_train: Tensor
    w: Tensor
    psi_test: Tensor


@dataclass(frozen=True)
class LazyResult:
    """One gradient-descent run compared with the NTK prediction."""

    heads: int
    width: int
    seed: int
    discrepancy: float  # max over checkpoints t of ||f_GD(t) - f_NTK(t)|| / ||f_NTK(t) - f_0|| (held-out)
    discrepancy_end: float  # the same at the last step only
    kernel_change: float  # ||K_T - K_0||_F / ||K_0||_F on training + held-out points
    param_change: float  # ||theta_T - theta_0|| / ||theta_0|| over the trained parameters
    bottleneck_change: float  # ||B_T - B_0||_F / ||B_0||_F with B_h = K_h^T Q_h (NaN if Q, K frozen)
    f0_share: float  # ||f_0|| / ||f_NTK(T)|| on held-out queries: what dropping f_0 would miss
    train_residual_0: float  # weighted training residual of f_0, relative to the targets
    train_residual: float  # weighted training residual after GD, relative to the targets
    eta: float
    sign_flips: int  # (head, query) pairs whose sum of scores changed sign during training


def make_lazy_data(
    rng: np.random.Generator,
    n_train: int,
    n_test: int,
    d_x: int,
    d_c: int,
    weights: Array,
    noise: float = 0.1,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> LazyData:
    """Varying-coefficient data y = x^T B* phi(c) / sqrt(d_x d_c) + noise, features psi = x kron phi(c)."""
    n = n_train + n_test
    X, Phi = rng.standard_normal((n, d_x)), rng.standard_normal((n, d_c))
    B_star = rng.standard_normal((d_x, d_c))
    y = vc_predict(B_star, X, Phi) / math.sqrt(d_x * d_c) + noise * rng.standard_normal(n)
    psi = torch.as_tensor(joint_features(X, Phi), dtype=dtype, device=device)
    as_t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
    return LazyData(psi[:n_train], as_t(y[:n_train]), as_t(weights), psi[n_train:])


def _bottleneck(params: Params) -> Tensor:
    """B_h = K_h^T Q_h: the only way Q and K enter the output (a d_psi x d_psi matrix per head)."""
    return torch.einsum("hkd,hke->hde", params["K"], params["Q"])


def gd_vs_ntk(
    data: LazyData,
    heads: int,
    d_qk: int,
    d_v: int,
    norm: str,
    seed: int,
    steps: int,
    eta_frac: float,
    trained: Sequence[str] = ("Q", "K", "V", "u"),
    checkpoints: int = 4,
) -> tuple[LazyResult, dict[str, Tensor]]:
    """Train the full attention model by GD and compare with the NTK (linearised) prediction.

    The learning rate is eta = eta_frac / lambda_max(K_W) at initialisation, the largest
    stable step for the linearised model being 2 / lambda_max. The two functions are
    compared on held-out queries at ``checkpoints`` evenly spaced steps, because the
    theory concerns the whole trajectory: two different dynamics can still end at the
    same function when the data determine it (see the notebook's overdetermined control).
    The initialisation depends on (seed, heads, d_qk, d_v) only, so runs that differ in
    the data, the normalisation or the trained parameters start from the same weights.
    Returns the summary and the test-set functions at the last step (f_0, f_NTK, f_GD).
    """
    psi_all = torch.cat([data.psi_train, data.psi_test])
    n_train = len(data.y_train)
    d_psi = psi_all.shape[1]
    spec = ntk_spec(norm, d_psi, d_qk, d_v, heads)
    rng = np.random.default_rng([seed, heads, d_qk, d_v])
    p0 = init_attention(rng, heads, d_qk, d_v, d_psi, psi_all.dtype, psi_all.device)
    support, w = data.psi_train, data.w

    def outputs(p: Params, psi: Tensor) -> Tensor:
        return attention_output_fast(p, psi, support, w, spec)

    keys = list(trained)
    J0 = tangent_features(p0, psi_all, support, w, spec, keys)
    K0 = J0 @ J0.T
    with torch.no_grad():
        f0 = outputs(p0, psi_all)
    wh = w.sqrt()
    lam_max = torch.linalg.eigvalsh(wh[:, None] * K0[:n_train, :n_train] * wh[None, :]).max()
    eta = float(eta_frac / lam_max)
    test = slice(n_train, None)
    marks = sorted({max(1, round(steps * (j + 1) / checkpoints)) for j in range(checkpoints)})

    def ntk_at(t: int) -> Tensor:
        return linearised_gd_prediction(
            K0[:n_train, :n_train], K0[test, :n_train], f0[:n_train], f0[test], data.y_train, w, eta, t
        )

    p = {k: v.clone().requires_grad_(k in keys) for k, v in p0.items()}
    gaps = []
    for step in range(1, steps + 1):
        residual = outputs(p, data.psi_train) - data.y_train
        loss = 0.5 * (w * residual**2).sum()
        grads = torch.autograd.grad(loss, [p[k] for k in keys])
        with torch.no_grad():
            for k, g in zip(keys, grads, strict=True):
                p[k] -= eta * g
            if step in marks:
                f_ntk_t = ntk_at(step)
                gaps.append(float(((outputs(p, data.psi_test) - f_ntk_t).norm() / (f_ntk_t - f0[test]).norm()).item()))
    pT = {k: v.detach() for k, v in p.items()}
    with torch.no_grad():
        fT = outputs(pT, psi_all)
    JT = tangent_features(pT, psi_all, support, w, spec, keys)
    KT = JT @ JT.T
    f_ntk = ntk_at(steps)

    delta = torch.cat([(pT[k] - p0[k]).reshape(-1) for k in keys])
    theta0 = torch.cat([p0[k].reshape(-1) for k in keys])
    if "Q" in keys or "K" in keys:
        B0, BT = _bottleneck(p0), _bottleneck(pT)
        bottleneck = float(((BT - B0).norm() / B0.norm()).item())
    else:
        bottleneck = float("nan")
    result = LazyResult(
        heads=heads,
        width=d_qk,
        seed=seed,
        discrepancy=max(gaps) if all(math.isfinite(g) for g in gaps) else float("nan"),
        discrepancy_end=gaps[-1],
        kernel_change=float(((KT - K0).norm() / K0.norm()).item()),
        param_change=float((delta.norm() / theta0.norm()).item()),
        bottleneck_change=bottleneck,
        f0_share=float((f0[test].norm() / f_ntk.norm()).item()),
        train_residual_0=float(((wh * (f0[:n_train] - data.y_train)).norm() / (wh * data.y_train).norm()).item()),
        train_residual=float(((wh * (fT[:n_train] - data.y_train)).norm() / (wh * data.y_train).norm()).item()),
        eta=eta,
        sign_flips=int(
            (
                torch.sign(score_sums(p0, psi_all, support, w, spec))
                != torch.sign(score_sums(pT, psi_all, support, w, spec))
            )
            .sum()
            .item()
        ),
    )
    return result, {"f0": f0[test], "f_ntk": f_ntk, "f_gd": fT[test]}


def geometric_mean(values: Iterable[float]) -> float:
    """Geometric mean, the natural average of quantities compared on log axes."""
    v = np.asarray(list(values), dtype=float)
    return float(np.exp(np.mean(np.log(v))))
