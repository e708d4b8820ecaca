"""Importers and exporters for other trainers' config formats."""
