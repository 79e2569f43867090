"""Video and image sequences: frame reading, person tracking, temporal smoothing, the sequence job."""
