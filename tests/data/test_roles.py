"""A concept's role (standard, prior, prior_prediction): a per-item field that reaches the batch as strings."""

from __future__ import annotations

from datagraph_helpers import graph_of, items_at, make_dataset, run_nodes


def nodes_for(root_a, root_b, role_b="prior", **extra) -> dict:
    nodes = {
        "a": ("data.concept", {"folder": str(root_a)}, {}),
        "b": ("data.concept", {"folder": str(root_b), "role": role_b}, {}),
        "source": ("data.concepts", {}, {"concepts": ["a.concept", "b.concept"]}),
        "load": ("data.load_image", {}, {"path": "source.path"}),
        "tensor": ("data.to_tensor", {}, {"image": "load.image"}),
    }
    nodes.update(extra)
    return nodes


def test_role_reaches_the_batch_as_a_list_of_strings(data_registry, tmp_path):
    a = make_dataset(tmp_path / "a", bad=False)
    b = make_dataset(tmp_path / "b", bad=False)
    nodes = nodes_for(a.root, b.root, "prior_prediction", batches=(
        "data.batches", {"batch_size": 4, "shuffle": False}, {"fields": ["source.caption", "source.role"]}))
    ran = run_nodes(graph_of(nodes), data_registry, ["batches", "source"], tmp=tmp_path)
    na, nb = len(a.good) - 1, len(b.good) - 1  # not recursive: sub/ is left out
    assert [it["role"] for it in items_at(ran, "source")] == ["standard"] * na + ["prior_prediction"] * nb
    roles = []
    for batch in ran.out("batches", "batches").epoch(0):
        assert isinstance(batch["role"], list) and len(batch["role"]) == len(batch["_index"])
        roles += batch["role"]
    assert roles == ["standard"] * na + ["prior_prediction"] * nb


def test_a_role_change_keys_the_role_field_but_not_the_images(data_registry, tmp_path):
    from runtime.data.keys import ItemKeyer

    a = make_dataset(tmp_path / "a", bad=False)
    b = make_dataset(tmp_path / "b", bad=False)

    def keys(role):
        ran = run_nodes(graph_of(nodes_for(a.root, b.root, role)), data_registry, ["tensor", "source"], tmp=tmp_path)
        last = ran.out("source", "role").space.length - 1  # an item of concept b
        image, role_key = ItemKeyer(ran.out("tensor", "image")), ItemKeyer(ran.out("source", "role"))
        return image.key(0, 0, last), role_key.key(0, 0, last)

    standard, prior = keys("standard"), keys("prior")
    assert standard[0] == prior[0]  # cached images and latents stay valid
    assert standard[1] != prior[1]  # a cached role does not


def test_role_is_a_documented_choice():
    from nodes.data.concepts import ConceptNode, ConceptsSource

    spec = ConceptNode.__node_spec__
    role = spec.params["role"].describe()
    assert role["options"] == ["standard", "prior", "prior_prediction"] and role["default"] == "standard"
    assert "prior_loss_weight" in role["doc"] and "adapters off" in role["doc"]
    assert ConceptsSource.__node_spec__.outputs["role"].type.name == "Role"
