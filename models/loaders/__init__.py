"""Loaders that map standard ViT checkpoints (Hugging Face, timm) onto vitserve.models.vit."""
