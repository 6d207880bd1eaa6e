"""Constants shared by the simulate tests and their fixtures (the tiny Trp-cage run)."""

NAME = "trpcage"
SAVE_EVERY_PS = 1.0
N_FRAMES = 4
