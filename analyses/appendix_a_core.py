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
* tangent features, the empirical NTK and the linearised (NTK) prediction of gradient
  descent on a weighted squared loss (Prop. 1(B2)), and the width experiment.

Checks take the implementation under test as an argument where a unit test needs to
show that a deliberately wrong implementation is caught.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

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


def make_weights(rng: np.random.Generator, n: int, dist: str = "uniform", zero_fraction: float = 0.2,
                 low: float = 0.2, high: float = 3.0) -> Array:
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


def bilinear_error(B: Array, x: Array, z: Array, vec: Callable[[Array], Array] = vec_col,
                   order: str = "xz") -> float:
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


def init_attention(rng: np.random.Generator, heads: int, d_qk: int, d_v: int, d_psi: int,
                   dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> Params:
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
    q = c * (torch.einsum("hkd,qd->hqk", params["Q"], psi_q) if batched else
             torch.einsum("hkd,d->hk", params["Q"], psi_q)[:, None, :])
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


def tangent_features(params: Params, psi_q: Tensor, support: Tensor, w: Tensor, spec: AttentionSpec,
                     keys: Sequence[str] = ("Q", "K", "V", "u")) -> Tensor:
    """phi_NTK(x, c) = grad_theta y_hat(x, c) for each query row (n_q x P), by vmap over jacrev."""
    fixed = {k: v for k, v in params.items() if k not in keys}

    def f(trained: Params, psi: Tensor) -> Tensor:
        return attention_output_fast({**fixed, **trained}, psi, support, w, spec)

    trained = {k: params[k] for k in keys}
    jac = vmap(jacrev(f), in_dims=(None, 0))(trained, psi_q)
    return flat(jac, keys)


def full_jacobian(params: Params, psi_q: Tensor, support: Tensor, w: Tensor, spec: AttentionSpec,
                  mode: str = "rev") -> Tensor:
    """Jacobian of one query's output by jacrev or jacfwd (for cross-checking the two)."""
    jac_fn = jacrev if mode == "rev" else jacfwd
    grads = jac_fn(lambda p: attention_output(p, psi_q, support, w, spec))(params)
    return torch.cat([grads[k].reshape(-1) for k in ("Q", "K", "V", "u")])


def linearised_gd_prediction(K_train: Tensor, K_query: Tensor, f0_train: Tensor, f0_query: Tensor, y: Tensor,
                             w: Tensor, eta: float, steps: int | None) -> Tensor:
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
        g = torch.where(lam > 1e-12 * scale, 1.0 / torch.where(lam > 1e-12 * scale, lam, torch.ones_like(lam)),
                        torch.zeros_like(lam))
    else:
        small = (eta * lam).abs() < 1e-12
        safe = torch.where(small, torch.ones_like(lam), lam)
        g = torch.where(small, eta * steps * torch.ones_like(lam),
                        -torch.expm1(steps * torch.log1p(-eta * safe)) / safe)
    return f0_query + (K_query * wh[None, :]) @ (U @ (g * (U.T @ (wh * (y - f0_train)))))


def flow_prediction_inverse_form(K_train: Tensor, K_query: Tensor, f0_train: Tensor, f0_query: Tensor, y: Tensor,
                                 w: Tensor, time: float) -> Tensor:
    """f_0(x) + k(x, X) K^{-1} (I - exp(-K W time)) (y - f_0(X)): gradient flow, needs an invertible K."""
    A = K_train * w[None, :]
    return f0_query + K_query @ torch.linalg.solve(K_train, (torch.eye(len(y), dtype=y.dtype, device=y.device)
                                                             - torch.linalg.matrix_exp(-time * A)) @ (y - f0_train))


def flow_prediction_symmetric(K_train: Tensor, K_query: Tensor, f0_train: Tensor, f0_query: Tensor, y: Tensor,
                              w: Tensor, time: float) -> Tensor:
    """The same gradient flow in the symmetric form, g(l) = (1 - e^{-l time}) / l."""
    wh = w.sqrt()
    lam, U = torch.linalg.eigh(wh[:, None] * K_train * wh[None, :])
    small = (lam * time).abs() < 1e-12
    safe = torch.where(small, torch.ones_like(lam), lam)
    g = torch.where(small, time * torch.ones_like(lam), -torch.expm1(-time * safe) / safe)
    return f0_query + (K_query * wh[None, :]) @ (U @ (g * (U.T @ (wh * (y - f0_train)))))


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


def make_lazy_data(rng: np.random.Generator, n_train: int, n_test: int, d_x: int, d_c: int, weights: Array,
                   noise: float = 0.1, dtype: torch.dtype = torch.float64,
                   device: str | torch.device = "cpu") -> LazyData:
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


def gd_vs_ntk(data: LazyData, heads: int, d_qk: int, d_v: int, norm: str, seed: int, steps: int,
              eta_frac: float, trained: Sequence[str] = ("Q", "K", "V", "u"),
              checkpoints: int = 4) -> tuple[LazyResult, dict[str, Tensor]]:
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
        return linearised_gd_prediction(K0[:n_train, :n_train], K0[test, :n_train], f0[:n_train], f0[test],
                                        data.y_train, w, eta, t)

    p = {k: v.clone().requires_grad_(k in keys) for k, v in p0.items()}
    gaps = []
    for step in range(1, steps + 1):
        residual = outputs(p, data.psi_train) - data.y_train
        loss = 0.5 * (w * residual**2).sum()
        grads = torch.autograd.grad(loss, [p[k] for k in keys])
        with torch.no_grad():
            for k, g in zip(keys, grads):
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
        heads=heads, width=d_qk, seed=seed,
        discrepancy=max(gaps) if all(math.isfinite(g) for g in gaps) else float("nan"),
        discrepancy_end=gaps[-1],
        kernel_change=float(((KT - K0).norm() / K0.norm()).item()),
        param_change=float((delta.norm() / theta0.norm()).item()),
        bottleneck_change=bottleneck,
        f0_share=float((f0[test].norm() / f_ntk.norm()).item()),
        train_residual_0=float(((wh * (f0[:n_train] - data.y_train)).norm() / (wh * data.y_train).norm()).item()),
        train_residual=float(((wh * (fT[:n_train] - data.y_train)).norm() / (wh * data.y_train).norm()).item()),
        eta=eta,
        sign_flips=int((torch.sign(score_sums(p0, psi_all, support, w, spec))
                        != torch.sign(score_sums(pT, psi_all, support, w, spec))).sum().item()),
    )
    return result, {"f0": f0[test], "f_ntk": f_ntk, "f_gd": fT[test]}


def geometric_mean(values: Iterable[float]) -> float:
    """Geometric mean, the natural average of quantities compared on log axes."""
    v = np.asarray(list(values), dtype=float)
    return float(np.exp(np.mean(np.log(v))))
