"""The adapter params at validation: every family's setup node shows them; a setting of another kind, or
LoCon on Flux, is a validation error naming the node's param; existing graphs (no adapter param) still
validate and mean plain LoRA."""

from __future__ import annotations

import pytest


def _validate(registry, setup_type, model_type, params):
    from runtime.graph_file import loads_graph
    from runtime.validate import validate

    text = (f"format: nodetrainer.graph/1\nname: x\nnodes:\n  base:\n    type: {model_type}@1\n"
            f"  lora:\n    type: {setup_type}@1\n    in: {{model: base.model}}\n"
            f"    params: {params}\n")
    return validate(loads_graph(text, registry), registry, for_run=False)


FAMILIES = [("sd.lora_setup", "sd.tiny_model"), ("sdxl.lora_setup", "sdxl.tiny_model"),
            ("flux.lora_setup", "flux.tiny_model")]


@pytest.mark.parametrize("setup,loader", FAMILIES)
def test_every_family_shows_the_adapter_params(registry, setup, loader):
    spec = registry.get(setup)
    params = spec.params
    assert params["adapter"].default == "lora"
    assert tuple(params["adapter"].kind.options) == ("lora", "dora", "locon", "loha", "lokr", "oft")
    for name in ("conv_rank", "conv_alpha", "lokr_factor", "lokr_decompose_both", "oft_block_size", "oft_coft"):
        assert params[name].doc and " only" in params[name].doc, name


@pytest.mark.parametrize("setup,loader", FAMILIES)
def test_a_setting_of_another_kind_is_a_validation_error_naming_the_param(registry, setup, loader):
    v = _validate(registry, setup, loader, "{adapter: loha, oft_block_size: 8}")
    found = [(p.node, p.field) for p in v.errors]
    assert ("lora", "param 'oft_block_size'") in found, v.problems
    assert any("param 'oft_block_size' is for adapter oft only (adapter is loha)" in p.message for p in v.errors)
    assert not [p for p in _validate(registry, setup, loader, "{adapter: oft, oft_block_size: 8}").errors
                if p.node == "lora"]
    assert not [p for p in _validate(registry, setup, loader, "{rank: 4}").errors if p.node == "lora"]


def test_locon_on_flux_is_a_validation_error(registry):
    v = _validate(registry, "flux.lora_setup", "flux.tiny_model", "{adapter: locon}")
    assert [(p.node, p.field) for p in v.errors if p.node == "lora"] == [("lora", "param 'adapter'")], v.problems
    assert "3x3 convolutions" in v.errors[0].message
    assert not [p for p in _validate(registry, "sd.lora_setup", "sd.tiny_model", "{adapter: locon}").errors
                if p.node == "lora"]
