"""Joint and keypoint layouts shared by the body models, fitting, exporters, tests and tools.

Pure data (no imports), so that numpy-only code (``body/smpl_io.py``, the open-body
generator ``tools/make_open_body.py``) can use it too. The J24/H36M training and
evaluation layouts and their regressors are in :mod:`deforhmr_model.body.joints`.

* SMPL-24: the skeleton of SMPL and of every SMPL-format body (names, parents).
* COCO-17: the 2D keypoints of the detector; the 5 face points are body vertices
  (``BodyModelData.face_vertex_ids``), the 12 limb points are SMPL joints.
"""

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar",
    "right_collar", "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hand", "right_hand",
)
#: Parent joint of each SMPL joint (-1 for the pelvis, the root).
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

COCO17_NAMES = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
#: The COCO face keypoints (COCO indices 0..4): vertices of the body, not joints.
COCO_FACE_NAMES = COCO17_NAMES[:5]
#: COCO-17 limb keypoint (indices 5..16) -> SMPL joint index.
COCO_TO_SMPL_JOINT = {5: 16, 6: 17, 7: 18, 8: 19, 9: 20, 10: 21, 11: 1, 12: 2, 13: 4, 14: 5, 15: 7, 16: 8}
#: The SMPL joints of COCO keypoints 5..16, in COCO order.
COCO_LIMB_JOINTS = tuple(COCO_TO_SMPL_JOINT[i] for i in range(5, 17))
