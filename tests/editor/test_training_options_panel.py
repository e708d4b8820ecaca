"""Issue 14's options are reachable from the editor and the CLI with no editor change: for each node
that holds them, the properties panel has a row per param whose tooltip carries the param's doc, and
``nodetrainer nodes --describe TYPE --json`` lists the same params with the same docs."""

from __future__ import annotations

import json
from html import escape

import pytest

from editor.properties import PropertiesPanel
from tests.conftest import run_cli

#: node type -> params of issue 14 that must be among its rows (a sample of each part, not all)
OPTIONS = {
    "sd.lora_setup": ["adapter", "conv_rank", "conv_alpha", "lokr_factor", "oft_block_size"],
    "sdxl.lora_setup": ["adapter", "conv_rank", "lokr_decompose_both"],
    "flux.lora_setup": ["adapter", "oft_coft"],
    "train.optimizer": ["name", "lr", "weight_decay", "d_coef", "ns_steps", "muon_adam_lr"],
    "train.lr_schedule": ["name", "warmup", "cycles", "min_factor"],
    "train.diffusion_objective": ["loss", "mse_strength", "log_cosh_strength", "loss_weighting", "p2_gamma",
                                  "timestep_distribution", "timestep_shift", "generalized_offset_noise",
                                  "input_perturbation", "zero_terminal_snr", "masked_training",
                                  "unmasked_weight", "normalize_masked_area", "prior_loss_weight"],
    "train.flow_matching_objective": ["sampling", "loss", "masked_training", "prior_loss_weight"],
    "train.loop": ["compile", "optimizer_kernel", "tf32", "attention", "offload_activations"],
    "data.aspect_bucket": ["resolution", "resolutions"],
    "data.concept": ["role", "loss_weight"],
}


@pytest.mark.parametrize("type_id", sorted(OPTIONS))
def test_every_param_has_a_row_with_its_doc(qtbot, doc, registry, type_id):
    spec = registry.get(type_id)
    nid = doc.add_node(type_id)
    panel = PropertiesPanel()
    qtbot.addWidget(panel)
    panel.set_document(doc)
    panel.show_selection(nid)
    rows = panel.node_rows
    assert list(rows) == list(spec.params)
    assert set(OPTIONS[type_id]) <= set(rows), set(OPTIONS[type_id]) - set(rows)
    for name, param in spec.params.items():
        assert param.doc, f"{type_id}.{name} has no doc"
        assert escape(param.doc) in rows[name].label.toolTip()


def test_describe_lists_the_same_params_and_docs(registry):
    for type_id, wanted in OPTIONS.items():
        r = run_cli("nodes", "--describe", type_id, "--json")
        assert r.returncode == 0, r.stderr
        listed = {p["name"]: p["doc"] for p in json.loads(r.stdout)["params"]}
        spec = registry.get(type_id)
        assert listed == {n: p.doc for n, p in spec.params.items()}, type_id
        assert set(wanted) <= set(listed)
