"""Lung segmentation: a small U-Net trained from scratch on datasets that ship lung masks, so that
datasets without them (RSNA, NIH, VinDr) still get the anatomy-based CAM measures."""
