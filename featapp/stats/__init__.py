"""What is computed over many images: scans and top-k, liveness, what tells the classes
apart, and the feature-space projection."""
