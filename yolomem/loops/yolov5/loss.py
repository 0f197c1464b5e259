"""The yolov5 repo's anchor-based loss: v7.0 ``utils/loss.py`` (``ComputeLoss``) and
``utils/segment/loss.py`` (the segmentation ``ComputeLoss``), statement for statement.

The statements are the repo's so that the tensors they make, and the moments Python frees them, are
the same; ``tests/test_yolov5_matches_repo.py`` checks that against the repo's own code. Only what
reads a GPU model differs: the anchors come in as a tensor (the model's ``Detect.anchors`` buffer for
yolov5 YAMLs), and the hyperparameters as a ``LossHyp``.

Target building: each target is matched to every anchor of a level whose width/height ratio to the
target is within ``anchor_t`` (4.0) both ways, then copied to up to two neighbouring cells (the
3-cell offsets: the target's own cell plus the nearer horizontal and vertical neighbour). Losses:
BCE objectness (per-level balance 4.0/1.0/0.4), BCE classes, CIoU box; segmentation adds a BCE mask
loss per image over the prototype masks, cropped to each target box.

In a trace, everything built from the targets (gains, offsets, indices, boolean masks) is small and
derives from the real target tensor, so it stays real (phase "loss") and the number of matched
anchors is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

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
    label_smoothing: float = 0.0

    def scaled(self, nl: int, nc: int, imgsz: int) -> LossHyp:
        return LossHyp(self.box * 3 / nl, self.cls * nc / 80 * 3 / nl, self.obj * (imgsz / 640) ** 2 * 3 / nl,
                       self.cls_pw, self.obj_pw, self.anchor_t, self.label_smoothing)  # fmt: skip


def smooth_bce(eps: float = 0.1) -> tuple[float, float]:
    """Positive and negative BCE targets with label smoothing."""
    return 1.0 - 0.5 * eps, 0.5 * eps


def bbox_iou(box1: torch.Tensor, box2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``utils/metrics.bbox_iou(box1, box2, CIoU=True)`` for (n, 4) xywh boxes, pairwise by row -> (n, 1)."""
    (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.chunk(4, -1), box2.chunk(4, -1)
    w1_, h1_, w2_, h2_ = w1 / 2, h1 / 2, w2 / 2, h2 / 2
    b1_x1, b1_x2, b1_y1, b1_y2 = x1 - w1_, x1 + w1_, y1 - h1_, y1 + h1_
    b2_x1, b2_x2, b2_y1, b2_y2 = x2 - w2_, x2 + w2_, y2 - h2_, y2 + h2_
    inter = (b1_x2.minimum(b2_x2) - b1_x1.maximum(b2_x1)).clamp(0) * \
            (b1_y2.minimum(b2_y2) - b1_y1.maximum(b2_y1)).clamp(0)  # fmt: skip
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = b1_x2.maximum(b2_x2) - b1_x1.minimum(b2_x1)  # enclosing box
    ch = b1_y2.maximum(b2_y2) - b1_y1.minimum(b2_y1)
    c2 = cw**2 + ch**2 + eps
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def xywh2xyxy(x: torch.Tensor) -> torch.Tensor:
    """``utils/general.xywh2xyxy``: a clone, then four column writes."""
    y = x.clone()
    y[..., 0] = x[..., 0] - x[..., 2] / 2
    y[..., 1] = x[..., 1] - x[..., 3] / 2
    y[..., 2] = x[..., 0] + x[..., 2] / 2
    y[..., 3] = x[..., 1] + x[..., 3] / 2
    return y


def crop_mask(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """``utils/segment/general.crop_mask``: zero each (n, h, w) mask outside its (n, 4) xyxy box."""
    _, h, w = masks.shape
    x1, y1, x2, y2 = torch.chunk(boxes[:, :, None], 4, 1)  # (n, 1, 1) each
    r = torch.arange(w, device=masks.device, dtype=x1.dtype)[None, None, :]
    c = torch.arange(h, device=masks.device, dtype=x1.dtype)[None, :, None]
    return masks * ((r >= x1) * (r < x2) * (c >= y1) * (c < y2))


class AnchorLoss:
    """``ComputeLoss``: ``loss(preds, targets[, masks]) -> (loss * batch, items)``.

    ``anchors``: (nl, na, 2) in grid units, the tensor the loss reads (yolov5: ``Detect.anchors``)."""

    def __init__(self, head, hyp: LossHyp, anchors: torch.Tensor, overlap: bool = True):
        self.head, self.hyp, self.overlap = head, hyp, overlap
        self.nc, self.na, self.nl, self.nm = head.nc, head.na, head.nl, head.nm
        self.cp, self.cn = smooth_bce(eps=hyp.label_smoothing)
        # ComputeLoss's defaults, kept as attributes so that its statements (and their locals) are the repo's
        self.sort_obj_iou, self.gr, self.autobalance, self.ssi = False, 1.0, False, 0
        self.balance = {3: [4.0, 1.0, 0.4]}.get(self.nl, [4.0, 1.0, 0.25, 0.06, 0.02])
        self.anchors = anchors
        self.bce_cls = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([hyp.cls_pw]))
        self.bce_obj = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([hyp.obj_pw]))

    def device_tensors(self) -> list[torch.Tensor]:
        """The loss's own GPU tensors: the two BCE ``pos_weight`` (the anchors are the model's)."""
        return [self.bce_cls.pos_weight, self.bce_obj.pos_weight]

    def __call__(self, preds, targets: torch.Tensor, masks: torch.Tensor | None = None):
        if self.nm:
            return self._segment(preds, targets, masks)
        return self._detect(preds, targets)

    def _detect(self, p, targets):
        lcls = torch.zeros(1)
        lbox = torch.zeros(1)
        lobj = torch.zeros(1)
        tcls, tbox, indices, anchors = self.build_targets(p, targets)[:4]
        for i, pi in enumerate(p):  # pi: (B, na, ny, nx, 5 + nc)
            b, a, gj, gi = indices[i]
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype)
            n = b.shape[0]
            if n:
                pxy, pwh, _, pcls = pi[b, a, gj, gi].split((2, 2, 1, self.nc), 1)  # (n, 5 + nc) -> parts
                pxy = pxy.sigmoid() * 2 - 0.5
                pwh = (pwh.sigmoid() * 2) ** 2 * anchors[i]
                pbox = torch.cat((pxy, pwh), 1)
                iou = bbox_iou(pbox, tbox[i]).squeeze()
                lbox += (1.0 - iou).mean()
                iou = iou.detach().clamp(0).type(tobj.dtype)
                if self.sort_obj_iou:
                    j = iou.argsort()
                    b, a, gj, gi, iou = b[j], a[j], gj[j], gi[j], iou[j]
                if self.gr < 1:
                    iou = (1.0 - self.gr) + self.gr * iou
                tobj[b, a, gj, gi] = iou
                if self.nc > 1:
                    t = torch.full_like(pcls, self.cn)
                    t[range(n), tcls[i]] = self.cp
                    lcls += self.bce_cls(pcls, t)
            obji = self.bce_obj(pi[..., 4], tobj)
            lobj += obji * self.balance[i]
            if self.autobalance:
                self.balance[i] = self.balance[i] * 0.9999 + 0.0001 / obji.detach().item()
        if self.autobalance:
            self.balance = [x / self.balance[self.ssi] for x in self.balance]
        lbox *= self.hyp.box
        lobj *= self.hyp.obj
        lcls *= self.hyp.cls
        bs = tobj.shape[0]
        return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()

    def _segment(self, preds, targets, masks):
        p, proto = preds
        bs, nm, mask_h, mask_w = proto.shape  # (B, nm, H/4, W/4)
        lcls = torch.zeros(1)
        lbox = torch.zeros(1)
        lobj = torch.zeros(1)
        lseg = torch.zeros(1)
        tcls, tbox, indices, anchors, tidxs, xywhn = self.build_targets(p, targets)
        for i, pi in enumerate(p):  # pi: (B, na, ny, nx, 5 + nc + nm)
            b, a, gj, gi = indices[i]
            tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype)
            n = b.shape[0]
            if n:
                pxy, pwh, _, pcls, pmask = pi[b, a, gj, gi].split((2, 2, 1, self.nc, nm), 1)
                pxy = pxy.sigmoid() * 2 - 0.5
                pwh = (pwh.sigmoid() * 2) ** 2 * anchors[i]
                pbox = torch.cat((pxy, pwh), 1)
                iou = bbox_iou(pbox, tbox[i]).squeeze()
                lbox += (1.0 - iou).mean()
                iou = iou.detach().clamp(0).type(tobj.dtype)
                if self.sort_obj_iou:
                    j = iou.argsort()
                    b, a, gj, gi, iou = b[j], a[j], gj[j], gi[j], iou[j]
                if self.gr < 1:
                    iou = (1.0 - self.gr) + self.gr * iou
                tobj[b, a, gj, gi] = iou
                if self.nc > 1:
                    t = torch.full_like(pcls, self.cn)
                    t[range(n), tcls[i]] = self.cp
                    lcls += self.bce_cls(pcls, t)
                if tuple(masks.shape[-2:]) != (mask_h, mask_w):  # downsample
                    masks = F.interpolate(masks[None], (mask_h, mask_w), mode="nearest")[0]
                marea = xywhn[i][:, 2:].prod(1)  # (n,) normalised box areas
                mxyxy = xywh2xyxy(xywhn[i] * torch.tensor([mask_w, mask_h, mask_w, mask_h]))
                for bi in b.unique():
                    j = b == bi  # (n,) bool: this image's matches
                    if self.overlap:  # one index map per image: object k is the pixels equal to k + 1
                        mask_gti = torch.where(masks[bi][None] == tidxs[i][j].view(-1, 1, 1), 1.0, 0.0)
                    else:
                        mask_gti = masks[tidxs[i]][j]
                    lseg += self._single_mask_loss(mask_gti, pmask[j], proto[bi], mxyxy[j], marea[j])
            obji = self.bce_obj(pi[..., 4], tobj)
            lobj += obji * self.balance[i]
            if self.autobalance:
                self.balance[i] = self.balance[i] * 0.9999 + 0.0001 / obji.detach().item()
        if self.autobalance:
            self.balance = [x / self.balance[self.ssi] for x in self.balance]
        lbox *= self.hyp.box
        lobj *= self.hyp.obj
        lcls *= self.hyp.cls
        lseg *= self.hyp.box / bs
        loss = lbox + lobj + lcls + lseg
        return loss * bs, torch.cat((lbox, lseg, lobj, lcls)).detach()

    def _single_mask_loss(self, gt_mask, pred, proto, xyxy, area):
        pred_mask = (pred @ proto.view(self.nm, -1)).view(-1, *proto.shape[1:])  # (n, nm) @ (nm, h*w) -> (n, h, w)
        loss = F.binary_cross_entropy_with_logits(pred_mask, gt_mask, reduction="none")
        return (crop_mask(loss, xyxy).mean(dim=(1, 2)) / area).mean()

    def build_targets(self, p, targets: torch.Tensor):
        """targets (nt, 6) = image, class, x, y, w, h (normalised) -> per level: classes, boxes,
        (image, anchor, gy, gx) indices, anchors; with masks also object indices and normalised boxes."""
        na, nt = self.na, targets.shape[0]
        tcls, tbox, indices, anch, tidxs, xywhn = [], [], [], [], [], []
        gain = torch.ones(8 if self.nm else 7)
        ai = torch.arange(na).float().view(na, 1).repeat(1, nt)  # (na, nt) anchor index
        if self.nm:
            if self.overlap:  # object index within its image, for the index-map masks
                batch = p[0].shape[0]
                ti = []
                for i in range(batch):
                    num = (targets[:, 0] == i).sum()
                    ti.append(torch.arange(num).float().view(1, num).repeat(na, 1) + 1)  # (na, num)
                ti = torch.cat(ti, 1)
            else:
                ti = torch.arange(nt).float().view(1, nt).repeat(na, 1)
            targets = torch.cat((targets.repeat(na, 1, 1), ai[..., None], ti[..., None]), 2)  # (na, nt, 8)
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
                bc, gxy, gwh, at = t.chunk(4, 1)
                (a, tidx), (b, c) = at.long().T, bc.long().T
            else:
                bc, gxy, gwh, a = t.chunk(4, 1)
                a, (b, c) = a.long().view(-1), bc.long().T
            gij = (gxy - offsets).long()
            gi, gj = gij.T
            indices.append((b, a, gj.clamp_(0, shape[2] - 1), gi.clamp_(0, shape[3] - 1)))
            tbox.append(torch.cat((gxy - gij, gwh), 1))
            anch.append(anchors[a])
            tcls.append(c)
            if self.nm:
                tidxs.append(tidx)
                xywhn.append(torch.cat((gxy, gwh), 1) / gain[2:6])
        return tcls, tbox, indices, anch, tidxs, xywhn
