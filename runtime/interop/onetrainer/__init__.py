"""OneTrainer config import (reference: shared/reference/onetrainer-config.md)."""
