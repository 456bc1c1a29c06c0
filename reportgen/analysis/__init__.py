"""What real images do to the model: the reference image set and one streaming pass over it
that feeds every selected layer at once (per-unit statistics, the best image per unit)."""
