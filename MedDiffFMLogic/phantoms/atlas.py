"""The nominal body: fixed anatomical tables (nominal mm, LPS: +x left, +y posterior, +z superior)."""

from __future__ import annotations

import numpy as np

from ..anatomy import label_index

_REGION_Z_RANGE = {  # nominal z window (mm) a region shows in full
    "head_neck": (272.0, 570.0),
    "chest": (-12.0, 285.0),
    "abdomen": (-215.0, 60.0),
}

# Vertebral levels: name, nominal centre z (mm), height including one disc (mm)
_LEVELS = [
    ("vertebrae_S1", -170.0, 30.0),
    ("vertebrae_L5", -139.0, 31.0),
    ("vertebrae_L4", -108.0, 31.0),
    ("vertebrae_L3", -77.0, 31.0),
    ("vertebrae_L2", -46.0, 31.0),
    ("vertebrae_L1", -16.0, 29.0),
    ("vertebrae_T12", 12.0, 27.0),
    ("vertebrae_T11", 38.0, 25.0),
    ("vertebrae_T10", 62.0, 24.0),
    ("vertebrae_T9", 85.5, 23.0),
    ("vertebrae_T8", 108.0, 22.0),
    ("vertebrae_T7", 130.0, 22.0),
    ("vertebrae_T6", 151.5, 21.0),
    ("vertebrae_T5", 172.0, 20.0),
    ("vertebrae_T4", 192.0, 20.0),
    ("vertebrae_T3", 212.0, 20.0),
    ("vertebrae_T2", 231.5, 19.0),
    ("vertebrae_T1", 250.5, 19.0),
    ("vertebrae_C7", 268.5, 17.0),
    ("vertebrae_C6", 285.0, 16.0),
    ("vertebrae_C5", 301.0, 16.0),
    ("vertebrae_C4", 317.0, 16.0),
    ("vertebrae_C3", 333.0, 16.0),
    ("vertebrae_C2", 352.0, 22.0),
    ("vertebrae_C1", 373.0, 20.0),
]

# Spine column along z: centre y of the vertebral bodies, body half-width/half-depth, canal radius,
# spinous and transverse process lengths (nominal mm).
_SPINE_Z = np.array([-330.0, -200.0, -120.0, -40.0, 20.0, 100.0, 180.0, 240.0, 275.0, 320.0, 390.0])
_SPINE_Y = np.array([66.0, 48.0, 40.0, 40.0, 44.0, 47.0, 45.0, 42.0, 44.0, 45.0, 46.0])
_SPINE_RX = np.array([25.0, 25.0, 24.0, 22.0, 19.0, 17.0, 16.0, 15.0, 12.0, 11.0, 10.0])
_SPINE_RY = np.array([17.0, 17.0, 17.0, 16.0, 15.0, 14.0, 13.0, 12.0, 9.0, 8.0, 8.0])
_SPINE_CANAL = np.array([7.0, 8.5, 9.0, 9.0, 8.0, 7.5, 7.5, 8.0, 8.5, 9.0, 10.0])
_SPINE_SP = np.array([18.0, 28.0, 30.0, 30.0, 32.0, 34.0, 32.0, 30.0, 24.0, 18.0, 10.0])
_SPINE_TP = np.array([30.0, 32.0, 36.0, 34.0, 28.0, 26.0, 26.0, 26.0, 20.0, 16.0, 16.0])

# Torso and neck outline without subcutaneous fat (the muscle wall's outer surface):
# z, half-width, half-depth, centre y (nominal mm). Above z = 412 the head and face ellipsoids take over.
_TORSO_Z = np.array([-330.0, -220.0, -140.0, -60.0, 20.0, 100.0, 180.0, 228.0, 252.0, 266.0, 278.0, 320.0, 392.0, 412.0])
_TORSO_A = np.array([158.0, 150.0, 140.0, 138.0, 146.0, 153.0, 153.0, 150.0, 118.0, 72.0, 52.0, 49.0, 50.0, 46.0])
_TORSO_B = np.array([100.0, 100.0, 102.0, 104.0, 106.0, 106.0, 103.0, 96.0, 80.0, 60.0, 50.0, 47.0, 48.0, 46.0])
_TORSO_Y = np.array([8.0, 8.0, 6.0, 4.0, 2.0, 2.0, 5.0, 11.0, 25.0, 38.0, 42.0, 42.0, 40.0, 40.0])

_HEAD_C = np.array([0.0, 17.0, 468.0])
_HEAD_SEMI = np.array([80.0, 98.0, 100.0])
_FACE_C = np.array([0.0, -15.0, 385.0])
_FACE_SEMI = np.array([62.0, 70.0, 52.0])


def _l(name: str) -> int:
    return label_index(name)

