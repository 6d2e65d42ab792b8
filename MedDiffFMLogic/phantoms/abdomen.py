"""Abdomen painting: liver and its vessels, spleen, kidneys, adrenals, pancreas, stomach and bowel, IVC, psoas."""

from __future__ import annotations

import numpy as np

from ..anatomy import BODY_LABEL
from .atlas import _l
from . import trees
from .shapes import _path, _rotation


class AbdomenMixin:
    """Methods of the body model (``body._Body``) that paint the abdomen."""

    def _abdomen(self, cv):
        if cv.box((-170.0, -120.0, -330.0), (170.0, 125.0, 90.0)) is None:
            return
        self._liver_and_veins(cv)
        self._solid_organs(cv)
        self._gut(cv)
        self._psoas(cv)

    def _below_diaphragm(self, cv, sl, margin=3.0):
        X, Y, Z = cv.coords(sl)
        return Z < self.diaphragm(X, Y) - margin

    def _in_cavity(self, cv, sl):
        X, Y, Z = cv.coords(sl)
        a, b, yc = self._cavity(np.clip(Z, -330, 266))
        rho = (np.abs(X) / a) ** 2.2 + (np.abs(Y - yc) / b) ** 2.2
        return rho < 1.0

    def _organ(self, cv, sl, rho, noise=0.04):
        """Inside a shape (roughened boundary), below the diaphragm and inside the abdominal cavity."""
        X, Y, Z = cv.coords(sl)
        inside = rho < 1.0 + noise * cv.smooth(self.shape_noise, 35.0)[sl]
        return inside & self._below_diaphragm(cv, sl) & self._in_cavity(cv, sl)

    def _liver_and_veins(self, cv):
        fill = self._fill

        def organ(sl, rho, noise=0.04):
            return self._organ(cv, sl, rho, noise)

        # liver: right lobe + left lobe, vessels inside
        sl1, r1 = cv.ellipsoid(self.liver_r[0], self.liver_r[1], _rotation(-10, 0, 0), p=2.2)
        if sl1 is not None:
            fill(cv, sl1, organ(sl1, r1), _l("liver"), "liver")
        sl2, r2 = cv.ellipsoid(self.liver_l[0], self.liver_l[1], _rotation(-15, 10, 0))
        if sl2 is not None:
            fill(cv, sl2, organ(sl2, r2), _l("liver"), "liver")
        liver = cv.lab == _l("liver")
        for segs, tissue in ((self.portal_tree, "portal"), (self.hepatic_tree, "vein")):
            frac = trees.fraction(cv, segs, cv.warp_fields) * liver
            cv.hu += frac * (self.t[tissue][0] - cv.hu)
        # IVC through the liver to the right atrium
        ivc = np.array([(-18.0, -2.0, 45.0), (-22.0, 12.0, 0.0), (-24.0, 18.0, -60.0), (-22.0, 16.0, -120.0)])
        pts, r = _path(ivc, np.array([12.0, 12.0, 11.0, 11.0]))
        blk, nd = cv.tube(pts, r)
        fill(cv, blk, nd < 1.0, _l("inferior_vena_cava"), "vein")
        for side, name in ((1.0, "iliac_vena_left"), (-1.0, "iliac_vena_right")):
            pts, r = _path([(-22.0, 16.0, -120.0), (side * 25.0, 24.0, -150.0), (side * 48.0, 30.0, -200.0)], 8.5)
            blk, nd = cv.tube(pts, r)
            fill(cv, blk, nd < 1.0, _l(name), "vein")

    def _solid_organs(self, cv):
        fill = self._fill

        def organ(sl, rho, noise=0.04):
            return self._organ(cv, sl, rho, noise)

        # gallbladder
        c, semi, pitch = self.gallbladder
        sl, rho = cv.ellipsoid(c, semi, _rotation(0, 0, pitch))
        if sl is not None:
            fill(cv, sl, organ(sl, rho, 0.02), _l("gallbladder"), "gallbladder")
        # spleen
        c, semi, yaw = self.spleen
        sl, rho = cv.ellipsoid(c, semi, _rotation(yaw, 0, 0))
        if sl is not None:
            fill(cv, sl, organ(sl, rho), _l("spleen"), "spleen")
        # kidneys with sinus fat; adrenals
        for side, c, semi, yaw in self.kidneys:
            name = "kidney_left" if side > 0 else "kidney_right"
            rot = _rotation(-side * yaw, side * 12.0, 0)
            sl, rho = cv.ellipsoid(c, semi, rot)
            if sl is None:
                continue
            fill(cv, sl, organ(sl, rho, 0.02), _l(name), "kidney")
            self._kidney_inside(cv, sl, rho, c, side, rot, _l(name))
        for side, c in self.adrenals:
            name = "adrenal_gland_left" if side > 0 else "adrenal_gland_right"
            sl, rho = cv.ellipsoid(c, (4.0, 13.0, 15.0), _rotation(side * 30.0, 0, 0))
            if sl is not None:
                fill(cv, sl, organ(sl, rho, 0.0), _l(name), "adrenal")

    def _kidney_inside(self, cv, sl, rho, c, side, rot, label):
        """Medullary pyramids under the cortex (they differ with contrast), sinus fat and the renal pelvis."""
        X, Y, Z = cv.coords(sl)
        angle = np.arctan2(Y - np.float32(c[1]), X - np.float32(c[0]))
        pattern = np.cos(2.0 * np.pi * (Z - np.float32(c[2])) / 22.0) + np.cos(4.0 * angle)
        medulla = (rho > 0.42) & (rho < 0.8) & (pattern > -0.3) & (cv.lab[sl] == label)
        self._fill(cv, sl, medulla, label, "kidney_medulla")
        hil = c + np.array([-side * 14.0, -8.0, 0.0])
        sl2, rho2 = cv.ellipsoid(hil, (9.0, 7.0, 22.0), rot)
        self._fill(cv, sl2, (rho2 < 1.0) & (cv.lab[sl2] == label), BODY_LABEL, "fat")
        sl2, rho2 = cv.ellipsoid(hil + np.array([-side * 2.0, 0.0, 0.0]), (5.0, 4.5, 13.0), rot)
        self._fill(cv, sl2, rho2 < 1.0, label, "urine")

    def _gut(self, cv):
        fill = self._fill

        def organ(sl, rho, noise=0.04):
            return self._organ(cv, sl, rho, noise)

        # stomach with fluid and a gas cap anteriorly; duodenum; pancreas; splenic/portal vein
        pts, r = _path(self.stomach_ctrl, self.stomach_r)
        self._hollow(cv, pts, r, _l("stomach"), "fluid", gas_y=self.stomach_air, wall=4.0, gate=organ)
        duo = np.array([self.stomach_ctrl[-1], (-38.0, -22.0, -56.0), (-46.0, 2.0, -84.0), (-12.0, 12.0, -104.0),
                        (24.0, 6.0, -96.0), (36.0, -12.0, -80.0)])
        pts, r = _path(duo, 12.0)
        self._hollow(cv, pts, r, _l("duodenum"), "fluid", wall=2.5, gate=organ)
        panc = np.array([(-34.0, -4.0, -78.0), (-4.0, -20.0, -60.0), (40.0, 2.0, -48.0), (78.0, 34.0, -34.0)])
        pts, r = _path(panc, np.array([15.0, 12.0, 11.0, 9.0]))
        blk, nd = cv.tube(pts, r)
        if blk is not None:
            fill(cv, blk, organ(blk, nd, 0.06), _l("pancreas"), "pancreas")
        spl = np.array([(74.0, 44.0, -28.0), (40.0, 16.0, -52.0), (2.0, -4.0, -62.0), (-30.0, 4.0, -36.0),
                        (-48.0, 6.0, -18.0)])
        pts, r = _path(spl, np.array([4.5, 5.0, 6.5, 7.0, 6.0]))
        blk, nd = cv.tube(pts, r)
        fill(cv, blk, nd < 1.0, _l("portal_vein_and_splenic_vein"), "portal")
        # small bowel, colon (gas pockets, stool), urinary bladder
        for k, walk in enumerate(self.small_bowel):
            pts, r = _path(walk, 11.0 - k)
            self._hollow(cv, pts, r, _l("small_bowel"), "fluid", wall=2.5, gate=organ, gas=self.bowel_gas[k:k + 2])
        fat = (cv.lab == BODY_LABEL) & (np.abs(cv.hu - self.t["fat"][0]) < 1.0)
        frac = trees.fraction(cv, self.mesenteric_tree, cv.warp_fields) * fat
        cv.hu += frac * (self.t["portal"][0] - cv.hu)
        pts, r = _path(self.colon_ctrl, self.colon_r)
        self._hollow(cv, pts, r, _l("colon"), "stool", wall=2.5, gate=organ, gas=self.colon_gas)
        c, semi = self.bladder
        sl, rho = cv.ellipsoid(c, semi)
        if sl is not None:
            fill(cv, sl, organ(sl, rho, 0.02), _l("urinary_bladder"), "bladder")

    def _psoas(self, cv):
        # psoas muscles
        for side, name in ((1.0, "iliopsoas_left"), (-1.0, "iliopsoas_right")):
            ctrl = [(side * 24.0, 40.0, 5.0), (side * 38.0, 34.0, -80.0), (side * 58.0, 26.0, -180.0),
                    (side * 74.0, 6.0, -270.0)]
            pts, r = _path(ctrl, np.array([7.0, 15.0, 20.0, 18.0]))
            blk, nd = cv.tube(pts, r)
            if blk is not None:
                self._fill(cv, blk, (nd < 1.0) & self._below_diaphragm(cv, blk, 0.0) & self._in_cavity(cv, blk), _l(name), "muscle")

    def _hollow(self, cv, pts, r, label, content, wall, gate, gas_y=None, gas=()):
        """A hollow viscus: wall, content, gas where non-dependent (anterior)."""
        blk, nd = cv.tube(pts, r)
        if blk is None:
            return
        m = gate(blk, nd, 0.0)
        self._fill(cv, blk, m, label, "gi_wall")
        X, Y, Z = cv.coords(blk)
        lumen = m & (nd < 1.0 - wall / r.max())
        self._fill(cv, blk, lumen, label, content)
        if gas_y is not None:
            cv.put(blk, lumen & (Y < gas_y), hu=-1000.0, tex=self.t["air"][1])
        n = len(pts)
        for where, size in gas:
            i = min(int(where * (n - 1)), n - 1)
            c = pts[i] + np.array([0.0, -0.45 * r[i], 0.0])  # gas rises anteriorly (supine)
            d2 = (X - c[0]) ** 2 + (Y - c[1]) ** 2 + (Z - c[2]) ** 2
            cv.put(blk, lumen & (d2 < (size * r[i]) ** 2), hu=-1000.0, tex=self.t["air"][1])

