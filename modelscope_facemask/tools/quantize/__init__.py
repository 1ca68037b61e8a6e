"""``facemask quantize``: int8 graphs for ``precision='int8'`` (OpenVINO + NNCF post-training quantization),
calibrated on the user's images, with a manifest and a fidelity report (:mod:`.build`, :mod:`.calibration`,
:mod:`.fidelity`)."""
