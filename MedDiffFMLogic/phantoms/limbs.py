"""The shoulder girdle and the arms: humeri, scapulae with glenoid, spine and acromion, clavicles reaching
the acromion; deltoid, pectoral, trapezius, rotator-cuff and axillary-fold muscles in fat planes,
axillary fat with vessels and nodes; the fat-filled thoracic inlet. Arms down by the body or raised
(per seed, with a share by region, ARMS_RAISED)."""

from __future__ import annotations

import numpy as np

from ..anatomy import BODY_LABEL
from .atlas import _SPINE_Y, _SPINE_Z, _l
from .shapes import _path, _rotation, _unit


# Share of scans with the arms raised, by region: the usual position for chest CT, which some patients
# cannot take; abdominal CT here always has them raised (arms down would shrink the patient in a fixed
# field of view and with it the scanner's calibrated noise); head and neck CT has them down.
ARMS_RAISED = {"head_neck": 0.0, "chest": 0.75, "abdomen": 1.0}


class LimbsMixin:
    """Methods of the body model (``body._Body``) for the shoulders and arms."""

    def _draw_limbs(self):
        # their own random stream, seeded by earlier draws: the rest of the anatomy is unchanged by them
        rng = np.random.default_rng(np.frombuffer(np.asarray([self.fat, self.width, self.depth, 3.0]).tobytes(),
                                                  np.uint32))
        self.arm_draw = rng.uniform()  # arms raised when below the region's share (ARMS_RAISED)
        self.arm_gap = rng.uniform(-6.0, 8.0)  # mm between the arm's and the chest's skin (arms down)
        self.humeral_r = rng.uniform(21.0, 25.0)
        self.deltoid = rng.uniform(13.0, 21.0)
        self.arm_r = rng.uniform(33.0, 40.0)  # muscle radius of the upper arm
        self.arm_fat = 3.0 + 0.35 * self.fat
        self.limb_jit = rng.normal(0.0, 3.0, (2, 3))
        self.axilla_nodes = rng.uniform(0.0, 1.0, (2, 3))
        self.set_arms(self.arm_draw < ARMS_RAISED["chest"])

    def set_arms(self, raised: bool):
        """Place the arms: per side (humeral head centre, arm centreline points, muscle radii)."""
        self.arms_raised = bool(raised)
        self.arms, self.forearms = {}, {}
        for k, s in enumerate((1.0, -1.0)):
            j = self.limb_jit[k]
            if raised:  # the humeral head rides up, the arm passes beside the head
                h = np.array([s * 158.0 * self.width, 2.0, 260.0]) + j
                ctrl = [h, h + (s * 2.0, -6.0, 45.0), h + (s * -20.0, -22.0, 170.0), h + (s * -36.0, -26.0, 290.0)]
                radii = [self.arm_r + 2.0, self.arm_r, self.arm_r * 0.85, self.arm_r * 0.8]
            else:  # hanging beside the chest, just clear of its skin, elbow at the upper abdomen
                h = np.array([s * 170.0 * self.width, 4.0, 248.0]) + j
                ctrl, radii = [h], [self.arm_r + 2.0]
                for z, r in ((195.0, self.arm_r), (110.0, self.arm_r * 0.9), (25.0, self.arm_r * 0.8),
                             (-45.0, self.arm_r * 0.78)):
                    a, b, yc = self.torso(z)
                    x = max(abs(h[0]) + 0.1 * (h[2] - z), a + self.fat + self.arm_gap + r + self.arm_fat)
                    ctrl.append(np.array([s * x, yc + 6.0 - 0.12 * (h[2] - z), z]))
                    radii.append(r)
                e = ctrl[-1]  # the forearm runs forward to the hand on the thigh
                ctrl_f = [e, e + (s * -10.0, -40.0, -110.0), e + (s * -20.0, -70.0, -230.0)]
                self.forearms[s] = (np.array(ctrl_f), np.array([self.arm_r * 0.75, self.arm_r * 0.65, 20.0]))
            self.arms[s] = (h, np.array(ctrl, float), np.array(radii, float))

    def limbs_extent(self, z0: float, z1: float) -> float:
        """Nominal half-width of the shoulders and arms between heights z0 and z1 (0 when none there)."""
        half = 0.0
        cap = self.humeral_r + self.deltoid + self.arm_fat
        for s, (h, ctrl, radii) in self.arms.items():
            if z0 <= h[2] + cap and z1 >= h[2] - cap:
                half = max(half, abs(h[0]) + cap + 4.0)
        for ctrl, radii in [a[1:] for a in self.arms.values()] + list(self.forearms.values()):
            pts, r = _path(ctrl, radii)
            inside = (pts[:, 2] >= z0) & (pts[:, 2] <= z1)
            if inside.any():
                half = max(half, float((np.abs(pts[inside, 0]) + r[inside] + self.arm_fat).max()))
        return half

    # ---- outline: fat shells with skin around muscle cores, joined to the torso ----
    def _limb_outline(self, cv):
        skin = self.t["scalp"]
        for s, (h, ctrl, radii) in self.arms.items():
            parts = []  # (box, normalised radius, fat thickness relative to the part)
            a, b, yc = self.torso(236.0)
            # the yoke: trapezius and supraclavicular tissue joining the neck to the shoulder
            c = np.array([s * 0.5 * abs(h[0]), yc + 12.0, h[2] - 2.0])
            parts.append(cv.ellipsoid(c, (0.62 * abs(h[0]), 0.75 * b, 46.0), p=2.4) + (0.0,))
            # the axilla: fat between the chest wall and the arm
            c = np.array([s * (abs(h[0]) - 25.0), yc + 2.0, h[2] - 26.0])
            parts.append(cv.ellipsoid(c, (48.0, 0.72 * b, 44.0)) + (0.0,))
            # the shoulder cap (deltoid over the humeral head)
            cap = self.humeral_r + self.deltoid
            parts.append(cv.ellipsoid(h + (s * 4.0, 0.0, 2.0), (cap + self.arm_fat, cap + self.arm_fat + 4.0,
                                                               cap + self.arm_fat + 6.0)) + (self.arm_fat / cap,))
            pts, r = _path(ctrl, radii, step=16.0)
            parts.append(cv.tube(pts, r + self.arm_fat) + (None,))
            for fc, fr in ([self.forearms[s]] if s in self.forearms else []):
                pts_f, r_f = _path(fc, fr, step=16.0)
                parts.append(cv.tube(pts_f, r_f + self.arm_fat) + (None,))
            for sl, rho, _ in parts:  # fat where no other part is yet, a skin line at the surface
                if rho.size:
                    new = (rho < 1.0) & (cv.lab[sl] == 0)
                    self._fill(cv, sl, new, BODY_LABEL, "fat")
                    cv.put(sl, new & (rho > 0.96), hu=skin[0], tex=skin[1])
            for sl, rho, _ in parts:  # skin lines (the torso's, the parts') that other parts cover: fat
                if rho.size:
                    inner = (rho < 0.93) & (cv.lab[sl] == BODY_LABEL) & (cv.hu[sl] == np.float32(skin[0]))
                    self._fill(cv, sl, inner, BODY_LABEL, "fat")
            # muscle cores: the deltoid and the arm
            sl, rho = cv.ellipsoid(h + (s * 4.0, 0.0, 2.0), (cap, cap + 4.0, cap + 6.0))
            if rho.size:
                self._fill(cv, sl, rho < 1.0, BODY_LABEL, "muscle")
            blk, nd = cv.tube(pts, r)
            if nd.size:
                self._fill(cv, blk, nd < 1.0, BODY_LABEL, "muscle")
            for fc, fr in ([self.forearms[s]] if s in self.forearms else []):
                blk, nd = cv.tube(*_path(fc, fr, step=16.0))
                if nd.size:
                    self._fill(cv, blk, nd < 1.0, BODY_LABEL, "muscle")

    # ---- inside: the thoracic inlet, muscles in fat planes, vessels, nodes, bones ----
    def _shoulders(self, cv):
        self._inlet_fat(cv)
        fat_hu = np.float32(self.t["fat"][0])
        for k, (s, (h, ctrl, radii)) in enumerate(self.arms.items()):
            d = _unit(ctrl[1] - ctrl[0])
            _, b_t, yc_t = self.torso(245.0)
            back = yc_t + b_t
            acromion = h + (s * 6.0, 8.0, self.humeral_r + 7.0)
            # muscles that run through fat: only where the tissue is fat
            for pts, r in (
                ([(s * 12.0, back - 8.0, 292.0), (s * 55.0, back - 10.0, 276.0), (s * 100.0, back - 18.0, 262.0),
                  acromion + (0.0, 6.0, 2.0)], 14.0),  # trapezius, neck to acromion
                ([(s * 30.0, 52.0, 300.0), (s * 62.0, back - 26.0, h[2] - 6.0)], 9.0),  # levator scapulae
                ([(s * 26.0, 36.0, 292.0), (s * 48.0, 12.0, 262.0)], 6.5),  # scalenes to the first rib
                ([(s * 70.0, back - 22.0, h[2] - 12.0), h + (s * -4.0, 10.0, self.humeral_r + 2.0)], 12.0),  # supraspinatus
                ([(s * 70.0, yc_t - b_t + 12.0, 218.0), (s * 105.0, yc_t - b_t + 14.0, 214.0),
                  h + d * 55.0 + (0.0, -16.0, 0.0)], 11.0),  # pectoralis major, the anterior axillary fold
                ([(s * 112.0, back - 30.0, 170.0), h + d * 60.0 + (0.0, 16.0, 0.0)], 12.0),  # latissimus, teres
            ):
                blk, nd = cv.tube(*_path(pts, r, step=8.0))
                if nd.size:
                    fat = (cv.lab[blk] == BODY_LABEL) & (cv.hu[blk] == fat_hu)
                    self._fill(cv, blk, (nd < 1.0) & fat, BODY_LABEL, "muscle")
            # a fat plane under the deltoid (subdeltoid bursa), open towards the glenoid
            sl, rho = cv.ellipsoid(h, np.full(3, self.humeral_r + 8.0))
            if rho.size:
                X = cv.coords(sl)[0]
                shell = (rho > (self.humeral_r + 5.5) / (self.humeral_r + 8.0)) & (rho < 1.0)
                shell &= s * (X - h[0]) > -0.3 * self.humeral_r
                m = shell & (cv.lab[sl] == BODY_LABEL) & (cv.hu[sl] != fat_hu)
                self._fill(cv, sl, m, BODY_LABEL, "fat")
            # axillary vessels (the subclavian's continuation) and nodes in the axillary fat
            for tissue, off, r in (("artery", (0.0, -4.0, 0.0), 3.5), ("upper_vein", (0.0, -14.0, -4.0), 5.0)):
                pts = [(s * 75.0, 6.0 + off[1], 255.0 + off[2]), h + d * 40.0 + (s * -(self.humeral_r + 16.0), 0, 0) + off,
                       h + d * 120.0 + (s * -self.arm_r * 0.5, 0, 0) + off]
                blk, nd = cv.tube(*_path(pts, r, step=8.0))
                if nd.size:
                    self._fill(cv, blk, (nd < 1.0) & (cv.lab[blk] == BODY_LABEL) & (cv.hu[blk] == fat_hu),
                               BODY_LABEL, tissue)
            for u, v, w in (self.axilla_nodes[k], 1.0 - self.axilla_nodes[k]):
                c = (s * (abs(h[0]) - 45.0 + 20.0 * u), -20.0 + 40.0 * v, h[2] - 60.0 + 35.0 * w)
                sl, rho = cv.ellipsoid(c, (4.0, 3.5, 5.0))
                if rho.size:
                    fat = (cv.lab[sl] == BODY_LABEL) & (cv.hu[sl] == fat_hu)
                    self._fill(cv, sl, (rho < 1.0) & fat, BODY_LABEL, "lymph_node")
            self._shoulder_bones(cv, s, h, ctrl, radii, d, back)

    def _inlet_fat(self, cv):
        """Above the lung apices the torso's muscle core becomes fat (the thoracic inlet and the root of the
        neck: vessels, nerves and muscles in fat), except the paraspinal block."""
        z0, z1 = 256.0, 284.0
        sl = cv.box((-130.0, -80.0, z0), (130.0, 130.0, z1))
        if sl is None:
            return
        X, Y, Z = cv.coords(sl)
        yv = np.interp(Z, _SPINE_Z, _SPINE_Y)
        block = (np.abs(X) / 38.0) ** 2.4 + (np.abs(Y - yv - 40.0) / 48.0) ** 2.4 < 1.0
        m = (cv.lab[sl] == BODY_LABEL) & (cv.hu[sl] == np.float32(self.t["muscle"][0])) & (Z > z0) & (Z < z1)
        # the wall keeps a muscle layer under the skin at the back (trapezius, rhomboids)
        a, b, yc = self.torso(np.clip(Z, z0, z1))
        rho = np.sqrt((X / a) ** 2 + ((Y - yc) / b) ** 2)
        m &= ~block & ~((rho > 0.8) & (Y > yc))
        self._fill(cv, sl, m, BODY_LABEL, "fat")

    def _shoulder_bones(self, cv, s, h, ctrl, radii, d, back):
        sfx = "left" if s > 0 else "right"
        cortex, marrow = self.t["cortical"], self.t["cancellous"]
        # humerus: the head (cancellous bone in a thin cortex), the neck and the shaft (thick cortex,
        # fatty marrow) along the arm
        sl, rho = cv.ellipsoid(h, np.full(3, self.humeral_r))
        if rho.size:
            hu = np.where(rho > 1.0 - 1.6 / self.humeral_r, cortex[0], marrow[0]).astype(np.float32)
            cv.put(sl, (rho < 1.0) & self.body_mask[sl], label=_l(f"humerus_{sfx}"), hu=hu, tex=marrow[1])
        pts, _ = _path(ctrl, 1.0, step=10.0)
        length = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]
        pts = pts[length < 300.0]
        r = np.interp(np.linspace(0, 1, len(pts)), [0.0, 0.12, 1.0], [0.6 * self.humeral_r, 12.0, 10.5])
        blk, nd = cv.tube(pts, r)
        if nd.size:
            m = (nd < 1.0) & self.body_mask[blk] & (cv.lab[blk] != _l(f"humerus_{sfx}"))
            hu = np.where(nd > 0.62, cortex[0] + 350.0, 20.0).astype(np.float32)
            cv.put(blk, m, label=_l(f"humerus_{sfx}"), hu=hu, tex=marrow[1])
        for fc, fr in ([self.forearms[s]] if s in self.forearms else []):  # radius and ulna
            for off in ((s * 10.0, -6.0, 0.0), (s * -10.0, 6.0, 0.0)):
                self._bone_tube(cv, _path(fc + off, 6.5, step=12.0)[0], 6.5, BODY_LABEL, "cortical", "rib_marrow")
        # scapula: the blade on the back of the chest, its neck and glenoid facing the humeral head, the
        # spine rising to the acromion above the head
        scap = f"scapula_{sfx}"
        g = h - s * np.array([self.humeral_r + 4.0, 0.0, 0.0]) + (0.0, 4.0, -4.0)
        c = np.array([s * 88.0, back - 26.0, h[2] - 50.0])
        sl, rho = cv.ellipsoid(c, (40.0, 4.0, 48.0), _rotation(s * 32.0, s * 10.0, 0.0), p=3.0)
        if rho.size:
            m = (rho < 1.0) & self.body_mask[sl] & ~np.isin(cv.lab[sl], self.lung_labels)
            hu = np.where(rho > 0.7, self.t["rib_cortex"][0], self.t["rib_marrow"][0]).astype(np.float32)
            cv.put(sl, m, label=_l(scap), hu=hu, tex=marrow[1])
        acromion = h + (s * 6.0, 8.0, self.humeral_r + 7.0)
        for pts, r in (([c + (s * 26.0, -10.0, 24.0), g - (s * 8.0, 0.0, 0.0), g], 8.0),  # neck and glenoid
                       ([(s * 62.0, back - 20.0, h[2] - 22.0), h + (s * -10.0, 30.0, self.humeral_r),
                         acromion, acromion + (s * 2.0, -18.0, -1.0)], 5.5),  # spine and acromion
                       ([g + (s * 6.0, -14.0, 10.0), g + (s * 14.0, -30.0, 6.0)], 5.0)):  # coracoid
            blk, nd = cv.tube(*_path(pts, r, step=6.0))
            if nd.size:
                m = (nd < 1.0) & self.body_mask[blk] & ~np.isin(cv.lab[blk], self.lung_labels)
                m &= cv.lab[blk] != _l(f"humerus_{sfx}")
                hu = np.where(nd > 0.55, self.t["rib_cortex"][0], self.t["rib_marrow"][0]).astype(np.float32)
                cv.put(blk, m, label=_l(scap), hu=hu, tex=marrow[1])
        # clavicle: from the sternum's notch, an S curve to the front of the acromion
        a, b, yc = self.torso(258.0)
        end = acromion + (s * 0.0, -16.0, 0.0)
        pts, r = _path([(s * 20.0, yc - b - 2.0, 258.0), (s * 60.0, yc - b + 8.0, 262.0),
                        ((s * 60.0 + end[0]) / 2, (yc - b + end[1]) / 2 + 4.0, (262.0 + end[2]) / 2), end],
                       [7.0, 6.5, 6.0, 6.5])
        blk, nd = cv.tube(pts, r)
        if nd.size:
            m = (nd < 1.0) & self.body_mask[blk] & ~np.isin(cv.lab[blk], self.lung_labels)
            hu = np.where(nd > 0.6, self.t["rib_cortex"][0], self.t["rib_marrow"][0]).astype(np.float32)
            cv.put(blk, m, label=_l(f"clavicula_{sfx}"), hu=hu, tex=marrow[1])
