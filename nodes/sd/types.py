"""Port types of the Stable Diffusion 1.x/2.x family."""

from runtime.port_types import DDPMModel, value_type

SDModel = value_type("SDModel", DDPMModel, doc="a Stable Diffusion 1.x/2.x model (UNet, VAE, CLIP, tokenizer)")
