"""The device vendors' own tools, run on this machine: Arm Vela (Ethos-U NPUs), TFLite Micro's sources for
a firmware, TFLite's GPU compatibility analyzer. Their figures are theirs, and labelled so."""

#: Said by inspect and build for an Edge TPU profile: Coral's compiler is not reachable here.
NO_EDGETPU_COMPILER = "no Edge TPU compiler ran (edgetpu_compiler is not installable here)"
