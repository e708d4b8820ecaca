"""Stable Diffusion XL nodes (and its descendants: Pony, Illustrious, NoobAI): tiny model,
text encoding with both CLIP encoders, size conditioning.

Built over the generic nodes: images go through ``data.*`` stages and the shared VAE
encoder, training through ``train.*`` with the DDPM objective.
"""
