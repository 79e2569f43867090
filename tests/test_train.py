"""Training: synthetic data, readers, augmentation, losses, the loop, exact resume, the CLI.

CPU only, seeded. The smoke test trains a tiny def-m (2-block ViT encoder, 2-layer 64-wide
decoder) on 256 rendered samples with cached encoder features and checks that the loss falls
and that held-out MPJPE drops below half of the mean-pose baseline.
"""
from __future__ import annotations

import argparse
import io
import json
import pickle
import tarfile

import numpy as np
import pytest
import torch

from deforhmr_model.body.joints import J24_FLIP, J24Regressor
from deforhmr_model.network.model import build_model
from deforhmr_model.geometry.rotation import axis_angle_to_rotmat
from deforhmr_model.people.crop import crop_matrix, warp_image
from deforhmr_model.train.augment import (AugConfig, AugParams, make_crop_sample,
                                          transform_keypoints_2d, transform_pose)
from deforhmr_model.datasets.readers import DatasetFileError, NpzSource, TarSource
from deforhmr_model.train.losses import HMRLoss
from deforhmr_model.train.mixing import MixedSource, load_mix_config
from deforhmr_model.train.synthetic import SynthConfig, generate
from deforhmr_model.train.trainer import TrainConfig, Trainer, dataset_mean_params, param_groups, zero_readout
from .train_helpers import tiny_body

# an easy, learnable distribution: four distinct canonical poses, frontal, plain background
EASY = dict(image_size=(128, 128), yaw_range=0.0, tilt=0.0, poses=("stand", "arms_up", "sit", "t_pose"),
            pose_noise=0.03, shape_std=0.5, background_kinds=("flat",), body_color=(0.8, 0.7, 0.6))
TINY = dict(dim=64, depth=2, mlp_dim=128, self_heads=4, self_dim_head=16, cross_heads=4, cross_dim_head=16,
            groups=2)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)   # small ops: threads only add contention on shared CPUs
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    body = tiny_body(root)
    joints = J24Regressor(body.face_vertex_ids)
    train = generate(root / "train", body, joints, SynthConfig(num_samples=256, seed=1, **EASY))
    val = generate(root / "val", body, joints, SynthConfig(num_samples=64, seed=2, **EASY))
    return dict(root=root, body=body, joints=joints, train=train, val=val)


def tiny_model(seed: int = 0, variant: str = "def-m"):
    torch.manual_seed(seed)
    return build_model(variant, "vit-tiny", **TINY)


# ----------------------------------------------------------------------------- synthetic data

def test_synthetic_labels_are_exact(synth):
    z = np.load(synth["train"])
    body, joints = synth["body"], synth["joints"]
    pose = torch.from_numpy(z["pose"][:8]).reshape(-1, 24, 3)
    R = axis_angle_to_rotmat(pose)
    with torch.no_grad():
        o = body(R[:, 0], R[:, 1:], torch.from_numpy(z["shape"][:8]), torch.from_numpy(z["transl"][:8]))
        j24 = joints(o.vertices, o.joints).numpy()
    m = joints.mask.numpy() > 0
    np.testing.assert_allclose(z["S"][:8][:, m, :3], j24[:, m], atol=1e-5)
    assert (z["S"][:8][:, ~m] == 0).all()
    f = z["focal_length"][:8, None, None]
    proj = j24[:, m, :2] / j24[:, m, 2:] * f + 64.0
    np.testing.assert_allclose(z["part"][:8][:, m, :2], proj, atol=1e-3)
    assert (z["S"][:, :, 3] == joints.mask.numpy()).all()
    # the body is drawn where its pelvis projects (flat background is 40)
    img = NpzSource(synth["train"]).image(0)
    x, y = np.round(z["part"][0, 14, :2]).astype(int)
    assert img[y, x].mean() > 80


# ----------------------------------------------------------------------------- augmentation

def test_warp_and_keypoints_agree_under_rotation_flip_scale():
    img = np.zeros((200, 300, 3), np.uint8)
    kp = np.zeros((24, 3), np.float32)
    kp[:, 2] = 1
    kp[2, :2] = (170.0, 90.0)            # right hip: one bright dot in the photo
    img[89:92, 169:172] = 255
    for aug in (AugParams(), AugParams(rot_deg=25.0), AugParams(flip=True, scale=1.2, shift=(0.01, -0.02)),
                AugParams(rot_deg=-40.0, flip=True)):
        A = crop_matrix(np.array([150.0, 100.0]), 180.0, aug)
        x = warp_image(img, A, aug)[0]                             # red channel, normalised
        yy, xx = np.unravel_index(np.argmax(x), x.shape)
        k = transform_keypoints_2d(kp, A, aug.flip)
        j = J24_FLIP[2] if aug.flip else 2                          # right hip becomes the left hip
        px = k[j, :2] * 256 + np.array([96, 128])
        assert np.hypot(px[0] - xx, px[1] - yy) < 1.5, (aug, px, (xx, yy))


def test_pose_augmentation_matches_the_3d_joints(synth):
    z = np.load(synth["train"])
    body, joints = synth["body"], synth["joints"]
    lab = NpzSource(synth["train"]).labels(3)

    def j24_of(pose):
        R = axis_angle_to_rotmat(torch.from_numpy(pose).reshape(1, 24, 3))
        with torch.no_grad():
            o = body(R[:, 0], R[:, 1:], torch.from_numpy(z["shape"][3:4]), None)
            j = joints(o.vertices, o.joints)[0].numpy()
        return j - j[[2, 3]].mean(0)

    for aug, tol in ((AugParams(rot_deg=30.0), 1e-5), (AugParams(flip=True), 0.03),
                     (AugParams(rot_deg=-20.0, flip=True), 0.03)):
        s = make_crop_sample(None, lab.center, lab.size, lab.keypoints_2d, lab.keypoints_3d, lab.pose,
                             lab.betas, 1.0, 1.0, aug)
        gt = s.keypoints_3d[:, :3] - s.keypoints_3d[[2, 3], :3].mean(0)
        err = np.abs(j24_of(s.pose) - gt)[joints.mask.numpy() > 0].max()
        assert err < tol, (aug, err)    # flips: the test body is only roughly left/right symmetric
    twice = transform_pose(transform_pose(lab.pose, AugParams(flip=True)), AugParams(flip=True))
    np.testing.assert_allclose(twice, lab.pose, atol=1e-6)


# ----------------------------------------------------------------------------- readers

def test_npz_reader_reports_missing_keys_and_shapes(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, imgname=np.array(["a.jpg", "b.jpg"]), center=np.zeros((2, 3)), part=np.zeros((2, 14, 3)))
    with pytest.raises(DatasetFileError) as e:
        NpzSource(bad)
    msg = str(e.value)
    assert "missing key 'scale'" in msg and "'center' has shape (2, 3), expected (2, 2)" in msg
    assert "'part' has shape (2, 14, 3), expected (2, 24, 3)" in msg
    ok = tmp_path / "ok.npz"
    np.savez(ok, imgname=np.array(["nowhere/a.jpg"]), center=np.zeros((1, 2)), scale=np.ones(1),
             part=np.zeros((1, 24, 3)))
    with pytest.raises(DatasetFileError, match="image\\(s\\) not found under image root"):
        NpzSource(ok)
    with pytest.raises(DatasetFileError, match="not found"):
        NpzSource(tmp_path / "absent.npz")


def test_webdataset_tar_matches_npz(synth, tmp_path):
    npz = NpzSource(synth["train"])
    z = np.load(synth["train"])
    tar_path = tmp_path / "000000.tar"
    with tarfile.open(tar_path, "w") as tf:
        for i in range(4):
            kp2 = np.zeros((44, 3), np.float32)
            kp2[25:] = z["part"][i, :19]
            kp2[[0, 16, 15, 18, 17]] = z["part"][i, 19:]          # nose, eyes, ears in OpenPose slots
            kp3 = np.zeros((44, 4), np.float32)
            kp3[25:] = z["S"][i, :19]
            person = dict(center=z["center"][i], scale=np.full(2, z["scale"][i]), keypoints_2d=kp2,
                          keypoints_3d=kp3, body_pose=z["pose"][i], betas=z["shape"][i],
                          has_body_pose=np.array(1.0), has_betas=np.array(1.0))
            for name, data in ((f"s{i:03d}.jpg", (synth["train"].parent / str(z["imgname"][i])).read_bytes()),
                               (f"s{i:03d}.data.pyd", pickle.dumps([person]))):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    src = TarSource(str(tmp_path / "{000000..000000}.tar"))
    assert len(src) == 4
    for i in range(4):
        a, b = src.labels(i), npz.labels(i)
        np.testing.assert_allclose(a.keypoints_2d, b.keypoints_2d)
        np.testing.assert_allclose(a.keypoints_3d[:19], b.keypoints_3d[:19])
        np.testing.assert_allclose(a.pose, b.pose)
        assert abs(a.size - b.size) < 1e-3
        assert src.image(i).shape == npz.image(i).shape
    # a pickle that would run code is refused and reported
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tf:
        for name, data in (("x.jpg", b"\xff\xd8"), ("x.data.pyd", pickle.dumps(argparse.Namespace(a=1)))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(DatasetFileError, match="refusing to load"):
        TarSource(evil)


def test_mixture_weights_and_determinism(synth, tmp_path):
    a, b = NpzSource(synth["train"]), NpzSource(synth["val"])
    mix = MixedSource([a, b], [0.75, 0.25], epoch_size=4000)
    idx = mix.epoch_indices(3, seed=7)
    assert np.array_equal(idx, mix.epoch_indices(3, seed=7))
    assert not np.array_equal(idx, mix.epoch_indices(4, seed=7))
    frac_a = (idx < len(a)).mean()
    assert 0.72 < frac_a < 0.78
    cfg = tmp_path / "mix.json"
    cfg.write_text(json.dumps({"datasets": [{"name": "x", "path": "x.npz", "weight": 0}]}))
    with pytest.raises(DatasetFileError, match="weight must be > 0"):
        load_mix_config(cfg)


# ----------------------------------------------------------------------------- losses

def _batch(synth, n=8, has_smpl=1.0):
    from deforhmr_model.train.loader import TrainDataset
    ds = TrainDataset(MixedSource([NpzSource(synth["train"])]), AugConfig(enabled=False))
    b = torch.utils.data.default_collate([ds[(i, 0)] for i in range(n)])
    b["has_smpl"][:] = has_smpl
    return b


def test_loss_is_zero_at_ground_truth_and_masks_work(synth):
    from deforhmr_model.network.model import HMROutput
    b = _batch(synth)
    loss = HMRLoss(synth["body"], synth["joints"])
    R = axis_angle_to_rotmat(torch.cat([b["global_orient"][:, None], b["body_pose"]], 1))
    pred = HMROutput(global_orient=R[:, 0], body_pose=R[:, 1:], betas=b["betas"].clone(),
                     pred_cam=torch.tensor([[0.9, 0.0, 0.0]]).repeat(8, 1), pose_6d=torch.zeros(8, 24, 6))
    out = loss(pred, b)
    for k in ("smpl_pose", "smpl_betas", "joints_3d", "mesh"):
        assert out.terms[k] < 1e-10, (k, out.terms[k])
    # masks: no SMPL labels and no keypoint confidences -> every term is exactly zero
    b0 = _batch(synth, has_smpl=0.0)
    b0["has_betas"][:] = 0
    b0["keypoints_2d"][..., 2] = 0
    b0["keypoints_3d"][..., 3] = 0
    pred.betas = pred.betas + 1.0
    assert loss(pred, b0).total == 0
    # batch-size normalisation: the loss of a batch is the mean of its halves' losses
    pred.betas = pred.betas + torch.randn(8, 10)
    half = lambda d, s: {k: v[s] for k, v in d.items()}                        # noqa: E731
    sub = lambda s: HMROutput(pred.global_orient[s], pred.body_pose[s], pred.betas[s], pred.pred_cam[s],
                              pred.pose_6d[s])                                 # noqa: E731
    full = loss(pred, b).total
    parts = [loss(sub(s), half(b, s)).total for s in (slice(0, 4), slice(4, 8))]
    assert torch.allclose(full, (parts[0] + parts[1]) / 2, rtol=1e-5)


def test_param_groups_exclude_rpe_norms_biases():
    model = tiny_model()
    decay, no_decay = param_groups(model, 1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    nd = [names[id(p)] for p in no_decay["params"]]
    d = [names[id(p)] for p in decay["params"]]
    assert any(".rpe" in n for n in nd) and any("norm" in n for n in nd) and any(n.endswith("bias") for n in nd)
    assert all(not n.startswith("backbone.") for n in d + nd)          # frozen encoder is not optimised
    assert all(p.ndim >= 2 and "rpe" not in n for n, p in ((n, dict(model.named_parameters())[n]) for n in d))
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 1e-3


# ----------------------------------------------------------------------------- training

def test_training_smoke_loss_falls_and_beats_mean_pose(synth, tmp_path):
    train = MixedSource([NpzSource(synth["train"])])
    val = MixedSource([NpzSource(synth["val"])])
    pose6d, betas = dataset_mean_params(train)

    def model_at_mean():
        m = tiny_model()
        zero_readout(m)
        m.set_mean_params(pose6d, betas, torch.tensor([0.9, 0.0, 0.0]))
        return m

    cfg = TrainConfig(out_dir=str(tmp_path / "run"), epochs=1000, global_batch=16, lr=2e-3,
                      aug=AugConfig(enabled=False), cache_features=True, log_every=10, ckpt_every=0,
                      max_steps=160, progress=False, val_every_epochs=1000)
    baseline = Trainer(cfg, model_at_mean(), synth["body"], synth["joints"], train, val).validate(val)
    trainer = Trainer(cfg, model_at_mean(), synth["body"], synth["joints"], train, val)
    trainer.fit()
    trained = trainer.validate(val)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["type"] == "train"]
    print(f"\nmean-pose baseline MPJPE {baseline['mpjpe_mm']:.1f} mm, trained {trained['mpjpe_mm']:.1f} mm "
          f"(PA {baseline['pa_mpjpe_mm']:.1f} -> {trained['pa_mpjpe_mm']:.1f}); loss {losses[0]:.3f} -> "
          f"{losses[-1]:.3f}")
    assert losses[-1] < 0.5 * losses[0]
    assert trained["mpjpe_mm"] < 0.5 * baseline["mpjpe_mm"]
    assert set(log[0]) >= {"step", "epoch", "lr", "loss", "smpl_pose", "smpl_betas", "joints_3d",
                           "joints_2d", "mesh", "samples_per_s"}
    assert (tmp_path / "run" / "checkpoints" / "latest").is_file()


def test_resume_reproduces_the_next_step_exactly(synth, tmp_path):
    source = MixedSource([NpzSource(synth["val"])])          # 64 samples, image mode with augmentation
    cfg = TrainConfig(out_dir=str(tmp_path / "a"), epochs=10, global_batch=8, accum=2, lr=1e-3,
                      aug=AugConfig(enabled=True), ckpt_every=2, max_steps=3, progress=False, log_every=1)
    ref = Trainer(cfg, tiny_model(), synth["body"], synth["joints"], source)
    ref.fit()
    assert ref.global_step == 3
    torch.manual_seed(123)                                    # resume must not depend on the caller's RNG
    again = Trainer(cfg, tiny_model(seed=5), synth["body"], synth["joints"], source)
    again.resume(tmp_path / "a" / "checkpoints" / "step-00000002")
    assert again.global_step == 2 and again.step_in_epoch == 2
    again.fit()
    for (n, p), (_, q) in zip(ref.model.named_parameters(), again.model.named_parameters()):
        assert torch.equal(p, q), n


def test_train_cli_synth_and_fit(synth, tmp_path, capsys):
    from deforhmr_model.body.smpl_io import write_body_npz
    from .train_helpers import tiny_body_arrays
    from deforhmr_model.train.cli import add_train_parser
    parser = argparse.ArgumentParser()
    add_train_parser(parser.add_subparsers())
    body = write_body_npz(tmp_path / "body.npz", tiny_body_arrays(), meta={"id": "tiny_body"})
    run = lambda argv: (lambda a: a.func(a))(parser.parse_args(argv))        # noqa: E731
    assert run(["train", "synth", "--out", str(tmp_path / "d"), "-n", "12", "--size", "96x96",
                "--body", str(body), "--background-kinds", "noise,gradient"]) == 0
    data = tmp_path / "d" / "synthetic.npz"
    assert run(["train", "check-data", "--data", str(data)]) == 0
    assert run(["train", "fit", "--data", str(data), "--out", str(tmp_path / "r"), "--backbone", "vit-tiny",
                "--body", str(body), "--batch", "4", "--accum", "2", "--max-steps", "2", "--workers", "0",
                "--mean-params", "data", "--no-progress", "--log-every", "1",
                *sum((["--override", f"{k}={v}"] for k, v in TINY.items()), [])]) == 0
    assert (tmp_path / "r" / "checkpoints" / "step-00000002" / "model.safetensors").is_file()
    from deforhmr_model.network.checkpoint import load_model
    assert load_model(tmp_path / "r" / "checkpoints" / "step-00000002" / "model.safetensors").config.variant == "def-m"
    # bad inputs: one line, exit status 1
    assert run(["train", "fit", "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "x")]) == 1
    assert "dataset file not found" in capsys.readouterr().err
    assert run(["train", "fit", "--data", str(data), "--out", str(tmp_path / "y"), "--backbone", "vit-tiny",
                "--body", str(body), "--batch", "5", "--accum", "2"]) == 1
    assert "not divisible" in capsys.readouterr().err


def test_feature_cache_matches_the_encoder_on_the_same_augmented_crop(synth, tmp_path):
    from deforhmr_model.train.loader import TrainDataset
    source = MixedSource([NpzSource(synth["val"])])
    cfg = TrainConfig(out_dir=str(tmp_path / "c"), global_batch=8, aug=AugConfig(enabled=True),
                      cache_features=True, aug_variants=2, max_steps=0, progress=False)
    trainer = Trainer(cfg, tiny_model(), synth["body"], synth["joints"], source)
    trainer.fit()
    assert trainer.features.ready and trainer.features.path.stat().st_size == 64 * 2 * 64 * 16 * 12 * 2
    images = TrainDataset(source, cfg.aug, cfg.seed)
    for index, epoch in ((0, 0), (5, 1), (5, 3), (63, 2)):
        cached = trainer.dataset[(index, epoch)]
        plain = images[(index, epoch % 2)]
        with torch.no_grad():
            f = trainer.model.forward_features(plain["img"][None])[0]
        torch.testing.assert_close(cached["features"], f, atol=2e-2, rtol=1e-2)
        for k in ("keypoints_2d", "keypoints_3d", "global_orient", "body_pose"):
            assert torch.equal(cached[k], plain[k]), k
    # a second trainer with the same encoder, data and augmentation reuses the cache file
    again = Trainer(cfg, tiny_model(), synth["body"], synth["joints"], source)
    assert again.features.path == trainer.features.path and again.features.ready
    other = Trainer(cfg, tiny_model(seed=1), synth["body"], synth["joints"], source)
    assert other.features.path != trainer.features.path                       # different encoder weights
