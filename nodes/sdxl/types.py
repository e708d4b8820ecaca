"""Port types of the SDXL family."""

from runtime.port_types import DDPMModel, sample_type, value_type

SDXLModel = value_type("SDXLModel", DDPMModel,
                       doc="a Stable Diffusion XL model (UNet, VAE, two CLIP text encoders and tokenizers)")
PooledEmbedding = sample_type("PooledEmbedding", color="#e8a25c",
                              doc="a pooled, projected text embedding (SDXL's second encoder: text_embeds)")
SizeConditioning = sample_type("SizeConditioning", color="#7fc8a9",
                               doc="SDXL's time ids: original height, width, crop top, left, target height, width")
