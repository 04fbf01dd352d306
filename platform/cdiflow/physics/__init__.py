"""Forward model: particles, phase fields, Fourier-slice diffraction, detector effects.

Pure numpy/torch; no Ray. See ``cdiflow.physics.fft`` for the one FFT convention.
"""
