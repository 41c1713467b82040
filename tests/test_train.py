"""Training the prior: the loss falls, resume is exact, model files load safely."""

import numpy as np
import pytest
import torch

from physdiff.errors import ConfigError, InputError
from physdiff.models.plots import write_loss_curve
from physdiff.models.train import data_fingerprint, load_checkpoint, load_model, save_model, train_prior

TINY = {"dim": 8, "dim_mults": (1, 2), "groups": 4, "head_dim": 4, "attn_resolutions": ()}


def _blobs(n=16, s=4, size=16, seed=0):
    """Discs of random centre and radius whose brightness rises slice by slice."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    vols = []
    for _ in range(n):
        cy, cx = rng.uniform(5, size - 5, 2)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(3, 5) ** 2).astype(np.float32)
        vols.append(np.stack([disc * (0.5 + 0.1 * k) for k in range(s)]))
    return np.array(vols, dtype=np.float32)


class NotWeights:
    """An arbitrary object: torch.load(weights_only=True) must refuse to unpickle it."""


def test_data_fingerprint_sees_values_shape_and_dtype():
    a = _blobs(2)
    assert data_fingerprint(a) == data_fingerprint(a.copy()) and len(data_fingerprint(a)) == 16
    b = a.copy()
    b[0, 0, 0, 0] += 0.5
    assert data_fingerprint(b) != data_fingerprint(a)
    assert data_fingerprint(a.reshape(4, 2, 16, 16)) != data_fingerprint(a)
    assert data_fingerprint(a.astype(np.float64)) != data_fingerprint(a)


@pytest.mark.slow
def test_loss_falls_on_a_tiny_dataset():
    res = train_prior(_blobs(), model_cfg=TINY, steps=120, batch_size=8, grad_accum=1, lr=2e-3,
                      warmup_steps=10, progress=False)
    losses = [loss for _, loss in res.loss_history]
    assert [s for s, _ in res.loss_history] == list(range(1, 121))
    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:20])


@pytest.mark.slow
def test_ema_weights_keep_up_with_a_short_run():
    # Regression: with ema-pytorch's defaults (start at step 100, update every 10) the EMA of a
    # CPU-length run stayed near its initial weights and sampled noise.
    from physdiff.models.diffusion import GaussianDiffusion, to_network

    data = _blobs()
    res = train_prior(data, model_cfg=TINY, steps=150, batch_size=8, grad_accum=1, lr=2e-3,
                      warmup_steps=10, progress=False)
    x0 = to_network(torch.from_numpy(data[:8])).unsqueeze(1)
    gen = torch.Generator().manual_seed(1)
    t = torch.randint(0, 1000, (8,), generator=gen)
    z = torch.randn(x0.shape, generator=gen)
    dev = next(res.ema_model.parameters()).device  # CUDA where there is one
    xt, t, z = (v.to(dev) for v in (GaussianDiffusion().q_sample(x0, t, z), t, z))
    with torch.no_grad():
        err_ema = (res.ema_model.eval()(xt, t) - z).abs().mean().item()
        err_online = (res.model.eval()(xt, t) - z).abs().mean().item()
    assert err_ema < 1.3 * err_online, (err_ema, err_online)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    data, cfg = _blobs(6), {**TINY, "dropout": 0.1}  # dropout exercises the global RNG state
    kw = dict(model_cfg=cfg, batch_size=2, grad_accum=2, lr=1e-3, warmup_steps=2, ema_update_every=1,
              progress=False, seed=5)
    full = train_prior(data, steps=6, checkpoint_path=tmp_path / "full.ckpt", **kw)
    ckpt = tmp_path / "part.ckpt"
    first = train_prior(data, steps=3, checkpoint_path=ckpt, checkpoint_every_s=0, **kw)  # "killed" at 3
    assert first.step == 3 and ckpt.exists()
    resumed = train_prior(data, steps=6, checkpoint_path=ckpt, checkpoint_every_s=0, **kw)
    assert resumed.resumed_from == 3 and resumed.step == full.step == 6
    assert [s for s, _ in resumed.loss_history] == list(range(1, 7))
    np.testing.assert_allclose([l for _, l in resumed.loss_history], [l for _, l in full.loss_history], rtol=1e-5)
    for a, b in [(resumed.model, full.model), (resumed.ema_model, full.ema_model)]:
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(next(iter(first.model.parameters())), next(iter(full.model.parameters())))
    # the training time counts both runs, and the model file keeps it for Figure 5
    assert first.total_seconds == first.seconds and resumed.seconds < resumed.total_seconds
    assert resumed.total_seconds == pytest.approx(load_checkpoint(ckpt)["train_seconds"], rel=1e-6)
    assert resumed.total_seconds >= first.total_seconds + resumed.seconds - 1e-6
    save_model(tmp_path / "model.pt", resumed)
    assert load_model(tmp_path / "model.pt")[1]["train_seconds"] == pytest.approx(resumed.total_seconds)


def test_resumed_run_on_the_cpu_has_bitwise_the_weights_of_an_uninterrupted_run(tmp_path):
    # What the SLURM kill-and-resume leg checks of the pipeline: equal bits, not merely close values.
    data, val = _blobs(6), _blobs(2, seed=3)
    kw = dict(model_cfg={**TINY, "dropout": 0.1}, batch_size=2, grad_accum=2, lr=1e-3, warmup_steps=2, seed=5,
              val_data=val, val_every=2, augment={"contrast": 0.5, "noise": 0.5}, device="cpu", progress=False)
    full = train_prior(data, steps=5, **kw)
    ckpt = tmp_path / "part.ckpt"
    train_prior(data, steps=3, checkpoint_path=ckpt, checkpoint_every_s=0, **kw)
    resumed = train_prior(data, steps=5, checkpoint_path=ckpt, checkpoint_every_s=0, **kw)
    assert resumed.resumed_from == 3 and resumed.loss_history == full.loss_history
    # the first run ended at step 3 and validated there as well
    assert [row for row in resumed.val_history if row[0] != 3] == full.val_history
    for a, b in [(resumed.model, full.model), (resumed.ema_model, full.ema_model)]:
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), name


def test_train_settings_name_the_bad_key():
    from physdiff.config import load_schema
    from physdiff.models.train_settings import CONFIG_KEYS, TrainSettings

    assert CONFIG_KEYS == set(load_schema()["properties"]["prior"]["properties"]["train"]["properties"])
    cfg = {"steps": 2, "batch_size": 2, "lr": 1e-3}
    settings = TrainSettings.from_config(cfg, seed=3, steps=5, augment={"noise": 0.5})
    assert settings.steps == 5 and settings.seed == 3 and settings.augment.noise == 0.5 and settings.grad_accum == 2
    for key, value in [("batch_size", 0), ("grad_accum", 0), ("steps", -1), ("lr", 0.0), ("ema_decay", 1.5),
                       ("label_dropout", 1.0), ("cpu_bf16", "yes"), ("min_snr_gamma", -1.0), ("prediction", "x0"),
                       ("lr_decay", "step")]:
        with pytest.raises(ConfigError, match=rf"prior\.train\.{key}"):
            TrainSettings.from_config({**cfg, key: value}, seed=0)
    with pytest.raises(ConfigError, match=r"prior\.train\.batchsize is not a training setting"):
        TrainSettings.from_config({**cfg, "batchsize": 2}, seed=0)
    with pytest.raises(ConfigError, match="prior.augment"):
        TrainSettings(steps=1, augment={"sharpen": 0.5})


def test_lr_decay_anneals_to_zero_after_the_warm_up_and_is_recorded():
    from physdiff.models.train_settings import TrainSettings

    const = TrainSettings(steps=1100, lr=1e-3, warmup_steps=100)
    linear = TrainSettings(steps=1100, lr=1e-3, warmup_steps=100, lr_decay="linear")
    cosine = TrainSettings(steps=1100, lr=1e-3, warmup_steps=100, lr_decay="cosine")
    for s in (const, linear, cosine):  # the warm-up is the same
        assert s.lr_at(0) == pytest.approx(1e-5) and s.lr_at(99) == pytest.approx(1e-3)
    assert const.lr_at(600) == linear.lr_at(100) == cosine.lr_at(100) == pytest.approx(1e-3)
    assert linear.lr_at(600) == pytest.approx(5e-4) and cosine.lr_at(600) == pytest.approx(5e-4)
    assert linear.lr_at(350) == pytest.approx(7.5e-4) and cosine.lr_at(350) == pytest.approx(1e-3 * (1 + 2 ** -0.5) / 2)
    assert linear.lr_at(1100) == cosine.lr_at(1100) == pytest.approx(0.0, abs=1e-12)
    assert "lr_decay" not in const.record(TINY) and linear.record(TINY)["lr_decay"] == "linear"


def test_resume_refuses_other_config_or_data(tmp_path):
    data, ckpt = _blobs(4), tmp_path / "c.ckpt"
    kw = dict(model_cfg=TINY, batch_size=2, progress=False)
    train_prior(data, steps=1, checkpoint_path=ckpt, **kw)
    with pytest.raises(ConfigError, match="another config"):
        train_prior(data, steps=2, checkpoint_path=ckpt, **{**kw, "batch_size": 3})
    with pytest.raises(ConfigError, match="other data"):
        train_prior(data[::-1].copy(), steps=2, checkpoint_path=ckpt, **kw)
    with pytest.raises(ConfigError, match="another config"):  # a loss weighting is part of the setting
        train_prior(data, steps=2, checkpoint_path=ckpt, **{**kw, "min_snr_gamma": 5.0})


def test_min_snr_weighting_is_recorded_and_changes_the_training(tmp_path):
    kw = dict(model_cfg=TINY, steps=3, batch_size=2, progress=False, seed=1)
    plain = train_prior(_blobs(4), **kw)
    weighted = train_prior(_blobs(4), **kw, min_snr_gamma=5.0)
    assert "min_snr_gamma" not in plain.config and weighted.config["min_snr_gamma"] == 5.0
    assert [s for s, _ in plain.loss_history] == [s for s, _ in weighted.loss_history]
    assert all(w <= p + 1e-6 for (_, p), (_, w) in zip(plain.loss_history[:1], weighted.loss_history[:1]))
    assert plain.loss_history != weighted.loss_history
    with pytest.raises(ConfigError, match="min_snr_gamma"):
        train_prior(_blobs(4), **{**kw, "min_snr_gamma": -1.0})


def test_saved_model_loads_ema_weights(tmp_path):
    res = train_prior(_blobs(4), model_cfg=TINY, steps=2, batch_size=2, progress=False)
    save_model(tmp_path / "model.pt", res)
    model, meta = load_model(tmp_path / "model.pt")
    assert meta["step"] == 2 and meta["data_fingerprint"] == res.data_fingerprint
    for p, q in zip(model.state_dict().values(), res.ema_model.state_dict().values()):
        assert torch.equal(p, q.cpu())
    assert not model.training


def test_v_prediction_is_recorded_validated_on_eps_and_loads_as_an_eps_model(tmp_path):
    from physdiff.models.diffusion import EpsFromV, GaussianDiffusion, to_network
    from physdiff.models.train import validation_loss

    data, val = _blobs(4), _blobs(2, seed=3)
    kw = dict(model_cfg=TINY, steps=2, batch_size=2, progress=False, seed=1, val_data=val, val_every=2)
    eps, v = train_prior(data, **kw), train_prior(data, **kw, prediction="v")
    assert "prediction" not in eps.config and v.config["prediction"] == "v" and v.prediction == "v"
    assert eps.loss_history != v.loss_history
    assert eps.eps_model is eps.ema_model and isinstance(v.eps_model, EpsFromV)
    # the logged validation error is the eps error of the v model's implied eps
    np.testing.assert_allclose(v.val_history[-1][2:], validation_loss(v.eps_model, val, seed=1), rtol=1e-6)
    np.testing.assert_allclose(v.val_history[-1][2:], validation_loss(v.ema_model, val, prediction="v", seed=1), rtol=1e-6)
    assert not np.allclose(v.val_history[-1][2:], validation_loss(v.ema_model, val, seed=1))
    save_model(tmp_path / "v.pt", v)
    model, meta = load_model(tmp_path / "v.pt")
    assert isinstance(model, EpsFromV) and meta["config"]["prediction"] == "v" and not model.training
    x = to_network(torch.from_numpy(val)).unsqueeze(1)
    t = torch.tensor([10, 900])
    with torch.no_grad():
        vt = v.ema_model.cpu()(x, t).float()
        torch.testing.assert_close(model(x, t), GaussianDiffusion().eps_from_v(x, t, vt))
    with pytest.raises(ConfigError, match="prediction"):
        train_prior(data, **{**kw, "prediction": "x0"})


def test_load_refuses_pickled_objects_and_garbage(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"ema": NotWeights(), "config": {"model": TINY}}, evil)
    with pytest.raises(InputError, match="evil.pt: untrusted or corrupt checkpoint"):
        load_model(evil)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="junk.pt: untrusted or corrupt checkpoint"):
        load_model(junk)
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


def test_load_reports_a_shape_mismatch_by_key(tmp_path):
    res = train_prior(_blobs(4), model_cfg=TINY, steps=1, batch_size=2, progress=False)
    save_model(tmp_path / "model.pt", res)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    state["config"]["model"]["dim"] = 16
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(InputError, match=r"bad.pt: 'ema\.time_mlp\.0\.weight' has shape \(32, 8\), the config expects \(64, 16\)"):
        load_model(tmp_path / "bad.pt")


def test_bad_training_data_is_input_error():
    with pytest.raises(InputError, match="scaled to"):
        train_prior(_blobs(2) * 3, model_cfg=TINY, steps=1, progress=False)
    with pytest.raises(InputError, match=r"\(N, S_g, H, W\)"):
        train_prior(_blobs(2)[0], model_cfg=TINY, steps=1, progress=False)


def test_loss_curve_files(tmp_path):
    write_loss_curve([(1, 0.8), (2, 0.6), (3, 0.5)], tmp_path / "loss.csv", tmp_path / "loss.png")
    rows = np.loadtxt(tmp_path / "loss.csv", delimiter=",", skiprows=1)
    assert rows.shape == (3, 2) and rows[2, 1] == 0.5
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_validation_loss_uses_the_ema_weights_and_the_validation_data():
    from physdiff.models.train import validation_loss

    data, val = _blobs(8), _blobs(4, seed=3)
    res = train_prior(data, model_cfg=TINY, steps=4, batch_size=2, progress=False, val_data=val, val_every=2,
                      warmup_steps=1, lr=1e-3, ema_decay=0.9)
    assert [int(r[0]) for r in res.val_history] == [2, 4]
    last = res.val_history[-1]
    np.testing.assert_allclose(last[2:], validation_loss(res.ema_model, val), rtol=1e-6)
    assert np.isclose(last[1], np.mean(last[2:]))
    # Perturbing the online weights leaves the number unchanged; other data or EMA weights change it.
    with torch.no_grad():
        for p in res.model.parameters():
            p.add_(1.0)
    np.testing.assert_allclose(validation_loss(res.ema_model, val), last[2:], rtol=1e-6)
    assert not np.allclose(validation_loss(res.ema_model, _blobs(4, seed=9)), last[2:])
    with torch.no_grad():
        next(res.ema_model.parameters()).add_(0.5)
    assert not np.allclose(validation_loss(res.ema_model, val), last[2:])


def test_loss_curve_has_validation_columns(tmp_path):
    write_loss_curve([(1, 0.8), (2, 0.6), (3, 0.5)], tmp_path / "loss.csv", tmp_path / "loss.png",
                     val_history=[(2, 0.7, 0.6, 0.8), (3, 0.65, 0.6, 0.7)], val_timesteps=(50, 800))
    lines = (tmp_path / "loss.csv").read_text().splitlines()
    assert lines[0] == "step,loss,val_loss,val_t50,val_t800"
    rows = np.genfromtxt(tmp_path / "loss.csv", delimiter=",", skip_header=1)
    assert np.isnan(rows[0, 2]) and rows[1, 2] == 0.7 and rows[2, 4] == 0.7


def test_model_files_from_before_the_upsample_key_load_as_trained(tmp_path):
    old_cfg = {k: v for k, v in TINY.items()}  # no "upsample" and no "image_size": the older layout
    res = train_prior(_blobs(4), model_cfg={**old_cfg, "upsample": "interpolate_first"}, steps=1, batch_size=2,
                      progress=False)
    save_model(tmp_path / "model.pt", res)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    del state["config"]["model"]["upsample"]
    torch.save(state, tmp_path / "old.pt")
    model, _ = load_model(tmp_path / "old.pt")
    assert model.upsample_mode == "interpolate_first"


def test_train_partition_trains_slab_g_with_the_rules_seed():
    from physdiff.models.train import train_partition

    volumes, val = _blobs(n=6, s=4), _blobs(n=2, s=4, seed=1)
    train_cfg = {"steps": 99, "batch_size": 2, "channels_last": False, "cpu_bf16": False, "val_every": 2,
                 "lr": 1e-3, "grad_accum": 1, "ema_decay": 0.9, "ema_update_every": 1, "warmup_steps": 1,
                 "augment_flips": True, "checkpoint_every_s": 300.0}
    got = train_partition(volumes, val, G=2, g=1, model_cfg=TINY, train_cfg=train_cfg, augment={}, seed=5,
                          checkpoint_path=None, steps=2, progress=False)
    want = train_prior(volumes[:, 2:4], model_cfg={**TINY, "image_size": 16}, steps=2, batch_size=2, grad_accum=1,
                       lr=1e-3, ema_decay=0.9, warmup_steps=1, val_data=val[:, 2:4], val_every=2, seed=5 + 2000 + 1,
                       progress=False)
    assert got.step == 2 and got.loss_history == want.loss_history and got.val_history == want.val_history
    assert got.config == want.config
    with pytest.raises(InputError, match="validation volumes"):
        train_partition(volumes, val[:, :3], G=2, g=1, model_cfg=TINY, train_cfg=train_cfg, augment={}, seed=5,
                        checkpoint_path=None, steps=2, progress=False)


def test_cpu_bf16_auto_follows_the_cpu_and_bad_values_are_named(monkeypatch):
    from physdiff.models import train_settings as train_mod

    for native in (False, True):
        monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda native=native: native)
        assert train_mod.use_bf16("cpu", "auto") is native
        assert train_mod.use_bf16("cpu", True) is True and train_mod.use_bf16("cpu", False) is False
        assert train_mod.use_bf16("cuda", False) is True  # CUDA always trains under bf16 autocast
    with pytest.raises(ConfigError, match="cpu_bf16"):
        train_mod.use_bf16("cpu", "yes")
    assert isinstance(train_mod.cpu_has_native_bf16(), bool)


def test_config_accepts_cpu_bf16_auto_and_rejects_other_strings():
    import yaml

    from physdiff.config import validate_config

    from pathlib import Path

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())
    assert validate_config(cfg)["prior"]["train"]["cpu_bf16"] == "auto"
    cfg["prior"]["train"]["cpu_bf16"] = "always"
    with pytest.raises(ConfigError, match="cpu_bf16"):
        validate_config(cfg)


def test_model_files_carry_the_training_mean_and_bad_ones_are_named(tmp_path):
    data = _blobs(6)
    res = train_prior(data, model_cfg={**TINY, "image_size": 16}, steps=1, batch_size=2, progress=False)
    # augment_flips (the default) trains on mirror images too: the mean is of both
    np.testing.assert_allclose(res.data_mean, 0.5 * (data.mean(0) + data.mean(0)[..., ::-1]), atol=1e-6)
    plain = train_prior(data, model_cfg=TINY, steps=1, batch_size=2, progress=False, augment_flips=False)
    np.testing.assert_allclose(plain.data_mean, data.mean(0), atol=1e-6)
    save_model(tmp_path / "model.pt", res)
    model, _ = load_model(tmp_path / "model.pt")
    np.testing.assert_array_equal(model.data_mean.numpy(), res.data_mean)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    del state["data_mean"]  # files written before the mean was stored
    torch.save(state, tmp_path / "old.pt")
    assert load_model(tmp_path / "old.pt")[0].data_mean is None
    state["data_mean"] = torch.zeros(4, 8, 8)  # the model is built for 16 x 16 slices
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(InputError, match=r"bad.pt: 'data_mean' must be a finite \(S_g, H, W\) tensor for 16 x 16"):
        load_model(tmp_path / "bad.pt")
    state["data_mean"] = torch.full((4, 16, 16), float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(InputError, match="nan.pt: 'data_mean'"):
        load_model(tmp_path / "nan.pt")


def test_periodic_partitions_pad_circularly_shift_slabs_and_keep_one_mean_level_per_slice(tmp_path):
    from physdiff.models.train import train_partition, training_mean
    from physdiff.models.unet import PeriodicConv3d

    volumes, val = _blobs(n=6, s=4), _blobs(n=2, s=4, seed=1)
    train_cfg = {"steps": 2, "batch_size": 2, "channels_last": False, "cpu_bf16": False, "val_every": 2,
                 "lr": 1e-3, "grad_accum": 1, "ema_decay": 0.9, "ema_update_every": 1, "warmup_steps": 1,
                 "augment_flips": True, "checkpoint_every_s": 300.0}
    kw = dict(G=1, g=0, model_cfg=TINY, train_cfg=train_cfg, augment={}, seed=5, checkpoint_path=None, progress=False)
    periodic = train_partition(volumes, val, **{**kw, "model_cfg": {**TINY, "padding": "circular"}})
    plain = train_partition(volumes, val, **kw)
    assert periodic.config["model"]["padding"] == "circular" and periodic.config["augment_rolls"] is True
    assert plain.config["model"]["padding"] == "zeros" and "augment_rolls" not in plain.config
    assert periodic.loss_history != plain.loss_history  # the shifted slabs are what it trained on
    # every lateral shift of the training slabs is a training slab: the mean is flat in H and W
    per_slice = volumes.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(periodic.data_mean, np.broadcast_to(per_slice[:, None, None], (4, 16, 16)), atol=1e-6)
    np.testing.assert_allclose(training_mean(volumes, flips=False, rolls=True).mean(axis=(1, 2)), per_slice, atol=1e-6)
    save_model(tmp_path / "model.pt", periodic)
    model, _ = load_model(tmp_path / "model.pt")
    assert isinstance(model.init_conv, PeriodicConv3d)
    for p, q in zip(model.state_dict().values(), periodic.ema_model.state_dict().values()):
        assert torch.equal(p, q.cpu())


def _two_contrasts(n=8, seed=0):
    """The same discs in two contrasts: bright on black, and black holes in a bright slab."""
    a = _blobs(n, seed=seed)
    b = np.where(a > 0, 0.0, 0.9).astype(np.float32)
    return np.concatenate([a, b]), np.repeat([0, 1], n)


@torch.no_grad()
def _eps_error(model, x0, label, t=300, seed=0):
    from physdiff.models.diffusion import GaussianDiffusion, to_network

    diffusion, gen = GaussianDiffusion(), torch.Generator().manual_seed(seed)
    x0 = to_network(torch.from_numpy(x0)).unsqueeze(1)
    z = torch.randn(x0.shape, generator=gen)
    tt = torch.full((len(x0),), t, dtype=torch.long)
    y = torch.full((len(x0),), label, dtype=torch.long)
    return (model(diffusion.q_sample(x0, tt, z), tt, y) - z).abs().mean().item()


def test_a_contrast_conditional_model_learns_which_contrast_it_draws(tmp_path):
    from physdiff.models.train import ANY_CLASS, model_classes, set_model_class

    data, labels = _two_contrasts()
    res = train_prior(data, model_cfg={**TINY, "image_size": 16}, steps=200, batch_size=8, grad_accum=1, lr=2e-3,
                      warmup_steps=10, progress=False, classes=("flair", "t1"), labels=labels, label_dropout=0.2)
    assert res.config["classes"] == ["flair", "t1"] and res.config["model"]["n_classes"] == 2
    net = res.ema_model
    a, b = data[labels == 0][:4], data[labels == 1][:4]
    # the right label predicts the noise better than the wrong one, and "any" lies between
    assert _eps_error(net, a, 0) < 0.8 * _eps_error(net, a, 1)
    assert _eps_error(net, b, 1) < 0.8 * _eps_error(net, b, 0)
    assert _eps_error(net, a, 0) < _eps_error(net, a, 2) < _eps_error(net, a, 1)
    # model.pt: the first contrast by default, each contrast's training mean as data_mean
    save_model(tmp_path / "m.pt", res)
    model, _ = load_model(tmp_path / "m.pt")
    assert model_classes(model) == ("flair", "t1") and model.label == 0
    assert torch.allclose(model.data_mean, torch.from_numpy(res.class_means[0]))
    assert model.data_mean[:, 0, 0].max() < 0.1  # FLAIR-like: black corner; the t1 blocks are bright there
    set_model_class(model, ANY_CLASS)
    assert model.label == 2 and torch.allclose(model.data_mean, torch.from_numpy(res.data_mean))
    t1, _ = load_model(tmp_path / "m.pt", contrast="t1")
    assert t1.label == 1 and t1.data_mean[:, 0, 0].min() > 0.8
    with pytest.raises(ConfigError, match="not one of the model's"):
        load_model(tmp_path / "m.pt", contrast="t2")
    plain = train_prior(_blobs(4), model_cfg=TINY, steps=1, batch_size=2, progress=False)
    save_model(tmp_path / "plain.pt", plain)
    assert "n_classes" not in plain.config["model"] and "classes" not in plain.config  # plain files as before
    with pytest.raises(InputError, match="without contrast classes"):
        load_model(tmp_path / "plain.pt", contrast="t1")


def test_class_labels_are_checked_and_train_partition_labels_the_contrast_blocks():
    from physdiff.models.train import train_partition, training_mean

    data, labels = _two_contrasts(4)
    kw = dict(model_cfg=TINY, steps=1, batch_size=2, progress=False)
    with pytest.raises(InputError, match=r"class labels must be \(8,\)"):
        train_prior(data, classes=("flair", "t1"), labels=labels[:5], **kw)
    with pytest.raises(InputError, match=r"integers in \[0, 2\)"):
        train_prior(data, classes=("flair", "t1"), labels=labels + 1, **kw)
    with pytest.raises(ConfigError, match="label_dropout"):
        train_prior(data, classes=("flair", "t1"), labels=labels, label_dropout=1.0, **kw)
    train_cfg = {"steps": 2, "batch_size": 2, "channels_last": False, "cpu_bf16": False, "val_every": 2,
                 "lr": 1e-3, "grad_accum": 1, "ema_decay": 0.9, "ema_update_every": 1, "warmup_steps": 1,
                 "augment_flips": True, "checkpoint_every_s": 300.0, "label_dropout": 0.3}
    got = train_partition(data, data[:2], G=1, g=0, model_cfg=TINY, train_cfg=train_cfg, augment={}, seed=5,
                          checkpoint_path=None, contrasts=["flair", "t1"], progress=False)
    want = train_prior(data, model_cfg={**TINY, "image_size": 16}, steps=2, batch_size=2, grad_accum=1, lr=1e-3,
                       ema_decay=0.9, warmup_steps=1, val_data=data[:2], val_every=2, seed=5 + 1000, progress=False,
                       classes=("flair", "t1"), labels=labels, label_dropout=0.3)
    assert got.loss_history == want.loss_history and got.config == want.config
    assert np.allclose(got.class_means[1], training_mean(data[4:])) and np.allclose(got.class_means[2], training_mean(data))
    with pytest.raises(InputError, match="equal blocks"):
        train_partition(data[:7], data[:2], G=1, g=0, model_cfg=TINY, train_cfg=train_cfg, augment={}, seed=5,
                        checkpoint_path=None, contrasts=["flair", "t1"], progress=False)
