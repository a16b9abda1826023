"""Training encoders: the supervised reference now; SimCLR, MoCo, BYOL, SimSiam next (DESIGN.md §5)."""
