"""Top-level OneTrainer keys that no node param takes: why each is not needed, or why it is unsupported.

``account`` runs after the graph is built; a key already reported keeps its row.
"""

from __future__ import annotations

#: key -> why nodetrainer does not need it (the behaviour is there, elsewhere, or does not apply)
NOT_NEEDED = {
    "workspace_dir": "the run folder is chosen when the graph runs (nodetrainer run --workspace DIR)",
    "debug_dir": "only read with debug_mode",
    "huggingface_cache_dir": "nodetrainer downloads nothing while training (HF_HOME sets the cache)",
    "offline_mode": "nodetrainer downloads nothing while training",
    "continue_last_backup": "nodetrainer run GRAPH --resume last continues from the newest backup",
    "prevent_overwrites": "every run writes a new run folder",
    "include_train_config": "nodetrainer's saved files carry the graph in their metadata",
    "multi_gpu": "several GPUs: torchrun --nproc-per-node N nodetrainer run GRAPH (train.loop distributed auto)",
    "device_indexes": "the GPUs are chosen by CUDA_VISIBLE_DEVICES and torchrun",
    "temp_device": "nodetrainer keeps unused parts where their loader put them",
    "async_offloading": "only read with offloading",
    "enable_autocast_cache": "an autocast detail of OneTrainer's",
    "fallback_train_dtype": "train.loop's precision applies to every part",
    "frames": "video models only",
    "text_encoder_3_layer_skip": "not read for this model type",
    "text_encoder_4_layer_skip": "not read for this model type",
    "bundle_additional_embeddings": "only read with additional_embeddings",
    "embedding_weight_dtype": "embedding vectors train in float32",
    "lora_decompose_norm_epsilon": "only read with lora_decompose",
    "lora_decompose_output_axis": "only read with lora_decompose",
    "secrets": "credentials are never imported",
}
#: key -> why a changed value is unsupported
UNSUPPORTED = {
    "debug_mode": "nodetrainer has no debug mode that writes intermediate images (nodetrainer preview shows "
                  "a data node's items)",
    "only_cache": "a run that only fills the cache is not supported",
    "force_circular_padding": "circular padding (seamless textures) is not supported",
    "gradient_reduce_precision": "DDP reduces gradients in their own dtype",
    "fused_gradient_reduce": "DDP reduces gradients its own way",
    "async_gradient_reduce": "DDP reduces gradients its own way",
    "async_gradient_reduce_buffer": "DDP reduces gradients its own way",
    "preserve_embedding_norm": "keeping an embedding's norm is not supported",
    "additional_embeddings": "training extra embeddings beside a LoRA or fine-tune is not supported",
    "oft_block_share": "OFT with shared blocks is not supported",
    "oft_scaled": "scaled OFT is not supported",
    "lokr_use_tucker": "LoKr with Tucker decomposition is not supported",
    "lokr_weight_decompose": "LoKr with weight decomposition is not supported",
    "lokr_dora_on_output": "LoKr with weight decomposition is not supported",
    "lokr_full_matrix": "LoKr with a full matrix is not supported",
    "lokr_vec_trick": "a LoKr memory trick of OneTrainer's",
}


def account(imp) -> None:
    v = imp.v
    _layer_skips(imp)
    _method_keys(imp)
    for key, reason in NOT_NEEDED.items():
        if not imp.report.handled(key):
            imp.not_needed(key, reason)
    for key, reason in UNSUPPORTED.items():
        if imp.changed(key) and not imp.report.handled(key):
            imp.unsupported(key, reason)
    for key in ("text_encoder_sequence_length", "text_encoder_2_sequence_length"):
        if not imp.family.uses(key):
            imp.not_needed(key, f"not read for {v['model_type']}")
    for key in sorted(k for k in imp.cfg.changed if k.startswith("quantization.")):
        imp.unsupported(key, "quantized LoRA setups (SVD-quant, per-layer filters) are not supported")
    for key in sorted(k for k in imp.cfg.changed if k.startswith("cloud.")):
        (imp.unsupported if v["cloud"]["enabled"] else imp.not_needed)(
            key, "nodetrainer does not rent cloud machines" if v["cloud"]["enabled"] else "cloud training is off")
    for key in sorted(imp.cfg.unknown):
        imp.report.not_needed(key, "not a OneTrainer setting: OneTrainer ignores it too")


def _layer_skips(imp) -> None:
    from .values import clip_skip

    v = imp.v
    keys = ("text_encoder_layer_skip", "text_encoder_2_layer_skip")
    skips = {k: v[k] for k in keys}
    try:
        m = clip_skip(v["model_type"], skips)
    except Exception as e:  # Unsupported
        imp.unsupported(keys[0], str(getattr(e, "reason", e)))
        return
    if "clip_skip" in m.params:
        targets = [n for n, e in imp.b.nodes.items() if "clip_skip" in imp.b.registry.get(e.type).params]
        for node in targets:
            imp.b.set(node, "clip_skip", m.params["clip_skip"])
        for k in keys:
            imp.mapped(k, ", ".join(f"{n}.clip_skip" for n in targets))
    else:
        for k in keys:
            imp.not_needed(k, f"not read for {v['model_type']}")
            for note in m.notes:
                imp.report.note(k, note)


def _method_keys(imp) -> None:
    """Keys only one training method reads."""
    lora = ("peft_type", "lora_model_name", "lora_rank", "lora_alpha", "lora_decompose", "lora_weight_dtype",
            "dropout_probability", "layer_filter", "layer_filter_preset", "layer_filter_regex", "oft_block_size",
            "lokr_dim", "lokr_decompose_both", "lokr_decompose_factor", "lokr_use_tucker", "lokr_weight_decompose",
            "lokr_dora_on_output", "lokr_full_matrix", "lokr_vec_trick", "oft_block_share", "oft_scaled",
            "lora_decompose_norm_epsilon", "lora_decompose_output_axis")
    if imp.method != "LORA":
        for key in lora:
            imp.not_needed(key, f"only read by LoRA training, not {imp.method}")
    if imp.method != "EMBEDDING":
        for key in sorted(k for k in imp.cfg.changed if k.startswith("embedding.")):
            imp.not_needed(key, f"only read by embedding training, not {imp.method}")
        imp.not_needed("embedding_learning_rate", "only read with embeddings")
