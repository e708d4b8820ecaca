"""D-Adaptation (``dadaptation``): learning-rate free, ``lr`` multiplies the estimated step size d (use 1.0)."""

from __future__ import annotations

from .entry import Entry, layer_scale, one_rate

PKG = {"package": "dadaptation", "pip": "dadaptation", "adaptive": True}
D = {"weight_decay": "weight_decay", "d0": "d0"}
GROWTH = {"growth_rate": "growth_rate"}
# their step reads the first group's lr for every group: per-part rates are refused rather than ignored
OTHERS = "dadapt_adam (per-part rates as its layer_scale) or prodigy_plus_schedule_free"

OPTIMIZERS = {
    "dadapt_adam": Entry("dadaptation:DAdaptAdam", {**D, **GROWTH, "beta1": "betas[0]", "beta2": "betas[1]",
                                                    "eps": "eps", "decouple": "decouple",
                                                    "use_bias_correction": "use_bias_correction"},
                         groups=layer_scale, summary="D-Adaptation Adam", **PKG),
    "dadapt_sgd": Entry("dadaptation:DAdaptSGD", {**D, **GROWTH, "momentum": "momentum"},
                        groups=one_rate("dadapt_sgd (dadaptation)", OTHERS), summary="D-Adaptation SGD", **PKG),
    "dadapt_adagrad": Entry("dadaptation:DAdaptAdaGrad", {**D, **GROWTH, "momentum": "momentum", "eps": "eps"},
                            groups=one_rate("dadapt_adagrad (dadaptation)", OTHERS), summary="D-Adaptation AdaGrad",
                            **PKG),
    "dadapt_lion": Entry("dadaptation:DAdaptLion", {**D, "beta1": "betas[0]", "beta2": "betas[1]"},
                         groups=one_rate("dadapt_lion (dadaptation)", OTHERS), summary="D-Adaptation Lion",
                         **PKG),
    "dadapt_adan": Entry("dadaptation:DAdaptAdan", {**D, **GROWTH, "beta1": "betas[0]", "beta2": "betas[1]",
                                                    "beta3": "betas[2]", "eps": "eps", "no_prox": "no_prox"},
                         groups=one_rate("dadapt_adan (dadaptation)", OTHERS), summary="D-Adaptation Adan", **PKG),
}
