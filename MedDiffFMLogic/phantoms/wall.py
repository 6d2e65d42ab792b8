"""The body wall: muscle groups separated by fat planes, the pectoral muscles, lymph nodes in fat."""

from __future__ import annotations

import numpy as np

from ..anatomy import BODY_LABEL
from .atlas import _TORSO_Z


class WallMixin:
    """Methods of the body model (``body._Body``) that divide the muscle wall and add lymph nodes."""

    def _draw_wall(self):
        """Per-seed angles of the fat septa between muscle groups and the positions of lymph nodes."""
        rng = self.rng
        base = np.array([0.35, 0.9, 1.45, 2.1, 2.7])  # from the front (0) round to the back (pi), per side
        self.septa = np.concatenate([base, -base]) + rng.normal(0.0, 0.08, 10)
        self.pec_depth = rng.uniform(6.0, 14.0)
        # nodes: mediastinal (paratracheal, subcarinal, hilar) and abdominal (para-aortic, mesenteric)
        centres = [(-16.0, -6.0, 205.0), (14.0, -4.0, 190.0), (0.0, 24.0, 168.0), (-30.0, 10.0, 150.0),
                   (32.0, 8.0, 152.0), (-14.0, 26.0, -60.0), (22.0, 28.0, -90.0), (-8.0, -30.0, -110.0),
                   (30.0, -20.0, -130.0), (-34.0, -10.0, -150.0)]
        self.nodes = [(np.asarray(c) + rng.normal(0.0, 4.0, 3), rng.uniform(2.5, 5.0, 3)) for c in centres]

    def _muscle_groups(self, cv):
        """Fat planes through the muscle wall: one parallel to the surface (superficial vs deep layer)
        and radial septa between groups (pectoral, serratus, latissimus, trapezius and back muscles)."""
        zk = _TORSO_Z
        a, b, yc = self.torso(zk)
        sl, rho = cv.column(zk, 0.0, yc, a, b, p=2.4, zlim=(-260.0, 262.0))
        if sl is None or rho.size == 0:
            return
        X, Y, Z = cv.coords(sl)
        lab, hu = cv.lab[sl], cv.hu[sl]
        # work on the wall's voxels only (a thin shell of the box)
        muscle = (lab == BODY_LABEL) & (np.abs(hu - self.t["muscle"][0]) < 1.0) & (rho < 1.0) & (Z > -260.0)
        m = np.nonzero(muscle)
        x, y, z, r = X[m], Y[m], Z[m], rho[m]
        _, bz, ycz = self.torso(z)
        angle = np.arctan2(x, -(y - ycz))  # 0 at the front, +-pi at the back
        depth = (1.0 - r) * bz  # nominal mm under the muscle surface (roughly)
        plane = np.abs(depth - 0.45 * self.wall) < 0.9
        gap = np.min(np.abs(angle[:, None] - self.septa[None, :]), axis=1) * np.maximum(bz * 0.8, 1.0) < 1.0
        sel = plane | gap
        fat_hu, fat_tex = self.t["fat"]
        lab_sel = tuple(i[sel] for i in m)
        hu[lab_sel] = fat_hu
        cv.tex[sl][lab_sel] = fat_tex
        # pectoral muscles: in front of the upper chest wall, in the subcutaneous fat, behind a fat plane
        fat = (lab == BODY_LABEL) & (np.abs(hu - fat_hu) < 1.0) & (rho >= 1.0) & (Z > 150.0) & (Z < 255.0)
        f = np.nonzero(fat)
        x, y, z, r = X[f], Y[f], Z[f], rho[f]
        _, bz, ycz = self.torso(z)
        angle = np.abs(np.arctan2(x, -(y - ycz)))
        out = (r - 1.0) * bz  # nominal mm outside the muscle surface
        taper = np.clip((z - 150.0) / 30.0, 0.0, 1.0) * np.clip((255.0 - z) / 20.0, 0.0, 1.0)
        pec = (angle > 0.15) & (angle < 1.2) & (out > 1.5) & (out < 1.5 + self.pec_depth * taper * np.cos(angle - 0.6))
        pec_sel = tuple(i[pec] for i in f)
        hu[pec_sel] = self.t["muscle"][0]
        cv.tex[sl][pec_sel] = self.t["muscle"][1]

    def _lymph_nodes(self, cv):
        """Small soft-tissue ovoids where the tissue is fat (mediastinum, retroperitoneum, mesentery)."""
        for c, semi in self.nodes:
            sl, rho = cv.ellipsoid(c, semi)
            if rho.size == 0:
                continue
            fat = (cv.lab[sl] == BODY_LABEL) & (np.abs(cv.hu[sl] - self.t["fat"][0]) < 1.0)
            self._fill(cv, sl, (rho < 1.0) & fat, BODY_LABEL, "lymph_node")
