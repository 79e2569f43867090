"""Known benchmark files (no torch import: read by the CLI's parser).

name -> (standard file name, kind "3d" | "2d", default joint protocol or None). File names are
those of the HMR 2.0 / SPIN / CLIFF releases; the files themselves are user-supplied.
"""
DATASETS = {
    "3dpw": ("3dpw_test.npz", "3d", "h36m14"),
    "rich": ("rich_test.npz", "3d", "h36m14"),
    "h36m-p2": ("h36m_val_p2.npz", "3d", "lsp14"),
    "lsp-extended": ("hr-lspet_train.npz", "2d", None),
    "coco-val": ("coco_val.npz", "2d", None),
    "posetrack-val": ("posetrack_2018_val.npz", "2d", None),
}
