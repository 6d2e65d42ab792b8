"""The body model: every random anatomical parameter drawn up front (grid-independent), then painted.

One adult body, head to pelvis, in nominal millimetres (LPS, supine). A region is a z window of it.
The painting is split by concern into mixins: ``chest.py`` (lungs, mediastinum, great vessels),
``abdomen.py`` (abdominal organs, bowel), ``skeleton.py`` (spine, ribs, shoulder girdle, pelvis) and
``head_neck.py`` (neck, skull, brain, face).
"""

from __future__ import annotations

import numpy as np

from ..anatomy import BODY_LABEL
from .abdomen import AbdomenMixin
from .atlas import _FACE_C, _FACE_SEMI, _HEAD_C, _HEAD_SEMI, _REGION_Z_RANGE, _SPINE_CANAL, _SPINE_RX, _SPINE_RY
from .atlas import _SPINE_SP, _SPINE_TP, _SPINE_Y, _SPINE_Z, _TORSO_A, _TORSO_B, _TORSO_Y, _TORSO_Z, _l
from .chest import ChestMixin
from .config import _LUNG_LOBES, _T
from .contrast import apply_phase
from .head_neck import HeadNeckMixin
from .limbs import LimbsMixin
from . import trees
from .shapes import _Canvas, _Fourier, _path, _rotation, _unit
from .skeleton import SkeletonMixin
from .wall import WallMixin


# leaf radius of the pulmonary vessel trees (mm, Murray: r = r_leaf * n^(1/3)); see seeds/phantoms.md
_LUNG_R_LEAF = 0.64


class _Body(ChestMixin, AbdomenMixin, SkeletonMixin, HeadNeckMixin, WallMixin, LimbsMixin):
    """Draws every random anatomical parameter up front (grid-independent), then paints on a canvas."""

    def __init__(self, rng, phase: str = "native"):
        self.rng = rng
        u = rng.uniform
        # tissue values for this patient, then shifted by the contrast phase (same draws in every phase)
        self.t = {k: (m + (rng.normal(0.0, sd) if sd else 0.0), tx) for k, (m, sd, tx) in _T.items()}
        self.t = apply_phase(self.t, _T, phase)
        # habitus
        self.width = u(0.95, 1.06)
        self.depth = u(0.94, 1.06)
        self.fat = u(8.0, 28.0)
        self.neck_fat = 4.0 + 0.25 * self.fat
        self.wall = u(11.0, 16.0)
        self.head = u(0.95, 1.05)
        # smooth deformation of the whole body (nominal mm) and boundary roughness
        self.warp = [_Fourier(rng, 3, (260.0, 520.0)) for _ in range(3)]
        self.warp_amp = [u(2.0, 4.0) for _ in range(3)]
        self.shape_noise = _Fourier(rng, 12, (35.0, 80.0))
        self.fine_noise = _Fourier(rng, 16, (10.0, 22.0))
        # diaphragm and lung fissures
        self.dome_r = 45.0 + u(-8, 8)
        self.dome_l = self.dome_r - u(5, 15)
        self.fiss_l = 118.0 + u(-12, 12)
        self.fiss_r = 108.0 + u(-12, 12)
        self.fiss_h = 140.0 + u(-10, 10)
        self._draw_organs()
        self._draw_trees()
        self.brain_fold = _Fourier(rng, 16, (14.0, 28.0))
        self.brain_sulci = _Fourier(rng, 16, (8.0, 14.0))
        self.head_jit = rng.normal(0.0, 2.0, 3)
        self._draw_wall()
        self.lung_labels = np.array([_l(n) for n in _LUNG_LOBES], dtype=np.uint8)
        self._draw_limbs()

    def _jit(self, c, sd=4.0):
        return np.asarray(c, float) + self.rng.normal(0.0, sd, 3)

    def _sz(self, semi, lo=0.9, hi=1.1):
        return np.asarray(semi, float) * self.rng.uniform(lo, hi, 3)

    def _draw_organs(self):
        """Organ centres, semi-axes and angles; bowel paths (draw order fixed: it defines the anatomy)."""
        rng, u, jit, sz = self.rng, self.rng.uniform, self._jit, self._sz
        self.heart = (jit((18.0, -18.0, 92.0), 5), sz((70.0, 47.0, 55.0), 0.92, 1.08), u(30, 45), u(-25, -10))
        self.liver_r = (jit((-62.0, 8.0, -12.0), 5), sz((74.0, 84.0, 70.0), 0.92, 1.08))
        self.liver_l = (jit((12.0, -45.0, 14.0), 5), sz((58.0, 36.0, 34.0)))
        self.spleen = (jit((88.0, 55.0, 0.0), 5), sz((24.0, 52.0, 44.0)), u(30, 50))
        self.kidneys = [
            (side, jit((side * 66.0, 52.0, (-52.0 if side > 0 else -66.0)), 4), sz((26.0, 22.0, 54.0)), u(20, 35))
            for side in (1.0, -1.0)
        ]
        self.adrenals = [(side, jit((side * 36.0, 38.0, -6.0 if side > 0 else 2.0), 2)) for side in (1.0, -1.0)]
        self.gallbladder = (jit((-45.0, -52.0, -52.0), 4), sz((15.0, 15.0, 34.0)), u(-30, -10))
        self.stomach_ctrl = np.array(
            [(52, 12, 30), (70, -18, -8), (58, -48, -40), (20, -62, -55), (-12, -46, -50)], float
        ) + rng.normal(0.0, 4.0, (5, 3))
        self.stomach_r = np.array([40, 36, 30, 22, 12], float) * u(0.85, 1.1)
        self.stomach_air = u(-45.0, -25.0)  # gas collects anteriorly (supine), in front of this y
        # small bowel: loops filling the mesenteric space (jejunum upper left, ileum lower right, pelvis)
        self.small_bowel = [self._random_walk(np.array(lo, float), np.array(hi, float), 30) for lo, hi in (
            ((0.0, -75.0, -135.0), (70.0, 0.0, -60.0)), ((-60.0, -75.0, -170.0), (40.0, -5.0, -95.0)),
            ((-70.0, -70.0, -215.0), (10.0, 5.0, -130.0)), ((-35.0, -60.0, -235.0), (60.0, 10.0, -165.0)))]
        self.colon_ctrl = np.array(
            [(-72, -5, -185), (-80, 12, -125), (-76, -18, -72), (-35, -64, -88), (30, -66, -82), (82, 8, -30),
             (86, 30, -100), (80, 24, -170), (40, -8, -212), (0, 12, -238)], float
        ) + rng.normal(0.0, 4.0, (10, 3))
        self.colon_r = np.array([24, 21, 20, 19, 19, 18, 16, 16, 15, 15], float) * u(0.9, 1.1)
        self.colon_gas = [(u(0.0, 1.0), u(0.4, 0.8)) for _ in range(9)]  # (position along, size)
        self.bowel_gas = [(u(0.0, 1.0), u(0.3, 0.6)) for _ in range(5)]
        self.bladder = (jit((0.0, -20.0, -268.0), 4), sz((45.0, 35.0, 35.0)))
        # mesenteric vessels: from the root of the mesentery out to the bowel loops
        loops = np.concatenate(self.small_bowel)[::2]
        self.mesenteric_tree = trees.grow(rng, (4.0, -14.0, -62.0), loops + rng.normal(0.0, 3.0, loops.shape),
                                          r_leaf=0.9, reach=0.6)

    def _draw_trees(self):
        """Vessel and airway trees (nominal): pulmonary arteries and veins from each hilum filling the lung,
        bronchi alongside the arteries; liver vessels."""
        rng = self.rng
        self.lung_arteries, self.lung_veins, self.bronchi = [], [], []
        self.lung_roots = {"art": [], "vein": []}
        for side in (1.0, -1.0):
            n = 2200 if side > 0 else 2600  # the right lung is the larger
            art_root = np.array([side * 40.0, 14.0, 152.0]) + rng.normal(0.0, 3.0, 3)
            vein_root = np.array([side * 30.0, 26.0, 118.0]) + rng.normal(0.0, 3.0, 3)
            lo, hi = (min(0.0, side * 160.0), -120.0, -40.0), (max(0.0, side * 160.0), 120.0, 262.0)
            inside = self._lung_test(side)
            arteries = trees.grow(rng, art_root, trees.sample_points(rng, inside, lo, hi, n), r_leaf=_LUNG_R_LEAF)
            veins = trees.grow(rng, vein_root, trees.sample_points(rng, inside, lo, hi, n), r_leaf=_LUNG_R_LEAF)
            self.lung_arteries += arteries
            self.lung_veins += veins
            self.lung_roots["art"].append(art_root)
            self.lung_roots["vein"].append(vein_root)
            # bronchi run beside the arteries (on a fixed side per lung), walls about a fifth of the radius
            side_dir = _unit(np.array([side * 0.3, 0.8, 0.4]))
            for p0, p1, r0, r1, count in arteries:
                if r1 < 0.9:
                    continue
                d = _unit(p1 - p0)
                off = _unit(side_dir - d * (side_dir @ d))
                self.bronchi.append((p0 + off * (r0 + 0.9 * r0 + 0.4), p1 + off * (r1 + 0.9 * r1 + 0.4),
                                     0.9 * r0, 0.9 * r1, count))
        # liver: portal veins from the porta hepatis, hepatic veins converging on the IVC below the heart
        inside, lo, hi = self._liver_test()
        self.portal_tree = trees.grow(rng, (-36.0, -4.0, -30.0), trees.sample_points(rng, inside, lo, hi, 500),
                                      r_leaf=0.55)
        self.hepatic_tree = trees.grow(rng, (-20.0, 4.0, 30.0), trees.sample_points(rng, inside, lo, hi, 400),
                                       r_leaf=0.6)

    def _liver_test(self):
        """An in-liver test in nominal mm (the liver trees' targets) and its box."""
        def inside(x, y, z):
            p = np.stack([x, y, z], axis=1)
            out = np.zeros(len(x), dtype=bool)
            for (c, semi), rot in ((self.liver_r, _rotation(-10, 0, 0)), (self.liver_l, _rotation(-15, 10, 0))):
                out |= ((((p - c) @ rot) / (semi - 6.0)) ** 2).sum(axis=1) < 1.0
            return out & (z < self.diaphragm(x, y) - 8.0)

        c, semi = self.liver_r
        return inside, c - semi - 60.0, c + semi + 60.0

    def _lung_test(self, side):
        """An approximate in-lung test in nominal mm (the trees' targets; vessels outside are masked)."""
        c, semi, yaw, pitch = self.heart
        rot = _rotation(yaw, pitch, 0.0)

        def inside(x, y, z):
            a, b, yc = self._cavity(np.clip(z, -330, 266))
            rho = (np.abs(x) / a) ** 2.2 + (np.abs(y - yc) / b) ** 2.2
            local = (np.stack([x, y, z], axis=1) - c) @ rot
            heart = (((local / (semi + 6.0)) ** 2).sum(axis=1)) < 1.0
            spine = (np.abs(x) < 40.0) & (y > 15.0)
            return (rho < 0.9) & (z > self.diaphragm(x, y) + 3.0) & (side * x > 30.0) & ~heart & ~spine & (z < 258)

        return inside

    def _random_walk(self, lo, hi, steps: int):
        rng = self.rng
        p = rng.uniform(lo, hi)
        d = _unit(rng.normal(size=3))
        pts = [p]
        for _ in range(steps):
            d = _unit(d + rng.normal(0.0, 0.6, 3))
            q = pts[-1] + d * 16.0
            for k in range(3):  # reflect at the box walls
                if q[k] < lo[k] or q[k] > hi[k]:
                    d[k] = -d[k]
                    q[k] = np.clip(q[k], lo[k], hi[k])
            pts.append(q)
        return np.array(pts)

    # ---- outline functions (nominal) ----
    def torso(self, z):
        """Muscle-wall outer surface (no fat): half-width, half-depth, centre y at height z."""
        a = np.interp(z, _TORSO_Z, _TORSO_A) * self.width
        b = np.interp(z, _TORSO_Z, _TORSO_B) * self.depth
        yc = np.interp(z, _TORSO_Z, _TORSO_Y) + np.interp(z, _TORSO_Z, _TORSO_B) * (1 - self.depth)
        return a, b, yc

    def fat_at(self, z):
        return np.interp(z, [250.0, 272.0], [self.fat, self.neck_fat])

    def spine(self, z):
        return (np.interp(z, _SPINE_Z, v) for v in (_SPINE_Y, _SPINE_RX, _SPINE_RY, _SPINE_CANAL, _SPINE_SP, _SPINE_TP))

    def diaphragm(self, x, y):
        dome = self.dome_l + (self.dome_r - self.dome_l) * 0.5 * (1 - np.tanh(x / 25.0))
        rho2 = np.minimum(((np.abs(x) - 58.0) / 95.0) ** 2 + ((y - 10.0) / 100.0) ** 2, 1.6)
        return dome - 45.0 * rho2

    def extent(self, region):
        """Nominal half-width and (front, back) y of the body within a region's z range."""
        z0, z1 = _REGION_Z_RANGE[region]
        z = np.linspace(z0, min(z1, 412.0), 60)
        a, b, yc = self.torso(z)
        f = self.fat_at(z)
        half_w = float((a + f).max())
        front = float((yc - b - f).min())
        back = float((yc + b + f).max())
        if z1 > 330.0:  # head and face (the nose tip is the face's front)
            hs = _HEAD_SEMI * self.head
            half_w = max(half_w, hs[0])
            front = min(front, _HEAD_C[1] - hs[1], self.nose_tip_y())
            back = max(back, _HEAD_C[1] + hs[1])
        else:  # shoulders and arms (a head and neck scan may cut the shoulders at its lowest slices)
            half_w = max(half_w, self.limbs_extent(z0, z1))
        return half_w, front, back

    # ---- painting ----
    def paint(self, cv: _Canvas):
        self._outline(cv)
        self._muscle_groups(cv)
        self._thorax_abdomen_cavity(cv)
        self._spine(cv)
        self._mediastinum(cv)
        self._lung_trees(cv)
        self._pulmonary_vessels(cv)
        self._abdomen(cv)
        self._great_vessels(cv)
        self._chest_wall_bones(cv)
        self._shoulders(cv)
        self._pelvis(cv)
        self._neck(cv)
        self._head(cv)
        self._lymph_nodes(cv)

    def _fill(self, cv, sl, mask, label, tissue):
        hu, tx = self.t[tissue]
        cv.put(sl, mask, label=label, hu=hu, tex=tx)

    def _outline(self, cv):
        zk = _TORSO_Z
        a, b, yc = self.torso(zk)
        f = self.fat_at(zk)
        noise = 0.012
        # Each part is a fat shell around a soft-tissue core; a part's fat only goes where no other part
        # is yet, its core goes everywhere, so overlapping parts show no fat seams inside the body.
        hs = _HEAD_SEMI * self.head
        hc = _HEAD_C + self.head_jit
        sl, rho = cv.ellipsoid(hc, hs)
        self._fill(cv, sl, rho < 1.0, BODY_LABEL, "fat")
        self._fill(cv, sl, rho < 0.96, BODY_LABEL, "scalp")
        sl, rho = cv.ellipsoid(_FACE_C + self.head_jit, _FACE_SEMI * self.head)
        self._fill(cv, sl, (rho < 1.0) & (cv.lab[sl] == 0), BODY_LABEL, "fat")
        self._fill(cv, sl, rho < 0.9, BODY_LABEL, "muscle")
        sl, rho = cv.column(zk, 0.0, yc, a + f, b + f, p=2.4, zlim=(-400.0, 412.0))
        X, Y, Z = cv.coords(sl)
        edge = 1.0 + noise * cv.smooth(self.shape_noise, 35.0)[sl]
        inside = rho < edge
        outer = inside & (cv.lab[sl] == 0)
        self._fill(cv, sl, outer, BODY_LABEL, "fat")
        # the skin: a soft-tissue line about 2 mm thick over the subcutaneous fat
        self._fill(cv, sl, outer & (rho > edge - 2.0 / 110.0), BODY_LABEL, "scalp")
        sl2, rho2 = cv.column(zk, 0.0, yc, a, b, p=2.4, zlim=(-400.0, 412.0))
        self._fill(cv, sl2, rho2 < 1.0 + noise * cv.smooth(self.shape_noise, 35.0)[sl2], BODY_LABEL, "muscle")
        self._limb_outline(cv)
        self.body_mask = cv.lab == BODY_LABEL

    def _cavity(self, z):
        """Thoracic/abdominal cavity inside the muscle wall; the back wall is 20 mm thicker."""
        a, b, yc = self.torso(z)
        a_c = a - self.wall
        b_c = b - self.wall - 10.0
        yc = yc - 10.0
        taper = np.sqrt(np.clip(1.0 - ((np.asarray(z) - 215.0) / (266.0 - 215.0)) ** 2, 0.0, 1.0))
        taper = np.where(np.asarray(z) < 215.0, 1.0, taper)
        return a_c * np.maximum(taper, 1e-3), b_c * np.maximum(taper, 1e-3), yc

    def _vessel(self, cv, ctrl, radii, label, halo=3.0, tissue="artery", keep=None):
        pts, r = _path(ctrl, radii)
        if halo:
            blk, nd = cv.tube(pts, r + halo)
            if blk is not None:  # a fat sheath, only where the tissue has no organ label of its own
                m = (nd < 1.0) & np.isin(cv.lab[blk], self._soft_labels)
                self._fill(cv, blk, m, BODY_LABEL, "fat")
        blk, nd = cv.tube(pts, r)
        if blk is not None:
            m = (nd < 1.0) & self.body_mask[blk]
            if keep is not None:  # inside the lungs a vessel keeps the lobe's label
                inside = np.isin(cv.lab[blk], keep)
                cv.put(blk, m & inside, hu=self.t[tissue][0], tex=self.t[tissue][1])
                m &= ~inside
            self._fill(cv, blk, m, label, tissue)

    @property
    def _soft_labels(self):
        return np.r_[self.lung_labels, BODY_LABEL].astype(np.uint8)

