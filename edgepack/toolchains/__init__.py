"""The device vendors' own tools, run on this machine: Arm Vela (Ethos-U NPUs), TFLite Micro's sources for
a firmware, TFLite's GPU compatibility analyzer. Their figures are theirs, and labelled so."""
