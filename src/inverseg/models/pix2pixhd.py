"""pix2pixHD networks (Wang et al., "High-Resolution Image Synthesis and Semantic Manipulation with Conditional
GANs", CVPR 2018): the global generator G1, the local enhancer G2 (§3.2, Fig. 3), and the instance-wise feature
encoder E with its per-class feature clusters (§3.4, Fig. 6).  The discriminator is the shared multi-scale
PatchGAN in ``inverseg.nn.discriminator``.

Architecture details follow the official code (NVIDIA/pix2pixHD ``models/networks.py``, implementations.md §3.1):
reflection padding, instance norm without affine parameters, ReLU, transposed 3×3 convs for upsampling, tanh
output.  In the paper's notation G1 is c7s1-64, d128, d256, d512, d1024, R1024 × 9, u512, u256, u128, u64,
c7s1-3.  Channel widths are never capped (1024 at the bottleneck).
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.layers import downsample_avg
from ..nn.pooling import broadcast_segments, segment_mean
from ..utils.kmeans import kmeans

PADDINGS = ("reflect", "replicate", "zero")
NORMS = ("instance", "batch")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """pix2pixHD's ``get_norm_layer``: InstanceNorm2d(affine=False) or BatchNorm2d(affine=True)."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=True)
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")


def conv7_in(in_channels: int, out_channels: int, norm: str) -> list[nn.Module]:
    """c7s1-k: 7×7 conv after a reflection pad of 3, then norm and ReLU (the paper's first layer)."""
    return [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, out_channels, 7), norm_layer(norm, out_channels),
            nn.ReLU(True)]


def conv7_out(in_channels: int, out_channels: int = 3) -> list[nn.Module]:
    """The RGB head: reflection pad 3, 7×7 conv, tanh."""
    return [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, out_channels, 7), nn.Tanh()]


def down(in_channels: int, out_channels: int, norm: str) -> list[nn.Module]:
    """d-k: 3×3 stride-2 conv, norm, ReLU."""
    return [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), norm_layer(norm, out_channels),
            nn.ReLU(True)]


def up(in_channels: int, out_channels: int, norm: str) -> list[nn.Module]:
    """u-k: 3×3 stride-2 transposed conv (output_padding 1: exactly 2×), norm, ReLU."""
    return [nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1),
            norm_layer(norm, out_channels), nn.ReLU(True)]


class ResnetBlock(nn.Module):
    """R-k: x + [pad, conv3, norm, ReLU, pad, conv3, norm](x) (Johnson et al.'s block, no ReLU after the sum)."""

    def __init__(self, channels: int, norm: str = "instance", padding: str = "reflect"):
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")

        def pad_conv() -> list[nn.Module]:
            if padding == "zero":
                return [nn.Conv2d(channels, channels, 3, padding=1)]
            pad = nn.ReflectionPad2d(1) if padding == "reflect" else nn.ReplicationPad2d(1)
            return [pad, nn.Conv2d(channels, channels, 3)]

        self.block = nn.Sequential(*pad_conv(), norm_layer(norm, channels), nn.ReLU(True),
                                   *pad_conv(), norm_layer(norm, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class GlobalGenerator(nn.Module):
    """G1 (§3.2): c7s1-ngf, ``n_downsample`` × d, ``n_blocks`` × R, ``n_downsample`` × u, c7s1-3 + tanh.

    With ``with_head=False`` the RGB head is left out and ``forward`` returns the last ngf-channel feature map —
    the local enhancer's use of G1 (the official code drops the last three layers of a full G1).
    """

    def __init__(self, in_channels: int, out_channels: int = 3, ngf: int = 64, n_downsample: int = 4,
                 n_blocks: int = 9, norm: str = "instance", padding: str = "reflect", with_head: bool = True):
        super().__init__()
        layers = conv7_in(in_channels, ngf, norm)
        for i in range(n_downsample):
            layers += down(ngf * 2**i, ngf * 2**(i + 1), norm)
        layers += [ResnetBlock(ngf * 2**n_downsample, norm, padding) for _ in range(n_blocks)]
        for i in range(n_downsample, 0, -1):
            layers += up(ngf * 2**i, ngf * 2**(i - 1), norm)
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(*conv7_out(ngf, out_channels)) if with_head else None
        self.factor = 2**n_downsample  # input sizes must be multiples of this

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.body(x)
        return self.head(features) if self.head is not None else features


class LocalBranch(nn.Module):
    """One local enhancer G2 (§3.2): front end c7s1-k, d-2k; its output is *added* to the coarser generator's
    features, then R-2k × n_blocks, u-k (and the RGB head for the finest branch)."""

    def __init__(self, in_channels: int, ngf: int, n_blocks: int = 3, norm: str = "instance",
                 padding: str = "reflect", with_head: bool = True, out_channels: int = 3):
        super().__init__()
        self.front = nn.Sequential(*conv7_in(in_channels, ngf, norm), *down(ngf, 2 * ngf, norm))
        back = [ResnetBlock(2 * ngf, norm, padding) for _ in range(n_blocks)] + up(2 * ngf, ngf, norm)
        if with_head:
            back += conv7_out(ngf, out_channels)
        self.back = nn.Sequential(*back)

    def forward(self, x: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return self.back(self.front(x) + coarse)


class LocalEnhancer(nn.Module):
    """G = {G1, G2} (§3.2, Fig. 3): G1 at 1/2^n resolution (built with ngf·2^n), n local branches on top.

    The label input is given to each network at its own scale, by repeated AvgPool(3, 2, 1) of the full input
    (as officially — so the one-hot becomes soft at the coarse scales).
    """

    def __init__(self, in_channels: int, out_channels: int = 3, ngf: int = 32, n_downsample_global: int = 4,
                 n_blocks_global: int = 9, n_local_enhancers: int = 1, n_blocks_local: int = 3,
                 norm: str = "instance", padding: str = "reflect"):
        super().__init__()
        self.global_generator = GlobalGenerator(in_channels, out_channels, ngf * 2**n_local_enhancers,
                                                n_downsample_global, n_blocks_global, norm, padding,
                                                with_head=False)
        self.enhancers = nn.ModuleList(
            LocalBranch(in_channels, ngf * 2**(n_local_enhancers - n), n_blocks_local, norm, padding,
                        with_head=n == n_local_enhancers, out_channels=out_channels)
            for n in range(1, n_local_enhancers + 1)
        )
        self.factor = self.global_generator.factor * 2**n_local_enhancers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pyramid = [x]
        for _ in self.enhancers:
            pyramid.append(downsample_avg(pyramid[-1]))
        features = self.global_generator(pyramid[-1])
        for n, branch in enumerate(self.enhancers, start=1):
            features = branch(pyramid[-1 - n], features)
        return features


def build_generator(in_channels: int, ngf: int, n_downsample_global: int, n_blocks_global: int,
                    n_local_enhancers: int, n_blocks_local: int, norm: str, padding: str) -> nn.Module:
    """``--netG global`` when ``n_local_enhancers == 0``, else ``--netG local``."""
    if n_local_enhancers == 0:
        return GlobalGenerator(in_channels, 3, ngf, n_downsample_global, n_blocks_global, norm, padding)
    return LocalEnhancer(in_channels, 3, ngf, n_downsample_global, n_blocks_global, n_local_enhancers,
                         n_blocks_local, norm, padding)


class FeatureEncoder(nn.Module):
    """E (§3.4): an encoder–decoder image → ``feat_num`` channels (tanh), averaged over every instance.

    Official: nef 16, 4 down/up-samplings, feat_num 3, the same layer types as G1 (no residual blocks).  E is
    trained jointly with G through G's loss; its pooled output is concatenated to G's label input.
    """

    def __init__(self, feat_num: int = 3, nef: int = 16, n_downsample: int = 4, norm: str = "instance"):
        super().__init__()
        layers = conv7_in(3, nef, norm)
        for i in range(n_downsample):
            layers += down(nef * 2**i, nef * 2**(i + 1), norm)
        for i in range(n_downsample, 0, -1):
            layers += up(nef * 2**i, nef * 2**(i - 1), norm)
        self.model = nn.Sequential(*layers, *conv7_out(nef, feat_num))
        self.feat_num, self.factor = feat_num, 2**n_downsample

    def segment_features(self, image: torch.Tensor, index: torch.Tensor, num_segments: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean feature per segment (S, feat_num), pixel count per segment (S,))."""
        return segment_mean(self.model(image), index, num_segments)

    def forward(self, image: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
        """Image and per-pixel segment index (``nn.pooling.segment_index``) → instance-pooled feature map."""
        means, _ = self.segment_features(image, index, num_segments)
        return broadcast_segments(means, index)


class FeatureClusters(nn.Module):
    """Per-class k-means centres of encoded instance features (``encode_features.py``, §3.4 "at inference").

    Buffers (saved with the weights): ``centers`` (classes, n_clusters, feat_num) and ``counts`` (classes,) — how
    many centres of each class are valid (fewer than n_clusters when a class had fewer instances; 0 = never
    seen, whose instances get a zero feature, as officially).  Row ``num_classes`` of a table built with
    ``void_row=True`` holds the void pixels' clusters.
    """

    def __init__(self, num_classes: int, n_clusters: int = 10, feat_num: int = 3):
        super().__init__()
        self.register_buffer("centers", torch.zeros(num_classes, n_clusters, feat_num))
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.long))

    @torch.no_grad()
    def fit(self, features: dict[int, torch.Tensor], seed: int = 0) -> dict[int, int]:
        """``features[class] = (N, feat_num)`` instance features → k-means per class; returns clusters per class."""
        self.centers.zero_()
        self.counts.zero_()
        found = {}
        for class_id, points in sorted(features.items()):
            if len(points) == 0:
                continue
            centres, _, _ = kmeans(points, self.centers.shape[1], seed=seed)
            self.centers[class_id, :len(centres)] = centres.to(self.centers)
            self.counts[class_id] = len(centres)
            found[class_id] = len(centres)
        return found

    def choose(self, classes: torch.Tensor, style: int | torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """One centre per segment of class ``classes[s]``: cluster ``style`` (mod the class's count) or a random one
        (official ``sample_features``: ``np.random.randint`` per instance).  ``style`` may also be one cluster per
        segment, −1 meaning random.  (S,) → (S, feat_num)."""
        counts = self.counts[classes]
        draw = torch.rand(len(classes), generator=generator).to(counts.device)
        random_choice = (draw * counts).long().clamp(max=self.centers.shape[1] - 1)
        if style is None:
            choice = random_choice
        else:
            wanted = torch.as_tensor(style, device=counts.device).long().expand_as(counts)
            choice = torch.where(wanted >= 0, torch.remainder(wanted, counts.clamp(min=1)), random_choice)
        features = self.centers[classes, choice]
        return torch.where((counts > 0).unsqueeze(1), features, torch.zeros_like(features))
