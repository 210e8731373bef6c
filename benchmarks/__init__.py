"""Side-by-side benchmarks: predcache vs its peers vs the physical ceilings (`make bench`)."""
