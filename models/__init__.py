"""The ViT, its checkpoint loaders and the shipped default model (digits-vit/)."""
