"""Feature visualization by optimization, in Lucid's split.

- ``param``: how an image is represented (FFT with 1/f scaling and colour decorrelation, or pixels);
- ``transforms``: the random robustness transforms applied every step;
- ``objectives``: what to maximize, a score per batch item;
- ``render``: the loop that optimizes many units of one layer together.
"""
