"""Tools about the machine and the model rather than for generating with it: `edge bench`
(speed and memory of a bundle) and `edge doctor` (this CPU's int8 support)."""
