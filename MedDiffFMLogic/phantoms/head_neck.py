"""Head and neck painting: airway, thyroid, neck muscles and veins, skull, brain, face, jaw and teeth."""

from __future__ import annotations

import numpy as np
from scipy.special import erfinv as _erfinv

from ..anatomy import BODY_LABEL
from .atlas import _FACE_C, _HEAD_C, _l
from .shapes import _Fourier, _path, _rotation


class _SignedDistance:
    """f / |grad f| of a ``_Fourier`` field (analytic, clipped to +/-30 mm): about the signed distance
    (mm) to the field's zero set, smooth enough to interpolate from a coarse grid (the sulci)."""

    def __init__(self, field: _Fourier):
        self.f = field

    def __call__(self, x, y, z):
        shape = np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z))
        v = np.zeros(shape, dtype=np.float32)
        g = [np.zeros(shape, dtype=np.float32) for _ in range(3)]
        for (kx, ky, kz), ph in zip(self.f.k, self.f.phase):
            arg = np.float32(kx) * x + np.float32(ky) * y + np.float32(kz) * z + np.float32(ph)
            v += np.cos(arg)
            s = np.sin(arg)
            for gi, ki in zip(g, (kx, ky, kz)):
                gi -= np.float32(ki) * s
        return np.clip(v / np.maximum(np.sqrt(g[0] ** 2 + g[1] ** 2 + g[2] ** 2), 1e-3), -30.0, 30.0)


class HeadNeckMixin:
    """Methods of the body model (``body._Body``) that paint the head and neck."""

    def _neck_soft_tissue(self, cv):
        """The neck's compartments: fat between the structures (the outline's muscle core becomes fat),
        then the muscle groups with fat planes between them: posterior (splenius, semispinalis,
        trapezius), lateral (levator scapulae, scalenes), prevertebral (longus colli), strap muscles."""
        z0, z1 = 282.0, 366.0
        sl = cv.box((-90.0, -60.0, z0), (90.0, 120.0, z1))
        if sl is None:
            return
        Z = cv.coords(sl)[2]
        m = (cv.lab[sl] == BODY_LABEL) & (cv.hu[sl] == np.float32(self.t["muscle"][0])) & (Z > z0) & (Z < z1)
        self._fill(cv, sl, m, BODY_LABEL, "fat")
        zk = np.array([z0 - 10.0, 300.0, 340.0, z1 + 10.0])
        for side in (1.0, -1.0):
            for cx, cy, a, b in (((14.0, 14.0, 14.0, 14.0), (70.0, 70.0, 68.0, 66.0), (13.5, 13.5, 13.0, 12.5),
                                  (18.0, 18.0, 17.0, 16.0)),  # semispinalis and splenius
                                 ((34.0, 33.0, 30.0, 28.0), (62.0, 60.0, 56.0, 54.0), (12.0, 11.0, 10.0, 9.0),
                                  (17.0, 16.0, 14.0, 13.0)),  # levator scapulae
                                 ((28.0, 33.0, 28.0, 25.0), (86.0, 86.0, 82.0, 78.0), (22.0, 18.0, 14.0, 11.0),
                                  (6.0, 5.5, 5.0, 4.5)),  # trapezius
                                 ((30.0, 28.0, 24.0, 22.0), (38.0, 38.0, 38.0, 38.0), (8.0, 9.0, 8.0, 6.0),
                                  (10.0, 10.0, 9.0, 8.0)),  # scalenes
                                 ((7.0, 7.0, 7.0, 6.0), (30.0, 31.0, 32.0, 34.0), (5.0, 5.5, 5.5, 5.0),
                                  (3.5, 4.0, 4.0, 4.0))):  # longus colli / capitis
                sl2, rho = cv.column(zk, side * np.array(cx), np.array(cy), np.array(a), np.array(b), zlim=(z0, z1))
                if rho.size:
                    fat = (cv.lab[sl2] == BODY_LABEL) & (cv.hu[sl2] == np.float32(self.t["fat"][0]))
                    self._fill(cv, sl2, (rho < 1.0) & fat, BODY_LABEL, "muscle")
            # submandibular glands under the floor of the mouth
            sl2, rho = cv.ellipsoid((side * 30.0, -14.0, 344.0), (10.0, 13.0, 9.0))
            if rho.size:
                fat = (cv.lab[sl2] == BODY_LABEL) & (cv.hu[sl2] == np.float32(self.t["fat"][0]))
                self._fill(cv, sl2, (rho < 1.0) & fat, BODY_LABEL, "parotid")
            # strap muscles: thin bands in front of the larynx and the thyroid
            pts, r = _path([(side * 9.0, -8.0, 270.0), (side * 9.0, -6.0, 300.0), (side * 7.0, -4.0, 336.0)], 3.0)
            blk, nd = cv.tube(pts, r)
            if nd.size:
                fat = (cv.lab[blk] == BODY_LABEL) & (cv.hu[blk] == np.float32(self.t["fat"][0]))
                self._fill(cv, blk, (nd < 1.0) & fat, BODY_LABEL, "muscle")

    def _floor_of_mouth(self, cv):
        """Mylohyoid, geniohyoid and digastric: a muscular sling under the tongue, and the pharyngeal
        constrictors around the oropharynx, in the neck fat."""
        sl, rho = cv.ellipsoid((0.0, -26.0, 352.0), (30.0, 34.0, 11.0))
        if rho.size:
            fat = (cv.lab[sl] == BODY_LABEL) & (cv.hu[sl] == np.float32(self.t["fat"][0]))
            self._fill(cv, sl, (rho < 1.0) & fat, BODY_LABEL, "muscle")

    def _larynx(self, cv):
        """Thyroid cartilage (a shield of two plates meeting in front, patchily calcified), the cricoid
        ring below it, the hyoid bone above (no classes of their own: body)."""
        hf = self._head_fields()
        sl = cv.box((-30.0, -20.0, 286.0), (30.0, 30.0, 330.0))
        if sl is None:
            return
        X, Y, Z = cv.coords(sl)
        ay = np.interp(Z, [286.0, 300.0, 325.0], [8.0, 8.0, 10.0]).astype(np.float32)
        # the two laminae: segments from the prominence (0, ay - 12) back to (+/-19, ay + 4)
        px, py = np.abs(X), Y - (ay - 12.0)
        t = np.clip((px * 19.0 + py * 16.0) / (19.0**2 + 16.0**2), 0.0, 1.0)
        d = np.hypot(px - t * 19.0, py - t * 16.0)
        calc = hf["cells"](X, Y, Z) > 0.6
        lam = (d < 1.1) & (Z > 302.0) & (Z < 326.0 - 6.0 * t)
        cricoid = (np.abs(np.hypot(X, Y - ay) - 11.0) < 1.3) & (Z > 290.0) & (Z <= 302.0)
        m = lam | cricoid
        hu = np.where(calc, 450.0, self.t["cartilage"][0]).astype(np.float32)
        cv.put(sl, m, label=BODY_LABEL, hu=hu, tex=self.t["cartilage"][1])
        pts, r = _path([(-21.0, 12.0, 334.0), (-12.0, -6.0, 332.0), (0.0, -10.0, 331.0), (12.0, -6.0, 332.0),
                        (21.0, 12.0, 334.0)], 2.6)
        self._bone_tube(cv, pts, r, BODY_LABEL, "rib_cortex", "rib_marrow")

    def _neck(self, cv):
        self._neck_soft_tissue(cv)
        self._floor_of_mouth(cv)
        # airway above the trachea: larynx, oro- and nasopharynx (no class: body)
        ctrl = np.array([(0.0, 8.0, 300.0), (0.0, 10.0, 325.0), (0.0, 16.0, 350.0), (0.0, 20.0, 378.0),
                         (0.0, 16.0, 400.0)])
        pts, r = _path(ctrl, np.array([8.0, 8.0, 7.0, 6.5, 6.0]))
        blk, nd = cv.tube(pts, r + 2.5)
        if blk is not None:
            self._fill(cv, blk, nd < 1.0, BODY_LABEL, "trachea_wall")
            blk, nd = cv.tube(pts, r)
            self._fill(cv, blk, nd < 1.0, BODY_LABEL, "air")
        self._larynx(cv)
        # thyroid: two lobes and an isthmus either side of the trachea, in front of the carotids
        keep = [_l("trachea"), _l("common_carotid_artery_left"), _l("common_carotid_artery_right")]
        for side in (1.0, -1.0):
            sl, rho = cv.ellipsoid((side * 16.0, 6.0, 290.0), (7.0, 9.0, 20.0), _rotation(0, 0, 10.0))
            if sl is not None:
                self._fill(cv, sl, (rho < 1.0) & ~np.isin(cv.lab[sl], keep), _l("thyroid_gland"), "thyroid")
        sl, rho = cv.ellipsoid((0.0, -4.0, 286.0), (13.0, 4.0, 6.0))
        if sl is not None:
            self._fill(cv, sl, (rho < 1.0) & (cv.lab[sl] != _l("trachea")), _l("thyroid_gland"), "thyroid")
        # sternocleidomastoid muscles and jugular veins (no class of their own: body)
        for side in (1.0, -1.0):
            pts, r = _path([(side * 22.0, -8.0, 262.0), (side * 40.0, 6.0, 320.0), (side * 54.0, 34.0, 392.0)], 8.5)
            blk, nd = cv.tube(pts, r)
            if blk is not None:
                self._fill(cv, blk, (nd < 1.0) & self.body_mask[blk], BODY_LABEL, "muscle")
            pts, r = _path([(side * 40.0, 28.0, 400.0), (side * 34.0, 20.0, 340.0), (side * 30.0, 10.0, 275.0)], 6.0)
            blk, nd = cv.tube(pts, r)
            if blk is not None:
                self._fill(cv, blk, (nd < 1.0) & self.body_mask[blk], BODY_LABEL, "vein")

    def _head(self, cv):
        hc = _HEAD_C + self.head_jit
        k = self.head
        outer = np.array([74.0, 92.0, 94.0]) * k
        inner = np.array([67.0, 85.0, 87.0]) * k
        sl, rho_o = cv.ellipsoid(hc, outer)
        if sl is None or rho_o.size == 0:  # no head in this field of view (its fields cost the whole grid)
            return
        X, Y, Z = cv.coords(sl)
        rho_i = np.sqrt(((X - hc[0]) / inner[0]) ** 2 + ((Y - hc[1]) / inner[1]) ** 2 + ((Z - hc[2]) / inner[2]) ** 2)
        floor, thick, petrous = self._skull_base(X - np.float32(hc[0]), Y - np.float32(hc[1]), hc, k)
        # below the skull base: deep soft tissue of the face and upper neck
        under = (rho_o < 1.0) & (Z < floor - thick) & (cv.lab[sl] == BODY_LABEL) & (cv.hu[sl] > -500.0)
        self._fill(cv, sl, under, BODY_LABEL, "muscle")
        # skull vault: outer table, diploe, inner table
        vault = (rho_o < 1.0) & (rho_i >= 1.0) & (Z >= floor - thick)
        depth = (1.0 - rho_o) / max(1.0 - inner.min() / outer.min(), 1e-3)
        hu = np.where((depth > 0.3) & (depth < 0.7), self.t["diploe"][0], self.t["skull_table"][0]).astype(np.float32)
        cv.put(sl, vault, label=_l("skull"), hu=hu, tex=self.t["diploe"][1])
        # skull base: cortical plates over a diploic core where it is thick, the petrous bone dense throughout
        xr, yrel = X - np.float32(hc[0]), Y - np.float32(hc[1])
        fm = (xr / 15.0) ** 2 + ((yrel - 31.0 * k) / 16.0) ** 2 < 1.0  # foramen magnum
        base = (rho_i < 1.0) & (Z < floor) & (Z >= floor - thick)
        core = (Z < floor - 1.8) & (Z > floor - thick + 1.8)
        hu = np.where(core, self.t["diploe"][0], self.t["skull_table"][0])
        hu = np.where(petrous > 0.5, self.t["skull_table"][0] * 1.1, hu).astype(np.float32)
        cv.put(sl, base & ~fm, label=_l("skull"), hu=hu, tex=self.t["diploe"][1])
        cv.put(sl, base & fm, label=BODY_LABEL, hu=self.t["csf"][0], tex=self.t["csf"][1])
        self._brain(cv, sl, hc, k, rho_i, floor, inner)
        self._face(cv, k)
        self._sinuses(cv, k)
        self._jaw(cv, k)

    def _skull_base(self, xr, yrel, hc, k):
        """Height (nominal z) of the cranial floor, the bone's thickness below it (mm) and the petrous
        weight, at head-relative x, y: the anterior fossa over the orbits (domed orbital roofs, the
        cribriform groove in the midline), the step down along the sphenoid ridges into the middle fossa
        (deeper laterally), the petrous ridges running obliquely (postero-lateral to antero-medial) up to a
        crest and steeply down into the bowl of the posterior fossa; in the midline the sella turcica,
        the dorsum sellae and the clivus sloping down to the foramen magnum."""
        ax = np.abs(xr) / np.float32(k)
        y = yrel / np.float32(k)

        def sig(t):
            return 0.5 * (1.0 + np.tanh(t))

        # anterior fossa: orbital roofs bulge up over the orbits
        ant = -22.0 + 4.0 * np.exp(-(((ax - 30.0) / 13.0) ** 2)) - 4.0 * np.exp(-((ax / 5.0) ** 2))
        # sphenoid ridge (lesser wing) from (8, -20) to (55, -30): signed distance, + behind it
        d1 = ((y + 20.0) * 47.0 - (ax - 8.0) * -10.0) / np.hypot(47.0, 10.0)
        mid = -40.0 - 16.0 * np.clip((ax - 14.0) / 30.0, 0.0, 1.0)
        # petrous ridge from its apex (14, 2) to (58, 34): signed distance, + postero-medially
        d2 = ((ax - 14.0) * 32.0 - (y - 2.0) * 44.0) / np.hypot(44.0, 32.0)
        d2 = -d2
        crest = -34.0 - 4.0 * np.clip((ax - 14.0) / 44.0, 0.0, 1.0)
        post = -62.0 + 16.0 * np.clip(ax / 55.0, 0.0, 1.0) ** 2 + 14.0 * np.clip((y - 22.0) / 60.0, 0.0, 1.0) ** 2
        # middle fossa rising gently to the crest, the crest falling steeply into the posterior fossa
        up = np.clip(1.0 + d2 / 14.0, 0.0, 1.0) ** 2
        lat = np.where(d2 < 0.0, mid + (crest - mid) * up, crest + (post - crest) * sig(d2 / 2.5 - 1.2))
        lat = ant + (lat - ant) * sig(d1 / 2.0)
        # the midline: planum, tuberculum, sella, dorsum sellae, clivus, then the posterior fossa
        cen = np.interp(y, [-100.0, -24.0, -17.0, -13.0, -7.0, -4.0, -2.0, 1.0, 15.0],
                        [-24.0, -24.0, -30.0, -42.0, -42.0, -30.0, -28.0, -33.0, -66.0]).astype(np.float32)
        cen = np.where(y > 15.0, post, cen)
        w = sig((13.0 - ax) / 3.0)
        floor = hc[2] + (cen * w + lat * (1.0 - w)) * np.float32(k)
        # thickness: thin orbital roofs, a massive petrous pyramid, a thick clivus, the occipital bowl
        petrous = np.exp(-((d2 / 7.0) ** 2)) * sig((ax - 12.0) / 2.0) * sig((62.0 - ax) / 3.0) * sig((y + 8.0) / 3.0)
        clivus = w * sig((y + 2.0) / 2.0) * sig((16.0 - y) / 2.0)  # about 10 mm thick across its 65 degree slope
        thick = 3.0 + 1.5 * sig(d1 / 3.0) + 20.0 * petrous + 17.0 * clivus
        return floor.astype(np.float32), (thick * k).astype(np.float32), petrous

    def _head_fields(self):
        """The head's own random fields (gyri, air cells), from a stream seeded by the head's draws, so
        adding them leaves every other region's anatomy unchanged; built once per body."""
        if getattr(self, "_hf", None) is None:
            rng = np.random.default_rng(np.frombuffer(np.asarray(self.head_jit, np.float64).tobytes(), np.uint32))
            gyri = _Fourier(rng, 24, (15.0, 24.0))  # sulci are its zero set: gyri ~6-12 mm wide
            self._hf = {"gyri": gyri, "sulci": _SignedDistance(gyri),
                        "sulcal_depth": _Fourier(rng, 8, (40.0, 80.0)),
                        "cells": _Fourier(rng, 24, (5.0, 9.0)),
                        "atrophy": rng.uniform(0.0, 1.0)}
        return self._hf

    def _brain(self, cv, sl, hc, k, rho_i, floor, inner):
        """Cerebrum with a folded cortical ribbon, cerebellum, ventricles, deep grey nuclei, brain stem.

        The sulci are the zero set of a smooth random field (distance |g| / |grad g|), cut to a depth
        below the brain surface; grey matter is the 2.5-3.5 mm next to any CSF surface (the outer surface,
        the sulci, the interhemispheric fissure, the tentorium and the skull base), white matter below.
        """
        hf = self._head_fields()
        X, Y, Z = cv.coords(sl)
        xr, yrel, zr = X - np.float32(hc[0]), Y - np.float32(hc[1]), Z - np.float32(hc[2])
        brain = (rho_i < 1.0) & (Z >= floor)
        # distance (mm) below the inner table: (1 - rho) / |grad rho|, and above the floor of the fossae
        grad = np.sqrt((xr / inner[0] ** 2) ** 2 + (yrel / inner[1] ** 2) ** 2 + (zr / inner[2] ** 2) ** 2)
        d_vault = (1.0 - rho_i) * rho_i / np.maximum(grad, 1e-4)
        # tentorium: a tent over the posterior fossa, highest in front in the midline, lower behind and aside
        tent = (hc[2] + np.interp(yrel, [8.0, 30.0, 90.0], [-14.0, -22.0, -38.0])
                - 10.0 * np.clip(np.abs(xr) / 60.0, 0.0, 1.0) ** 2)
        post = yrel > 8.0
        cereb = brain & post & (Z < tent)
        d_surf = np.minimum(d_vault, Z - floor)
        d_surf = np.where(post & ~cereb, np.minimum(d_surf, Z - tent), d_surf)
        sas = 1.2 + 1.2 * hf["atrophy"]  # subarachnoid space over the convexity (mm)
        # sulci
        g = cv.smooth(hf["sulci"], 32.0)[sl]  # a 4 mm coarse grid: the signed distance is near linear
        d_sulc = np.abs(g)
        g = g / np.float32(30.0)
        depth = 18.0 + 6.0 * cv.smooth(hf["sulcal_depth"], 40.0)[sl]
        w_sulc = 0.5 + 0.5 * hf["atrophy"]
        d_sulc = np.where(d_surf < depth, d_sulc, np.inf)
        # interhemispheric fissure: down to the corpus callosum in the middle, the whole height in front
        # and behind
        fiss = (zr > 14.0) | (yrel < -38.0) | (yrel > 40.0)
        d_mid = np.where(fiss & ~cereb, np.abs(xr), np.inf)
        d_csf = np.minimum(np.minimum(d_surf - sas, d_sulc - w_sulc), d_mid - 1.0)
        ribbon = 2.5 + 0.8 * np.clip(cv.smooth(self.brain_fold, 28.0)[sl], -1.0, 1.0)
        gm, gt = self.t["grey"]
        wm = self.t["white"][0]
        csf = self.t["csf"][0]
        hu = np.where(d_csf < 0.0, csf, np.where(d_csf < ribbon, gm, wm)).astype(np.float32)
        # cerebellum: grey cortex in fine folia (1.5-2 mm striations of thin CSF), a white core
        ccent = np.array([hc[0], hc[1] + 52.0, hc[2] - 46.0])
        rc = np.sqrt((xr / 48.0) ** 2 + ((Y - ccent[1]) / 30.0) ** 2 + ((Z - ccent[2]) / 26.0) ** 2)
        folia = np.cos(np.float32(2.0 * np.pi / 2.2) * rc * 28.0 + 3.0 * g)
        chu = np.where(rc < 0.45 + 0.1 * g, wm + 2.0, self.t["deep_grey"][0] + 2.0 * folia).astype(np.float32)
        chu = np.where((folia > 0.85) & (rc > 0.5), csf + 15.0, chu)
        chu = np.where(np.minimum(Z - floor, tent - Z) < sas, csf, chu)
        hu = np.where(cereb, chu, hu)
        cv.put(sl, brain, label=_l("brain"), hu=hu, tex=gt)
        # vermis cleft behind, fourth ventricle in front of the cerebellum
        sl2, r2 = cv.ellipsoid(hc + np.array([0.0, 34.0, -44.0]) * k, np.array([5.0, 4.0, 8.0]) * k)
        self._fill(cv, sl2, (r2 < 1.0) & (cv.lab[sl2] == _l("brain")), _l("brain"), "csf")
        for side in (1.0, -1.0):
            # deep grey: lentiform nucleus, thalamus, head of the caudate beside the frontal horn
            for c, semi in (((side * 22.0, 0.0, -6.0), (7.0, 15.0, 9.0)), ((side * 9.0, 14.0, -4.0), (7.0, 12.0, 8.0)),
                            ((side * 15.0, -16.0, 6.0), (5.0, 8.0, 8.0))):
                sl2, r2 = cv.ellipsoid(hc + np.array(c) * k, np.array(semi) * k)
                self._fill(cv, sl2, (r2 < 1.0) & (cv.lab[sl2] == _l("brain")), _l("brain"), "deep_grey")
            # lateral ventricles: frontal horn and body (a butterfly in axial), occipital horn
            vs = 1.0 + 0.35 * hf["atrophy"]
            for c, semi, roll in (((side * 8.0, -22.0, 10.0), (5.0, 14.0, 7.0), -20.0),
                                  ((side * 11.0, 8.0, 14.0), (5.0, 20.0, 5.0), 0.0),
                                  ((side * 18.0, 34.0, 4.0), (4.0, 12.0, 6.0), 25.0)):
                sl2, r2 = cv.ellipsoid(hc + np.array(c) * k, np.array(semi) * k * vs, _rotation(side * 10.0, 0, roll))
                self._fill(cv, sl2, (r2 < 1.0) & (cv.lab[sl2] == _l("brain")), _l("brain"), "csf")
        sl2, r2 = cv.ellipsoid(hc + np.array([0.0, 4.0, -6.0]) * k, np.array([2.0, 14.0, 9.0]) * k)  # third ventricle
        self._fill(cv, sl2, (r2 < 1.0) & (cv.lab[sl2] == _l("brain")), _l("brain"), "csf")
        pts, r = _path([hc + (0.0, 26.0, -62.0), hc + (0.0, 20.0, -40.0), hc + (0.0, 10.0, -20.0)], 11.0)
        blk, nd = cv.tube(pts, r)
        if blk is not None:
            self._fill(cv, blk, (nd < 1.0) & (cv.lab[blk] == _l("brain")), _l("brain"), "cord")

    def _air_cells(self, cv, centre, semi, air: float = 0.55):
        """A bony region riddled with air cells (mastoid, ethmoid): irregular cells of 2-5 mm (a
        thresholded random field) between thin bone septa, under a cortical shell; label skull."""
        sl, rho = cv.ellipsoid(centre, semi)
        if rho.size == 0:
            return
        X, Y, Z = cv.coords(sl)
        cells = self._head_fields()["cells"](X, Y, Z)
        inside = (rho < 1.0) & self.body_mask[sl]
        self._fill(cv, sl, inside, _l("skull"), "diploe")
        # the threshold for a given air fraction of a unit-variance Gaussian field
        thr = np.float32(-np.sqrt(2.0) * _erfinv(2.0 * air - 1.0))
        cv.put(sl, inside & (cells > thr) & (rho < 0.88), hu=-1000.0, tex=self.t["air"][1])

    def _sinuses(self, cv, k):
        """Mastoid air cells behind the ears, ethmoid cells between the orbits, the sphenoid sinus."""
        j = self.head_jit
        for side in (1.0, -1.0):
            self._air_cells(cv, np.array([side * 56.0, 30.0, 412.0]) + j, np.array([11.0, 13.0, 14.0]) * k)
            # ethmoid labyrinth: one block either side of the septum, between the orbits
            self._air_cells(cv, np.array([side * 7.0, -48.0, 430.0]) + j, np.array([6.0, 15.0, 11.0]) * k, 0.65)
        sl, rho = cv.ellipsoid(np.array([0.0, -14.0, 418.0]) + j, np.array([13.0, 11.0, 10.0]) * k)
        if rho.size:
            self._fill(cv, sl, (rho < 1.0) & (rho >= 0.85), _l("skull"), "rib_cortex")
            self._fill(cv, sl, rho < 0.85, BODY_LABEL, "air")

    def _face(self, cv, k):
        # face: orbits with eyes, nasal cavity, maxillary sinuses, jaw, teeth, tongue, parotids, masseters
        for side in (1.0, -1.0):
            oc = np.array([side * 31.0, -44.0, 433.0]) + self.head_jit
            sl2, r2 = cv.ellipsoid(oc, np.array([18.0, 28.0, 18.0]) * k)
            if sl2 is not None:
                self._fill(cv, sl2, (r2 < 1.12) & (r2 >= 1.0) & (cv.lab[sl2] != _l("brain")), _l("skull"), "rib_cortex")
                self._fill(cv, sl2, (r2 < 1.0) & (cv.lab[sl2] != _l("brain")), BODY_LABEL, "fat")
            ec = np.array([side * 31.0, -57.0, 433.0]) + self.head_jit
            sl2, r2 = cv.ellipsoid(ec, np.array([12.0, 12.0, 12.0]) * k)
            self._fill(cv, sl2, r2 < 1.0, BODY_LABEL, "eye")
            sl2, r2 = cv.ellipsoid(ec + (0.0, -9.0 * k, 0.0), np.array([4.0, 2.0, 4.0]) * k)
            self._fill(cv, sl2, r2 < 1.0, BODY_LABEL, "lens")
            sc = np.array([side * 28.0, -42.0, 402.0]) + self.head_jit
            sl2, r2 = cv.ellipsoid(sc, np.array([14.0, 18.0, 16.0]) * k)
            if sl2 is not None:
                self._fill(cv, sl2, (r2 < 1.15) & (r2 >= 1.0), _l("skull"), "rib_cortex")
                self._fill(cv, sl2, r2 < 1.0, BODY_LABEL, "air")
            for c, semi in (((side * 50.0, 16.0, 386.0), (13.0, 19.0, 24.0)),):
                sl2, r2 = cv.ellipsoid(np.array(c) + self.head_jit, np.array(semi) * k)
                self._fill(cv, sl2, (r2 < 1.0) & (cv.lab[sl2] == BODY_LABEL), BODY_LABEL, "parotid")
            sl2, r2 = cv.ellipsoid(np.array((side * 50.0, -8.0, 372.0)) + self.head_jit, np.array((9.0, 20.0, 24.0)) * k)
            self._fill(cv, sl2, (r2 < 1.0) & (cv.lab[sl2] == BODY_LABEL), BODY_LABEL, "muscle")
        nc = np.array((0.0, -52.0, 408.0)) + self.head_jit
        sl2, r2 = cv.ellipsoid(nc, np.array((14.0, 26.0, 22.0)) * k)
        self._fill(cv, sl2, r2 < 1.0, BODY_LABEL, "air")
        self._nose(cv, k, sl2, r2, nc)
        sl2, r2 = cv.ellipsoid(np.array((0.0, -26.0, 368.0)) + self.head_jit, np.array((26.0, 32.0, 15.0)) * k)
        self._fill(cv, sl2, (r2 < 1.0) & (cv.lab[sl2] == BODY_LABEL), BODY_LABEL, "muscle")

    def nose_tip_y(self) -> float:
        """Nominal y where the nose tip's skin shows (the face's front; its path's tip and radius in _nose),
        moved as the body's smooth deformation moves it (a grid point g shows the body at g + warp(g))."""
        y, z = -98.5 - 8.0 * self.head + self.head_jit[1], 402.0 + self.head_jit[2]
        shift = self.warp_amp[1] * float(self.warp[1](np.float32(self.head_jit[0]), np.float32(y), np.float32(z)))
        return float(y - shift - 1.0)

    def _nose(self, cv, k, sl, rho, nc):
        """Nasal septum and turbinates in the nasal cavity (box sl, normalised radius rho), the external
        nose (soft tissue, nostrils, nasal bones), the hard palate, the maxillary alveolar ridge and the
        zygomatic arches."""
        j = self.head_jit
        if rho.size:
            X, Y, Z = cv.coords(sl)
            cav = rho < 1.0
            septum = np.abs(X - np.float32(nc[0]) - 1.5 * np.sin((Z - np.float32(nc[2])) / 9.0)) < 1.0
            self._fill(cv, sl, cav & septum, _l("skull"), "cartilage")
            for side in (1.0, -1.0):  # inferior, middle and superior turbinates on the lateral wall
                for c, semi in (((12.0, -46.0, -12.0), (4.5, 22.0, 5.0)), ((12.0, -46.0, 0.0), (4.0, 17.0, 4.0)),
                                ((10.5, -42.0, 10.0), (3.0, 10.0, 3.0))):
                    cc = nc + np.array((side * c[0], c[1] + 52.0, c[2])) * k
                    sl2, r2 = cv.ellipsoid(cc, np.array(semi) * k)
                    if r2.size:
                        Xs, Ys, Zs = cv.coords(sl2)
                        d = (((Xs - nc[0]) / (14.0 * k)) ** 2 + ((Ys - nc[1]) / (26.0 * k)) ** 2
                             + ((Zs - nc[2]) / (22.0 * k)) ** 2)
                        inside = (r2 < 1.0) & (d < 1.0)
                        self._fill(cv, sl2, inside, BODY_LABEL, "scalp")
        # external nose: a soft-tissue wedge from the nasion to the tip, nostrils, nasal bones above
        f = np.array([(0.0, -74.0, 442.0), (0.0, -86.0, 420.0), (0.0, -98.0, 402.0), (0.0, -90.0, 394.0)]) + j
        for back, grow in ((0.0, 1.0), (8.0, 1.25), (16.0, 1.5)):  # the dorsum, then wider towards the face
            pts, r = _path(f + (0.0, back, 0.0), np.array([4.5, 6.0, 8.0, 6.0]) * k * grow)
            blk, nd = cv.tube(pts, r)
            if nd.size:
                m = (nd < 1.0) & (cv.lab[blk] == 0)
                self._fill(cv, blk, m, BODY_LABEL, "fat")
                self._fill(cv, blk, m & (nd > 1.0 - 2.0 / r.max()), BODY_LABEL, "scalp")
                self.body_mask[blk] |= m
        for side in (1.0, -1.0):
            pts, r = _path(np.array([(side * 6.0, -93.0, 398.0), (side * 8.0, -84.0, 401.0), (side * 8.0, -74.0, 405.0)])
                           + j, 3.2 * k)
            blk, nd = cv.tube(pts, r)
            self._fill(cv, blk, (nd < 1.0) & self.body_mask[blk], BODY_LABEL, "air")
        pts, r = _path(np.array([(0.0, -74.0, 442.0), (0.0, -84.0, 422.0)]) + j, 7.0 * k)
        blk, nd = cv.tube(pts, r)
        if nd.size:
            Yb = cv.coords(blk)[1]
            self._fill(cv, blk, (nd < 1.0) & (nd > 0.6) & (Yb < nc[1] - 24.0 * k), _l("skull"), "rib_cortex")
        # hard palate: the floor of the nasal cavity and roof of the mouth
        sl2, r2 = cv.ellipsoid(nc + np.array((0.0, 8.0, -25.0)) * k, np.array((22.0, 30.0, 3.0)) * k, p=3.0)
        if r2.size:
            hu = np.where(r2 < 0.5, self.t["diploe"][0], self.t["rib_cortex"][0]).astype(np.float32)
            cv.put(sl2, r2 < 1.0, label=_l("skull"), hu=hu, tex=self.t["diploe"][1])
        for side in (1.0, -1.0):
            # zygomatic arch: from the zygoma under the orbit back to the temporal bone in front of the ear
            pts, r = _path(np.array([(side * 40.0, -62.0, 420.0), (side * 50.0, -44.0, 418.0), (side * 56.0, -18.0, 416.0),
                                     (side * 57.0, 6.0, 414.0)]) * np.array((k, k, 1.0)) + j * np.array((1, 1, 1))
                           + np.array((0.0, 0.0, 0.0)), np.array([6.5, 5.0, 3.5, 4.0]) * k)
            self._bone_tube(cv, pts, r, _l("skull"), "skull_table", "diploe")

    def _jaw(self, cv, k):
        fc = _FACE_C + self.head_jit
        # mandible (a U-shaped tube with rami) and teeth; TotalSegmentator's skull class includes the jaw
        jaw = np.array([(-49.0, 24.0, 362.0), (-46.0, -18.0, 351.0), (-28.0, -54.0, 345.0), (0.0, -64.0, 343.0),
                        (28.0, -54.0, 345.0), (46.0, -18.0, 351.0), (49.0, 24.0, 362.0)])
        jaw = (jaw - fc) * k + fc
        pts, r = _path(jaw, 7.5)
        self._bone_tube(cv, pts, r, _l("skull"), "skull_table", "diploe")
        for side in (1.0, -1.0):
            ramus = (np.array([(side * 49.0, 24.0, 362.0), (side * 51.0, 26.0, 385.0), (side * 50.0, 30.0, 404.0)]) - fc) * k + fc
            pts, r = _path(ramus, 6.5)
            self._bone_tube(cv, pts, r, _l("skull"), "skull_table", "diploe")
        arch, _ = _path(jaw, 7.5, step=1.0)
        # maxillary alveolar ridge: a flat bony arch under the palate carrying the upper teeth
        upper = fc + (arch - fc) * np.array([0.97, 0.97, 0.0]) + (0.0, 0.0, (376.0 - 385.0) * k)
        sel = slice(int(0.1 * len(arch)), int(0.9 * len(arch)) + 1)
        pts, r = _path(upper[sel][::6], 6.0 * k)
        self._bone_tube(cv, pts, r, _l("skull"), "skull_table", "diploe")
        for t in np.linspace(0.12, 0.88, 12):
            i = int(t * (len(arch) - 1))
            for c in (fc + (arch[i] - fc) * np.array([0.94, 0.94, 1.0]) + (0.0, 0.0, 12.0 * k),  # lower teeth
                      upper[i] + (0.0, 0.0, -7.0 * k)):  # upper teeth
                sl2, r2 = cv.ellipsoid(c, np.array([3.2, 3.2, 5.0]) * k)
                self._fill(cv, sl2, r2 < 1.0, _l("skull"), "teeth")

