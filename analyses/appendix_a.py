# %% [markdown]
# # Appendix A, checked numerically (first part: identities and Proposition 1(A))
#
# Every identity is evaluated in float64 on random data chosen to expose index and
# weighting mistakes: $d_x \ne d_c$, non-uniform weights that include exact zeros.
# Each check is recorded with the tolerance a reviewer's re-run must meet.

# %% tags=["parameters"]
n_examples: int = 60  # support-set size N
d_x: int = 3  # covariate dimension
d_c: int = 4  # context-feature dimension (differs from d_x on purpose)
lam: float = 0.1  # ridge penalty
n_lambdas: int = 12  # points in the lambda -> 0 sweep
seed: int = 0

# %%
import numpy as np
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from livingreview import record

rng = np.random.default_rng(seed)
TOL = 1e-9  # agreement expected of exact identities in float64


def vec(M):
    """Column-stacking vec, the convention under which vec(ABC) = (C^T kron A) vec(B)."""
    return M.reshape(-1, order="F")


# %% [markdown]
# ## The vec/Kronecker identities of eq. (vec)

# %%
A = rng.standard_normal((2, d_x))
B = rng.standard_normal((d_x, d_c))
C = rng.standard_normal((d_c, 5))
x = rng.standard_normal(d_x)
z = rng.standard_normal(d_c)

err_vec_abc = np.abs(vec(A @ B @ C) - np.kron(C.T, A) @ vec(B)).max()
bilinear = x @ B @ z
# As printed: <vec(B), x kron z> = x^T B z, with the same vec as the first identity.
err_as_printed = abs(vec(B) @ np.kron(x, z) - bilinear)
# With column-stacking vec the Kronecker factors must be swapped ...
err_swapped = abs(vec(B) @ np.kron(z, x) - bilinear)
# ... or, keeping x kron z, vec must stack rows.
err_row_vec = abs(B.reshape(-1) @ np.kron(x, z) - bilinear)

record.value("err_vec_abc", err_vec_abc, fmt="{:.1e}", tolerance=TOL)
record.value("err_bilinear_as_printed", err_as_printed, fmt="{:.2f}", tolerance=1e-6)
record.value("err_bilinear_swapped", err_swapped, fmt="{:.1e}", tolerance=TOL)
record.value("err_bilinear_row_vec", err_row_vec, fmt="{:.1e}", tolerance=TOL)
print(err_vec_abc, err_as_printed, err_swapped, err_row_vec)

# %% [markdown]
# ## Weighted ridge: primal (eq. primal) against dual (eq. dual / ridge-prediction)

# %%
X = rng.standard_normal((n_examples, d_x))
Phi = rng.standard_normal((n_examples, d_c))
y = rng.standard_normal(n_examples)
w = rng.uniform(0.2, 3.0, n_examples)
w[rng.choice(n_examples, size=n_examples // 5, replace=False)] = 0.0  # exact zeros
W = np.diag(w)
Wh = np.diag(np.sqrt(w))

# Joint features psi_a = x_a kron phi(c_a), eq. (joint-features).
Z = np.stack([np.kron(X[a], Phi[a]) for a in range(n_examples)])
x_q, phi_q = rng.standard_normal(d_x), rng.standard_normal(d_c)
psi_q = np.kron(x_q, phi_q)


def primal_prediction(design, query, penalty):
    p = design.shape[1]
    beta = np.linalg.solve(design.T @ W @ design + penalty * np.eye(p), design.T @ W @ y)
    return query @ beta


def dual_prediction(gram, k_query, penalty):
    return k_query @ np.linalg.solve(gram + penalty * np.eye(len(gram)), Wh @ y)


f_primal = primal_prediction(Z, psi_q, lam)
f_dual = dual_prediction(Wh @ Z @ Z.T @ Wh, Wh @ Z @ psi_q, lam)
record.value("err_primal_dual", abs(f_primal - f_dual), fmt="{:.1e}", tolerance=TOL)

# %% [markdown]
# ## Proposition 1(A): the varying-coefficient model is weighted KRR with the product kernel

# %%
# Fit theta(c) = B phi(c) directly: minimise sum_a w_a (y_a - x_a^T B phi(c_a))^2 + lam ||B||_F^2.
# The regressor of vec_col(B) is phi kron x; solve, then predict x_q^T B phi_q.
D = np.stack([np.kron(Phi[a], X[a]) for a in range(n_examples)])
beta_col = np.linalg.solve(D.T @ W @ D + lam * np.eye(d_x * d_c), D.T @ W @ y)
B_hat = beta_col.reshape(d_x, d_c, order="F")
f_vc = x_q @ B_hat @ phi_q

K_product = Wh @ ((X @ X.T) * (Phi @ Phi.T)) @ Wh  # <x, x'> <phi, phi'>
k_product = Wh @ ((X @ x_q) * (Phi @ phi_q))
f_krr = dual_prediction(K_product, k_product, lam)

record.value("err_prop1a", abs(f_vc - f_krr), fmt="{:.1e}", tolerance=TOL)
record.value("err_product_kernel", np.abs(Z @ Z.T - (X @ X.T) * (Phi @ Phi.T)).max(), fmt="{:.1e}", tolerance=TOL)

# %% [markdown]
# ## Corollary 1: a zero weight is the same as removing the example

# %%
keep = w > 0
Zk, yk, wk = Z[keep], y[keep], w[keep]
beta_removed = np.linalg.solve(Zk.T @ np.diag(wk) @ Zk + lam * np.eye(Z.shape[1]), Zk.T @ np.diag(wk) @ yk)
record.value("n_zero_weights", int((~keep).sum()))
record.value("err_zero_weight_removal", abs(psi_q @ beta_removed - f_primal), fmt="{:.1e}", tolerance=TOL)

# %% [markdown]
# ## Conditioning as lambda -> 0
#
# The dual system has size N, the primal d_x d_c. With N > d_x d_c the weighted Gram
# matrix is singular (rank at most d_x d_c), so the dual solve degrades as lambda -> 0
# while the primal, of full rank, stays accurate.

# %%
lambdas = np.logspace(0, -11, n_lambdas)
gaps, conds = [], []
for penalty in lambdas:
    gram = Wh @ Z @ Z.T @ Wh + penalty * np.eye(n_examples)
    conds.append(np.linalg.cond(gram))
    gaps.append(abs(primal_prediction(Z, psi_q, penalty) - dual_prediction(Wh @ Z @ Z.T @ Wh, Wh @ Z @ psi_q, penalty)))
gaps, conds = np.array(gaps), np.array(conds)

record.value("lambda_smallest", float(lambdas[-1]), fmt="{:.0e}")
# Round-off at this conditioning differs between BLAS builds: only its order of magnitude is checked.
record.value("gap_smallest_lambda", float(gaps[-1]), fmt="{:.1e}", tolerance=1e-2)
record.value("cond_smallest_lambda", float(conds[-1]), fmt="{:.1e}", tolerance=10.0, relative=True)

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.loglog(lambdas, np.maximum(gaps, 1e-18), "o-", label="|primal − dual| prediction")
ax.loglog(lambdas, conds * np.finfo(float).eps, "--", label="cond(K_W + λI) · machine ε")
ax.set_xlabel("λ")
ax.invert_xaxis()
ax.legend(fontsize=8)
record.figure("lambda_sweep", fig, caption="Primal and dual weighted ridge predictions drift apart as λ → 0, "
              "tracking the conditioning of the dual system.")
