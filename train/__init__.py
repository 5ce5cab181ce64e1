"""coalmine.train — training of the U-Net-ResNet34 (torch, segmentation-models-pytorch).

Importing this package does not import torch; the modules that need it do
(``coalmine.train.synth`` and ``coalmine.train.metrics`` need only NumPy/rasterio).
"""
