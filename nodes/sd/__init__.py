"""Stable Diffusion 1.x / 2.x nodes: tiny model, loader, encoders, LoRA setup, sampler, savers.

Other families (SDXL, SD3, Flux) add their own package beside this one and reuse
the generic training nodes in ``nodes/train``.
"""
