"""Generic data-graph stages: concepts, loading, captions, bucketing, augmentation, tensors, caches, batches."""
