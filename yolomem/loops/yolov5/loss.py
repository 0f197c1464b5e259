"""The yolov5 repo's anchor-based loss (v7.0 ``utils/loss.py`` design; segmentation: ``utils/segment/loss.py``).

Target building: each target is matched to every anchor of a level whose width/height ratio to the
target is within ``anchor_t`` (4.0) both ways, then copied to up to two neighbouring cells (the
3-cell offsets: the target's own cell plus the nearer horizontal and vertical neighbour). Losses:
BCE objectness (per-level balance 4.0/1.0/0.4), BCE classes, CIoU box; segmentation adds a BCE mask
loss per image over the prototype masks, cropped to each target box.

Everything built from the targets (gains, offsets, indices) is small and derives from the real target
tensor, so in a trace it stays real (phase "loss") and the number of matched anchors is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from yolomem.loops.yolov5.modules import HeadSpec

NEIGHBOUR_G = 0.5  # cell-offset bias (build_targets' g)


@dataclass(frozen=True)
class LossHyp:
    """hyp.scratch-low.yaml, after train.py's scaling by the number of levels and the image size."""

    box: float = 0.05
    cls: float = 0.5
    obj: float = 1.0
    cls_pw: float = 1.0
    obj_pw: float = 1.0
    anchor_t: float = 4.0

    def scaled(self, nl: int, nc: int, imgsz: int) -> LossHyp:
        return LossHyp(self.box * 3 / nl, self.cls * nc / 80 * 3 / nl, self.obj * (imgsz / 640) ** 2 * 3 / nl,
                       self.cls_pw, self.obj_pw, self.anchor_t)  # fmt: skip


def bbox_ciou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of (n, 4) xywh boxes, pairwise by row -> (n, 1)."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.chunk(4, -1), box2.chunk(4, -1)
    b1_x1, b1_x2, b1_y1, b1_y2 = x1 - w1 / 2, x1 + w1 / 2, y1 - h1 / 2, y1 + h1 / 2
    b2_x1, b2_x2, b2_y1, b2_y2 = x2 - w2 / 2, x2 + w2 / 2, y2 - h2 / 2, y2 + h2 / 2
    inter = (torch.min(b1_x2, b2_x2) - torch.max(b1_x1, b2_x1)).clamp(0) * (
        torch.min(b1_y2, b2_y2) - torch.max(b1_y1, b2_y1)
    ).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1_x2, b2_x2) - torch.min(b1_x1, b2_x1)  # enclosing box
    ch = torch.max(b1_y2, b2_y2) - torch.min(b1_y1, b2_y1)
    c2 = cw**2 + ch**2 + eps
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4
    v = (4 / math.pi**2) * (torch.atan(w2 / (h2 + eps)) - torch.atan(w1 / (h1 + eps))).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def crop_mask(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Zero each (n, h, w) mask outside its (n, 4) xyxy box."""
    _, h, w = masks.shape
    x1, y1, x2, y2 = torch.chunk(boxes[:, :, None], 4, 1)  # (n, 1, 1) each
    r = torch.arange(w, device=masks.device, dtype=x1.dtype)[None, None, :]
    c = torch.arange(h, device=masks.device, dtype=x1.dtype)[None, :, None]
    return masks * ((r >= x1) * (r < x2) * (c >= y1) * (c < y2))


class AnchorLoss:
    """``loss(preds, targets[, masks]) -> (loss * batch, items)`` for a ``HeadSpec``."""

    def __init__(self, head: HeadSpec, hyp: LossHyp, overlap: bool = True):
        self.head, self.hyp, self.overlap = head, hyp, overlap
        self.nc, self.na, self.nl, self.nm = head.nc, head.na, head.nl, head.nm
        self.balance = {3: [4.0, 1.0, 0.4]}.get(self.nl, [4.0, 1.0, 0.25, 0.06, 0.02])
        # made from Python numbers: real even in a trace (yolov5 reads Detect.anchors, the same values)
        self.anchors = torch.tensor(head.anchors_in_grid_units())  # (nl, na, 2)
        self.bce_cls = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([hyp.cls_pw]))
        self.bce_obj = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([hyp.obj_pw]))

    def __call__(self, preds, targets: torch.Tensor, masks: torch.Tensor | None = None):
        p, proto = preds if isinstance(preds, tuple) else (preds, None)
        lcls, lbox, lobj, lseg = (torch.zeros(1) for _ in range(4))
        tcls, tbox, indices, anchors, tidxs, xywhn = self.build_targets(p, targets)
        for i, pi in enumerate(p):  # pi: (B, na, ny, nx, no)
            b, a, gj, gi = indices[i]
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype)
            n = b.shape[0]
            if n:
                parts = (2, 2, 1, self.nc, self.nm) if self.nm else (2, 2, 1, self.nc)
                picked = pi[b, a, gj, gi].split(parts, 1)  # (n, no) -> xy, wh, obj, cls[, mask]
                pxy, pwh, pcls = picked[0], picked[1], picked[3]
                pxy = pxy.sigmoid() * 2 - 0.5
                pwh = (pwh.sigmoid() * 2) ** 2 * anchors[i]
                iou = bbox_ciou(torch.cat((pxy, pwh), 1), tbox[i]).squeeze()
                lbox += (1.0 - iou).mean()
                tobj[b, a, gj, gi] = iou.detach().clamp(0).type(tobj.dtype)
                if self.nc > 1:
                    t = torch.full_like(pcls, 0.0)
                    t[range(n), tcls[i]] = 1.0
                    lcls += self.bce_cls(pcls, t)
                if self.nm and proto is not None and masks is not None:
                    lseg += self._mask_loss(picked[4], proto, masks, b, tidxs[i], xywhn[i])
            lobj += self.bce_obj(pi[..., 4], tobj) * self.balance[i]
        lbox *= self.hyp.box
        lobj *= self.hyp.obj
        lcls *= self.hyp.cls
        bs = p[0].shape[0]
        if self.nm:
            lseg *= self.hyp.box / bs
            return (lbox + lobj + lcls + lseg) * bs, torch.cat((lbox, lseg, lobj, lcls)).detach()
        return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()

    def _mask_loss(self, pmask, proto, masks, b, tidx, xywhn):
        _, nm, mask_h, mask_w = proto.shape  # (B, nm, H/4, W/4)
        if tuple(masks.shape[-2:]) != (mask_h, mask_w):
            masks = F.interpolate(masks[None], (mask_h, mask_w), mode="nearest")[0]
        marea = xywhn[:, 2:].prod(1)
        scale = torch.tensor([mask_w, mask_h, mask_w, mask_h], dtype=xywhn.dtype)
        mxyxy = _xywh2xyxy(xywhn * scale)
        total = torch.zeros(1)
        for bi in b.unique():
            j = (b == bi).nonzero(as_tuple=True)[0]  # the indices a boolean mask would gather (real)
            if self.overlap:  # one index map per image: object k is the pixels equal to k + 1
                gt = torch.where(masks[bi][None] == tidx[j].view(-1, 1, 1), 1.0, 0.0)
            else:
                gt = masks[tidx][j]
            pred = (pmask[j] @ proto[bi].view(nm, -1)).view(-1, mask_h, mask_w)  # (n_i, H/4, W/4)
            loss = F.binary_cross_entropy_with_logits(pred, gt, reduction="none")
            total += (crop_mask(loss, mxyxy[j]).mean(dim=(1, 2)) / marea[j]).mean()
        return total

    def build_targets(self, p, targets: torch.Tensor):
        """targets (nt, 6) = image, class, x, y, w, h (normalised) -> per level: classes, boxes,
        (image, anchor, gy, gx) indices, anchors; plus object indices and boxes for masks."""
        na, nt = self.na, targets.shape[0]
        tcls, tbox, indices, anch, tidxs, xywhn = [], [], [], [], [], []
        gain = torch.ones(8 if self.nm else 7)
        ai = torch.arange(na).float().view(na, 1).repeat(1, nt)  # (na, nt) anchor index
        if self.nm:
            if self.overlap:  # object index within its image, for the index-map masks
                ti = []
                for image in range(p[0].shape[0]):
                    num = (targets[:, 0] == image).sum()
                    ti.append(torch.arange(num).float().view(1, num).repeat(na, 1) + 1)
                ti = torch.cat(ti, 1)
            else:
                ti = torch.arange(nt).float().view(1, nt).repeat(na, 1)
            targets = torch.cat((targets.repeat(na, 1, 1), ai[..., None], ti[..., None]), 2)
        else:
            targets = torch.cat((targets.repeat(na, 1, 1), ai[..., None]), 2)  # (na, nt, 7)
        g = NEIGHBOUR_G
        off = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]]).float() * g
        for i in range(self.nl):
            anchors, shape = self.anchors[i], p[i].shape
            gain[2:6] = torch.tensor(shape)[[3, 2, 3, 2]]  # xyxy gain
            t = targets * gain
            if nt:
                r = t[..., 4:6] / anchors[:, None]  # wh ratio
                j = torch.max(r, 1 / r).max(2)[0] < self.hyp.anchor_t
                t = t[j]
                gxy = t[:, 2:4]
                gxi = gain[[2, 3]] - gxy
                j, k = ((gxy % 1 < g) & (gxy > 1)).T
                l, m = ((gxi % 1 < g) & (gxi > 1)).T
                j = torch.stack((torch.ones_like(j), j, k, l, m))
                t = t.repeat((5, 1, 1))[j]
                offsets = (torch.zeros_like(gxy)[None] + off[:, None])[j]
            else:
                t = targets[0]
                offsets = 0
            if self.nm:
                bc, gxy, gwh, at = t.split((2, 2, 2, 2), 1)
                a, tidx = at.long().T
            else:
                bc, gxy, gwh, a = t.chunk(4, 1)
                a, tidx = a.long().view(-1), None
            b, c = bc.long().T
            gij = (gxy - offsets).long()
            gi, gj = gij.T
            indices.append((b, a, gj.clamp_(0, shape[2] - 1), gi.clamp_(0, shape[3] - 1)))
            tbox.append(torch.cat((gxy - gij, gwh), 1))
            anch.append(anchors[a])
            tcls.append(c)
            tidxs.append(tidx)
            xywhn.append(torch.cat((gxy, gwh), 1) / gain[2:6] if self.nm else None)
        return tcls, tbox, indices, anch, tidxs, xywhn


def _xywh2xyxy(x: torch.Tensor) -> torch.Tensor:
    y = x.clone()
    y[..., 0] = x[..., 0] - x[..., 2] / 2
    y[..., 1] = x[..., 1] - x[..., 3] / 2
    y[..., 2] = x[..., 0] + x[..., 2] / 2
    y[..., 3] = x[..., 1] + x[..., 3] / 2
    return y
