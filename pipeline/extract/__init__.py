"""Stage 2, extract: decode each clip, run the frozen CNN once per image, write the feature
store."""
