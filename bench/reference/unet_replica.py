"""bench/reference/unet_replica.py: smp's Unet("resnet34", classes=1) and its binary DiceLoss
from logits, written in plain torch.nn, for PyTorch timings where segmentation_models_pytorch
(and torchvision, which it builds the encoder from) cannot be installed, e.g. a GPU machine
without a network. Module names follow smp's, so a state_dict of either loads into the other
strictly; bench/reference/check_replica.py checks that both compute the same thing.

Network (as smp 0.6 builds it): torchvision's ResNet-34 without avgpool/fc
as the encoder, features taken after the stem's ReLU and after each layer; smp's UnetDecoder
with channels (256, 128, 64, 32, 16): per block nearest 2x upsampling, concatenation with the
skip, two conv3x3(no bias)-BatchNorm-ReLU; a conv3x3 16 -> 1 with bias as the head.
"""
import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + identity)."""

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        # The main path first, then the downsample, as torchvision: x has three consumers in a
        # downsampling block (and a decoder skip), and autograd adds their gradients in the
        # reverse order of creation.
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Encoder(nn.Module):
    """ResNet-34 trunk; forward returns the five feature maps the decoder uses, finest first."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, (planes, blocks, stride) in enumerate([(64, 3, 1), (128, 4, 2), (256, 6, 2),
                                                      (512, 3, 2)]):
            layer = []
            for b in range(blocks):
                layer.append(BasicBlock(inplanes, planes, stride if b == 0 else 1))
                inplanes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        # torchvision builds a 1000-way fc here, which smp deletes; it is built and dropped so
        # that the random stream advances as in smp, then torchvision's initialisation runs.
        nn.Linear(512, 1000)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        stem = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(stem))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [stem, f1, f2, f3, f4]


def conv_bn_relu(cin, cout):
    """smp's Conv2dReLU: Sequential(conv3x3 without bias, BatchNorm, ReLU) -> names .0 .1 .2."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    def __init__(self, cin, skip, cout):
        super().__init__()
        self.conv1 = conv_bn_relu(cin + skip, cout)
        self.conv2 = conv_bn_relu(cout, cout)

    def forward(self, x, skip):
        # By target size, as smp does (its backward adds the four gradients in the same order).
        x = F.interpolate(x, size=(2 * x.shape[2], 2 * x.shape[3]), mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.conv2(self.conv1(x))


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        ins, skips, outs = [512, 256, 128, 64, 32], [256, 128, 64, 64, 0], [256, 128, 64, 32, 16]
        self.blocks = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(ins, skips, outs))

    def forward(self, feats):
        x = feats[-1]
        skips = feats[-2::-1] + [None]  # layer3, layer2, layer1, stem, then none
        for block, skip in zip(self.blocks, skips):
            x = block(x, skip)
        return x


class UnetResNet34(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.segmentation_head = nn.Sequential(nn.Conv2d(16, 1, 3, 1, 1))
        # smp's initialisation, in smp's order (modules are created in its order too, so the
        # same seed gives the same weights: check_replica.py): the encoder's is torchvision's
        # (above); then kaiming-uniform (fan_in, relu) decoder convolutions, and a xavier-uniform
        # head with zero bias. BatchNorm starts at weight 1, bias 0 everywhere.
        for m in self.decoder.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, mode="fan_in", nonlinearity="relu")
        nn.init.xavier_uniform_(self.segmentation_head[0].weight)
        nn.init.zeros_(self.segmentation_head[0].bias)

    def forward(self, x):
        return self.segmentation_head(self.decoder(self.encoder(x)))


def dice_loss(logits, target, eps=1e-7):
    """smp.losses.DiceLoss("binary", from_logits=True) as smp 0.6 computes it: one Dice over the
    whole batch, the intersection formed from L1 distances (soft_tversky_score), zero for a
    batch without any positive pixel."""
    bs = target.size(0)
    p = F.logsigmoid(logits).exp().reshape(bs, 1, -1)
    t = target.reshape(bs, 1, -1).type_as(p)
    dims = (0, 2)
    p_sum, t_sum = p.sum(dims), t.sum(dims)
    difference = torch.linalg.vector_norm(p - t, ord=1, dim=dims)
    inter = (p_sum + t_sum - difference) / 2
    score = inter / (inter + 0.5 * (p_sum - inter) + 0.5 * (t_sum - inter)).clamp_min(eps)
    loss = (1.0 - score) * (t.sum(dims) > 0).to(score.dtype)
    return loss.mean()
