# %% [markdown]
# # Example analysis
#
# A parameterized notebook (Jupytext percent format): livingreview runs it with Papermill,
# and the text uses what it records. Replace it with your own analysis; keep the cell tagged
# "parameters", whose values the profiles in manuscript.yaml override.

# %% tags=["parameters"]
n_samples: int = 200  # simulated observations (ci: 200; full: 20,000)
true_slope: float = 0.8  # the slope the data is simulated with
noise_sd: float = 1.0  # standard deviation of the noise
seed: int = 1  # random seed: a re-run gives the same numbers

# %%
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from livingreview import record

rng = np.random.default_rng(seed)
x = rng.uniform(0, 10, n_samples)
y = true_slope * x + rng.normal(0, noise_sd, n_samples)

# Least squares with an intercept, and the usual standard error of the slope.
design = np.column_stack([np.ones_like(x), x])
(intercept, slope), residual, *_ = np.linalg.lstsq(design, y, rcond=None)
sigma2 = float(residual[0]) / (n_samples - 2)
slope_se = float(np.sqrt(sigma2 / np.sum((x - x.mean()) ** 2)))

# %% [markdown]
# ## What the text uses
#
# Each record has a key the sections refer to, e.g. `{{ example.slope }}`. The tolerance says how
# far a re-run may drift and still count as the same result when a reviewer runs `verify`.

# %%
record.value("n_samples", n_samples)
record.value("slope", float(slope), fmt="{:.2f}", tolerance=1e-9)
record.value("slope_se", slope_se, fmt="{:.3f}", tolerance=1e-9)
record.value("slope_covers_truth", bool(abs(slope - true_slope) <= 1.96 * slope_se))

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.scatter(x, y, s=8, alpha=0.5, label="simulated data")
grid = np.linspace(0, 10, 50)
ax.plot(grid, intercept + slope * grid, color="C1", label=f"fit: slope {slope:.2f}")
ax.set_xlabel("x")
ax.set_ylabel("y")
ax.legend(frameon=False)
fig.tight_layout()
record.figure("trend", fig, caption="Simulated data and the least-squares line fitted to it.")
