"""Stage 4, score: predictions of the production model for every clip that lacks one."""
