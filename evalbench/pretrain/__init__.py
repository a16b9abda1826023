"""Training encoders (DESIGN.md §5): SimCLR, MoCo v2, BYOL, SimSiam and the supervised reference, from small parts."""
