"""PyTorch twins of the zoo's ResNet-18 and ViT, and a training loop to time them, for `bench.gpu_train`.

Written by hand in `torch.nn` (torchvision may be absent) to match what
`keras_models.build_model` builds, so the benchmark compares frameworks, not
architectures: `bench.gpu_train` prints both trainable parameter counts side
by side.

- `ResNet18`: `keras_models.architectures.convolutional.resnet` at depth 18. Every
  convolution is bias-free and followed by batch normalisation (eps 1e-5,
  Keras momentum 0.9 = PyTorch momentum 0.1); the first block of stages 3-5
  strides in its first 3×3 convolution (the paper's v1, not torchvision's
  v1.5), and shortcuts are strided 1×1 projections where the shape changes.
  The `"small"` stem (below 64 pixels) is one 3×3/1 convolution without
  max-pool, the `"imagenet"` stem 7×7/2 and a 3×3/2 max-pool. Keras's `"same"`
  padding of a strided convolution pads one more pixel after than before;
  PyTorch's symmetric padding gives the same output size, parameters and FLOPs.
- `ViT`: `keras_models.architectures.vit.vit`. Patch convolution, zero-started
  class token, learned class and grid position embeddings, embedding dropout,
  pre-norm blocks (LayerNorm eps 1e-6, exact GELU, dropout on the MLP hidden
  layer and on both residual branches), final LayerNorm, head on the class
  token. The query, key and value projections are one `Linear(dim, 3·dim)`
  (the same weights as Keras's three `EinsumDense`), and attention runs in
  `F.scaled_dot_product_attention`, as a PyTorch user would write it.

`train_throughput` trains with Adam (fused on CUDA) under bf16 autocast,
channels-last images and `torch.compile`, on batches gathered from the same
host arrays in a shuffled order and copied to the GPU each step, as Keras's
`fit` does with in-memory arrays.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm, the stride in the first; projection shortcut on a shape change."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = _bn(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = _bn(channels)
        self.shortcut = None
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False), _bn(channels))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet18(nn.Module):
    """ResNet-18 with the zoo's stems; `width` is the first stage's channels (64 in the paper)."""

    def __init__(self, classes: int, channels: int = 3, width: int = 64, stem: str = "small"):
        super().__init__()
        if stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(channels, width, 7, 2, 3, bias=False), _bn(width), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False), _bn(width), nn.ReLU())
        blocks, in_channels = [], width
        for stage in range(4):
            out_channels = width * 2**stage
            for block in range(2):
                blocks.append(BasicBlock(in_channels, out_channels, 2 if stage > 0 and block == 0 else 1))
                in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(in_channels, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class EncoderBlock(nn.Module):
    """ViT's pre-norm block: `x + MSA(LN(x))`, then `x + MLP(LN(x))`."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.attention_norm = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attention_output = nn.Linear(dim, dim)
        self.mlp_norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_hidden = nn.Linear(dim, mlp_dim)
        self.mlp_output = nn.Linear(mlp_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).view(batch, tokens, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, dim)
        x = x + self.dropout(self.attention_output(attended))
        y = self.dropout(F.gelu(self.mlp_hidden(self.mlp_norm(x))))
        return x + self.dropout(self.mlp_output(y))


class ViT(nn.Module):
    """The zoo's Vision Transformer for `(height, width)` images of `channels` channels."""

    def __init__(self, image_size: tuple[int, int], channels: int, classes: int, *, patch_size: int,
                 hidden_dim: int, num_layers: int, num_heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        patches = (image_size[0] // patch_size) * (image_size[1] // patch_size)
        self.patch_embedding = nn.Conv2d(channels, hidden_dim, patch_size, patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.class_position = nn.Parameter(torch.randn(1, 1, hidden_dim) * 0.02)
        self.grid_position = nn.Parameter(torch.randn(1, patches, hidden_dim) * 0.02)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(EncoderBlock(hidden_dim, num_heads, mlp_dim, dropout) for _ in range(num_layers)))
        self.norm = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.head = nn.Linear(hidden_dim, classes)

    def forward(self, x):
        x = self.patch_embedding(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(len(x), -1, -1), x], dim=1)
        x = self.dropout(x + torch.cat([self.class_position, self.grid_position], dim=1))
        return self.head(self.norm(self.blocks(x))[:, 0])


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_throughput(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int, warmup: int,
                     steps: int, learning_rate: float = 1e-3, seed: int = 0) -> float:
    """Samples per second over `steps` training steps after `warmup` untimed ones (compilation among them).

    `images` are NHWC (uint8 pixels as the transformed splits store them, or
    float32), converted to float32 on the device as the Keras models convert
    them: a batch copied to the GPU and viewed as NCHW is already
    channels-last in memory.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, fused=device.type == "cuda")
    compiled = torch.compile(model)
    order = np.random.default_rng(seed).permutation(len(images))
    targets = labels.astype(np.int64)

    def step(i: int) -> torch.Tensor:
        rows = order[i * batch_size % len(order):][:batch_size]
        x = torch.from_numpy(images[rows]).to(device, non_blocking=True).permute(0, 3, 1, 2).float()
        y = torch.from_numpy(targets[rows]).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = compiled(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    def wait(loss: torch.Tensor) -> None:
        loss.item()
        if device.type == "cuda":
            torch.cuda.synchronize()

    for i in range(warmup):
        loss = step(i)
    wait(loss)
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        loss = step(i)
    wait(loss)
    return steps * batch_size / (time.perf_counter() - start)
