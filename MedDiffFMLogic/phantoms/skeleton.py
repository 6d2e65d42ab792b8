"""Skeleton painting: the spine (bodies, discs, arches, processes, canal, cord), ribs, sternum, shoulder girdle, pelvis."""

from __future__ import annotations

import numpy as np

from ..anatomy import BODY_LABEL
from .atlas import _LEVELS, _l
from .shapes import _rotation


class SkeletonMixin:
    """Methods of the body model (``body._Body``) that paint the bones."""

    def _spine(self, cv):
        z0, z1 = -330.0, 412.0
        lo = (-60.0, 10.0, z0)
        hi = (60.0, 125.0, z1)
        sl = cv.box(lo, hi)
        if sl is None:
            return
        X, Y, Z = cv.coords(sl)
        yv, rx, ry, rc, sp, tp = self.spine(Z)
        yv = yv.astype(np.float32)
        inside_body = self.body_mask[sl]
        # posterior block: paraspinal muscles, and the spine is kept out of the lungs
        blk_c = yv + 40.0
        rho_blk = (np.abs(X) / 38.0) ** 2.4 + (np.abs(Y - blk_c) / 48.0) ** 2.4
        blk = (rho_blk < 1.0) & inside_body & (Z < 290.0)
        self._fill(cv, sl, blk, BODY_LABEL, "muscle")
        # autochthon (erector spinae) muscles either side of the spinous processes
        y_canal = yv + ry + rc + 1.5
        for side, name in ((1.0, "autochthon_left"), (-1.0, "autochthon_right")):
            rho = (np.abs(X - side * 26.0) / 20.0) ** 2 + (np.abs(Y - (y_canal + 30.0)) / 22.0) ** 2
            m = (rho < 1.0) & inside_body & (Z < 300.0) & (Z > -230.0)
            sheath = (rho >= 1.0) & (rho < 1.12) & blk  # a fat plane around each muscle mass
            self._fill(cv, sl, sheath & (cv.lab[sl] == BODY_LABEL), BODY_LABEL, "fat")
            self._fill(cv, sl, m, _l(name), "muscle")
        # levels
        names = [n for n, _, _ in _LEVELS]
        zc = np.array([c for _, c, _ in _LEVELS])
        h = np.array([hh for _, _, hh in _LEVELS])
        bounds = np.r_[zc[0] - h[0] / 2, zc + h / 2]  # bounds[i] .. bounds[i+1] is level i
        idx = np.clip(np.searchsorted(bounds, Z) - 1, 0, len(zc) - 1)
        zrel = Z - zc[idx]
        hh = h[idx] / 2.0
        disc = 0.22 * h[idx]  # disc height (half below, half above each vertebral body)
        in_range = (Z > bounds[0]) & (Z < bounds[-1])
        labels = np.array([_l(n) for n in names], dtype=np.uint8)[idx]
        is_c1 = idx == names.index("vertebrae_C1")
        # vertebral bodies (C1 has none)
        rho_b = ((np.abs(X) / rx) ** 2.2 + (np.abs(Y - yv) / ry) ** 2.2) ** (1 / 2.2)
        body = (rho_b < 1.0) & (np.abs(zrel) < hh - disc / 2) & in_range & ~is_c1
        discs = (rho_b < 0.95) & (np.abs(zrel) >= hh - disc / 2) & in_range & ~is_c1
        self._fill(cv, sl, discs, BODY_LABEL, "disc")
        cortex = body & ((rho_b > 1.0 - 1.6 / ry) | (np.abs(zrel) > hh - disc / 2 - 1.3))
        hc = self.t["cortical"][0]
        hm, tm = self.t["cancellous"]
        cv.put(sl, body, label=labels[body], hu=np.where(cortex, hc, hm).astype(np.float32)[body], tex=tm)
        # posterior elements: arch around the canal, spinous and transverse processes
        r_canal = np.sqrt(X**2 + (Y - y_canal) ** 2)
        arch_z = np.abs(zrel) < hh - disc / 2 - 0.5
        arch = (r_canal >= rc) & (r_canal < rc + 5.5) & (Y > yv) & arch_z & in_range
        ys = Y - (y_canal + rc)
        tilt = np.where(Z > 0, 0.35, 0.1)  # thoracic spinous processes point downwards
        # spinous process: an elliptical section that narrows towards its tip; C2-C6 split into two
        # tubercles at the tip (bifid)
        along = np.clip(ys / sp, 0.0, 1.0)
        width = 4.0 * (1.0 - 0.45 * along)
        cervical = idx >= names.index("vertebrae_C7")
        bifid = cervical & (idx >= names.index("vertebrae_C6")) & ~is_c1
        xs = np.where(bifid, np.abs(X) - 3.5 * np.clip((along - 0.45) / 0.55, 0.0, 1.0), X)
        spin = ((xs / width) ** 2 + ((zrel + tilt * ys) / (0.28 * h[idx])) ** 2 < 1.0) & (ys > 0) & (ys < sp)
        spin &= in_range
        # transverse processes: tapering elliptical sections, angled backwards; the cervical ones arise
        # beside the body and hold the transverse foramen (with the vertebral artery)
        t = np.clip((np.abs(X) - rc) / tp, 0.0, 1.0)
        yt = np.where(cervical, yv + 0.5 * ry + 0.1 * (np.abs(X) - rc), y_canal + 0.25 * (np.abs(X) - rc))
        trans = ((Y - yt) / 5.5) ** 2 + (zrel / (0.22 * h[idx])) ** 2 < (1.0 - 0.45 * t) ** 2
        trans &= (np.abs(X) > np.where(cervical, 0.6 * rx, rc)) & (np.abs(X) < rc + tp) & in_range
        foramen = cervical & (np.hypot(np.abs(X) - (rc + 3.5), Y - (yv + 0.5 * ry)) < 2.6) & in_range
        post = (arch | spin | trans) & inside_body & ~foramen
        hp = np.where(r_canal < rc + 2.0, hc, 0.5 * (hc + hm)).astype(np.float32)
        cv.put(sl, post, label=labels[post], hu=hp[post], tex=tm)
        self._fill(cv, sl, foramen & inside_body & (Z < 380.0), BODY_LABEL, "artery")
        self._atlas_axis(cv, sl, X, Y, Z, yv, rc, labels, names, idx, zc)
        # canal: CSF and the cord (the cord ends at L1, the brain stem continues above C1)
        canal = (r_canal < rc) & (Z > -200.0) & (Z < 400.0)
        self._fill(cv, sl, canal, BODY_LABEL, "csf")
        cord = (r_canal < 0.6 * rc) & (Z > -20.0) & (Z < 392.0)
        self._fill(cv, sl, cord, _l("spinal_cord"), "cord")

    def _atlas_axis(self, cv, sl, X, Y, Z, yv, rc, labels, names, idx, zc):
        """C1 (atlas): a ring with an anterior arch and lateral masses, no body; C2 (axis): the dens rising
        from its body into the atlas ring, behind the anterior arch."""
        c1, c2 = names.index("vertebrae_C1"), names.index("vertebrae_C2")
        z1, z2 = zc[c1], zc[c2]
        band = np.abs(Z - z1) < 6.0
        dens_y = yv + 1.0
        anterior = band & (np.abs(np.hypot(X, Y - dens_y) - 10.5) < 2.4) & (Y < dens_y + 3.0)
        masses = band & (np.hypot(np.abs(X) - (rc + 5.0), Y - (dens_y + 4.0)) < 6.5)
        dens = (np.hypot(X, Y - dens_y) < 5.5) & (Z > z2) & (Z < z1 + 5.0)
        hc, (hm, tm) = self.t["cortical"][0], self.t["cancellous"]
        for m, value in ((anterior | masses, c1), (dens, c2)):
            m = m & self.body_mask[sl]
            hu = np.where(m, 0.5 * (hc + hm), hm).astype(np.float32)
            cv.put(sl, m, label=_l(names[value]), hu=hu[m], tex=tm)

    def _chest_wall_bones(self, cv):
        t_cortex = self.t["rib_cortex"]
        t_marrow = self.t["rib_marrow"]
        drops = [18, 30, 45, 55, 62, 68, 72, 74, 70, 60, 45, 35]
        ends = [2.45, 2.55, 2.6, 2.6, 2.6, 2.6, 2.55, 2.35, 2.25, 2.15, 1.9, 1.6]
        levels = {n: c for n, c, _ in _LEVELS}
        for i in range(12):
            zt = levels[f"vertebrae_T{i + 1}"]
            for side in (1.0, -1.0):
                name = f"rib_{'left' if side > 0 else 'right'}_{i + 1}"
                phi = np.linspace(0.32, ends[i], 24)
                u = (phi - phi[0]) / (ends[i] - phi[0])
                z = zt + 6.0 - drops[i] * u**1.3
                a, b, yc = self._cavity(np.minimum(z, 262.0))
                a = np.maximum(a, 25.0) + 6.0
                b = np.maximum(b, 25.0) + 6.0
                pts = np.c_[side * a * np.sin(phi), yc + b * np.cos(phi), z]
                yv, rx, ry, _, _, _ = self.spine(zt)
                head = np.array([side * (rx + 3.0), yv + ry * 0.3, zt + 4.0])
                pts = np.vstack([head, pts])
                radius = 5.0 if i == 0 else 4.3
                blk, nd = cv.tube(pts, radius)
                if blk is None:
                    continue
                m = (nd < 1.0) & self.body_mask[blk] & ~np.isin(cv.lab[blk], self.lung_labels)
                hu = np.where(nd > 0.55, t_cortex[0], t_marrow[0]).astype(np.float32)
                cv.put(blk, m, label=_l(name), hu=hu, tex=t_marrow[1])
                if i < 10:  # costal cartilage to the sternum
                    phi2 = np.linspace(ends[i], 2.95 if i < 7 else 2.75, 8)
                    zc = z[-1] + (np.linspace(0, 1, 8) ** 1.5) * (8.0 if i < 7 else 22.0)
                    zc = np.minimum(zc, levels["vertebrae_T1"] - 10.0)
                    a, b, yc = self._cavity(zc)
                    a = np.maximum(a, 25.0) + 6.0
                    b = np.maximum(b, 25.0) + 6.0
                    cp = np.c_[side * a * np.sin(phi2), yc + b * np.cos(phi2), zc]
                    blk, nd = cv.tube(cp, 4.0)
                    if blk is not None:
                        m = (nd < 1.0) & self.body_mask[blk] & ~np.isin(cv.lab[blk], self.lung_labels)
                        m &= cv.lab[blk] != _l(name)
                        self._fill(cv, blk, m, _l("costal_cartilages"), "cartilage")
        # sternum: a plate in the anterior chest wall
        zk = np.linspace(105.0, 262.0, 12)
        _, b_c, yc = self._cavity(zk)
        front = yc - np.maximum(b_c, 25.0) - 7.0
        half_w = np.interp(zk, [105.0, 125.0, 225.0, 240.0, 262.0], [8.0, 14.0, 14.0, 24.0, 22.0])
        sl, rho = cv.column(zk, 0.0, front, half_w, 7.0, p=3.0, zlim=(105.0, 262.0))
        if sl is not None:
            m = (rho < 1.0) & self.body_mask[sl]
            hu = np.where(rho > 0.75, self.t["cortical"][0] * 0.8, self.t["cancellous"][0]).astype(np.float32)
            cv.put(sl, m, label=_l("sternum"), hu=hu, tex=self.t["cancellous"][1])
        # clavicles and scapulae: limbs.py (with the shoulders)

    def _pelvis(self, cv):
        for side in (1.0, -1.0):
            sfx = "left" if side > 0 else "right"
            sl, rho = cv.ellipsoid((side * 92.0, 46.0, -200.0), (11.0, 50.0, 52.0), _rotation(side * -35.0, side * 8, 0),
                                   p=2.6)
            if sl is not None:
                _, Y, Z = cv.coords(sl)
                m = (rho < 1.0) & self.body_mask[sl] & (Z < -150.0 - 0.15 * (Y - 46.0))
                hu = np.where(rho > 0.8, self.t["cortical"][0], self.t["cancellous"][0]).astype(np.float32)
                cv.put(sl, m, label=_l(f"hip_{sfx}"), hu=hu, tex=self.t["cancellous"][1])
        sl, rho = cv.ellipsoid((0.0, 72.0, -222.0), (44.0, 16.0, 40.0), _rotation(0, 0, -25.0), p=2.4)
        if sl is not None:
            m = (rho < 1.0) & self.body_mask[sl]
            hu = np.where(rho > 0.8, self.t["cortical"][0], self.t["cancellous"][0]).astype(np.float32)
            cv.put(sl, m, label=_l("sacrum"), hu=hu, tex=self.t["cancellous"][1])

    def _bone_tube(self, cv, pts, r, label, cortex, marrow):
        blk, nd = cv.tube(pts, r)
        if blk is None:
            return
        m = (nd < 1.0) & self.body_mask[blk]
        hu = np.where(nd > 0.6, self.t[cortex][0], self.t[marrow][0]).astype(np.float32)
        cv.put(blk, m, label=label, hu=hu, tex=self.t[marrow][1])


