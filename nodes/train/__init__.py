"""Generic training nodes: optimizer, LR schedule, diffusion objective and the training loop.

Nothing here knows a model family: the loop trains any ``ModelBundle`` (see
``bundle.py``) and asks the objective for a loss on (model, batch).
"""
