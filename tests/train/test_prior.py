"""Prior preservation: a batch's ``role`` per item. ``prior`` items get the objective's prior_loss_weight;
``prior_prediction`` items train towards the frozen base model's prediction (the same model with every
peft adapter off, under no_grad), for LoRA, DoRA, LoHa, LoKr and OFT alike."""

from __future__ import annotations

import pytest
import torch

from nodes.train.flow_objective import FlowMatchingObjective
from nodes.train.objective import DiffusionObjective
from tests.train.helpers import NodeRunner, make_toy


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def adapt(model, config=None):
    """``model`` with a peft adapter on its net's two convs (default: LoRA, a no-op at start)."""
    from peft import LoraConfig, inject_adapter_in_model

    inject_adapter_in_model(config or LoraConfig(r=2, lora_alpha=2, target_modules=["0", "2"]), model.net)
    model.net.requires_grad_(False)
    for name, p in model.net.named_parameters():
        p.requires_grad_("lora_" in name or "hada_" in name or "lokr_" in name or "oft_" in name)
    return model


def randomize_adapter(model):
    with torch.no_grad():
        for name, p in model.net.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen(9)) * 0.5)


class Calls:
    """Records each predict call: the input and whether the adapters were off."""

    def __init__(self, model):
        self.calls = []
        inner = model.predict

        def predict(noisy, t, batch):
            off = all(layer.disable_adapters for layer in model.adapter_layers())
            out = inner(noisy, t, batch)
            self.calls.append((noisy.detach().clone(), off, out.detach().clone(), torch.is_grad_enabled()))
            return out

        model.predict = predict


def batch(roles, n_seed=1):
    return {"latent": torch.randn(len(roles), 4, 4, 4, generator=gen(n_seed)), "role": list(roles)}


def test_prior_prediction_with_a_no_op_adapter_has_zero_loss():
    model = adapt(make_toy())
    loss, _ = DiffusionObjective().loss(model, batch(["prior_prediction"] * 3), gen(2))
    assert loss.item() == 0.0
    standard, _ = DiffusionObjective().loss(model, batch(["standard"] * 3), gen(2))
    assert standard.item() > 0.01


def test_the_prior_prediction_target_is_the_adapter_off_prediction_of_the_same_input():
    model = adapt(make_toy())
    randomize_adapter(model)
    calls = Calls(model)
    b = batch(["prior_prediction", "standard"])
    loss, _ = DiffusionObjective().loss(model, b, gen(3))
    (noisy, off, pred, grad), (noisy2, off2, base, grad2) = calls.calls
    assert (off, grad, off2, grad2) == (False, True, True, False) and torch.equal(noisy, noisy2)
    g = gen(3)
    noise = torch.randn(b["latent"].shape, generator=g)
    per_item = [((pred[0] - base[0]) ** 2).mean(), ((pred[1] - noise[1]) ** 2).mean()]
    assert not torch.allclose(pred[0], base[0])
    assert loss.item() == pytest.approx(((per_item[0] + per_item[1]) / 2).item(), rel=1e-5)
    # afterwards the adapters are on again and only they train; the loss reaches them
    assert not any(layer.disable_adapters for layer in model.adapter_layers())
    trainable = {n for n, p in model.net.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.net.parameters() if p.requires_grad)


def test_prior_items_get_the_prior_loss_weight():
    model = make_toy()
    b = batch(["prior", "standard", "prior"])
    standard = dict(b, role=["standard"] * 3)
    per = []
    for i in range(3):  # each item's own loss, with the same draws: run the batch, weigh one item
        w = [0.0] * 3
        w[i] = 3.0
        per.append(DiffusionObjective().loss(model, dict(standard, loss_weight=torch.tensor(w)), gen(4))[0].item())
    loss, _ = DiffusionObjective(prior_loss_weight=2.5).loss(model, dict(b, loss_weight=torch.tensor([1.0, 1.0, 2.0])),
                                                             gen(4))
    # per[i] = item i's loss (times 3 / 3 items); prior weight and the concept's loss_weight multiply
    assert loss.item() == pytest.approx((2.5 * per[0] + per[1] + 2.5 * 2.0 * per[2]) / 3, rel=1e-5)


def test_without_adapters_or_with_a_bad_role_the_error_says_what_to_do():
    with pytest.raises(ValueError, match="train.diffusion_objective: the base model's prediction .role "
                                         "'prior_prediction'. needs a model with adapters"):
        DiffusionObjective().loss(make_toy(), batch(["prior_prediction"]), gen())
    with pytest.raises(ValueError, match="'role' of item 1 is 'reg'; roles are standard, prior, prior_prediction"):
        DiffusionObjective().loss(make_toy(), batch(["prior", "reg"]), gen())


def peft_configs():
    from peft import LoHaConfig, LoKrConfig, LoraConfig, OFTConfig

    targets = ["0", "2"]
    return {"lora": LoraConfig(r=2, target_modules=targets, init_lora_weights=False),
            "dora": LoraConfig(r=2, target_modules=targets, use_dora=True, init_lora_weights=False),
            "loha": LoHaConfig(r=2, target_modules=targets, init_weights=False),
            "lokr": LoKrConfig(r=2, target_modules=targets, init_weights=False),
            "oft": OFTConfig(r=0, oft_block_size=2, target_modules=targets, init_weights=False)}


@pytest.mark.parametrize("kind", ["lora", "dora", "loha", "lokr", "oft"])
def test_adapters_disabled_gives_the_base_model_for_every_peft_tuner(kind):
    import copy

    model = make_toy()
    base_net = copy.deepcopy(model.net)
    adapt(model, peft_configs()[kind])
    x = torch.randn(2, 4, 3, 3, generator=gen(5))
    with torch.no_grad():
        adapted, base = model.net(x), base_net(x)
        assert not torch.allclose(adapted, base, atol=1e-4)
        with model.adapters_disabled():
            torch.testing.assert_close(model.net(x), base)
        torch.testing.assert_close(model.net(x), adapted)
    assert any(p.requires_grad for p in model.net.parameters())


def test_the_flow_objective_takes_prior_prediction_too():
    from peft import LoraConfig, inject_adapter_in_model

    from tests.train.test_flow_objective import make_flow

    model = make_flow()
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["0", "2"]), model.net)
    loss, _ = FlowMatchingObjective().loss(model, batch(["prior_prediction"] * 2), gen(6))
    assert loss.item() == 0.0
    assert FlowMatchingObjective().loss(model, batch(["standard"] * 2), gen(6))[0].item() > 0.01


def test_a_real_lora_model_trains_prior_prediction_items_towards_its_base(tmp_path):
    """The tiny SD model with a LoRA on UNet and text encoder: a no-op LoRA predicts its base exactly."""
    from nodes.sd.build import build_tiny
    from nodes.sd.lora import LoraSetup
    from nodes.sd.text import tokenize

    model = build_tiny(seed=0)
    adapted = NodeRunner(tmp_path).run(LoraSetup, "lora", {"model": model}, rank=2, alpha=2.0,
                                       train_text_encoder=True)["adapted"]
    b = {"latent": torch.randn(2, 4, 8, 8, generator=gen(7)), "tokens": tokenize(model.tokenizer, ["a", "b"]),
         "role": ["prior_prediction", "prior_prediction"]}
    assert DiffusionObjective().loss(adapted, b, gen(8))[0].item() == 0.0
    assert DiffusionObjective().loss(adapted, dict(b, role=["standard"] * 2), gen(8))[0].item() > 0
