"""The built-in node catalogue.

Every module under this package is imported by the registry's discovery and
its ``@node`` classes registered. Modules import only ``runtime`` at the top;
torch, diffusers and transformers are imported inside ``run``.
"""
