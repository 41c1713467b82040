"""The video U-Net: shapes for odd slice counts, clear config errors, rotary slice attention."""

import pytest
import torch

from physdiff.errors import ConfigError
from physdiff.models.unet import Attention, build_unet, rotary

TINY = {"dim": 8, "dim_mults": (1, 2), "heads": 2, "head_dim": 4, "groups": 4}


@pytest.mark.parametrize("shape", [(2, 1, 5, 16, 16), (1, 1, 7, 16, 24), (3, 1, 1, 8, 12)])
@pytest.mark.parametrize("attn", [{"attn_resolutions": (8, 16), "temporal_attn": True},
                                  {"attn_resolutions": (), "temporal_attn": False}])
def test_unet_keeps_shape_for_odd_slice_counts(shape, attn):
    model = build_unet({**TINY, **attn})
    t = torch.randint(0, 1000, (shape[0],))
    out = model(torch.randn(shape), t)
    assert out.shape == shape and torch.isfinite(out).all()


def test_unet_three_levels_with_spatial_attention_at_every_size():
    model = build_unet({**TINY, "dim_mults": (1, 2, 4), "attn_resolutions": (4, 8, 16), "res_blocks": 2})
    out = model(torch.randn(1, 1, 3, 16, 16), torch.tensor([999]))
    assert out.shape == (1, 1, 3, 16, 16)


def test_unet_slice_size_not_divisible_is_config_error():
    model = build_unet({**TINY, "dim_mults": (1, 2, 4)})
    with pytest.raises(ConfigError, match="divisible by 2\\^\\(levels-1\\) = 4"):
        model(torch.randn(1, 1, 4, 18, 16), torch.tensor([1]))


def test_unet_bad_config_is_config_error():
    with pytest.raises(ConfigError, match="groups=3"):
        build_unet({**TINY, "groups": 3})
    with pytest.raises(ConfigError, match="unknown keys"):
        build_unet({**TINY, "width": 3})


def test_attention_is_factorised_into_slices_and_pixels():
    """Spatial attention mixes pixels within a slice only; slice attention mixes slices at
    one pixel only (the GroupNorm, which pools statistics, is bypassed to see this)."""
    torch.manual_seed(0)
    x = torch.randn(1, 8, 5, 6, 6)
    x2 = x.clone()
    x2[0, :, 0, 2, 3] += 1.0
    for axis in ("spatial", "slice"):
        attn = Attention(8, axis=axis, heads=2, head_dim=4, groups=4)
        attn.norm = torch.nn.Identity()
        torch.nn.init.normal_(attn.out.weight, std=0.3)  # undo the zero init
        changed = ((attn(x2) - attn(x)).abs().amax(dim=(0, 1)) > 1e-6)  # (S, H, W)
        if axis == "spatial":
            assert changed[0].sum() > 1 and not changed[1:].any()
        else:
            assert changed[:, 2, 3].all()
            changed[:, 2, 3] = False
            assert not changed.any()


def test_rotary_scores_depend_only_on_slice_offset():
    torch.manual_seed(1)
    q = torch.randn(8).expand(6, 8)  # the same query and key at every slice
    k = torch.randn(8).expand(6, 8)
    scores = rotary(q) @ rotary(k).T
    for off in range(-5, 6):
        diag = torch.diagonal(scores, offset=off)
        assert torch.allclose(diag, diag[0].expand_as(diag), atol=1e-5)
    assert not torch.allclose(torch.diagonal(scores, 0)[0], torch.diagonal(scores, 1)[0])
    assert torch.allclose(rotary(q).norm(dim=-1), q.norm(dim=-1), atol=1e-5)  # a rotation


def test_unused_attention_is_not_built_when_the_image_size_is_known():
    cfg = {**TINY, "attn_resolutions": (8,), "temporal_attn_resolutions": (8,)}
    lazy, exact = build_unet(cfg), build_unet({**cfg, "image_size": 16})
    names = set(exact.state_dict())
    assert not any(n.startswith(("down.0.spatial", "down.0.temporal", "up.1.spatial")) for n in names)
    assert any(n.startswith("down.1.spatial") for n in names) and set(lazy.state_dict()) > names
    # The same weights give the same function: the extra modules of the lazy model never run.
    exact.load_state_dict({k: v for k, v in lazy.state_dict().items() if k in names})
    x, t = torch.randn(1, 1, 3, 16, 16), torch.tensor([10])
    torch.testing.assert_close(exact(x, t), lazy(x, t))
    with pytest.raises(ConfigError, match="image_size=16"):
        exact(torch.randn(1, 1, 3, 8, 8), t)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_attention_in_chunks_equals_one_call(monkeypatch):
    from physdiff.models import unet

    monkeypatch.setattr(unet, "CUDA_ATTENTION_CHUNK", 16)  # 40 sequences x 2 heads -> chunks of 8
    q, k, v = torch.randn(3, 40, 2, 8, 16, device="cuda").unbind(0)
    torch.testing.assert_close(unet._attend(q, k, v), torch.nn.functional.scaled_dot_product_attention(q, k, v))


@pytest.mark.parametrize("length", [8, 256])  # slice attention (matmul path), spatial (fp32 flash)
def test_cpu_bf16_attention_matches_float64_reference(length):
    """Under bf16 autocast on the CPU, _attend gives softmax(q k^T / sqrt(d)) v and its gradients."""
    from physdiff.models import unet

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(6, 2, length, 16, generator=gen).to(torch.bfloat16) for _ in range(3))
    grad = torch.randn(6, 2, length, 16, generator=gen, dtype=torch.float64)

    def run(fn, dtype):
        args = [z.detach().to(dtype).requires_grad_() for z in (q, k, v)]
        out = fn(*args)
        (out.double() * grad).sum().backward()
        return out, [a.grad for a in args]

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, grads = run(unet._attend, torch.bfloat16)
    ref, ref_grads = run(torch.nn.functional.scaled_dot_product_attention, torch.float64)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=0.02)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r, rtol=0, atol=0.05 * r.abs().max().item())


def _randomised(model):
    """Give every weight a random value: a fresh U-Net zeroes its residual branches and last conv."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def test_circular_padding_makes_the_unet_shift_equivariant_on_the_torus():
    # dim_mults (1, 2, 4): two stride-2 downsamplings, so shifts by multiples of 4 pixels commute
    # with the network exactly when every conv wraps around; zero padding sees the border.
    x, t = torch.randn(2, 1, 3, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([10, 700])
    shift = ((4, 8), (-2, -1))
    cfg = {**TINY, "dim_mults": (1, 2, 4), "attn_resolutions": (8,)}
    periodic = _randomised(build_unet({**cfg, "padding": "circular"})).eval()
    with torch.no_grad():
        y = periodic(x, t)
        assert torch.allclose(periodic(torch.roll(x, *shift), t), torch.roll(y, *shift), atol=1e-5)
        assert y.abs().mean() > 0.05
        plain = _randomised(build_unet(cfg)).eval()
        assert not torch.allclose(plain(torch.roll(x, *shift), t), torch.roll(plain(x, t), *shift), atol=1e-2)
    with pytest.raises(ConfigError, match="model.padding"):
        build_unet({**TINY, "padding": "reflect"})


def test_class_model_uses_its_label_unless_given_one_and_plain_models_refuse_labels():
    torch.manual_seed(0)
    net = build_unet({**TINY, "n_classes": 2}).eval()
    assert net.class_emb.num_embeddings == 3  # two classes and "any"
    with torch.no_grad():  # zero-initialised convs hide the embedding at first: as if trained a little
        for param in net.parameters():
            param.add_(0.05 * torch.randn_like(param))
    x, t = torch.randn(2, 1, 3, 8, 8), torch.tensor([5, 400])
    with torch.no_grad():
        default, first, second = net(x, t), net(x, t, torch.tensor([0, 0])), net(x, t, torch.tensor([1, 1]))
        net.label = 1
        assert torch.equal(net(x, t), second)
    assert torch.equal(default, first) and not torch.allclose(first, second)
    with pytest.raises(ConfigError, match="without classes"):
        build_unet(TINY)(x, t, torch.tensor([0, 0]))
    with pytest.raises(ConfigError, match="n_classes must be >= 0"):
        build_unet({**TINY, "n_classes": -1})
