"""AlexNet's feature-map sizes: which input sizes its layer stack accepts, and conv1's stride.

Plain arithmetic, apart from `model` so that a preset's image size is checked before Keras (and
its backend, seconds to import) is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError
from .space import SEED_CONV1_KERNEL

# The seed's geometry: overlapping 3x3 pools with stride 2 (and conv1's 11x11 kernel, which a
# preset may change: SEED_CONV1_KERNEL).
POOL = 3
POOL_STRIDE = 2


def conv1_stride(image_size: int) -> int:
    """conv1's stride for an input of `image_size` pixels: image_size // 32, at least 1.

    The seed used stride 4 at 128x128. Scaling the stride with the input keeps conv1's output
    near 30 pixels wide at every size that is a multiple of 32 above it (64 -> 27, 96 -> 29,
    128 -> 30), so the rest of the stack sees maps of the paper's proportions. Below 64 the stride
    is 1, and with the seed's 11x11 kernel the maps shrink with the input (32 -> 22 -> pools of
    10, 4, 1); a 3x3 kernel at 32x32 restores the paper's 30 -> 14, 6, 2 (`tuning/cpu.toml`).
    """
    return max(1, image_size // 32)


@dataclass(frozen=True)
class FeatureSizes:
    conv1: int
    pool1: int
    pool2: int
    pool3: int


def _pooled(size: int) -> int:
    return (size - POOL) // POOL_STRIDE + 1


def feature_sizes(image_size: int, conv1_kernel: int = SEED_CONV1_KERNEL) -> FeatureSizes | None:
    """Spatial widths after conv1 and each max-pool, or None where a map collapses.

    conv1 and the pools use 'valid' padding, as in the seed; conv2..conv5 use 'same' and keep the
    width. A pool needs a map at least as wide as its 3x3 window.
    """
    if image_size < conv1_kernel:
        return None
    c1 = (image_size - conv1_kernel) // conv1_stride(image_size) + 1
    sizes = [c1]
    for _ in range(3):
        if sizes[-1] < POOL:
            return None
        sizes.append(_pooled(sizes[-1]))
    return FeatureSizes(*sizes)


def smallest_image_size(conv1_kernel: int = SEED_CONV1_KERNEL) -> int:
    """The smallest input width at which no feature map collapses."""
    size = conv1_kernel
    while feature_sizes(size, conv1_kernel) is None:
        size += 1
    return size


def check_image_size(image_size: int, conv1_kernel: int = SEED_CONV1_KERNEL) -> FeatureSizes:
    """Feature sizes for `image_size`, or a UserError naming the smallest size that works."""
    sizes = feature_sizes(image_size, conv1_kernel) if isinstance(image_size, int) else None
    if sizes is None:
        raise UserError(
            f"image_size = {image_size} is too small for AlexNet's layer stack with a "
            f"{conv1_kernel}x{conv1_kernel} conv1 (its feature maps collapse below the 3x3 pooling "
            f"window); use image_size >= {smallest_image_size(conv1_kernel)}"
        )
    return sizes
