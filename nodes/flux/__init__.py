"""FLUX.1 nodes (dev and schnell): tiny model, loader (diffusers folders, single-file transformers in the
original BFL layout), CLIP-L pooled + T5 sequence text encoding.

Built over the generic nodes: images go through ``data.*`` stages and the shared VAE encoder (which
applies Flux's latent shift and scale), training through ``train.*`` with the flow-matching objective.
Latents are packed into 2x2 patches, with their position ids, inside the model's ``predict``.
"""
