"""Small generic nodes: files, manifests."""
