"""Videos and image sequences: reader, tracker, SO(3) smoothing, sequence result (schema v2
and v1 compatibility), animated GLB, BVH and the CLI on a short clip cut from a real video."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from deforhmr_model.cli import main
from deforhmr_model.files.export import to_y_up

from .test_export import _accessor, _world_matrices

VIDEO_DIR = "video"


def _cut_clip(src, dst, frames, width):
    """Write frames ``frames`` of ``src`` resized to ``width`` px wide as an mp4 at src's fps."""
    import cv2
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS)
    writer = None
    for i in range(max(frames) + 1):
        ok, bgr = cap.read()
        assert ok, f"{src}: frame {i} unreadable"
        if i not in frames:
            continue
        h = int(round(bgr.shape[0] * width / bgr.shape[1]))
        small = cv2.resize(bgr, (width, h), interpolation=cv2.INTER_AREA)
        if writer is None:
            writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, h))
        writer.write(small)
    writer.release()
    cap.release()
    return dst


@pytest.fixture(scope="module")
def clip_run(photos, tmp_path_factory):
    """`deforhmr infer` on the first 6 frames of the two-person phone clip at 360x640."""
    tmp = tmp_path_factory.mktemp("clip")
    clip = _cut_clip(photos / VIDEO_DIR / "multi_person_demo.mp4", tmp / "two_people.mp4", range(6), 360)
    out = tmp / "out"
    code = main(["infer", str(clip), "-o", str(out), "--threads", "2", "--model", "none"])
    return code, clip, out


# ----------------------------------------------------------------------------- CLI + outputs

def test_cli_on_a_clip_writes_every_sequence_output(clip_run):
    import cv2

    from deforhmr_model.files.result import load_sequence
    code, clip, out = clip_run
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")], names
    for n in ("two_people.npz", "two_people.json", "two_people.glb", "two_people_overlay.mp4",
              "two_people_track0.bvh", "two_people_track1.bvh"):
        assert n in names, names
    seq = load_sequence(out / "two_people.npz")
    assert seq.num_frames == 6 and seq.fps == pytest.approx(12.0)
    np.testing.assert_allclose(seq.frame_times, np.arange(6) / 12.0, atol=2e-3)
    assert [t.track_id for t in seq.tracks] == [0, 1]
    for t in seq.tracks:     # both people, every frame, one shape each
        assert t.frames.tolist() == list(range(6))
        assert t.betas.shape == (10,) and np.isfinite(t.joints).all()
    meta = json.loads((out / "two_people.json").read_text())
    assert meta["version"] == 2 and meta["kind"] == "sequence" and meta["smoothing"] == "light"
    assert meta["foot_lock"] is True and seq.foot_lock                # the default, recorded
    cap = cv2.VideoCapture(str(out / "two_people_overlay.mp4"))
    n, first = 0, None
    while True:
        ok, f = cap.read()
        if not ok:
            break
        first = f if first is None else first
        n += 1
    assert n == 6 and first.shape[:2] == (640, 360)
    raw = cv2.VideoCapture(str(clip)).read()[1]
    assert np.abs(first.astype(int) - raw.astype(int)).mean() > 1.0   # bodies drawn


def _pose_at(doc, blob, anim, k):
    """Set every animated node to keyframe k of its sampler (in place)."""
    for ch in anim.channels:
        s = anim.samplers[ch.sampler]
        val = _accessor(doc, blob, s.output)[k].astype(float).tolist()
        setattr(doc.nodes[ch.target.node], ch.target.path, val)


def test_animated_glb_validates_and_reproduces_the_joints(clip_run):
    import pygltflib

    from deforhmr_model.files.result import load_sequence

    from .gltf_validate import validate, validator_missing
    _, _, out = clip_run
    path = out / "two_people.glb"
    why = validator_missing()
    assert why is None, why
    rep = validate(path)
    assert rep["issues"]["numErrors"] == 0, rep["issues"]["messages"][:5]
    seq = load_sequence(out / "two_people.npz")
    doc = pygltflib.GLTF2().load_binary(str(path))
    blob = doc.binary_blob()
    (anim,) = doc.animations
    assert len(anim.channels) == 25 * len(seq.tracks)   # 24 joint rotations + root translation per track
    times = _accessor(doc, blob, anim.samplers[0].input)[:, 0]
    np.testing.assert_allclose(times, seq.frame_times[seq.tracks[0].frames], atol=1e-6)
    names = [n.name for n in doc.nodes]
    for k in (0, 3, 5):
        _pose_at(doc, blob, anim, k)
        world = _world_matrices(doc)
        for t in seq.tracks:
            first = names.index(f"p{t.track_id}_pelvis")
            got = np.stack([world[first + j][:3, 3] for j in range(24)])
            np.testing.assert_allclose(got, to_y_up(t.joints[k].astype(float)), atol=2e-3)


def parse_bvh(text: str):
    """A tiny BVH reader: joints (name, parent, offset, channels), frame time and motion."""
    tok = text.split()
    joints, stack, i, pending = [], [], 0, None
    while tok[i] != "MOTION":
        w = tok[i]
        if w in ("ROOT", "JOINT"):
            pending = {"name": tok[i + 1], "parent": stack[-1] if stack else -1, "channels": []}
            i += 2
        elif w == "End":
            pending = {"end": True}
            i += 2
        elif w == "{":
            if "end" in pending:
                stack.append(None)
            else:
                joints.append(pending)
                stack.append(len(joints) - 1)
            i += 1
        elif w == "}":
            stack.pop()
            i += 1
        elif w == "OFFSET":
            pending["offset"] = np.array([float(x) for x in tok[i + 1:i + 4]])
            i += 4
        elif w == "CHANNELS":
            n = int(tok[i + 1])
            pending["channels"] = tok[i + 2:i + 2 + n]
            i += 2 + n
        else:
            i += 1
    assert tok[i + 1] == "Frames:" and tok[i + 3] == "Frame" and tok[i + 4] == "Time:"
    n_frames, frame_time = int(tok[i + 2]), float(tok[i + 5])
    values = np.array([float(x) for x in tok[i + 6:]])
    n_ch = sum(len(j["channels"]) for j in joints)
    assert values.size == n_frames * n_ch, (values.size, n_frames, n_ch)
    return joints, frame_time, values.reshape(n_frames, n_ch)


def bvh_positions(joints, motion) -> np.ndarray:
    """(F, J, 3) world joint positions by forward kinematics of a parsed BVH."""
    out = np.zeros((len(motion), len(joints), 3))
    for f, row in enumerate(motion):
        c, world = 0, []
        for j, jt in enumerate(joints):
            vals = dict(zip(jt["channels"], row[c:c + len(jt["channels"])]))
            c += len(jt["channels"])
            rot_names = [ch for ch in jt["channels"] if ch.endswith("rotation")]
            R = Rotation.from_euler("".join(ch[0] for ch in rot_names),
                                    [vals[ch] for ch in rot_names], degrees=True).as_matrix()
            pos = np.array([vals.get(a, 0.0) for a in ("Xposition", "Yposition", "Zposition")])
            if jt["parent"] < 0:
                M = (jt["offset"] + pos, R)
            else:
                pt, pr = world[jt["parent"]]
                M = (pt + pr @ jt["offset"], pr @ R)
            world.append(M)
            out[f, j] = M[0]
    return out


def test_bvh_parses_and_reproduces_the_joints(clip_run):
    from deforhmr_model.files.result import load_sequence
    _, _, out = clip_run
    seq = load_sequence(out / "two_people.npz")
    for t in seq.tracks:
        joints, frame_time, motion = parse_bvh((out / f"two_people_track{t.track_id}.bvh").read_text())
        assert [j["name"] for j in joints][:3] == ["pelvis", "left_hip", "left_knee"]
        assert len(joints) == 24 and frame_time == pytest.approx(1 / 12, abs=1e-5)
        assert motion.shape == (len(t.frames), 6 + 23 * 3)
        order = [seq.joint_names.index(j["name"]) for j in joints]
        got = bvh_positions(joints, motion)
        np.testing.assert_allclose(got, to_y_up(t.joints[:, order].astype(float)), atol=2e-3)


def test_blender_imports_the_sequence_glb_and_bvh_and_they_play(clip_run, tmp_path):
    """Real bpy: the add-on imports the sequence file as one animated rig per track with the
    video's fps and frame range; Blender's glTF and BVH importers read the animated GLB and
    the BVH files; on every frame the joints are where the sequence result says."""
    from .test_blender_addon import run_blender
    _, _, out = clip_run
    rep = run_blender("video", {"npz": str(out / "two_people.npz"), "glb": str(out / "two_people.glb"),
                                "bvh": {str(t): str(out / f"two_people_track{t}.bvh") for t in (0, 1)}}, tmp_path)
    addon = rep["addon"]
    assert addon["armatures"] == [0, 1] and addon["fps"] == pytest.approx(12.0)
    assert addon["frame_range"] == [1, 6] and addon["joint_error_mm"] < 1.0
    assert all(k == [1, 2, 3, 4, 5, 6] for k in addon["keyed_frames"].values())
    assert rep["glb"]["armatures"] == 2 and rep["glb"]["joint_error_mm"] < 5.0
    assert min(rep["glb"]["motion_m"]) > 0.0   # it plays: the pose changes over the clip
    for b in rep["bvh"]:
        # Blender's BVH importer sets frame_end = frame_start + number of frames (one past)
        assert b["bones"] == 24 and b["frames"][0] == 1 and b["frames"][1] in (6, 7)
        assert b["fps"] == pytest.approx(12.0, abs=1e-3)
        assert b["joint_error_mm"] < 5.0


# ----------------------------------------------------------------------------- tracking

def test_tracker_follows_both_people_of_the_two_person_clip(photos):
    """Detection + tracking (no fitting) over all 40 frames at 540x960: two tracks in every
    frame, and no identity switch (each id stays on the same side of the other)."""
    from deforhmr_model.pipeline import HMRPipeline
    from deforhmr_model.video.reader import VideoSource
    from deforhmr_model.video.sequence import SequenceConfig, track_people

    class Half(VideoSource):   # the clip at half resolution, to keep the test fast
        def __iter__(self):
            import cv2
            for f in super().__iter__():
                f.image = cv2.resize(f.image, (540, 960), interpolation=cv2.INTER_AREA)
                yield f

    src = Half(photos / VIDEO_DIR / "multi_person_demo.mp4")
    pipe = HMRPipeline(model="none", min_person=0.4)
    per_frame = [{i: d for i, d in tracked} for _, tracked in track_people(pipe, src, SequenceConfig())]
    assert len(per_frame) == 40
    assert all(sorted(f) == [0, 1] for f in per_frame), [sorted(f) for f in per_frame]
    cx = np.array([[(f[i].bbox[0] + f[i].bbox[2]) / 2 for i in (0, 1)] for f in per_frame])
    side = np.sign(cx[:, 0] - cx[:, 1])
    assert (side == side[0]).all()                                  # no swap
    assert np.abs(np.diff(cx, axis=0)).max() < 100                  # no jump to the other person


def test_tracker_keeps_ids_through_an_occlusion_and_a_crossing():
    """Two synthetic people walk past each other; one is hidden for 3 frames."""
    from types import SimpleNamespace

    from deforhmr_model.video.tracking import PersonTracker

    def person(cx, y0=100.0, h=300.0, hand=0.0):
        kp = np.zeros((17, 3))
        kp[:, 0] = cx + np.linspace(-30, 30, 17) + hand
        kp[:, 1] = np.linspace(y0 + 10, y0 + h - 10, 17)
        kp[:, 2] = 0.9
        return SimpleNamespace(bbox=np.array([cx - 50, y0, cx + 50, y0 + h]), score=0.9, keypoints_coco=kp)

    tr = PersonTracker(max_missed=5)
    seen = {0: [], 1: []}
    for f in range(30):
        a, b = 100 + 15 * f, 550 - 15 * f                 # they cross around frame 15
        dets = [person(a)] + ([] if 6 <= f < 9 else [person(b, y0=140, hand=20)])
        ids = tr.update(f, dets)
        for i, x in zip(ids, (a, b)):
            seen.setdefault(i, []).append(x)
    assert sorted(seen) == [0, 1]
    assert np.all(np.diff(seen[0]) > 0) and np.all(np.diff(seen[1]) < 0)   # each id kept its walker


# ----------------------------------------------------------------------------- smoothing

def _angular_acceleration(R):
    """Mean |second difference| of the rotation vectors relative to the first frame, rad/frame^2."""
    rv = Rotation.from_matrix(R).as_rotvec()
    return np.linalg.norm(np.diff(rv, 2, axis=0), axis=-1).mean()


def test_so3_smoothing_reduces_jitter_without_lag():
    from deforhmr_model.video.smoothing import LEVELS, smooth_rotations
    rng = np.random.default_rng(0)
    fps, T = 30.0, 150
    times = np.arange(T) / fps
    angle = 0.8 * np.sin(2 * np.pi * 0.5 * times)                    # 0.5 Hz swing about a tilted axis
    axis = np.array([0.3, 1.0, 0.2]) / np.linalg.norm([0.3, 1.0, 0.2])
    truth = Rotation.from_rotvec(angle[:, None] * axis).as_matrix()
    noise = Rotation.from_rotvec(rng.normal(0, 0.03, (T, 3))).as_matrix()
    noisy = noise @ truth
    smooth = smooth_rotations(noisy, times, LEVELS["light"])
    assert np.allclose(np.linalg.det(smooth), 1.0) and np.allclose(smooth @ smooth.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    assert _angular_acceleration(smooth) < _angular_acceleration(noisy) / 3
    err = lambda R: Rotation.from_matrix(R @ truth.transpose(0, 2, 1)).magnitude().mean()  # noqa: E731
    assert err(smooth) < 0.6 * err(noisy)
    # no lag: the cross-correlation of the smoothed and true angle peaks at shift 0
    got = Rotation.from_matrix(smooth).as_rotvec() @ axis
    shifts = range(-5, 6)
    corr = [np.dot(np.roll(got, s)[10:-10], angle[10:-10]) for s in shifts]
    assert list(shifts)[int(np.argmax(corr))] == 0
    # q and -q: a rotation near 180 degrees is smoothed without flipping
    near_pi = Rotation.from_rotvec(np.outer(np.full(T, np.pi - 0.01), [0, 0, 1])).as_matrix()
    out = smooth_rotations(near_pi @ noise, times, LEVELS["strong"])
    assert (Rotation.from_matrix(out @ near_pi.transpose(0, 2, 1)).magnitude() < 0.1).all()
    # off is the identity; a centre window equals scipy's chordal mean of the same weights
    assert np.array_equal(smooth_rotations(noisy, times, 0.0), noisy)
    sigma = LEVELS["light"]
    c = 40
    w = np.exp(-0.5 * ((times - times[c]) / sigma) ** 2)
    w[np.abs(times - times[c]) > 3 * sigma + 1e-9] = 0
    ref = Rotation.from_matrix(noisy).mean(weights=w).as_matrix()
    assert Rotation.from_matrix(smooth[c] @ ref.T).magnitude() < 1e-3


# ----------------------------------------------------------------------------- files

def _image_result():
    from deforhmr_model.files.result import ImageResult, PersonResult
    V, J = 8, 24
    p = PersonResult(betas=np.zeros(10, np.float32), global_orient=np.eye(3, dtype=np.float32),
                     body_pose=np.tile(np.eye(3, dtype=np.float32), (23, 1, 1)),
                     transl=np.array([0, 0, 5], np.float32), rest_vertices=np.zeros((V, 3), np.float32),
                     rest_joints=np.zeros((J, 3), np.float32), vertices=np.zeros((V, 3), np.float32),
                     joints=np.zeros((J, 3), np.float32), joints_2d=np.zeros((J, 2), np.float32),
                     keypoints_2d=np.zeros((17, 3), np.float32), bbox=np.array([1, 2, 3, 4], np.float32))
    return ImageResult(people=[p], image_size=(64, 48), focal_length=100.0, principal_point=(32.0, 24.0),
                       faces=np.array([[0, 1, 2]], np.int32), lbs_weights=np.full((V, J), 1 / J, np.float32),
                       parents=np.array([-1] + [0] * 23, np.int32), joint_names=[f"j{i}" for i in range(J)],
                       body_model={"id": "t", "name": "t", "license": "t"})


def test_v1_result_files_still_read_and_kinds_are_kept_apart(tmp_path):
    from deforhmr_model.files.result import ResultFileError, load_result, load_sequence, save_result
    npz, _ = save_result(_image_result(), tmp_path / "r")
    with np.load(npz) as z:
        data = {k: z[k] for k in z.files}
    meta = json.loads(str(data["meta_json"]))
    assert meta["version"] == 2 and meta["kind"] == "image"
    v1 = {k: v for k, v in meta.items() if k != "kind"}
    v1["version"] = 1
    np.savez(tmp_path / "v1.npz", **{**data, "meta_json": np.array(json.dumps(v1))})
    r = load_result(tmp_path / "v1.npz")
    assert r.people[0].transl.tolist() == [0, 0, 5] and r.image_size == (64, 48)
    with pytest.raises(ResultFileError, match="load_result"):
        load_sequence(tmp_path / "v1.npz")
    np.savez(tmp_path / "v3.npz", **{**data, "meta_json": np.array(json.dumps({**meta, "version": 3}))})
    with pytest.raises(ResultFileError, match="version 3"):
        load_result(tmp_path / "v3.npz")


def test_sequence_sources_and_their_errors(photos, tmp_path):
    import shutil

    from deforhmr_model.video.reader import ImageSequenceSource, SequenceError, VideoSource, open_source
    folder = photos / "posetrack18" / "videos" / "000001_mpiinew_test"
    for i, name in enumerate(["000004.jpg", "000000.jpg", "000002.jpg"]):   # natural order: frame2 < frame10
        shutil.copy(folder / name, tmp_path / f"frame{[10, 2, 1][i]}.jpg")
    (tmp_path / "frame5.jpg").write_bytes(b"")                             # a bad frame is skipped
    src = open_source(sorted(tmp_path.glob("*.jpg")), fps=10)
    assert isinstance(src, ImageSequenceSource) and src.size == (1280, 720)
    frames = list(src)
    assert [f.name for f in frames] == ["frame1.jpg", "frame2.jpg", "frame10.jpg"]
    assert [f.index for f in frames] == [0, 1, 3] and frames[2].time == pytest.approx(0.3)
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all" * 10)
    (tmp_path / "empty.mp4").write_bytes(b"")
    for name, msg in (("bad.mp4", "cannot decode"), ("empty.mp4", "empty"), ("missing.mp4", "not found")):
        with pytest.raises(SequenceError, match=msg):
            VideoSource(tmp_path / name)
    with pytest.raises(SequenceError, match="positive"):
        open_source([tmp_path / "frame1.jpg"], fps=0)
