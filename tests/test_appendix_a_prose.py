"""No sentence of Appendix A may contradict a recorded measurement.

Every result-dependent sentence of ``content/91.appendix-a.md`` is switched by a recorded
boolean, ``{% if appendix_a.<fact>.raw %}``. These tests run the notebook at the ``ci``
profile (once per session, shared with ``tests/test_appendix_a.py``) and check that

(a) every name used in such a condition is a recorded boolean of the notebook (an unknown
    name would silently test false in Jinja and pick the wrong sentence);
(b) each recorded fact equals its condition re-derived here, independently of the
    notebook's own code, from the numeric records it is based on (``DERIVATIONS``);
(c) every condition in the text has a re-derivation, so a new switch cannot go unchecked,
    and every re-derivation and every recorded boolean is used by the text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from test_appendix_a import ci_manifest

REPO = Path(__file__).resolve().parents[1]
APPENDIX = REPO / "content" / "91.appendix-a.md"

# Jinja statement tags that test a condition: {% if ... %} and {% elif ... %} (with optional "-" trimming).
CONDITION = re.compile(r"\{%-?\s*(?:el)?if\s+(.*?)\s*-?%\}", re.S)
RAW = re.compile(r"appendix_a\.([A-Za-z_][A-Za-z0-9_]*)\.raw\b")


class Records(dict):
    """Recorded values by key; ``tol(key)`` is the tolerance the notebook recorded with a float."""

    def __init__(self, manifest: dict):
        super().__init__({k: e.get("value") for k, e in manifest["records"].items() if e["kind"] in ("value", "table")})
        self._tolerance = {k: e.get("tolerance") for k, e in manifest["records"].items()}

    def tol(self, key: str) -> float:
        tolerance = self._tolerance[key]
        assert tolerance is not None, f"{key} was recorded without a tolerance"
        return float(tolerance)

    def holds(self, *keys: str) -> bool:
        """Each named identity is within the tolerance it was recorded with."""
        return all(self[k] <= self.tol(k) for k in keys)

    def fails(self, *keys: str) -> bool:
        """Each named printed statement is off by more than the recorded failure threshold."""
        return all(self[k] > self["fail_threshold"] for k in keys)


def _monotone_until_roundoff(gaps: list[float], floor: float = 1e-12) -> bool:
    return all(later < earlier or later < floor for earlier, later in zip(gaps, gaps[1:], strict=False))


def _float32_dual_limits(rows: list[dict[str, Any]]) -> bool:
    worst = max(rows, key=lambda row: row["log10 κ"])
    primal_fine = all(row["log10 float32 primal error"] <= -5 for row in rows)
    return primal_fine and worst["log10 float32 dual error"] - worst["log10 float32 primal error"] >= 2


# fact -> its condition, from the numeric records it summarises.
DERIVATIONS: dict[str, Callable[[Records], bool]] = {
    # identities and Proposition 1(A)
    "vec_abc_holds": lambda r: r.holds("err_vec_abc"),
    "bilinear_corrected": lambda r: (
        r.fails("err_bilinear_as_printed") and r.holds("err_bilinear_swapped", "err_bilinear_row_vec")
    ),
    "vc_linear_corrected": lambda r: r.fails("err_vc_linear_as_printed") and r.holds("err_vc_linear_row_vec"),
    "prop1a_holds": lambda r: r.holds("err_prop1a", "err_product_kernel"),
    "ridge_forms_hold": lambda r: r.holds("err_primal_stationary", "err_dual_beta", "err_primal_dual"),
    "prop1a_any_y_holds": lambda r: (
        r["prop1a_any_y_max_rel"] <= r.tol("prop1a_any_y_max_rel")
        and max(row["relative difference"] for row in r["prop1a_any_y"]) <= r["prop1a_any_y_max_rel"]
    ),
    "prop1a_float32_tracks_cond": lambda r: (
        0.75 <= r["prop1a_float32_slope"] <= 1.25 and r["prop1a_float32_ratio_max"] <= 1.0
    ),
    "prop1a_float32_dual_limits": lambda r: _float32_dual_limits(r["prop1a_float32"]),
    # Corollary 1 in (A)
    "zero_weight_removal_a_holds": lambda r: r.holds("err_zero_weight_removal"),
    "reweight_holds": lambda r: r.holds("err_reweight", "err_reweight_ridge_form"),
    "reweight_without_mu_fails": lambda r: r.fails("err_reweight_without_mu"),
    "a_removal_keeps_gram": lambda r: r.holds("a_removal_gram_shift"),
    # (B1)
    "b1_krr_holds": lambda r: r.holds("err_b1_krr", "err_zero_weight_removal_b1"),
    "b1_features_hold": lambda r: r.holds(
        "b1_features_independent_err", "b1_features_matrix_form_err", "b1_support_features_err"
    ),
    "b1_literal_undefined": lambda r: (
        r["b1_literal_error"] != "none" and r["b1_literal_inner_left"] != r["b1_literal_inner_right"]
    ),
    "b1_literal_transposed_holds": lambda r: r.holds("b1_literal_transposed_err"),
    "b1_literal_1d_hides": lambda r: r.holds("b1_literal_1d_err"),
    "sum_denominator_changes_sign": lambda r: 0.0 < r["frac_negative_denominator"] < 1.0,
    "b1_blowup_inverse": lambda r: abs(r["b1_blowup_slope"] - (-1.0)) <= 0.05,
    "count_norm_breaks_removal": lambda r: r.fails("err_zero_weight_removal_count_norm"),
    "b1_scale_invariance": lambda r: (
        r.holds("err_b1_scale_invariant", "err_b1_linear_in_query_weights_norm")
        and r.fails("err_b1_linear_in_query_as_printed")
    ),
    "b1_weights_change_kernel": lambda r: r.fails("err_b1_weights_measure_only"),
    # what (B1) leaves unstated
    "b1_values_label_free": lambda r: (
        r.holds("b1_label_free_linearity_err") and r.fails("b1_label_values_nonlinearity")
    ),
    "b1_self_attention_changes_kernel": lambda r: (
        r.fails(
            "b1_self_attention_feature_shift",
            "b1_self_attention_feature_shift_weights_norm",
            "b1_self_attention_prediction_shift",
            "b1_self_attention_prediction_shift_weights_norm",
        )
        and r.holds("b1_self_attention_masked_krr_err")
    ),
    "b1_self_attention_leaks": lambda r: (
        r["b1_leak_r2_train_self"] > max(r["b1_leak_r2_train_masked"], r["b1_leak_r2_test_self"])
    ),
    "b1_leak_hurts_heldout": lambda r: r["b1_leak_r2_test_masked"] > r["b1_leak_r2_test_self"],
    "b1_label_values_first_term": lambda r: (
        r.holds("b1_label_values_first_term_err", "b1_label_values_series_err")
        and r.fails("b1_label_values_first_term_gap")
    ),
    "b1_label_values_converge": lambda r: (
        _monotone_until_roundoff([10 ** row["log10 gap to KRR"] for row in r["b1_label_values_layers"]])
        and r["b1_label_values_gap_last"] <= 1e-6
        and math.isclose(
            10 ** r["b1_label_values_layers"][-1]["log10 gap to KRR"], r["b1_label_values_gap_last"], rel_tol=1e-9
        )
    ),
    "b1_label_values_masked_diverges": lambda r: (
        r["b1_label_values_masked_rate"] > 1.0
        and r.fails("b1_label_values_masked_gap_min")
        and math.isclose(
            min(10 ** row["log10 gap, support labels without self-attention"] for row in r["b1_label_values_layers"]),
            r["b1_label_values_masked_gap_min"],
            rel_tol=1e-9,
        )
    ),
    # removal and the remaining kernel
    "b_removal_moves_gram": lambda r: (
        min(
            r[k]
            for k in (
                "b1_removal_gram_shift",
                "b1_weights_norm_removal_gram_shift",
                "b2_removal_gram_shift",
                "b2_weights_norm_removal_gram_shift",
            )
        )
        > r["b_removal_gram_tol"]
        and r.holds("a_removal_gram_shift")
    ),
    "b_zero_weight_deletion_keeps_gram": lambda r: r.holds("b_zero_weight_deletion_gram_shift"),
    "zero_weight_is_removal": lambda r: r.holds(
        "err_zero_weight_removal",
        "err_zero_weight_removal_b1",
        "err_zero_weight_removal_ntk",
        "err_zero_weight_removal_gd",
    ),
    # derivatives of (B2)
    "b2_printed_derivatives_hold": lambda r: r.holds(
        "err_grad_u", "err_grad_v", "err_score_grads", "err_dalpha_ds", "err_jacfwd_jacrev"
    ),
    "qk_gradients_hold": lambda r: r.holds("err_grad_qk_derived"),
    "dalpha_dq_source_fails": lambda r: r.fails("err_dalpha_dq_source") and r.holds("dalpha_dq_corrected_err"),
    "dalpha_dk_wrong_shape": lambda r: r["dalpha_dk_printed_shape"] != r["dalpha_dk_autograd_shape"],
    "dalpha_dk_source_fails": lambda r: (
        r.fails("dalpha_dk_transposed_residual", "dalpha_dk_roles_exchanged_residual")
        and r.holds("dalpha_dk_corrected_err")
    ),
    "fast_form_holds": lambda r: r.holds("err_fast_form"),
    # structure of the tangent kernel
    "ntk_scale_invariance": lambda r: (
        r.holds("err_ntk_scale_invariant")
        and r.fails("err_ntk_linear_in_query_as_printed", "err_ntk_kernel_scaling_as_printed")
    ),
    "ntk_not_linear_in_support_printed": lambda r: r.fails("err_ntk_linear_in_support_as_printed"),
    "ntk_fixed_norm_linear": lambda r: r.holds(
        "err_ntk_linear_in_query_weights_norm", "err_ntk_linear_kernel_weights_norm"
    ),
    "ntk_support_degree_four": lambda r: (
        abs(r["ntk_support_degree"] - 4.0) <= 1e-6 and r.fails("err_ntk_linear_in_support_weights_norm")
    ),
    "ntk_gram_rank_bounded": lambda r: r["ntk_gram_rank"] <= r["d_psi"] and r["d_psi"] < r["ntk_gram_n"],
    "ntk_as_linear_ridge_holds": lambda r: r.holds("err_ntk_as_linear_ridge"),
    # NTK prediction
    "ntk_closed_form_holds": lambda r: r.holds("err_ntk_closed_form", "err_ntk_flow_forms"),
    "unified_ntk_holds": lambda r: r.holds("err_unified_ntk"),
    "unified_ntk_without_f0_fails": lambda r: r.fails("err_unified_ntk_without_f0"),
    "zero_weight_removal_b2_holds": lambda r: r.holds("err_zero_weight_removal_ntk", "err_zero_weight_removal_gd"),
    # early stopping, ridge and gradient flow
    "gd_exact_form_holds": lambda r: r.holds("gd_discrete_closed_form_err"),
    "gd_flow_first_order": lambda r: 0.9 <= r["gd_flow_order"] <= 1.1 and 0.9 <= r["gd_flow_order_quarter"] <= 1.1,
    "gd_flow_within_step": lambda r: (
        r["gd_flow_max_rel"] <= r["gd_flow_step"]
        and max(row["gap to gradient flow"] for row in r["gd_vs_ridge"]) == r["gd_flow_max_rel"]
    ),
    "gd_vs_ridge_only_approximate": lambda r: (
        r.fails("gd_vs_ridge_max_gap")
        and max(row["gap to ridge(1/t)"] for row in r["gd_vs_ridge"]) == r["gd_vs_ridge_max_gap"]
    ),
    "gd_vs_ridge_worst_in_spectrum": lambda r: r["gd_l_min"] <= r["gd_vs_ridge_worst_lambda"] <= r["gd_l_max"],
    "gd_vs_ridge_ends_smaller": lambda r: 5 * r["gd_vs_ridge_gap_ends"] < r["gd_vs_ridge_max_gap"],
    "gd_vs_ridge_best_still_off": lambda r: r.fails("gd_vs_ridge_best_gap_max"),
    "gd_vs_ridge_best_lambda_varies": lambda r: (
        2 * r["gd_vs_ridge_best_lt_at_worst"] < r["gd_vs_ridge_best_lt_short"]
        and r["gd_vs_ridge"][0]["best λ·t"] == r["gd_vs_ridge_best_lt_short"]
    ),
    # conditioning as lambda -> 0, and agreement over sizes
    "tall_dual_breaks": lambda r: (
        r["tall_dual_err_smallest_lambda"] > 1e-8 and r["tall_primal_err_smallest_lambda"] < 1e-12
    ),
    "wide_primal_breaks": lambda r: (
        r["wide_primal_err_smallest_lambda"] > 1e-8 and r["wide_dual_err_smallest_lambda"] < 1e-12
    ),
    "wide_dual_cond_overstated": lambda r: (
        r["wide_cond_dual_smallest_lambda"] > 1e6 * r["wide_cond_dual_pos_smallest_lambda"]
    ),
    "b1_cond_large": lambda r: r["b1_cond"] > 100 * r["b1_cond_weights_norm"],
    "forms_agree": lambda r: (
        r.holds("err_forms_over_sizes") and r["b1_err_largest_size"] <= 1e3 * r["b1_round_largest_size"]
    ),
    # gradient descent against the NTK prediction
    "ntk_width_no_linearisation": lambda r: r["ntk_slope_width"] > -0.3 and r["ntk_disc_width_last"] > 0.1,
    "param_change_falls": lambda r: -0.65 <= r["param_slope_width"] <= -0.35,
    "bottleneck_stays": lambda r: abs(r["bottleneck_slope_width"]) < 0.3 and abs(r["kernel_slope_width"]) < 0.3,
    "frozen_linearises": lambda r: r["ntk_slope_frozen"] < -0.3,
    "heads_linearise": lambda r: (
        r["ntk_slope_heads"] < -0.3
        and -0.7 <= r["bottleneck_slope_heads"] <= -0.3
        and r["ntk_disc_heads_last"] < r["ntk_disc_heads_first"]
    ),
    "f0_not_negligible": lambda r: r["f0_share_heads_last"] > 0.1,
    "sum_ill_behaved": lambda r: r["sum_share_f0_worse"] > 0 and r["sum_eta_ratio"] < 0.1,
    "control_agrees_despite_kernel_change": lambda r: (
        r["control_disc"] < 0.1 and r["control_kernel_change"] > 0.1 and r["control_n_positive"] > r["d_psi"]
    ),
    "b2_underdetermined": lambda r: r["b2_d_psi"] > r["b2_n_positive"],
}


def conditions(text: str) -> set[str]:
    """Names of the recorded facts tested by {% if %} / {% elif %} conditions of the text."""
    return {name for condition in CONDITION.findall(text) for name in RAW.findall(condition)}


@pytest.fixture(scope="module")
def text() -> str:
    return APPENDIX.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return ci_manifest(tmp_path_factory)


# ----------------------------------------------------------------------------- the text alone (fast)


def test_the_text_switches_on_facts(text):
    assert len(conditions(text)) >= 60


def test_raw_values_appear_only_in_conditions(text):
    """``.raw`` outside a condition would print an unformatted value, or hide a switch the tests miss."""
    in_conditions = sum(len(RAW.findall(c)) for c in CONDITION.findall(text))
    assert len(RAW.findall(text)) == in_conditions


def test_every_condition_has_a_rederivation(text):
    missing = sorted(conditions(text) - set(DERIVATIONS))
    assert not missing, f"conditions without a re-derivation in DERIVATIONS: {missing}"


def test_every_rederivation_is_used_by_the_text(text):
    stale = sorted(set(DERIVATIONS) - conditions(text))
    assert not stale, f"re-derivations of facts the text no longer switches on: {stale}"


def test_conditions_are_parsed_with_and_elif_and_not():
    sample = (
        "{% if appendix_a.one.raw %}a{% elif not appendix_a.two.raw %}b{% endif %}"
        "{%- if appendix_a.three.raw and appendix_a.four.raw -%}c{% endif %} {{ appendix_a.five }}"
    )
    assert conditions(sample) == {"one", "two", "three", "four"}


def test_a_rederivation_follows_the_numbers_it_is_based_on():
    """A derivation is a function of the records, not a constant: moving a number flips it."""
    base = {
        "fail_threshold": 1e-3,
        "b1_removal_gram_shift": 0.9,
        "b1_weights_norm_removal_gram_shift": 0.3,
        "b2_removal_gram_shift": 0.9,
        "b2_weights_norm_removal_gram_shift": 0.7,
        "b_removal_gram_tol": 1e-9,
        "a_removal_gram_shift": 0.0,
    }
    manifest = {"records": {k: {"kind": "value", "value": v, "tolerance": 1e-9} for k, v in base.items()}}
    assert DERIVATIONS["b_removal_moves_gram"](Records(manifest))
    manifest["records"]["b1_weights_norm_removal_gram_shift"]["value"] = 1e-12
    assert not DERIVATIONS["b_removal_moves_gram"](Records(manifest))
    manifest["records"]["b1_weights_norm_removal_gram_shift"]["value"] = 0.3
    manifest["records"]["a_removal_gram_shift"]["value"] = 1e-3
    assert not DERIVATIONS["b_removal_moves_gram"](Records(manifest))


# ----------------------------------------------------------------------------- against the ci run


def test_every_condition_names_a_recorded_boolean(text, manifest):
    records = manifest["records"]
    for name in sorted(conditions(text)):
        assert name in records, f"{{% if appendix_a.{name}.raw %}}: nothing of that name is recorded"
        entry = records[name]
        assert entry["kind"] == "value" and entry["type"] == "bool", f"{name} is a {entry['type']}, not a boolean"
        assert entry["description"], f"{name} has no description"


def test_every_recorded_boolean_is_a_switch_of_the_text(text, manifest):
    booleans = {k for k, e in manifest["records"].items() if e["kind"] == "value" and e["type"] == "bool"}
    assert booleans - conditions(text) == set()


def test_each_fact_equals_its_rederivation(text, manifest):
    records = Records(manifest)
    wrong = {}
    for name in sorted(conditions(text)):
        derived = DERIVATIONS[name](records)
        if bool(derived) != manifest["records"][name]["value"]:
            wrong[name] = (manifest["records"][name]["value"], derived)
    assert not wrong, f"recorded fact != re-derived condition (recorded, derived): {wrong}"
