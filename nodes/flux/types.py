"""Port types of the Flux family."""

from runtime.port_types import FlowMatchingModel, sample_type, value_type

FluxModel = value_type("FluxModel", FlowMatchingModel,
                       doc="a FLUX.1 model, dev or schnell (transformer, 16-channel VAE, CLIP-L and T5 text encoders "
                           "and tokenizers, flow-matching schedule)")
ClipPooledEmbedding = sample_type("ClipPooledEmbedding", color="#e8c15c",
                                  doc="CLIP-L's pooled output for a caption (Flux's pooled_projections)")
