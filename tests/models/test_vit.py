"""The ViT: fused attention agrees with the manual reference, attention maps, presets, config."""

from __future__ import annotations

import pytest
import torch

from vitserve.models.vit import PRESETS, Block, ViT, ViTConfig

SMALL = ViTConfig(image_size=32, patch_size=8, num_classes=7, dim=48, depth=3, num_heads=4, mlp_ratio=2.0)


def _model(config: ViTConfig = SMALL) -> ViT:
    torch.manual_seed(0)
    model = ViT(config).eval()
    # Non-zero biases and a non-trivial class token so every term of the forward is exercised.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_fused_attention_matches_manual_reference() -> None:
    model = _model()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        fused = model(x)
        manual = model(x, fused=False)
    assert fused.shape == (3, 7)
    assert (fused - manual).abs().max().item() < 1e-5


def test_the_manual_path_gives_row_stochastic_maps_per_layer() -> None:
    model = _model()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens, attentions = model.forward_features(x, fused=False)
        plain_tokens, no_maps = model.forward_features(x)
    n = SMALL.num_patches + 1
    assert tokens.shape == (2, n, SMALL.dim)
    assert no_maps == []
    assert len(attentions) == SMALL.depth
    for probs in attentions:
        assert probs.shape == (2, SMALL.num_heads, n, n)
        assert probs.min().item() >= 0.0
        torch.testing.assert_close(probs.sum(dim=-1), torch.ones(2, SMALL.num_heads, n))
    # The manual path gives the same features as the fused one.
    assert (tokens - plain_tokens).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_with_expected_shapes(name: str) -> None:
    config = PRESETS[name]
    # On the meta device: shapes only, so ViT-L's 300M parameters cost no memory or init time.
    with torch.device("meta"):
        model = ViT(config)
    assert model.pos_embed.shape == (1, config.num_patches + 1, config.dim)
    block = model.blocks[0]
    assert isinstance(block, Block)
    assert block.attn.qkv.weight.shape == (3 * config.dim, config.dim)
    assert model.head.weight.shape == (config.num_classes, config.dim)
    assert len(model.blocks) == config.depth


def test_digits_preset_runs_on_28px_input() -> None:
    model = ViT(PRESETS["digits"]).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 28, 28)).shape == (2, 10)


def test_config_round_trips_through_dict() -> None:
    assert ViTConfig.from_dict(SMALL.to_dict()) == SMALL
    assert SMALL.with_classes(3).num_classes == 3
    with pytest.raises(ValueError, match="unknown ViTConfig fields"):
        ViTConfig.from_dict({**SMALL.to_dict(), "drop_rate": 0.1})


def test_image_size_not_multiple_of_patch_is_refused() -> None:
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        ViT(ViTConfig(image_size=30, patch_size=8, dim=48, depth=1, num_heads=4))


def test_dim_not_divisible_by_heads_is_refused() -> None:
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        ViT(ViTConfig(image_size=32, patch_size=8, dim=50, depth=1, num_heads=4))


def test_wrong_input_size_fails_loudly() -> None:
    model = _model()
    with pytest.raises(RuntimeError):
        model(torch.randn(1, 3, 40, 40))
