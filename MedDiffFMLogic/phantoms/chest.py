"""Chest painting: the pleural cavities with the lung lobes, mediastinum, airways, lung vessels, great vessels."""

from __future__ import annotations

import numpy as np

from ..anatomy import BODY_LABEL
from .atlas import _SPINE_RY, _SPINE_Y, _SPINE_Z, _l
from . import trees
from .shapes import _path, _rotation


class ChestMixin:
    """Methods of the body model (``body._Body``) that paint the chest."""

    def _thorax_abdomen_cavity(self, cv):
        zk = np.linspace(-330.0, 266.0, 60)
        a, b, yc = self._cavity(zk)
        sl, rho = cv.column(zk, 0.0, yc, a, b, p=2.2, zlim=(-330.0, 266.0))
        if sl is None:
            return
        X, Y, Z = cv.coords(sl)
        inside = rho < 1.0 + 0.01 * cv.smooth(self.shape_noise, 35.0)[sl]
        zd = self.diaphragm(X, Y)
        below = Z < zd - 5.0
        self._fill(cv, sl, inside & below, BODY_LABEL, "fat")
        self._fill(cv, sl, inside & ~below & (Z < zd), BODY_LABEL, "muscle")  # the diaphragm
        lung = inside & (Z >= zd)
        left = X > 6.0
        # oblique fissures: high at the back, low in front, and more anterior laterally
        lateral = np.float32(0.3) * (np.abs(X) - np.float32(70.0))
        oblique_l = self.fiss_l + 0.9 * Y + lateral
        oblique_r = self.fiss_r + 0.9 * Y + lateral
        lower_l, lower_r = Z < oblique_l, Z < oblique_r
        lab = np.where(
            left,
            np.where(lower_l, _l("lung_lower_lobe_left"), _l("lung_upper_lobe_left")),
            np.where(
                lower_r,
                _l("lung_lower_lobe_right"),
                np.where(Z < self.fiss_h, _l("lung_middle_lobe_right"), _l("lung_upper_lobe_right")),
            ),
        ).astype(np.uint8)
        hu0, tx = self.t["lung"]
        # dependent (posterior) lung is denser
        _, bz, yz = self._cavity(np.clip(Z, -330, 266))
        grad = np.clip((Y - yz) / np.maximum(bz, 1.0), -1.0, 1.0)
        hu = (hu0 + 60.0 * grad).astype(np.float32)
        fissure = self._fissures(cv, Z, np.where(left, oblique_l, oblique_r), ~left & ~lower_r)
        hu += fissure * (self.t["trachea_wall"][0] - hu)
        cv.put(sl, lung, label=lab[lung], hu=hu, tex=tx)

    def _fissures(self, cv, Z, oblique, upper_right):
        """Fill fraction of the pleural fissures (about 0.4 mm thick) between the lobes, as a tent one
        voxel wide either side of the fissure plane."""
        h = np.float32(cv.voxel_nominal)
        thickness = np.float32(0.4 / cv.s)
        d = np.abs(Z - oblique) / np.float32(1.38)  # distance to the plane (normal (0.3, 0.9, 1))
        d = np.where(upper_right, np.minimum(d, np.abs(Z - self.fiss_h)), d)
        return np.minimum(thickness / h, 1.0) * np.clip(1.0 - d / h, 0.0, 1.0)


    def _mediastinum(self, cv):
        zk = np.array([40.0, 110.0, 150.0, 200.0, 240.0, 266.0])
        w = np.array([30.0, 30.0, 30.0, 26.0, 22.0, 18.0])
        _, b_c, yc = self._cavity(zk)
        front = yc - b_c
        yv = np.interp(zk, _SPINE_Z, _SPINE_Y) - np.interp(zk, _SPINE_Z, _SPINE_RY)
        sl, rho = cv.column(zk, 5.0, (front + yv) / 2 + 3, w, (yv - front) / 2 + 6, p=3.0, zlim=(20.0, 266.0))
        if sl is not None:
            X, Y, Z = cv.coords(sl)
            m = (rho < 1.0) & (Z > self.diaphragm(X, Y) - 2) & self.body_mask[sl]
            self._fill(cv, sl, m, BODY_LABEL, "fat")
        # heart with pericardial fat, blood pool
        c, semi, yaw, pitch = self.heart
        rot = _rotation(yaw, pitch, 0.0)
        sl, rho = cv.ellipsoid(c, semi + 5.0, rot)
        if sl is not None:
            X, Y, Z = cv.coords(sl)
            above = Z > self.diaphragm(X, Y) - 3.0
            self._fill(cv, sl, (rho < 1.0) & above, BODY_LABEL, "fat")
            sl, rho = cv.ellipsoid(c, semi, rot)
            X, Y, Z = cv.coords(sl)
            above = Z > self.diaphragm(X, Y) - 1.0
            heart = (rho < 1.0 + 0.02 * cv.smooth(self.shape_noise, 35.0)[sl]) & above
            self._fill(cv, sl, heart, _l("heart"), "myocardium")
            self._chambers(cv, c)
        # trachea, carina and main bronchi; esophagus
        zt = np.array([180.0, 230.0, 275.0, 305.0])
        yt = np.interp(zt, _SPINE_Z, _SPINE_Y) - np.interp(zt, _SPINE_Z, _SPINE_RY) - 24.0
        trachea = np.c_[np.zeros(4), yt, zt]
        carina = trachea[0]
        self._airway(cv, trachea, 9.0, _l("trachea"))
        for side in (1.0, -1.0):
            end = np.array([side * 46.0, 16.0, 150.0])
            pts = np.array([carina, carina + (end - carina) * 0.5 + (0, 0, 4), end])
            self._airway(cv, pts, 6.5 if side > 0 else 7.5, _l("trachea"), keep=self.lung_labels)
        ze = np.array([20.0, 60.0, 120.0, 200.0, 270.0, 300.0])
        ye = np.interp(ze, _SPINE_Z, _SPINE_Y) - np.interp(ze, _SPINE_Z, _SPINE_RY) - 8.0
        xe = np.array([28.0, 14.0, 6.0, 3.0, 2.0, 2.0])
        pts, r = _path(np.c_[xe, ye, ze], np.array([8, 8, 8, 8, 7, 7.0]))
        blk, nd = cv.tube(pts, r + 3.0)
        self._fill(cv, blk, nd < 1.0, BODY_LABEL, "fat")
        blk, nd = cv.tube(pts, r)
        self._fill(cv, blk, nd < 1.0, _l("esophagus"), "gi_wall")  # collapsed, no gas

    def _chambers(self, cv, c):
        """Heart chambers (blood) inside the myocardium: they show only with contrast."""
        for offset, semi, tissue in (((18.0, 6.0, -6.0), (24.0, 22.0, 30.0), "heart_left"),  # left ventricle
                                     ((2.0, 30.0, 22.0), (22.0, 13.0, 15.0), "heart_left"),  # left atrium
                                     ((-10.0, -24.0, -8.0), (28.0, 12.0, 26.0), "heart_right"),  # right ventricle
                                     ((-38.0, 4.0, 6.0), (15.0, 19.0, 23.0), "heart_right")):  # right atrium
            sl, rho = cv.ellipsoid(np.asarray(c) + offset, semi)
            self._fill(cv, sl, (rho < 1.0) & (cv.lab[sl] == _l("heart")), _l("heart"), tissue)

    def _pulmonary_vessels(self, cv):
        """Pulmonary trunk and arteries to the hila (no class of their own: body), pulmonary veins into the
        left atrium."""
        c = np.asarray(self.heart[0])
        trunk = c + (-2.0, -34.0, 34.0)
        fork = np.array([4.0, 2.0, 160.0])
        self._vessel(cv, [trunk, trunk + (4.0, 4.0, 24.0), fork], np.array([13.0, 13.0, 12.0]), BODY_LABEL,
                     halo=0, tissue="pulm_art")
        for root in self.lung_roots["art"]:
            self._vessel(cv, [fork, (fork + root) / 2 + (0.0, 2.0, 2.0), root], np.array([11.0, 9.0, 6.0]),
                         BODY_LABEL, halo=0, tissue="pulm_art", keep=self.lung_labels)
        atrium = c + (2.0, 30.0, 22.0)
        for root in self.lung_roots["vein"]:
            self._vessel(cv, [atrium, (atrium + root) / 2, root], np.array([8.0, 7.0, 5.5]), _l("pulmonary_vein"),
                         halo=0, tissue="pulm_vein", keep=self.lung_labels)

    def _airway(self, cv, ctrl, radius, label, keep=None):
        pts, r = _path(ctrl, radius, step=3.0)
        blk, nd = cv.tube(pts, r + 2.0)
        if blk is None:
            return
        wall = nd < 1.0
        if keep is not None:  # inside the lungs the airway keeps the lobe's label
            inlung = np.isin(cv.lab[blk], keep)
            cv.put(blk, wall & ~inlung, label=label)
            cv.put(blk, wall, hu=self.t["trachea_wall"][0], tex=self.t["trachea_wall"][1])
        else:
            self._fill(cv, blk, wall, label, "trachea_wall")
        lumen = nd < (radius / (radius + 2.0))
        cv.put(blk, lumen, hu=-1000.0, tex=self.t["air"][1])

    def _lung_trees(self, cv):
        """Bronchi (wall and air) and pulmonary vessels inside the lobes, as partial-volume fractions."""
        inlung = np.isin(cv.lab, self.lung_labels) & (cv.hu > -990.0)
        hu, tex = cv.hu, cv.tex
        outer = trees.fraction(cv, self.bronchi, cv.warp_fields) * inlung
        lumen = trees.fraction(cv, [(a, b, 0.75 * r0, 0.75 * r1, n) for a, b, r0, r1, n in self.bronchi],
                               cv.warp_fields) * inlung
        wall = self.t["trachea_wall"][0]
        hu += outer * (wall - hu) + lumen * (-1000.0 - wall)
        for segs, tissue in ((self.lung_arteries, "pulm_art"), (self.lung_veins, "pulm_vein")):
            vessels = trees.fraction(cv, segs, cv.warp_fields) * inlung
            hu += vessels * (self.t[tissue][0] - hu)
            tex += vessels * (self.t[tissue][1] - tex)


    def _great_vessels(self, cv):
        def yfront(z):  # just in front of the vertebral bodies
            return float(np.interp(z, _SPINE_Z, _SPINE_Y) - np.interp(z, _SPINE_Z, _SPINE_RY))

        hc = self.heart[0]
        aorta = [
            (hc[0] - 8.0, hc[1] - 5.0, hc[2] + 25.0),
            (4.0, -22.0, 172.0),
            (10.0, -8.0, 198.0),
            (22.0, yfront(185.0) - 6.0, 186.0),
            (24.0, yfront(140.0) - 8.0, 140.0),
            (18.0, yfront(60.0) - 10.0, 60.0),
            (10.0, yfront(-20.0) - 11.0, -20.0),
            (6.0, yfront(-110.0) - 10.0, -112.0),
        ]
        self._vessel(cv, aorta, np.array([15.0, 15.0, 13.0, 12.0, 11.5, 11.0, 10.0, 9.0]), _l("aorta"))
        for side, name in ((1.0, "iliac_artery_left"), (-1.0, "iliac_artery_right")):
            self._vessel(cv, [(6.0, yfront(-110.0) - 10.0, -112.0), (side * 24.0, 20.0, -150.0),
                              (side * 46.0, 22.0, -200.0)], 6.0, _l(name), halo=0)
        # supra-aortic branches and the neck arteries
        self._vessel(cv, [(2.0, -14.0, 200.0), (-10.0, -8.0, 225.0), (-18.0, -2.0, 240.0)], 6.0,
                     _l("brachiocephalic_trunk"))
        self._vessel(cv, [(-18.0, -2.0, 240.0), (-40.0, 4.0, 250.0), (-75.0, 8.0, 255.0)], 4.5,
                     _l("subclavian_artery_right"))
        self._vessel(cv, [(20.0, 0.0, 200.0), (34.0, 6.0, 235.0), (75.0, 8.0, 255.0)], 4.5,
                     _l("subclavian_artery_left"))
        self._vessel(cv, [(-18.0, -2.0, 240.0), (-24.0, 10.0, 290.0), (-24.0, 16.0, 345.0)], 4.0,
                     _l("common_carotid_artery_right"))
        self._vessel(cv, [(8.0, -8.0, 203.0), (18.0, 2.0, 240.0), (24.0, 10.0, 290.0), (24.0, 16.0, 345.0)], 4.0,
                     _l("common_carotid_artery_left"))
        # veins: brachiocephalic veins into the SVC into the right atrium
        self._vessel(cv, [(70.0, -12.0, 258.0), (30.0, -34.0, 232.0), (-24.0, -24.0, 214.0)], 6.0,
                     _l("brachiocephalic_vein_left"), tissue="upper_vein")
        self._vessel(cv, [(-70.0, -6.0, 258.0), (-34.0, -16.0, 236.0), (-26.0, -22.0, 214.0)], 6.5,
                     _l("brachiocephalic_vein_right"), tissue="upper_vein")
        self._vessel(cv, [(-26.0, -22.0, 214.0), (-28.0, -18.0, 170.0), (-24.0, -12.0, 128.0)], 10.0,
                     _l("superior_vena_cava"), tissue="upper_vein")

