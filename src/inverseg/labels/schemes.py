"""The labelling schemes of the datasets inverseg reads, with the file-value remapping each one needs.

Sources of the tables: Cityscapes ``labels.py`` of cityscapesScripts (labelId → trainId, colours); SegNet's
CamVid 11-class palette (../shared/data/camvid/classes.tsv); CMP Facade base set (ids 1–12); COCO-Stuff 2017
(0–181, 255 unlabeled); ADE20K SceneParsing (1–150, 0 = unknown).  ADE20K and COCO-Stuff have no official
colour tables; their colours here are deterministic and for display only.
"""

from __future__ import annotations

from .spec import LabelSpec, make_lut, spread_colors

CAMVID = LabelSpec(
    name="camvid",
    class_names=(
        "sky", "building", "pole", "road", "pavement", "tree",
        "sign", "fence", "car", "pedestrian", "bicyclist",
    ),
    colors=(
        (128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
        (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192),
    ),
    ignore_index=11,
)

# CMP Facade stores 1–12; 0 never occurs (it is the unused palette entry), so ids are value − 1.
CMP = LabelSpec(
    name="cmp",
    class_names=(
        "background", "facade", "window", "door", "cornice", "sill",
        "balcony", "blind", "deco", "molding", "pillar", "shop",
    ),
    colors=(
        (0, 0, 170), (0, 0, 255), (0, 85, 255), (0, 170, 255), (0, 255, 255), (85, 255, 170),
        (170, 255, 85), (255, 255, 0), (255, 170, 0), (255, 85, 0), (255, 0, 0), (170, 0, 0),
    ),
    ignore_index=255,
    raw_to_id=make_lut({v: v - 1 for v in range(1, 13)}),
    raw_description="file values 1–12",
)

# Cityscapes labelIds 0–33 (-1 license plate is not stored in the PNGs); trainIds as in cityscapesScripts.
CITYSCAPES_LABEL_NAMES = (
    "unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic", "ground", "road",
    "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge", "tunnel", "pole",
    "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle",
)
CITYSCAPES_LABEL_TO_TRAIN = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13, 27: 14,
    28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES = LabelSpec(
    name="cityscapes",
    class_names=tuple(CITYSCAPES_LABEL_NAMES[i] for i in sorted(CITYSCAPES_LABEL_TO_TRAIN)),
    colors=(
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
        (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
        (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ),
    ignore_index=255,
    # every labelId that is not a train class becomes the ignore id (CRN: the void channel)
    raw_to_id=make_lut({**{i: 255 for i in range(34)}, **CITYSCAPES_LABEL_TO_TRAIN}),
    raw_description="Cityscapes labelIds 0–33",
)
# pix2pixHD / SPADE feed all 35 labelIds as classes (label_nc 35, implementations.md §3.4, §9).
CITYSCAPES_LABELIDS = LabelSpec(
    name="cityscapes-labelids",
    class_names=CITYSCAPES_LABEL_NAMES + ("license plate",),
    colors=spread_colors(35, seed=35),
)

COCO_THING_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "street sign", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep",
    "cow", "elephant", "bear", "zebra", "giraffe", "hat", "backpack", "umbrella", "shoe", "eye glasses",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite", "baseball bat",
    "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", "plate", "wine glass", "cup", "fork",
    "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza",
    "donut", "cake", "chair", "couch", "potted plant", "bed", "mirror", "dining table", "window", "desk",
    "toilet", "door", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "blender", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush", "hair brush",
)
COCO_STUFF_NAMES = (
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain",
    "desk-stuff", "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile",
    "floor-wood", "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other",
    "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin",
    "net", "paper", "pavement", "pillow", "plant-other", "plastic", "platform", "playingfield", "railing",
    "railroad", "river", "road", "rock", "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other",
    "skyscraper", "snow", "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent",
    "textile-other", "towel", "tree", "vegetable", "wall-brick", "wall-concrete", "wall-other", "wall-panel",
    "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops", "window-blind", "window-other", "wood",
)
COCOSTUFF = LabelSpec(
    name="cocostuff",
    class_names=COCO_THING_NAMES + COCO_STUFF_NAMES,
    colors=spread_colors(182, seed=182),
    ignore_index=255,
)

ADE20K_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
    "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
    "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
    "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
    "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
    "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
    "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan",
    "fan", "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock",
    "flag",
)
ADE20K = LabelSpec(
    name="ade20k",
    class_names=ADE20K_NAMES,
    colors=spread_colors(150, seed=150),
    ignore_index=255,
    raw_to_id=make_lut({0: 255, **{v: v - 1 for v in range(1, 151)}}),
    raw_description="ADE20K values 0 (unknown) and 1–150",
)

SCHEMES: dict[str, LabelSpec] = {
    spec.name: spec for spec in (CAMVID, CMP, CITYSCAPES, CITYSCAPES_LABELIDS, COCOSTUFF, ADE20K)
}
# The procedural street scenes use CamVid's classes so that models move between the two unchanged.
SCHEMES["synthetic"] = CAMVID


def get_scheme(name: str) -> LabelSpec:
    try:
        return SCHEMES[name]
    except KeyError:
        raise KeyError(f"unknown label scheme {name!r}; known: {', '.join(sorted(SCHEMES))}") from None
