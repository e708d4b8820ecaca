"""The editor's drag check with a real second family: behind train.loop an SDXL model is still an SDXLModel."""

from __future__ import annotations

from runtime.registry import default_registry


def test_the_editor_drag_check_refuses_sd_savers_behind_an_sdxl_loop(qapp):
    from editor.document import Document

    doc = Document(default_registry())
    for nid, t in (("base", "sdxl.tiny_model"), ("lora", "sdxl.lora_setup"), ("train", "train.loop"),
                   ("sd_save", "sd.save_lora"), ("xl_save", "sdxl.save_lora")):
        doc.add_node(t, (0, 0), node_id=nid)
    doc.connect("base", "model", "lora", "model")
    doc.connect("lora", "adapted", "train", "model")
    assert doc.check_connection("train", "trained", "xl_save", "model") is None
    why = doc.check_connection("train", "trained", "sd_save", "model")
    assert why and "SDXLModel" in why and "SDModel" in why
